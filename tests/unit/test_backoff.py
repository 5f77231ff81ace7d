"""Capped exponential backoff: the delays it hands out, the cap, and starting over."""

from __future__ import annotations

import pytest

from shared.backoff import Backoff


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    backoff = Backoff(0.2, 10.0)
    assert [backoff.next() for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]


def test_a_custom_factor_is_used() -> None:
    backoff = Backoff(1.0, 100.0, factor=3.0)
    assert [backoff.next() for _ in range(5)] == [1.0, 3.0, 9.0, 27.0, 81.0]


def test_current_is_zero_until_a_failure_and_after_a_reset() -> None:
    backoff = Backoff(0.1, 5.0)
    assert backoff.current == 0.0
    assert backoff.next() == 0.1
    assert backoff.next() == backoff.current == 0.2
    backoff.reset()
    assert backoff.current == 0.0
    assert backoff.next() == 0.1  # starts again from the initial delay


def test_the_cap_applies_to_the_first_delay_too() -> None:
    backoff = Backoff(0.1, 0.05)
    assert [backoff.next() for _ in range(3)] == [0.05, 0.05, 0.05]


@pytest.mark.parametrize(("initial", "maximum", "factor"),
                         [(0.0, 1.0, 2.0), (0.1, 0.0, 2.0), (-1.0, 1.0, 2.0), (0.1, 1.0, 0.5)])
def test_delays_that_would_never_back_off_are_refused(
        initial: float, maximum: float, factor: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial, maximum, factor)
