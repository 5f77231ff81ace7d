"""The classifier's handler: changed verdicts published as one batch, kept on failure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.classifier.handlers import Classifier
from services.classifier.windows import Windows
from shared.errors import TransientError
from shared.events import (
    ClickClassified,
    ClicksSeen,
    ClickTracked,
    Event,
    decode_clicks_seen,
    encode_batch,
    encode_event,
)

T0 = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


def tracked(n: int, *, seconds: float, recipient: str = "r1", **fields: Any) -> Event[Any]:
    data = ClickTracked(customer_id="c", campaign_id="k", recipient_id=recipient,
                        domain="click.platform.test", url=f"https://shop.test/{n}", **fields)
    return Event(id=f"e{n}", type=ClickTracked.TYPE, source="/test",
                 time=T0 + timedelta(seconds=seconds), data=data, raw=b"")


async def handle(classifier: Classifier, events: list[Event[Any]]) -> None:
    """The events as one message, read as the classifier's consumer reads it."""
    body = encode_batch([encode_event(e.data, source=e.source, event_id=e.id, time=e.time)
                         for e in events])
    await classifier.handle([event for event in decode_clicks_seen(
        body, "application/cloudevents-batch+json") if isinstance(event, Event)])


class Broker:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.fail = False

    async def publish(self, body: bytes) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.bodies.append(body)

    def events(self) -> list[dict[str, Any]]:
        return [event for body in self.bodies for event in json.loads(body)]


async def test_a_burst_is_published_once_as_click_classified() -> None:
    broker = Broker()
    classifier = Classifier(Windows(), broker.publish, source="/classifier/test")
    await handle(classifier, [tracked(n, seconds=n * 0.5, reasons=["soon-after-send"])
                             for n in range(4)])
    await handle(classifier, [tracked(9, seconds=600, recipient="r2")])  # a person, later
    events = broker.events()
    assert len(broker.bodies) == 1 and len(events) == 4
    assert {e["type"] for e in events} == {"click.classified"}
    first = events[0]["data"]
    assert first["event_id"] == "e0" and first["bot"] is True
    assert first["reasons"] == ["burst", "soon-after-send"]
    assert first["clicked_at"] == "2026-12-02T04:00:00Z"
    assert events[0]["source"] == "/classifier/test" and classifier.published == 4


async def test_a_click_from_an_older_redirector_brings_its_bot_reason() -> None:
    broker = Broker()
    classifier = Classifier(Windows(burst_links=2), broker.publish, source="/c")
    await handle(classifier, [tracked(1, seconds=0, bot=True, bot_reason="user-agent:curl"),
                             tracked(2, seconds=1)])
    assert [e["data"]["event_id"] for e in broker.events()] == ["e2"]
    assert classifier.windows.held == 2
    await classifier.drain()
    assert broker.events()[-1]["data"]["reasons"] == ["user-agent:curl", "burst"]


async def test_a_scanner_bots_burst_is_published_once_as_it_settles() -> None:
    """A user-agent bot in a burst: its verdict does not change, so it is published once,
    with both reasons, when the clicks' time (or, idle, the wall clock) passes its
    settle time; never once per later click."""
    broker = Broker()
    classifier = Classifier(Windows(burst_links=3, settle_s=60), broker.publish, source="/c")
    scanner: dict[str, Any] = {"bot": True, "reasons": ["user-agent:proofpoint"]}
    await handle(classifier, [tracked(n, seconds=n * 0.2, **scanner) for n in range(6)])
    await handle(classifier, [tracked(n, seconds=5 + n, **scanner) for n in range(6, 12)])
    assert broker.events() == []
    # Time passes (others' clicks): the window settles a minute after its last click, 16 s.
    await handle(classifier, [tracked(20, seconds=70, recipient="r2")])
    assert broker.events() == []
    await handle(classifier, [tracked(21, seconds=77, recipient="r2")])
    settled = [e["data"] for e in broker.events()]
    assert sorted(e["event_id"] for e in settled) == sorted(f"e{n}" for n in range(12))
    assert all(e["bot"] is True and e["reasons"] == ["user-agent:proofpoint", "burst"]
               for e in settled)


async def test_a_tick_settles_by_the_wall_clock_only_when_no_click_came() -> None:
    broker = Broker()
    classifier = Classifier(Windows(burst_links=2, settle_s=60), broker.publish, source="/c")
    scanner: dict[str, Any] = {"bot": True, "reasons": ["user-agent:curl"]}
    await classifier.tick(T0.timestamp() + 1000)  # before anything is known: no clock move
    await handle(classifier, [tracked(1, seconds=0, **scanner), tracked(2, seconds=1, **scanner)])
    await classifier.tick(T0.timestamp() + 1000)  # clicks came since the last tick: a backlog?
    assert broker.events() == [] and classifier.windows.held == 2
    await classifier.tick(T0.timestamp() + 30)  # idle, but not settled yet
    assert broker.events() == []
    await classifier.tick(T0.timestamp() + 62)
    assert sorted(e["data"]["event_id"] for e in broker.events()) == ["e1", "e2"]
    assert classifier.windows.held == 0 and classifier.published == 2


async def test_a_failed_publish_keeps_the_classifications_for_the_retry() -> None:
    broker = Broker()
    classifier = Classifier(Windows(burst_links=2), broker.publish, source="/c")
    broker.fail = True
    message = [tracked(1, seconds=0), tracked(2, seconds=1)]
    with pytest.raises(TransientError, match="broker gone"):
        await handle(classifier, message)
    broker.fail = False
    await handle(classifier, message)  # the retry: its clicks are known, its events kept
    assert [e["data"]["event_id"] for e in broker.events()] == ["e1", "e2"]


def test_the_classifier_reads_only_the_clicks_of_a_message() -> None:
    """decode_clicks_seen: a batch's clicks with the fields the classifier needs; other
    events and broken elements skipped (the logger dead-letters them), a structured
    message read too; the raw body kept for a retry."""
    click = tracked(1, seconds=2, bot=True, reasons=["user-agent:curl"])
    one = encode_event(click.data, source="/r", event_id=click.id, time=click.time)
    other = encode_event(ClickClassified(event_id="x", customer_id="c", campaign_id="k",
                                         recipient_id="r", clicked_at=T0, bot=True,
                                         reasons=["burst"]), source="/c")
    body = b"[" + b",".join([one, other, b'{"type": "click.tracked"}']) + b"]"
    [event] = decode_clicks_seen(body, "application/cloudevents-batch+json")
    assert isinstance(event, Event) and isinstance(event.data, ClicksSeen)
    assert event.raw == body
    [seen] = event.data.clicks
    assert (seen.id, seen.time, seen.data.recipient_id, seen.data.url) == (
        "e1", T0 + timedelta(seconds=2), "r1", "https://shop.test/1")
    assert seen.data.bot and seen.data.reasons == ("user-agent:curl",)
    [alone] = decode_clicks_seen(one, None)
    assert isinstance(alone, Event) and alone.data.clicks == [seen]
    assert decode_clicks_seen(encode_batch([other]), None) == []
    assert decode_clicks_seen(b"not json", None) == []


async def test_reasons_not_published_at_stop_are_told_not_raised() -> None:
    broker = Broker()
    classifier = Classifier(Windows(burst_links=2), broker.publish, source="/c")
    await handle(classifier, [tracked(1, seconds=0, bot=True, reasons=["user-agent:curl"]),
                              tracked(2, seconds=1)])
    broker.fail = True
    await classifier.drain()
    assert classifier.windows.drain() == []  # taken once, whatever became of them
