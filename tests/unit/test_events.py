"""CloudEvents envelopes: structured and batched mode, every way an element can be wrong."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

import shared.events as events_module
from shared.events import (
    BATCH,
    EVENT_TYPES,
    STRUCTURED,
    CertificateIssued,
    ClickTracked,
    DomainCreated,
    DomainVerified,
    Event,
    InvalidEvent,
    decode_event,
    decode_message,
    encode_batch,
    encode_event,
    schema_of,
)

WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def envelope(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/platform/domains",
        "type": "domain.created",
        "time": "2026-03-01T12:00:00Z",
        "datacontenttype": "application/json",
        "dataschema": "urn:tracking-domains:domain.created:1",
        "data": {"domain": "track.customer-a.com", "customer_id": "cust-a"},
    }
    for key, value in changes.items():
        if value is ...:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def raw(**changes: Any) -> bytes:
    return json.dumps(envelope(**changes)).encode()


def only(decoded: list[Any]) -> Any:
    assert len(decoded) == 1
    return decoded[0]


def invalid_reason(body: bytes, content_type: str | None = STRUCTURED) -> str:
    item = only(decode_message(body, content_type))
    assert isinstance(item, InvalidEvent), item
    assert item.raw == body
    return item.reason


def click(**changes: Any) -> dict[str, Any]:
    data = {"customer_id": "c", "campaign_id": "k", "recipient_id": "r",
            "domain": "track.example.com", "url": "https://example.com/"}
    data.update(changes)
    return data


# --- valid ----------------------------------------------------------------------------------

def test_structured_event_decodes() -> None:
    body = raw()
    event = only(decode_message(body, STRUCTURED))
    assert isinstance(event, Event)
    assert event.id == "evt-1"
    assert event.type == "domain.created"
    assert event.source == "/platform/domains"
    assert event.time == WHEN
    assert event.data == DomainCreated(domain="track.customer-a.com", customer_id="cust-a")
    assert event.raw == body


@pytest.mark.parametrize("content_type", [
    STRUCTURED, "application/json", None, "", "Application/CloudEvents+JSON; charset=utf-8",
])
def test_structured_content_types(content_type: str | None) -> None:
    assert isinstance(only(decode_message(raw(), content_type)), Event)


def test_batched_events_decode_in_order() -> None:
    events = [raw(id=f"e{n}") for n in range(3)]
    decoded = decode_message(encode_batch(events), BATCH)
    assert [e.id for e in decoded if isinstance(e, Event)] == ["e0", "e1", "e2"]
    assert [e.raw for e in decoded] == events


def test_batched_content_type_with_parameters() -> None:
    decoded = decode_message(encode_batch([raw()]), f"{BATCH}; charset=utf-8")
    assert isinstance(only(decoded), Event)


def test_empty_batch_is_no_events() -> None:
    assert decode_message(b"[]", BATCH) == []


def test_time_with_an_offset_is_kept() -> None:
    event = only(decode_message(raw(time="2026-03-01T14:00:00.5+02:00"), STRUCTURED))
    assert event.time.utcoffset() == timedelta(hours=2)
    assert event.time == WHEN + timedelta(milliseconds=500)


def test_optional_attributes_may_be_missing() -> None:
    event = only(decode_message(raw(dataschema=..., datacontenttype=...), STRUCTURED))
    assert isinstance(event, Event)


def test_unknown_fields_are_tolerated() -> None:
    data = {"domain": "a.example.com", "customer_id": "c", "added_later": {"x": [1]}}
    event = only(decode_message(raw(data=data, traceparent="00-abc", extension=42),
                                STRUCTURED))
    assert isinstance(event, Event)
    assert event.data == DomainCreated(domain="a.example.com", customer_id="c")


def test_older_schema_version_and_foreign_schema_are_accepted() -> None:
    for schema in ("urn:tracking-domains:domain.created:0", "https://example.com/schema.json"):
        assert isinstance(only(decode_message(raw(dataschema=schema), STRUCTURED)), Event)


def test_encode_event_round_trips_every_type() -> None:
    samples: dict[str, dict[str, Any]] = {
        "domain.created": {"domain": "a.example.com", "customer_id": "c"},
        "domain.deleted": {"domain": "a.example.com", "customer_id": "c"},
        "domain.verified": {"domain": "a.example.com", "customer_id": "c",
                            "matched_by": "cname", "chain": ["a.example.com", "t.example"]},
        "domain.rejected": {"domain": "a.example.com", "customer_id": "c", "code": "x",
                            "reason": "why"},
        "domain.lapsed": {"domain": "a.example.com", "customer_id": "c", "code": "x",
                          "reason": "why"},
        "certificate.issued": {"domain": "a.example.com", "customer_id": "c",
                               "not_before": WHEN, "not_after": WHEN, "serial": "0a"},
        "certificate.failed": {"domain": "a.example.com", "customer_id": "c", "code": "x",
                               "reason": "why"},
        "certificate.expiring": {"domain": "a.example.com", "customer_id": "c",
                                 "not_after": WHEN, "reason": "why"},
        "domain.listed": {"domain": "a.example.com", "customer_id": "c",
                          "blocklist": "dbl", "zone": "dbl.spamhaus.org",
                          "listed_name": "a.example.com", "categories": ["phishing"],
                          "fix_url": "https://check.spamhaus.org/"},
        "domain.delisted": {"domain": "t.example", "customer_id": "c",
                            "blocklist": "surbl", "zone": "multi.surbl.org",
                            "listed_name": "t.example", "listed_since": WHEN},
        "certificate.installed": {"edge_id": "edge-b", "domain": "a.example.com",
                                  "customer_id": "c", "serial": "0a"},
        "click.tracked": click(ip="203.0.113.1", user_agent="UA", bot=True,
                               bot_reason="head-request", method="HEAD",
                               reasons=["head-request", "soon-after-send"]),
        "click.classified": {"event_id": "e1", "customer_id": "c", "campaign_id": "k",
                             "recipient_id": "r", "clicked_at": WHEN, "bot": True,
                             "reasons": ["burst", "soon-after-send"]},
        "destination.listed": {"customer_id": "c", "campaign_id": "k",
                               "destination": "bad.example", "blocklist": "dbl",
                               "categories": ["phishing"],
                               "fix_url": "https://check.spamhaus.org/"},
    }
    for name, cls in EVENT_TYPES.items():
        fields = samples.get(name)
        assert fields is not None, f"add a sample for {name}"
        data = cls(**fields)
        body = encode_event(data, source="/test", event_id=f"id-{name}", time=WHEN)
        envelope_json = json.loads(body)
        assert envelope_json["type"] == name
        assert envelope_json["dataschema"] == schema_of(cls) == f"urn:tracking-domains:{name}:1"
        assert envelope_json["datacontenttype"] == "application/json"
        assert envelope_json["time"] == "2026-03-01T12:00:00Z"
        event = only(decode_message(body, STRUCTURED))
        assert isinstance(event, Event), event
        assert event.data == data
        assert event.id == f"id-{name}"


def test_encode_event_defaults_id_and_time() -> None:
    one = json.loads(encode_event(DomainCreated(domain="a.b", customer_id="c"), source="/s"))
    two = json.loads(encode_event(DomainCreated(domain="a.b", customer_id="c"), source="/s"))
    assert one["id"] != two["id"]
    assert datetime.fromisoformat(one["time"]).utcoffset() == timedelta(0)


def test_defaults_of_optional_data_fields() -> None:
    event = only(decode_message(raw(type="click.tracked", dataschema=..., data=click()),
                                STRUCTURED))
    assert event.data == ClickTracked(**click())
    assert (event.data.ip, event.data.user_agent, event.data.method, event.data.bot,
            event.data.bot_reason) == (None, None, "GET", False, None)
    verified = only(decode_message(raw(type="domain.verified", dataschema=..., data={
        "domain": "a.b", "customer_id": "c", "matched_by": "address"}), STRUCTURED))
    assert verified.data == DomainVerified(domain="a.b", customer_id="c", matched_by="address")


def test_datetimes_in_data_are_typed() -> None:
    data = {"domain": "a.b", "customer_id": "c", "not_before": "2026-03-01T12:00:00Z",
            "not_after": "2026-05-30T12:00:00+02:00", "serial": "01"}
    event = only(decode_message(raw(type="certificate.issued", dataschema=..., data=data),
                                STRUCTURED))
    assert isinstance(event.data, CertificateIssued)
    assert event.data.not_after.tzinfo is not None


# --- invalid --------------------------------------------------------------------------------

@pytest.mark.parametrize("missing", ["specversion", "id", "source", "type"])
def test_missing_required_attribute(missing: str) -> None:
    assert "not a CloudEvent" in invalid_reason(raw(**{missing: ...}))


def test_missing_time() -> None:
    assert "time is required" in invalid_reason(raw(time=...))


def test_null_time() -> None:
    assert "time is required" in invalid_reason(raw(time=None))


def test_missing_data() -> None:
    assert "data is required" in invalid_reason(raw(data=...))


def test_null_data() -> None:
    assert "invalid domain.created data" in invalid_reason(raw(data=None))


@pytest.mark.parametrize("version", ["0.3", "1", "2.0", ""])
def test_wrong_specversion(version: str) -> None:
    assert "specversion" in invalid_reason(raw(specversion=version))


def test_specversion_must_be_a_string() -> None:
    assert "not a CloudEvent" in invalid_reason(raw(specversion=1.0))


@pytest.mark.parametrize("time", ["2026-03-01T12:00:00", "2026-03-01 12:00:00"])
def test_naive_time_is_refused(time: str) -> None:
    assert "UTC offset" in invalid_reason(raw(time=time))


@pytest.mark.parametrize("time", ["yesterday", "2026-03-01", "1700000000", "2026-13-01T00:00Z"])
def test_unparseable_time(time: str) -> None:
    assert "not a CloudEvent" in invalid_reason(raw(time=time))


def test_unknown_type() -> None:
    assert "unknown event type 'domain.exploded'" in invalid_reason(raw(type="domain.exploded"))


def test_newer_schema_version_is_refused() -> None:
    reason = invalid_reason(raw(dataschema="urn:tracking-domains:domain.created:2"))
    assert "newer" in reason
    assert "upgrade the consumer" in reason


@pytest.mark.parametrize("schema", ["urn:tracking-domains:domain.created:",
                                    "urn:tracking-domains:domain.created:1.1",
                                    "urn:tracking-domains:domain.created:v1"])
def test_schema_version_must_be_a_number(schema: str) -> None:
    assert "no numeric version" in invalid_reason(raw(dataschema=schema))


@pytest.mark.parametrize("version", ["\u00b2", "\u2460", "\u00b9"])
def test_odd_unicode_digits_in_schema_version_do_not_crash(version: str) -> None:
    body = raw(dataschema=f"urn:tracking-domains:domain.created:{version}")
    item = only(decode_message(body, STRUCTURED))
    assert isinstance(item, InvalidEvent)


@pytest.mark.parametrize("body", [b"", b"not json", b"{", b"\xff\xfe"])
def test_not_json(body: bytes) -> None:
    assert "not JSON" in invalid_reason(body)


def test_trailing_garbage_after_a_valid_event() -> None:
    assert "not JSON" in invalid_reason(raw() + b" garbage")


@pytest.mark.parametrize("body", [b"[]", b"42", b'"text"', b"null", b"[1,2]"])
def test_json_that_is_not_an_object(body: bytes) -> None:
    assert "not a CloudEvent" in invalid_reason(body)


def test_unknown_content_type() -> None:
    reason = invalid_reason(raw(), "text/plain")
    assert "text/plain" in reason


@pytest.mark.parametrize("body", [b"{}", b'{"a": 1}', b"42", b"not json", b""])
def test_batch_that_is_not_an_array(body: bytes) -> None:
    assert "batch is not a JSON array" in invalid_reason(body, BATCH)


def test_bad_element_in_a_batch_leaves_the_good_ones_valid() -> None:
    good = [raw(id="good-1"), raw(id="good-2")]
    bad = [raw(type="nope"), b'{"specversion":"1.0"}', raw(time="2026-03-01T12:00:00"), b"42"]
    body = encode_batch([good[0], *bad, good[1]])
    decoded = decode_message(body, BATCH)
    assert len(decoded) == 6
    assert [e.id for e in decoded if isinstance(e, Event)] == ["good-1", "good-2"]
    invalid = [e for e in decoded if isinstance(e, InvalidEvent)]
    assert [e.raw for e in invalid] == bad  # each bad element keeps its own bytes


def test_invalid_data_is_refused() -> None:
    reason = invalid_reason(raw(data={"domain": "a.b"}))
    assert "invalid domain.created data" in reason
    assert "customer_id" in reason
    assert "invalid" in invalid_reason(raw(data={"domain": 42, "customer_id": "c"}))
    assert "invalid" in invalid_reason(raw(data=["a.b", "c"]))


# --- field limits ---------------------------------------------------------------------------

@pytest.mark.parametrize(("length", "ok"), [(1, True), (256, True), (0, False), (257, False)])
def test_envelope_id_length(length: int, ok: bool) -> None:
    item = only(decode_message(raw(id="i" * length), STRUCTURED))
    assert isinstance(item, Event) is ok


@pytest.mark.parametrize(("field", "limit", "minimum"), [
    ("customer_id", 256, 1), ("campaign_id", 256, 1), ("recipient_id", 256, 1),
    ("domain", 253, 1), ("url", 8192, 1), ("ip", 45, 0), ("user_agent", 4096, 0),
    ("method", 8, 1), ("bot_reason", 100, 0),
])
def test_click_field_limits(field: str, limit: int, minimum: int) -> None:
    def decoded(value: str) -> Any:
        body = raw(type="click.tracked", dataschema=..., data=click(**{field: value}))
        return only(decode_message(body, STRUCTURED))

    assert isinstance(decoded("é" * limit), Event)
    assert isinstance(decoded("x" * (limit + 1)), InvalidEvent)
    if minimum:
        assert isinstance(decoded(""), InvalidEvent)
    else:
        assert isinstance(decoded(""), Event)


@pytest.mark.parametrize("name", ["domain.rejected", "domain.lapsed", "certificate.failed"])
def test_reason_limit(name: str) -> None:
    def decoded(reason: str) -> Any:
        data = {"domain": "a.b", "customer_id": "c", "code": "x", "reason": reason}
        return only(decode_message(raw(type=name, dataschema=..., data=data), STRUCTURED))

    assert isinstance(decoded("r" * 2000), Event)
    assert isinstance(decoded("r" * 2001), InvalidEvent)


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_every_type_needs_a_customer_id(name: str) -> None:
    fields = {f.name for f in msgspec.structs.fields(EVENT_TYPES[name]) if f.required}
    assert "customer_id" in fields
    data = {f: "x" for f in fields if f != "customer_id"}
    item = decode_event(raw(type=name, dataschema=..., data=data))
    assert isinstance(item, InvalidEvent)


def test_events_are_immutable() -> None:
    data = DomainCreated(domain="a.b", customer_id="c")
    with pytest.raises(AttributeError):
        data.domain = "x.y"  # type: ignore[misc]  # what the test is about: it is read-only


def test_non_utc_offsets_are_allowed() -> None:
    item = only(decode_message(raw(time="2026-03-01T07:00:00-05:00"), STRUCTURED))
    assert item.time.tzinfo is not None
    assert item.time.astimezone(UTC) == WHEN
    assert item.time.utcoffset() == timezone(timedelta(hours=-5)).utcoffset(None)


# --- NUL ------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["id", "source", "data"])
def test_nul_anywhere_is_refused(where: str) -> None:
    cases: dict[str, dict[str, Any]] = {
        "id": {"id": "a\x00b"}, "source": {"source": "/x\x00"},
        "data": {"data": {"domain": "a.b", "customer_id": "c\x00"}},
    }
    changes = cases[where]
    assert "NUL" in invalid_reason(raw(**changes))


def test_nul_in_a_click_is_refused() -> None:
    body = encode_event(ClickTracked(**click(user_agent="Mozilla\x00")), source="/r")
    assert isinstance(only(decode_message(body, STRUCTURED)), InvalidEvent)


def test_literal_backslash_u0000_text_is_not_nul() -> None:
    data = ClickTracked(**click(user_agent="Mozilla/5.0 \\u0000",
                                url="https://example.com/?q=\\u0000"))
    body = encode_event(data, source="/r")
    event = only(decode_message(body, STRUCTURED))
    assert isinstance(event, Event), getattr(event, "reason", None)
    assert event.data == data


# --- batches decoded whole ------------------------------------------------------------------

_ELEMENTS = [
    raw(), raw(id="evt-2", unknown_field=1), raw(specversion="0.3"), raw(id=""),
    raw(id="x" * 257), raw(time=...), raw(time=None), raw(time="2026-03-01T12:00:00"),
    raw(time="0001-01-01T00:00:00+01:00"), raw(time="yesterday"), raw(type="domain.exploded"),
    raw(dataschema="urn:tracking-domains:domain.created:2"),
    raw(dataschema="urn:tracking-domains:domain.created:v1"), raw(dataschema="urn:other:x"),
    raw(dataschema=None), raw(data=...), raw(data=None), raw(data={"domain": "a.b"}),
    raw(source=...), raw(source=1), raw(data={"domain": "a.b", "customer_id": "c\x00"}),
    raw(type="domain.verified", dataschema="urn:tracking-domains:domain.verified:1",
        data={"domain": "a.b", "customer_id": "c", "cname_target": "t.example"}),
    encode_event(ClickTracked(**click()), source="/r"), b"42", b"[]", b"null",
]


@pytest.mark.parametrize("element", _ELEMENTS)
def test_a_batch_decodes_each_element_as_it_would_alone(element: bytes) -> None:
    # Well-formed batches are decoded in one call; every element must still come out
    # exactly as `decode_event` makes it, valid or not, with the same reason.
    good = raw(id="good")
    decoded = decode_message(encode_batch([good, element, good]), BATCH)
    assert decoded == [decode_event(good), decode_event(element), decode_event(good)]


def test_a_well_formed_batch_is_decoded_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    elements = [raw(id=f"e{n}") for n in range(3)] + [raw(id="old", specversion="0.3")]
    expected = [decode_event(element) for element in elements]

    def not_per_element(raw: bytes) -> None:
        raise AssertionError("decoded element by element")

    monkeypatch.setattr(events_module, "decode_event", not_per_element)
    assert decode_message(encode_batch(elements), BATCH) == expected
