"""ReputationEngine's rules with a scripted resolver: dedup, TTL cache, budget, retries,
concurrency, controls (pure: no DNS traffic)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from services.verifier.reputation.blocklists import (
    NXDOMAIN,
    SERVFAIL,
    TIMEOUT,
    BlockList,
    Kind,
    Status,
)
from services.verifier.reputation.dnspython import RawAnswer
from services.verifier.reputation.engine import BUDGET_SPENT, DailyBudget, ReputationEngine

DBL = BlockList(Kind.DBL, "dbl.test")
SURBL = BlockList(Kind.SURBL, "surbl.test")
URIBL = BlockList(Kind.URIBL, "uribl.test")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Scripted:
    """Answers by query name (default NXDOMAIN); a list of answers is served in turn."""

    def __init__(self, answers: dict[str, RawAnswer | list[RawAnswer]] | None = None,
                 delay_s: float = 0.0) -> None:
        self.answers = answers or {}
        self.asked: Counter[str] = Counter()
        self.delay_s = delay_s
        self.out = 0
        self.most_out = 0

    async def ask(self, qname: str) -> RawAnswer:
        self.asked[qname] += 1
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.out -= 1
        answer = self.answers.get(qname, RawAnswer(NXDOMAIN, ttl_s=60))
        if isinstance(answer, list):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer


async def no_sleep(_s: float) -> None:
    return None


def engine(resolver: Scripted, lists: tuple[BlockList, ...] = (DBL, SURBL, URIBL),
           clock: Clock | None = None, **kwargs: object) -> ReputationEngine:
    return ReputationEngine(resolver, lists, clock=clock or Clock(), sleep=no_sleep,
                            **kwargs)  # type: ignore[arg-type]


async def test_surbl_and_uribl_ask_once_per_registered_domain_dbl_per_host() -> None:
    resolver = Scripted({"shop.co.uk.surbl.test": RawAnswer("NOERROR", ("127.0.0.8",), 300)})
    watch = engine(resolver)
    names = ["a.shop.co.uk", "b.shop.co.uk", "shop.co.uk", "a.shop.co.uk"]
    found = await watch.lookup_many(SURBL, names)
    assert set(found) == {"a.shop.co.uk", "b.shop.co.uk", "shop.co.uk"}
    assert {lookup.verdict.categories for lookup in found.values()} == {("ph",)}
    assert resolver.asked == {"shop.co.uk.surbl.test": 1}
    await watch.lookup_many(DBL, names)
    assert resolver.asked["a.shop.co.uk.dbl.test"] == 1
    assert resolver.asked["b.shop.co.uk.dbl.test"] == 1
    assert watch.query_names(SURBL, names) == {"shop.co.uk.surbl.test"}


async def test_answers_are_reused_for_their_ttl_and_then_asked_again() -> None:
    clock = Clock()
    resolver = Scripted({"bad.test.dbl.test": RawAnswer("NOERROR", ("127.0.1.4",), 120)})
    watch = engine(resolver, clock=clock)
    first = await watch.lookup(DBL, "bad.test")
    assert (first.status, first.cached) == (Status.LISTED, False)
    clock.now += 119
    again = await watch.lookup(DBL, "bad.test")
    assert (again.status, again.cached) == (Status.LISTED, True)
    assert watch.cached(DBL, "bad.test")
    clock.now += 2
    assert not watch.cached(DBL, "bad.test")
    assert (await watch.lookup(DBL, "bad.test")).cached is False
    assert resolver.asked["bad.test.dbl.test"] == 2
    assert watch.stats.cache_hits[Kind.DBL] == 1


async def test_the_cache_is_capped_and_fresh_lookups_skip_it() -> None:
    clock = Clock()
    resolver = Scripted({"x.test.dbl.test": RawAnswer(NXDOMAIN, ttl_s=86400)})
    watch = engine(resolver, clock=clock, max_cache_s=600)
    await watch.lookup(DBL, "x.test")
    await watch.lookup(DBL, "x.test", fresh=True)
    assert resolver.asked["x.test.dbl.test"] == 2
    clock.now += 601
    await watch.lookup(DBL, "x.test")
    assert resolver.asked["x.test.dbl.test"] == 3


async def test_refusals_and_errors_are_never_cached() -> None:
    resolver = Scripted({
        "r.test.dbl.test": RawAnswer("NOERROR", ("127.255.255.254",), 600),
        "s.test.dbl.test": RawAnswer(SERVFAIL),
    })
    watch = engine(resolver, attempts=1)
    for _ in range(2):
        assert (await watch.lookup(DBL, "r.test")).status == Status.REFUSED
        assert (await watch.lookup(DBL, "s.test")).status == Status.ERROR
    assert resolver.asked == {"r.test.dbl.test": 2, "s.test.dbl.test": 2}


async def test_servfail_and_timeouts_are_retried_and_never_a_verdict() -> None:
    resolver = Scripted({
        "flaky.test.dbl.test": [RawAnswer(SERVFAIL), RawAnswer(TIMEOUT),
                                RawAnswer("NOERROR", ("127.0.1.2",), 60)],
        "down.test.dbl.test": RawAnswer(TIMEOUT),
    })
    watch = engine(resolver, attempts=3)
    flaky = await watch.lookup(DBL, "flaky.test")
    assert (flaky.status, flaky.verdict.categories) == (Status.LISTED, ("spam",))
    down = await watch.lookup(DBL, "down.test")
    assert down.status == Status.ERROR and down.verdict.raw == (TIMEOUT,)
    assert resolver.asked == {"flaky.test.dbl.test": 3, "down.test.dbl.test": 3}


async def test_the_daily_budget_is_never_exceeded_retries_included_and_resets_at_midnight(
) -> None:
    clock = Clock(now=86400 * 20000 + 100)
    resolver = Scripted({"down.test.dbl.test": RawAnswer(SERVFAIL)})
    watch = engine(resolver, clock=clock, daily_budget=5, attempts=3)
    assert (await watch.lookup(DBL, "down.test")).status == Status.ERROR  # 3 spent
    found = await watch.lookup_many(DBL, [f"d{i}.test" for i in range(5)])
    assert sum(resolver.asked.values()) == 5
    spent = [lookup for lookup in found.values() if lookup.verdict == BUDGET_SPENT]
    assert len(spent) == 3 and watch.budget_left(DBL) == 0
    assert watch.stats.budget_refusals[Kind.DBL] == 3
    # Other lists keep their own budget.
    assert watch.budget_left(SURBL) == 5
    clock.now += watch.budget(DBL).seconds_to_reset()
    assert watch.budget_left(DBL) == 5
    assert (await watch.lookup(DBL, "d4.test")).status == Status.NOT_LISTED


def test_daily_budget_counts_utc_days() -> None:
    clock = Clock(now=86400 * 3 + 86399)
    budget = DailyBudget(1, clock)
    assert budget.take() and not budget.take() and budget.left == 0
    assert budget.seconds_to_reset() == pytest.approx(1)
    clock.now += 1
    assert budget.left == 1


async def test_concurrency_is_bounded_and_concurrent_callers_share_one_question() -> None:
    resolver = Scripted(delay_s=0.01)
    watch = engine(resolver, concurrency=4)
    names = [f"n{i}.test" for i in range(40)]
    await asyncio.gather(watch.lookup_many(DBL, names), watch.lookup_many(DBL, names))
    assert resolver.most_out == 4
    assert all(count == 1 for count in resolver.asked.values())
    assert len(resolver.asked) == 40


async def test_controls_pass_when_answered_as_documented_and_fail_otherwise() -> None:
    resolver = Scripted({
        "dbltest.com.dbl.test": RawAnswer("NOERROR", ("127.0.1.2",), 60),
        "test.surbl.org.surbl.test": RawAnswer("NOERROR", ("127.0.0.1",), 60),  # refused
        "test.uribl.com.uribl.test": RawAnswer("NOERROR", ("127.0.0.14",), 60),
        "invalid.uribl.test": RawAnswer("NOERROR", ("127.0.0.2",), 60),  # lists everything
    })
    watch = engine(resolver)
    dbl = await watch.run_controls(DBL)
    assert dbl.passed and dbl.why == ""
    surbl = await watch.run_controls(SURBL)
    assert not surbl.passed and "test.surbl.org answered refused" in surbl.why
    uribl = await watch.run_controls(URIBL)
    assert not uribl.passed and uribl.why == "invalid answered listed"
    # Asked afresh every round, never from the cache.
    await watch.run_controls(DBL)
    assert resolver.asked["dbltest.com.dbl.test"] == 2


async def test_a_name_that_is_no_domain_is_an_error_without_a_question() -> None:
    resolver = Scripted()
    lookup = await engine(resolver).lookup(DBL, "not a name")
    assert lookup.status == Status.ERROR and lookup.query_name == ""
    assert not resolver.asked
