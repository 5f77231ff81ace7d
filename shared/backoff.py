"""Capped exponential backoff: how long to wait before trying again after each failure."""

from __future__ import annotations


class Backoff:
    """Delays of `initial`, `initial * factor`, ... up to `maximum`, until `reset()`.

    `current` is the delay `next()` last returned, 0.0 before the first failure and
    after a `reset()`: callers that ask "am I backing off?" read it.
    """

    __slots__ = ("_factor", "_initial", "_maximum", "current")

    def __init__(self, initial: float, maximum: float, factor: float = 2.0) -> None:
        if initial <= 0 or maximum <= 0 or factor < 1:
            raise ValueError(f"backoff needs positive delays and a factor >= 1, got "
                             f"initial={initial}, maximum={maximum}, factor={factor}")
        self._initial = initial
        self._maximum = maximum
        self._factor = factor
        self.current = 0.0

    def next(self) -> float:
        """The delay to wait after one more failure."""
        grown = self.current * self._factor if self.current else self._initial
        self.current = min(grown, self._maximum)
        return self.current

    def reset(self) -> None:
        """A success: the next failure starts again from `initial`."""
        self.current = 0.0
