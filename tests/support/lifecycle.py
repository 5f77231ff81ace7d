"""Reading the local world's logs in tests (the world itself is demo/world.py)."""

from __future__ import annotations


def count_lines(text: str, *needles: str) -> int:
    """Log lines holding every needle (service logs are JSON, one event a line)."""
    return sum(1 for line in text.splitlines() if all(n in line for n in needles))
