"""What the cost estimate reads from storage: shard files to tally, earlier manifests to learn from.

No HTTP here: the token counts come from the caller. Earlier manifests are untrusted input
(anyone with write access to the destination may have put one there): a value that is not a
plain non-negative number is skipped, never guessed, and a manifest that does not parse is
ignored.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, Protocol

import msgspec
from airflow.sdk import ObjectStoragePath


class RequestTally(Protocol):
    """What the tally of the estimate takes from a shard line (``cost.estimate.CostTally`` is one).

    A protocol, so that ``io/`` never imports ``workflow/``.
    """

    def observe(
        self,
        custom_id: str,
        model: str,
        max_tokens: int,
        size: int,
        where: str,
        payload: Any,
        *,
        shares_prefix: bool = False,
        batch: Any = 0,
    ) -> None: ...


MANIFEST_NAME = "_manifest.json"
#: Earlier manifests read at most (the newest by their ``ended_at``).
MAX_MANIFESTS = 20
#: A manifest larger than this is not an export's manifest.
_MAX_MANIFEST_BYTES = 16 << 20

log = logging.getLogger(__name__)


#: What an absent ``system``/``tools`` decodes to: no bytes, which no encoded value equals.
_ABSENT = msgspec.Raw()


class _Params(msgspec.Struct, gc=False):
    """The part of a shard line's params the tally reads.

    ``system`` and ``tools`` stay as their raw bytes (any JSON: a string, a list of blocks),
    only to be compared with the shared prefix's encoding. ``msgspec.Raw`` cannot sit in a
    union (``Raw | None`` accepts nothing but null), so absence is the empty ``Raw``.
    """

    model: str = ""
    max_tokens: int = 0
    system: msgspec.Raw = _ABSENT
    tools: msgspec.Raw = _ABSENT


class _Line(msgspec.Struct, gc=False):
    custom_id: str = ""
    params: _Params | None = None


_LINE = msgspec.json.Decoder(_Line)


def prefix_bytes(keys: Sequence[str], default_params: Mapping[str, Any] | None) -> dict[str, bytes]:
    """The encoded values a shard line must carry to share the prefix (shards hold msgspec's encoding)."""
    if not keys or not default_params:
        return {}
    encoder = msgspec.json.Encoder()
    return {key: encoder.encode(default_params[key]) for key in keys}


def tally_shards(
    shards: Iterable[tuple[str, Callable[[], IO[bytes]]]],
    tally: RequestTally,
    *,
    prefix: Mapping[str, bytes] | None = None,
) -> None:
    """Feed every line of the job's shard files to ``tally`` (one batch per shard).

    :param shards: ``(name, opener)`` per shard file (JSONL, one encoded request a line).
    :param prefix: from :func:`prefix_bytes`; a line shares the prefix when its params hold those bytes.
    """
    wanted = dict(prefix or {})
    for name, opener in shards:
        with opener() as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip(b"\n")
                if not line:
                    continue
                decoded = _LINE.decode(line)
                params = decoded.params or _Params()
                shares = bool(wanted) and all(bytes(getattr(params, key)) == value for key, value in wanted.items())
                tally.observe(
                    decoded.custom_id,
                    params.model,
                    params.max_tokens,
                    len(line),
                    f"{name}:{number}",
                    line,
                    shares_prefix=shares,
                    batch=name,
                )


# -- learning from earlier manifests ---------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value >= 0 and value == value and value != float("inf") else None


def _read_manifest(path: ObjectStoragePath) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_MANIFEST_BYTES + 1)
        if len(data) > _MAX_MANIFEST_BYTES:
            return None
        parsed = json.loads(data)
    except (OSError, ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _candidates(destination: ObjectStoragePath) -> list[ObjectStoragePath]:
    """The destination's own manifest and those of its sibling folders (a destination per run)."""
    found: list[ObjectStoragePath] = []
    own = destination / MANIFEST_NAME
    with contextlib.suppress(OSError, ValueError):
        if own.is_file():
            found.append(own)
    parent = destination.parent
    with contextlib.suppress(OSError, ValueError):
        if str(parent) != str(destination) and parent.is_dir():
            for sibling in sorted(parent.iterdir(), key=lambda p: p.name, reverse=True):
                if sibling.name == destination.name or sibling.name.startswith((".", "_")):
                    continue
                candidate = sibling / MANIFEST_NAME
                with contextlib.suppress(OSError, ValueError):
                    if sibling.is_dir() and candidate.is_file():
                        found.append(candidate)
                if len(found) >= 4 * MAX_MANIFESTS:
                    break
    return found


def learned_output_ratios(destination: ObjectStoragePath | None) -> tuple[dict[str, float], str | None]:
    """Expected output / ``max_tokens`` per model from earlier manifests that carry an estimate.

    Returns ``(ratios, source)``: ``ratios`` has one entry per model seen and ``"*"`` over all
    of them; ``source`` says where the figures came from (None: nothing learned, use the default).
    Manifests without an ``estimate`` (written before this version, or without one) teach
    nothing: their ``max_tokens`` total is unknown.
    """
    default: tuple[dict[str, float], str | None] = ({}, None)
    if destination is None:
        return default
    manifests = []
    for path in _candidates(destination):
        manifest = _read_manifest(path)
        if manifest and isinstance(manifest.get("estimate"), Mapping):
            manifests.append((str(manifest.get("ended_at") or ""), str(path), manifest))
    manifests.sort(reverse=True)
    actual: dict[str, float] = {}
    worst: dict[str, float] = {}
    used = []
    for _, uri, manifest in manifests[:MAX_MANIFESTS]:
        by_model = manifest["estimate"].get("by_model")
        tokens = manifest.get("tokens_by_model")
        if not isinstance(by_model, Mapping) or not isinstance(tokens, Mapping):
            continue
        counts = manifest.get("counts") if isinstance(manifest.get("counts"), Mapping) else {}
        requests = _number(manifest.get("lines")) or 0
        succeeded = _number(counts.get("succeeded")) if counts else None
        # Only succeeded requests report output; scale the worst case to them.
        share = (succeeded / requests) if succeeded is not None and requests else 1.0
        for model, figures in by_model.items():
            if not isinstance(figures, Mapping) or not isinstance(tokens.get(model), Mapping):
                continue
            out = _number(tokens[model].get("output"))
            cap = _number(figures.get("output_tokens_worst_case"))
            if out is None or not cap:
                continue
            actual[str(model)] = actual.get(str(model), 0.0) + out
            worst[str(model)] = worst.get(str(model), 0.0) + cap * share
        used.append(uri)
    if not worst:
        return default
    ratios = {model: min(1.0, actual[model] / worst[model]) for model in worst if worst[model] > 0}
    ratios["*"] = min(1.0, sum(actual.values()) / sum(worst.values()))
    return ratios, f"{len(used)} earlier manifest(s) (output used {ratios['*']:.0%} of max_tokens)"
