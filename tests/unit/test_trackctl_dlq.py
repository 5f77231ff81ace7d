"""The pure parts of `trackctl dlq`: describing dead letters and preparing replays."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.broker.topology import Topology
from shared.events import BATCH, STRUCTURED, DomainCreated, encode_batch, encode_event
from trackctl.dlq import (
    describe,
    matches,
    queue_for,
    render_list,
    render_show,
    replay_headers,
    replay_routing_key,
    short_time,
)
from trackctl.output import USAGE, CliError

DEAD_HEADERS = {
    "x-dead-reason": "exhausted", "x-dead-error": "gave up after 5 attempts: timeout",
    "x-attempt": 5, "x-original-queue": "tracking.verifier",
    "x-original-routing-key": "domain.created",
    "x-dead-at": "2026-05-01T12:00:00.123456+00:00", "x-last-error": "timeout",
    "x-delivery-count": 3, "x-death": [{"count": 1}], "traceparent": "00-abc-def-01",
}


def created(event_id: str) -> bytes:
    return encode_event(DomainCreated(domain="track.a.test", customer_id="c1"),
                        source="/tests", event_id=event_id)


def test_queue_for_maps_service_names_to_dead_letter_queues() -> None:
    topology = Topology("tracking")
    assert queue_for("logger", topology) == "tracking.logger.dead"
    assert queue_for("certifier", topology) == "tracking.certifier.dead"
    with pytest.raises(CliError) as caught:
        queue_for("redirector", topology)
    assert caught.value.status == USAGE and "logger" in caught.value.message


def test_describe_reads_the_consumers_headers_and_the_event_ids() -> None:
    letter = describe(1, created("evt-1"), content_type=STRUCTURED, headers=DEAD_HEADERS,
                      message_id="m1")
    assert (letter.reason, letter.attempts, letter.routing_key) == (
        "exhausted", 5, "domain.created")
    assert letter.error == "gave up after 5 attempts: timeout"
    assert letter.original_queue == "tracking.verifier"
    assert letter.event_ids == ["evt-1"] and letter.event_types == ["domain.created"]
    assert letter.summary()["dead_at"] == "2026-05-01T12:00:00.123456+00:00"


def test_describe_a_batch_lists_every_event() -> None:
    body = encode_batch([created("evt-1"), created("evt-2")])
    letter = describe(1, body, content_type=BATCH, headers={}, message_id=None)
    assert letter.event_ids == ["evt-1", "evt-2"]
    assert letter.reason is None and letter.attempts is None


def test_describe_malformed_bodies_without_failing() -> None:
    not_json = describe(1, b"\xff not json", content_type=STRUCTURED,
                        headers={"x-dead-reason": b"malformed", "x-attempt": b"1"},
                        message_id=None)
    assert not_json.event_ids == [] and not_json.reason == "malformed"
    assert not_json.attempts == 1
    assert not_json.full()["body"] == "\ufffd not json"
    # A CloudEvent whose data is invalid still shows the id it carries.
    half = describe(1, b'{"id": "evt-9", "type": "domain.created", "specversion": "9"}',
                    content_type=STRUCTURED, headers={}, message_id=None)
    assert half.event_ids == ["evt-9"] and half.event_types == ["domain.created"]


def test_replay_headers_start_afresh_and_keep_the_origin() -> None:
    now = datetime(2026, 5, 2, tzinfo=UTC)
    headers = replay_headers(DEAD_HEADERS, "tracking.verifier.dead", now)
    assert headers == {
        "x-original-queue": "tracking.verifier",
        "x-original-routing-key": "domain.created",
        "traceparent": "00-abc-def-01",
        "x-replayed-from": "tracking.verifier.dead",
        "x-replayed-at": "2026-05-02T00:00:00+00:00",
    }


def test_replay_routing_key_falls_back_to_the_event_type() -> None:
    with_key = describe(1, created("e"), content_type=STRUCTURED, headers=DEAD_HEADERS,
                        message_id=None)
    assert replay_routing_key(with_key) == "domain.created"
    no_key = describe(1, created("e"), content_type=STRUCTURED, headers={}, message_id=None)
    assert replay_routing_key(no_key) == "domain.created"
    unknown = describe(1, b"junk", content_type=STRUCTURED, headers={}, message_id=None)
    assert replay_routing_key(unknown) is None  # goes to the service's own queue


def test_matches_by_event_id_message_id_and_reason() -> None:
    letter = describe(1, created("evt-1"), content_type=STRUCTURED, headers=DEAD_HEADERS,
                      message_id="m1")
    assert matches(letter, event_id=None, reason=None)
    assert matches(letter, event_id="evt-1", reason="exhausted")
    assert matches(letter, event_id="m1", reason=None)
    assert not matches(letter, event_id="evt-2", reason=None)
    assert not matches(letter, event_id=None, reason="rejected")


def test_render_list_and_show() -> None:
    letters = [describe(i, created(f"evt-{i}"), content_type=STRUCTURED,
                        headers=DEAD_HEADERS, message_id=f"m{i}") for i in (1, 2)]
    text = render_list("tracking.verifier.dead", 7, letters)
    lines = text.splitlines()
    assert lines[0] == "tracking.verifier.dead: 7 messages (showing 2; use --limit)"
    assert lines[2].split() == ["#", "dead", "at", "reason", "attempts", "routing", "key",
                                "event", "ids", "error"]
    assert "2026-05-01 12:00:00Z  exhausted" in lines[4]
    assert render_list("q", 0, []) == "q: 0 messages"
    shown = render_show(letters[0])
    assert "reason:         exhausted" in shown and '"id": "evt-1"' in shown
    assert "x-original-routing-key: domain.created" in shown


def test_short_time() -> None:
    assert short_time("2026-05-01T12:00:00.5+00:00") == "2026-05-01 12:00:00Z"
    assert short_time(None) == "-" and short_time("yesterday") == "yesterday"
