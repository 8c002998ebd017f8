"""Words for the strings of structured answers: short topic phrases and sentence-long prose.

Code that parses structured answers (the table join, its benchmark) should see strings
of the sizes a model writes: a ``summary`` or ``reason`` is a sentence or two, a tag or
topic is a noun phrase of a few words. The emulator cannot understand the prompt,
so sentences are put together from a few tables of parts; one sentence takes five draws,
which is what keeps a million answers cheap. The vocabulary leans towards customer
feedback and support tickets, the text people most often send through batch jobs.
"""

from __future__ import annotations

from airflow_provider_anthropix.emulator.draws import Draws

#: Property names whose strings a model writes as prose (matched as parts of the lowercased name).
PROSE_HINTS = (
    "summar", "descri", "reason", "explan", "rational", "comment", "note", "feedback", "analys",
    "justif", "answer", "response", "message", "text", "content", "detail", "review", "body",
    "abstract", "overview", "opinion", "assessment", "sentence", "paragraph", "why",
)  # fmt: skip

_ADJECTIVES = (
    "late", "damaged", "slow", "friendly", "missing", "broken", "helpful", "confusing",
    "fast", "expensive", "reliable", "poor", "excellent", "unclear", "repeated", "partial",
)  # fmt: skip
_NOUNS = (
    "delivery", "packaging", "refund", "pricing", "customer support", "product quality",
    "shipping", "billing", "installation", "documentation", "battery life", "return policy",
    "order status", "account access", "warranty", "user interface", "performance", "sizing",
    "replacement", "subscription", "invoice", "setup", "durability", "communication",
    "checkout", "availability", "tracking", "onboarding", "noise", "value for money",
    "instructions", "response time",
)  # fmt: skip
_OPENINGS = (
    "The customer", "The reviewer", "The writer", "The user", "The sender", "The author",
    "The buyer", "The caller",
)  # fmt: skip
_VERBS = (
    "reports that", "says that", "explains that", "notes that", "complains that",
    "is pleased that", "points out that", "mentions that", "confirms that", "worries that",
)  # fmt: skip
_PREDICATES = (
    "was late by several days", "arrived damaged", "works as described", "was good value",
    "was handled quickly", "stopped working after a week", "matched the description",
    "took too long to resolve", "was hard to understand", "exceeded expectations",
    "needed a second attempt", "was cheaper elsewhere",
)  # fmt: skip
_TAILS = (
    "", "", "", " and asks for a refund", " and would order again", " but found the price fair",
    " and recommends the product", " and wants a replacement", " and expects a reply this week",
    " despite an earlier complaint", " and gives no further details", " after contacting support twice",
)  # fmt: skip


def is_prose(name: str | None) -> bool:
    """Whether a string property called ``name`` holds prose (else a short phrase)."""
    if not name:
        return False
    lowered = name.lower()
    return any(hint in lowered for hint in PROSE_HINTS)


_N_ADJECTIVES, _N_NOUNS, _N_OPENINGS, _N_VERBS, _N_PREDICATES = (
    len(_ADJECTIVES), len(_NOUNS), len(_OPENINGS), len(_VERBS), len(_PREDICATES)
)  # fmt: skip
_PHRASES = 2 * _N_ADJECTIVES * _N_NOUNS
_SENTENCES = _N_OPENINGS * _N_VERBS * _N_NOUNS * _N_PREDICATES * len(_TAILS)


def phrase(draws: Draws, _depth: int = 0) -> str:
    """A topic-like noun phrase: a noun, half the time with an adjective before it (one draw).

    (``_depth`` is ignored: it lets a schema string without limits use this function as its node.)
    """
    n, noun = divmod(draws.below(_PHRASES), _N_NOUNS)
    return f"{_ADJECTIVES[n]} {_NOUNS[noun]}" if n < _N_ADJECTIVES else _NOUNS[noun]


def sentence(draws: Draws) -> str:
    """One sentence of about 8 to 16 words, ending in a full stop (one draw, cut into its parts)."""
    n, opening = divmod(draws.below(_SENTENCES), _N_OPENINGS)
    n, verb = divmod(n, _N_VERBS)
    n, noun = divmod(n, _N_NOUNS)
    tail, predicate = divmod(n, _N_PREDICATES)
    return f"{_OPENINGS[opening]} {_VERBS[verb]} the {_NOUNS[noun]} {_PREDICATES[predicate]}{_TAILS[tail]}."


def prose(draws: Draws, low: int, high: int | None) -> str:
    """One sentence, sometimes two (more when ``low`` asks), at least ``low`` and at most ``high`` characters.

    A sentence longer than ``high`` is cut at a word boundary, with a full stop when there is room for one.
    """
    text = sentence(draws)
    if draws.below(3) == 0:  # a second sentence one time in three, where it fits
        longer = f"{text} {sentence(draws)}"
        if high is None or len(longer) <= high:
            text = longer
    while len(text) < low:
        text = f"{text} {sentence(draws)}"
    if high is None or len(text) <= high:
        return text
    cut = text[: max(high - 1, low)]
    space = cut.rfind(" ")
    if space >= max(low, 1):
        cut = cut[:space].rstrip(",")
    if len(cut) < high and not cut.endswith("."):
        cut += "."
    return cut if len(cut) >= low else text[:high]
