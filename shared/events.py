"""The event contract: CloudEvents 1.0 envelopes around typed, versioned, past-tense data.

Every message on the broker is a CloudEvent in structured JSON mode
(`application/cloudevents+json`) or a JSON array of them in batched mode
(`application/cloudevents-batch+json`); the routing key is the event's `type`.
Each type's `data` is a `msgspec.Struct` below. Unknown fields, in the envelope
or in `data`, are ignored so producers can add fields without breaking consumers.
`dataschema` names the data's schema version (`urn:tracking-domains:<type>:<n>`);
a consumer refuses a major version newer than it knows, as permanent.

docs/events.md documents each type for the upstream platform.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, TypeVar, Union

import msgspec

SPEC_VERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
SCHEMA_PREFIX = "urn:tracking-domains:"
MAX_ID_LENGTH = 256

# Field constraints, checked when decoding, so a stored row never fails on a length.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
DomainName = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
Reason = Annotated[str, msgspec.Meta(max_length=2000)]
BotReason = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class EventData(msgspec.Struct, kw_only=True, frozen=True):
    """Base of every event's `data`. `TYPE` is the CloudEvents type and routing key."""

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1


# --- events in from the upstream platform --------------------------------------------------

class DomainCreated(EventData, frozen=True):
    """A customer asked for a tracking domain; verification should start."""

    TYPE: ClassVar[str] = "domain.created"
    domain: DomainName
    customer_id: Id


class DomainDeleted(EventData, frozen=True):
    """A customer gave up a tracking domain; stop serving and renewing it."""

    TYPE: ClassVar[str] = "domain.deleted"
    domain: DomainName
    customer_id: Id


# --- events out from our services ----------------------------------------------------------

class DomainVerified(EventData, frozen=True):
    """DNS leads the domain to the platform host."""

    TYPE: ClassVar[str] = "domain.verified"
    domain: DomainName
    customer_id: Id
    matched_by: str  # "cname" or "address" (CNAME flattening)
    chain: list[str] = msgspec.field(default_factory=list)
    # Added in version 1 (optional, so older producers and consumers are unaffected).
    # The Public Suffix List's registered domain of `domain` (what SURBL/URIBL list).
    registered_domain: DomainName | None = None
    # Set when another customer's tracking domain or the platform host shares it.
    isolation_warning: Reason | None = None


class DomainRejected(EventData, frozen=True):
    """The domain cannot be used; `reason` tells the customer what to fix."""

    TYPE: ClassVar[str] = "domain.rejected"
    domain: DomainName
    customer_id: Id
    code: str
    reason: Reason


class DomainLapsed(EventData, frozen=True):
    """An active domain's DNS no longer leads to the platform host; links fall back."""

    TYPE: ClassVar[str] = "domain.lapsed"
    domain: DomainName
    customer_id: Id
    code: str
    reason: Reason


class CertificateIssued(EventData, frozen=True):
    """A certificate for the domain is on disk and being served."""

    TYPE: ClassVar[str] = "certificate.issued"
    domain: DomainName
    customer_id: Id
    not_before: datetime
    not_after: datetime
    serial: str


class CertificateFailed(EventData, frozen=True):
    """No certificate could be obtained; `reason` says why and what to do."""

    TYPE: ClassVar[str] = "certificate.failed"
    domain: DomainName
    customer_id: Id
    code: str
    reason: Reason


class CertificateExpiring(EventData, frozen=True):
    """A certificate could not be renewed and expires soon; someone must act."""

    TYPE: ClassVar[str] = "certificate.expiring"
    domain: DomainName
    customer_id: Id
    not_after: datetime
    reason: Reason


ListKind = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]


class DomainListed(EventData, frozen=True):
    """A DNS blocklist lists a customer's tracking domain that it did not list before."""

    TYPE: ClassVar[str] = "domain.listed"
    domain: DomainName
    customer_id: Id
    blocklist: ListKind  # dbl, surbl or uribl
    zone: DomainName  # the zone asked, a Spamhaus DQS key masked
    # What the list was asked about: the host for DBL, the registered domain for SURBL/URIBL.
    listed_name: DomainName
    fix_url: Url  # where the list explains the listing and takes removal requests
    categories: list[str] = msgspec.field(default_factory=list)


class DomainDelisted(EventData, frozen=True):
    """A DNS blocklist no longer lists a customer's tracking domain that it listed."""

    TYPE: ClassVar[str] = "domain.delisted"
    domain: DomainName
    customer_id: Id
    blocklist: ListKind
    zone: DomainName
    listed_name: DomainName
    listed_since: datetime | None = None


class CertificateInstalled(EventData, frozen=True):
    """One edge serves the certificate: its nginx presented this serial in a handshake."""

    TYPE: ClassVar[str] = "certificate.installed"
    edge_id: Id
    domain: DomainName
    customer_id: Id
    serial: str


class ClickTracked(EventData, frozen=True):
    """A recipient (or a link scanner, flagged as a bot) followed a tracking link."""

    TYPE: ClassVar[str] = "click.tracked"
    customer_id: Id
    campaign_id: Id
    recipient_id: Id
    domain: DomainName
    url: Url
    ip: Annotated[str, msgspec.Meta(max_length=45)] | None = None
    user_agent: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    method: Annotated[str, msgspec.Meta(min_length=1, max_length=8)] = "GET"
    bot: bool = False
    # The first of `reasons` when `bot`: kept for consumers older than `reasons`.
    bot_reason: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    # Added in version 1 (optional): every reason the click looks automated, strongest
    # first, even when they do not make it a bot (docs/classification.md).
    reasons: Annotated[list[BotReason], msgspec.Meta(max_length=32)] = msgspec.field(
        default_factory=list)


class ClickClassified(EventData, frozen=True):
    """A click's verdict changed after the fact, from what several clicks showed.

    `event_id` is the `click.tracked` event's id; `reasons` are all the click's reasons
    now (the ones it was tracked with included), `bot` the verdict they make.
    """

    TYPE: ClassVar[str] = "click.classified"
    event_id: Id
    customer_id: Id
    campaign_id: Id
    recipient_id: Id
    clicked_at: datetime  # the click.tracked event's time: where the row is
    bot: bool
    reasons: Annotated[list[BotReason], msgspec.Meta(max_length=32)]


class DestinationListed(EventData, frozen=True):
    """A customer's links lead to a destination a blocklist lists: the warning comes
    before the customer's own tracking domain is listed for it. Once per customer,
    destination and list."""

    TYPE: ClassVar[str] = "destination.listed"
    customer_id: Id
    # The campaign of the click that revealed it (later campaigns are not reported again).
    campaign_id: Id
    # The registered domain the clicked links lead to, in A-label form.
    destination: DomainName
    blocklist: ListKind  # dbl
    fix_url: Url  # where the list explains the listing and takes removal requests
    categories: list[str] = msgspec.field(default_factory=list)



class ClickDestination(msgspec.Struct, frozen=True):
    """The three fields of a `click.tracked` the verifier's destination watch reads: a
    view for `decode_click_destinations`, never published."""

    customer_id: str
    campaign_id: str
    url: str


class ClickDestinations(EventData, frozen=True):
    """One whole message of clicks as the destination watch reads it (not a type of its
    own on the broker: its TYPE is `click.tracked`, and it is not in EVENT_TYPES)."""

    TYPE: ClassVar[str] = "click.tracked"
    clicks: list[ClickDestination]


class ClickSeenData(msgspec.Struct, frozen=True, gc=False):
    """The fields of a `click.tracked`'s data the classifier reads (a view, never
    published). gc=False: the classifier holds a minute of clicks, and the collector
    walking them on every collection cost more than the classifying (docs/performance.md)."""

    customer_id: str
    campaign_id: str
    recipient_id: str
    url: str
    bot: bool = False
    bot_reason: str | None = None
    reasons: tuple[str, ...] = ()


class ClickSeen(msgspec.Struct, frozen=True, gc=False):
    """One `click.tracked` as the classifier reads it: its id, time and `ClickSeenData`."""

    type: str
    id: str
    time: datetime
    data: ClickSeenData


class ClicksSeen(EventData, frozen=True):
    """One whole message of clicks as the classifier reads it (like `ClickDestinations`:
    its TYPE is `click.tracked`, and it is not in EVENT_TYPES)."""

    TYPE: ClassVar[str] = "click.tracked"
    clicks: list[ClickSeen]


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.TYPE: cls
    for cls in (DomainCreated, DomainDeleted, DomainVerified, DomainRejected, DomainLapsed,
                CertificateIssued, CertificateFailed, CertificateExpiring, CertificateInstalled,
                DomainListed, DomainDelisted, ClickTracked, DestinationListed, ClickClassified)
}

D = TypeVar("D", bound=EventData)


class Event(msgspec.Struct, Generic[D], frozen=True):
    """A decoded CloudEvent with typed data. `raw` is the event's own JSON, for dead letters.

    A Struct, not a frozen dataclass: the logger makes one per click, and a frozen
    dataclass's `__init__` was a large part of the time it spent decoding
    (docs/performance.md).
    """

    id: str
    type: str
    source: str
    time: datetime
    data: D
    raw: bytes


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """An element of a message that could not be decoded, with the reason and its bytes."""

    reason: str
    raw: bytes


class _Envelope(msgspec.Struct):
    specversion: str
    id: str
    source: str
    type: str
    time: datetime | None = None
    dataschema: str | None = None
    data: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b""))


class _OutEnvelope(msgspec.Struct, omit_defaults=True):
    specversion: str
    id: str
    source: str
    type: str
    time: datetime
    datacontenttype: str
    dataschema: str
    data: Any


# \u0000 preceded by an even number of backslashes is a NUL; after an odd number it
# is the literal text "\u0000".
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_batch_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_data_decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}


def _typed_envelope(cls: type[EventData]) -> type[msgspec.Struct]:
    """`_Envelope` with `data` typed as `cls`, told apart by `type`: for `_typed_batch`."""
    return msgspec.defstruct(
        f"_{cls.__name__}Envelope",
        [("specversion", str), ("id", str), ("source", str),
         ("time", datetime | None, None), ("dataschema", str | None, None), ("data", cls)],
        tag_field="type", tag=cls.TYPE, kw_only=True)


# A whole well-formed batch decodes in one call (decoding its clicks one by one was much of
# the logger's CPU: docs/performance.md); any problem falls back to `decode_event` per element,
# which gives each bad one its reason.
# The union is built at run time from EVENT_TYPES, which no type checker can follow.
_typed_batch = msgspec.json.Decoder(list[Union[tuple(  # type: ignore[misc]  # noqa: UP007
    _typed_envelope(cls) for cls in EVENT_TYPES.values())]])


def schema_of(cls: type[EventData]) -> str:
    return f"{SCHEMA_PREFIX}{cls.TYPE}:{cls.VERSION}"


def new_event_id() -> str:
    return str(uuid.uuid4())


def encode_event(data: EventData, *, source: str, event_id: str | None = None,
                 time: datetime | None = None) -> bytes:
    """One CloudEvent (structured mode) as JSON bytes."""
    return _encoder.encode(_OutEnvelope(
        specversion=SPEC_VERSION,
        id=event_id or new_event_id(),
        source=source,
        type=data.TYPE,
        time=time or datetime.now(UTC),
        datacontenttype="application/json",
        dataschema=schema_of(type(data)),
        data=data,
    ))


def encode_batch(events: Iterable[bytes]) -> bytes:
    """Join already-encoded events into one batched-mode body without re-encoding them."""
    return b"[" + b",".join(events) + b"]"


def decode_message(body: bytes, content_type: str | None) -> list[Event[Any] | InvalidEvent]:
    """Decode a message body in structured or batched mode into events and invalid elements.

    Never raises: every problem becomes an `InvalidEvent` carrying its reason, so
    the consumer can dead-letter exactly the bad parts and keep the good ones.
    """
    mode = (content_type or "").split(";", 1)[0].strip().lower()
    if mode == BATCH:
        try:
            elements = _batch_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return [InvalidEvent(f"batch is not a JSON array: {exc}", body)]
        if b"\\u0000" not in body:
            try:
                typed = _typed_batch.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
            else:
                return [_checked(envelope, bytes(element))
                        for envelope, element in zip(typed, elements, strict=True)]
        return [decode_event(bytes(element)) for element in elements]
    if mode in (STRUCTURED, "application/json", ""):
        return [decode_event(body)]
    return [InvalidEvent(
        f"content type {content_type!r} is neither {STRUCTURED} nor {BATCH}", body)]


def decode_event(raw: bytes) -> Event[Any] | InvalidEvent:
    """Decode one structured-mode CloudEvent; see `decode_message`."""
    if b"\\u0000" in raw and _NUL_ESCAPE.search(raw):
        # Valid JSON, but no text column (PostgreSQL's above all) can store it.
        return InvalidEvent("a string contains the NUL character (\\u0000)", raw)
    try:
        envelope = _envelope_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return InvalidEvent(f"not a CloudEvent: {exc}", raw)
    except msgspec.DecodeError as exc:
        return InvalidEvent(f"not JSON: {exc}", raw)
    time = _checked_time(envelope)
    if isinstance(time, str):
        return InvalidEvent(time, raw)
    cls = EVENT_TYPES.get(envelope.type)
    if cls is None:
        return InvalidEvent(f"unknown event type {envelope.type!r}", raw)
    if envelope.dataschema is not None:
        problem = _check_schema(envelope.dataschema, cls)
        if problem:
            return InvalidEvent(problem, raw)
    if not envelope.data:
        return InvalidEvent("data is required", raw)
    try:
        data = _data_decoders[envelope.type].decode(envelope.data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return InvalidEvent(f"invalid {envelope.type} data: {exc}", raw)
    return Event(id=envelope.id, type=envelope.type, source=envelope.source,
                 time=time, data=data, raw=raw)


def _checked(envelope: Any, raw: bytes) -> Event[Any] | InvalidEvent:
    """An element of `_typed_batch`, held to the same rules as `decode_event`."""
    cls: type[EventData] = type(envelope.data)
    time = _checked_time(envelope)
    if isinstance(time, str):
        return InvalidEvent(time, raw)
    if envelope.dataschema is not None:
        problem = _check_schema(envelope.dataschema, cls)
        if problem:
            return InvalidEvent(problem, raw)
    return Event(id=envelope.id, type=cls.TYPE, source=envelope.source, time=time,
                 data=envelope.data, raw=raw)


def _checked_time(envelope: Any) -> datetime | str:
    """The envelope's time if its specversion, id and time hold, else what is wrong.

    One value rather than a problem-or-None, so callers get a time known not to be None.
    """
    if envelope.specversion != SPEC_VERSION:
        return f"specversion {envelope.specversion!r} is not {SPEC_VERSION}"
    if not envelope.id or len(envelope.id) > MAX_ID_LENGTH:
        return "id must be a non-empty string of at most 256 characters"
    time = envelope.time
    if time is None:
        return "time is required"
    if time.tzinfo is None:
        return "time must carry a UTC offset (RFC 3339)"
    try:
        time.astimezone(UTC)
    except OverflowError:
        return "time is outside years 1-9999 once converted to UTC"
    return time


@functools.lru_cache(maxsize=256)  # every event of a batch carries the same one
def _check_schema(dataschema: str, cls: type[EventData]) -> str | None:
    prefix = f"{SCHEMA_PREFIX}{cls.TYPE}:"
    if not dataschema.startswith(prefix):
        # Someone else's schema URI: tolerated, the data is still validated.
        return None
    version = dataschema[len(prefix):]
    if not (version.isascii() and version.isdigit()):
        return f"dataschema {dataschema!r} has no numeric version"
    if int(version) > cls.VERSION:
        return (f"{cls.TYPE} schema version {version} is newer than this service "
                f"understands ({cls.VERSION}); upgrade the consumer")
    return None


class _ClickView(msgspec.Struct):
    type: str
    data: ClickDestination


_click_views = msgspec.json.Decoder(list[_ClickView])
_click_view = msgspec.json.Decoder(_ClickView)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _views(body: bytes, many: msgspec.json.Decoder[Any],
           one: msgspec.json.Decoder[Any]) -> list[Any]:
    """The elements of a click message (batched or structured; the body tells, whatever
    its content type says, as a retried message is republished as it came) decoded by a
    view's decoders in one pass; elements that do not decode are skipped."""
    text = body.lstrip()
    try:
        return many.decode(body) if text.startswith(b"[") else [one.decode(body)]
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    try:
        raws = _batch_decoder.decode(body) if text.startswith(b"[") else [body]
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []
    elements = []
    for raw in raws:
        try:
            elements.append(one.decode(raw))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return elements


def decode_click_destinations(body: bytes, content_type: str | None,
                              ) -> list[Event[Any] | InvalidEvent]:
    """A click message as one `ClickDestinations` event whose `raw` is the whole body.

    Only customer, campaign and URL are decoded, in one pass: the full decoding of
    `decode_message` cost the watch several times more CPU per click than everything
    else it does (docs/performance.md). Elements that are not clicks are skipped, not
    dead-lettered: the logger, which reads every click too, dead-letters them.
    """
    del content_type
    clicks = [view.data for view in _views(body, _click_views, _click_view)
              if view.type == ClickTracked.TYPE]
    if not clicks:
        return []
    return [Event(id=f"message-of-{len(clicks)}-clicks", type=ClickTracked.TYPE, source="",
                  time=_EPOCH, data=ClickDestinations(clicks=clicks), raw=body)]


_seen_many = msgspec.json.Decoder(list[ClickSeen])
_seen_one = msgspec.json.Decoder(ClickSeen)


def decode_clicks_seen(body: bytes, content_type: str | None,
                       ) -> list[Event[Any] | InvalidEvent]:
    """A click message as one `ClicksSeen` event whose `raw` is the whole body: what the
    classifier needs of each click, in one pass (the full `decode_message` and its
    `Event` per click were a third of the classifier's CPU). Like the destination watch,
    it skips what is not a click; the logger dead-letters it."""
    del content_type
    clicks = [view for view in _views(body, _seen_many, _seen_one)
              if view.type == ClickTracked.TYPE]
    if not clicks:
        return []
    return [Event(id=f"message-of-{len(clicks)}-clicks", type=ClickTracked.TYPE, source="",
                  time=_EPOCH, data=ClicksSeen(clicks=clicks), raw=body)]
