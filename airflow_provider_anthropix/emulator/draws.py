"""Cheap seeded random draws for the emulator's structured answers.

A batch of 100,000 structured requests needs 100,000 independent, reproducible streams
of random numbers, each used for about ten draws. Seeding a :class:`random.Random` builds
a 2.5 KB Mersenne Twister state every time, which cost more than drawing the whole
answer; hashing per draw costs a microsecond. Here a stream is a 64-bit linear
congruential generator (Knuth's MMIX constants) whose seed is first scrambled
(SplitMix64's finaliser), drawing from the high 32 bits of each step: a few integer
operations per draw, and the same seed gives the same draws in every process. That is
plenty for varied test answers; it is not meant for anything else.

Generators take a :class:`Draws`; :func:`draws_from` also wraps a :class:`random.Random`
so callers (and tests) that hold one can still pass it.
"""

from __future__ import annotations

import random
from typing import Any

_MASK64 = (1 << 64) - 1
_MULTIPLIER = 6364136223846793005
_INCREMENT = 1442695040888963407
_UNIT = 2.0**-32


def _scramble(seed: int) -> int:
    """SplitMix64's finaliser: nearby seeds (0, 1, 2, ...) start far apart."""
    z = (seed + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class Draws:
    """Uniform draws from one seed: :meth:`below` for integers, :meth:`unit` for floats in [0, 1)."""

    __slots__ = ("_state", "budget")

    def __init__(self, seed: int) -> None:
        self._state = _scramble(seed & _MASK64)
        #: steps left to the answer being drawn (set and spent by :mod:`.schema_values`)
        self.budget = 0

    @classmethod
    def of_hash(cls, seed: int) -> Draws:
        """Draws from a seed that is already a hash's output (uniform bits), without scrambling it again."""
        draws = cls.__new__(cls)
        draws._state = seed & _MASK64
        draws.budget = 0
        return draws

    def word(self) -> int:
        """The next 32 random bits."""
        state = (self._state * _MULTIPLIER + _INCREMENT) & _MASK64
        self._state = state
        return state >> 32

    def below(self, n: int) -> int:
        """An integer in ``[0, n)`` (``n`` >= 1; any size: big ones take several words)."""
        if n <= 0x1_0000_0000:
            state = (self._state * _MULTIPLIER + _INCREMENT) & _MASK64  # word() inlined: the hot path
            self._state = state
            return ((state >> 32) * n) >> 32
        words = n.bit_length() // 32 + 2  # 64 spare bits: the bias is negligible
        wide = 0
        for _ in range(words):
            wide = (wide << 32) | self.word()
        return (wide * n) >> (32 * words)

    def unit(self) -> float:
        """A float in ``[0, 1)`` with 32 random bits."""
        return self.word() * _UNIT


class RandomDraws(Draws):
    """:class:`Draws` taken from a :class:`random.Random` (its state moves as it is drawn from)."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        super().__init__(0)
        self._rng = rng

    def word(self) -> int:
        return self._rng.getrandbits(32)

    def below(self, n: int) -> int:
        return self._rng.randrange(n)


def draws_from(rng: Any) -> Draws:
    """``rng`` as :class:`Draws`: a Draws as is, a :class:`random.Random` wrapped, an int as its seed."""
    if isinstance(rng, Draws):
        return rng
    if isinstance(rng, random.Random):
        return RandomDraws(rng)
    if isinstance(rng, int) and not isinstance(rng, bool):
        return Draws(rng)
    raise TypeError(f"expected Draws, random.Random or an int seed; got {type(rng).__name__}")
