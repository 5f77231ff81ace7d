"""`trackctl dlq list|show|replay|purge SERVICE`: the dead-letter queues.

SERVICE is a consuming service (logger, verifier, certifier); its dead-letter queue
is `<AMQP_EXCHANGE>.<service>.dead`. Every message there was put there by
shared/broker/consumer.py, with why in its headers (`x-dead-reason`: malformed,
rejected or exhausted; `x-dead-error`; `x-attempt`; `x-original-routing-key`;
`x-dead-at`).

`list` and `show` read with basic.get and manual acks, and hand every message back
with basic.nack(requeue=True) when done: nothing is consumed (RabbitMQ may put the
returned messages in a different order). `replay` publishes each message again, with
publisher confirms, and acks it in the dead-letter queue only once the broker has
confirmed the copy: a failed publish leaves the message where it was.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from shared.broker.consumer import (
    ATTEMPT_HEADER,
    DEAD_AT_HEADER,
    ERROR_HEADER,
    LAST_ERROR_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
)
from shared.broker.names import BINDINGS
from shared.broker.topology import Topology
from shared.events import Event, InvalidEvent, decode_message
from shared.settings import BrokerSettings
from trackctl import connections
from trackctl.output import (
    FAILED,
    OK,
    USAGE,
    CliError,
    emit_json,
    fields,
    fmt_time,
    shorten,
    table,
)
from trackctl.settings import reader

# Headers that describe one trip to the dead-letter queue; dropped on replay so the
# replayed message starts afresh (attempt 1) and is not dead-lettered at once.
# `x-delivery-count` is the broker's (quorum queues) count of deliveries from the DLQ.
DEAD_HEADERS = (REASON_HEADER, ERROR_HEADER, DEAD_AT_HEADER, ATTEMPT_HEADER,
                LAST_ERROR_HEADER, "x-death", "x-delivery-count")
REPLAYED_AT_HEADER = "x-replayed-at"
REPLAYED_FROM_HEADER = "x-replayed-from"
GET_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message, described for people (pure: built from its parts)."""

    index: int
    message_id: str | None
    content_type: str | None
    reason: str | None
    error: str | None
    attempts: int | None
    routing_key: str | None
    original_queue: str | None
    dead_at: str | None
    event_ids: list[str]
    event_types: list[str]
    headers: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""

    def summary(self) -> dict[str, Any]:
        return {"index": self.index, "message_id": self.message_id, "reason": self.reason,
                "error": self.error, "attempts": self.attempts,
                "routing_key": self.routing_key, "original_queue": self.original_queue,
                "dead_at": self.dead_at, "event_ids": self.event_ids,
                "event_types": self.event_types}

    def full(self) -> dict[str, Any]:
        return {**self.summary(), "content_type": self.content_type,
                "headers": plain(self.headers), "body": body_document(self.body)}


def queue_for(service: str, topology: Topology) -> str:
    """`logger` → `<exchange>.logger.dead`; anything else is a usage error."""
    if service not in BINDINGS:
        raise CliError(f"unknown queue {service!r}: give a service name, one of "
                       f"{', '.join(sorted(BINDINGS))}", USAGE)
    return topology.dead_queue(service)


def text_header(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def int_header(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = text_header(value)
    return int(text) if text is not None and text.isdigit() else None


def plain(value: Any) -> Any:
    """Header values as JSON-friendly values (bytes as text, nested tables too)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def describe(index: int, body: bytes, *, content_type: str | None,
             headers: Mapping[str, Any] | None, message_id: str | None) -> DeadLetter:
    headers = dict(headers or {})
    event_ids: list[str] = []
    event_types: list[str] = []
    for item in decode_message(body, content_type):
        if isinstance(item, Event):
            event_ids.append(item.id)
            event_types.append(item.type)
        elif isinstance(item, InvalidEvent):
            guessed = _guess_id_and_type(item.raw)
            if guessed[0]:
                event_ids.append(guessed[0])
            if guessed[1]:
                event_types.append(guessed[1])
    return DeadLetter(
        index=index, message_id=message_id, content_type=content_type,
        reason=text_header(headers.get(REASON_HEADER)),
        error=text_header(headers.get(ERROR_HEADER)),
        attempts=int_header(headers.get(ATTEMPT_HEADER)),
        routing_key=text_header(headers.get(ROUTING_KEY_HEADER)),
        original_queue=text_header(headers.get(QUEUE_HEADER)),
        dead_at=text_header(headers.get(DEAD_AT_HEADER)),
        event_ids=event_ids, event_types=event_types, headers=headers, body=body)


def _guess_id_and_type(raw: bytes) -> tuple[str | None, str | None]:
    """The `id` and `type` of something that did not decode as a CloudEvent, if JSON says."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    event_id, event_type = document.get("id"), document.get("type")
    return (event_id if isinstance(event_id, str) else None,
            event_type if isinstance(event_type, str) else None)


def short_time(text: str | None) -> str:
    """An ISO time header as `YYYY-MM-DD HH:MM:SSZ` (left as it is if it is not one)."""
    if not text:
        return "-"
    try:
        return fmt_time(datetime.fromisoformat(text))
    except ValueError:
        return shorten(text, 25)


def body_document(body: bytes) -> Any:
    """The body as JSON if it is JSON, else as text."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", "replace")


def replay_headers(headers: Mapping[str, Any], dead_queue: str, now: datetime
                   ) -> dict[str, Any]:
    """The headers a replayed copy carries: the trip's own headers dropped, the origin kept."""
    kept = {key: value for key, value in headers.items() if key not in DEAD_HEADERS}
    kept[REPLAYED_FROM_HEADER] = dead_queue
    kept[REPLAYED_AT_HEADER] = now.isoformat()
    return kept


def replay_routing_key(letter: DeadLetter) -> str | None:
    """Where `--via-exchange` sends a message: its original routing key, else its event
    type (routing keys are event types), else nowhere (it goes to the service queue)."""
    if letter.routing_key:
        return letter.routing_key
    if len(set(letter.event_types)) == 1:
        return letter.event_types[0]
    return None


def matches(letter: DeadLetter, *, event_id: str | None, reason: str | None) -> bool:
    if event_id is not None and event_id not in letter.event_ids \
            and event_id != letter.message_id:
        return False
    return reason is None or letter.reason == reason


# --- reading without consuming ---------------------------------------------------------------

class Browser:
    """basic.get with manual acks; everything taken is handed back by `release()`."""

    def __init__(self, queue: aio_pika.abc.AbstractQueue) -> None:
        self._queue = queue
        self.held: list[AbstractIncomingMessage] = []

    async def next(self) -> AbstractIncomingMessage | None:
        message = await self._queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT_S)
        if message is not None:
            self.held.append(message)
        return message

    async def take(self, limit: int) -> list[AbstractIncomingMessage]:
        taken: list[AbstractIncomingMessage] = []
        while len(taken) < limit:
            message = await self.next()
            if message is None:
                break
            taken.append(message)
        return taken

    def forget(self, message: AbstractIncomingMessage) -> None:
        self.held.remove(message)

    async def release(self) -> None:
        """nack(requeue) every message still held (closing the channel would too)."""
        while self.held:
            message = self.held.pop()
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)


def letter_of(index: int, message: AbstractIncomingMessage) -> DeadLetter:
    return describe(index, message.body, content_type=message.content_type,
                    headers=message.headers, message_id=message.message_id)


# --- commands --------------------------------------------------------------------------------

async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be at least 1", USAGE)
    settings = BrokerSettings.read(reader(environ))
    topology = connections.topology(settings)
    dead = queue_for(args.queue, topology)
    async with connections.broker(environ) as (settings, connection, channel):
        queue, count = await connections.existing_queue(connection, channel, dead)
        browser = Browser(queue)
        try:
            if args.dlq_command == "list":
                return await list_(args, dead, count, browser)
            if args.dlq_command == "show":
                return await show(args, dead, count, browser)
            if args.dlq_command == "replay":
                exchange = await connections.existing_exchange(connection, channel, settings)
                return await replay(args, dead, count, browser, channel=channel,
                                    exchange=exchange,
                                    service_queue=topology.queue(args.queue))
            return await purge(args, dead, count, queue)
        finally:
            await browser.release()


async def list_(args: argparse.Namespace, dead: str, count: int, browser: Browser) -> int:
    limit = args.limit or 50
    letters = [letter_of(i, m) for i, m in enumerate(await browser.take(limit), start=1)]
    if args.json:
        emit_json({"queue": dead, "count": count, "messages": [x.summary() for x in letters]})
        return OK
    print(render_list(dead, count, letters))
    return OK


def render_list(dead: str, count: int, letters: Sequence[DeadLetter]) -> str:
    head = f"{dead}: {count} message{'s' if count != 1 else ''}"
    if not letters:
        return head
    if len(letters) < count:
        head += f" (showing {len(letters)}; use --limit)"
    rows = [(letter.index, short_time(letter.dead_at), letter.reason, letter.attempts,
             letter.routing_key, shorten(", ".join(letter.event_ids) or "-", 38),
             shorten(letter.error, 60)) for letter in letters]
    return head + "\n\n" + table(
        ("#", "dead at", "reason", "attempts", "routing key", "event ids", "error"), rows,
        right=("#", "attempts"))


async def show(args: argparse.Namespace, dead: str, count: int, browser: Browser) -> int:
    if (args.index is None) == (args.event_id is None):
        raise CliError("give exactly one of --index N (as `dlq list` numbers them) or "
                       "--event-id ID", USAGE)
    found: DeadLetter | None = None
    position = 0
    while found is None:
        message = await browser.next()
        if message is None:
            break
        position += 1
        letter = letter_of(position, message)
        if (args.index is not None and position == args.index) or (
                args.event_id is not None
                and matches(letter, event_id=args.event_id, reason=None)):
            found = letter
    if found is None:
        what = f"no message #{args.index}" if args.index is not None \
            else f"no message with event id {args.event_id}"
        raise CliError(f"{what} in {dead} ({count} message{'s' if count != 1 else ''})")
    if args.json:
        emit_json({"queue": dead, **found.full()})
        return OK
    print(render_show(found))
    return OK


def render_show(letter: DeadLetter) -> str:
    pairs: list[tuple[str, object]] = [
        ("message", f"#{letter.index} (message id {letter.message_id})"),
        ("reason", letter.reason), ("error", letter.error), ("attempts", letter.attempts),
        ("routing key", letter.routing_key), ("original queue", letter.original_queue),
        ("dead at", letter.dead_at), ("content type", letter.content_type),
        ("event ids", ", ".join(letter.event_ids) or "-"),
        ("event types", ", ".join(letter.event_types) or "-"),
    ]
    header_lines = "\n".join(f"  {key}: {plain(value)}"
                             for key, value in sorted(letter.headers.items()))
    body = body_document(letter.body)
    body_text = body if isinstance(body, str) else json.dumps(body, indent=2,
                                                              ensure_ascii=False)
    return (fields(pairs) + "\n\nheaders:\n" + (header_lines or "  (none)")
            + "\n\nbody:\n" + body_text)


async def replay(args: argparse.Namespace, dead: str, count: int, browser: Browser, *,
                 channel: AbstractChannel, exchange: AbstractExchange,
                 service_queue: str) -> int:
    """Republish up to --limit of the messages that were there when it started (so a
    message that fails again and comes back is not replayed twice in one run)."""
    limit = args.limit or count
    replayed: list[dict[str, Any]] = []
    seen = 0
    error: str | None = None
    while len(replayed) < limit and seen < count:
        message = await browser.next()
        if message is None:
            break
        seen += 1
        letter = letter_of(seen, message)
        if not matches(letter, event_id=args.event_id, reason=args.reason):
            continue  # held, handed back at the end
        key = replay_routing_key(letter) if args.via_exchange else None
        copy = aio_pika.Message(
            message.body, content_type=message.content_type or None,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            headers=replay_headers(message.headers or {}, dead, datetime.now(UTC)))
        try:
            if key is not None:
                await exchange.publish(copy, routing_key=key, mandatory=True, timeout=15)
            else:
                await channel.default_exchange.publish(copy, routing_key=service_queue,
                                                       mandatory=True, timeout=15)
        except (aio_pika.exceptions.AMQPError, TimeoutError) as exc:
            error = (f"publishing message #{seen} ({', '.join(letter.event_ids) or 'no id'}) "
                     f"to {key or service_queue} failed: {str(exc) or type(exc).__name__}; "
                     "it stays in the dead-letter queue")
            break
        await message.ack()
        browser.forget(message)
        replayed.append({**letter.summary(),
                         "to": f"exchange {exchange.name} key {key}" if key is not None
                         else f"queue {service_queue}"})
    if args.json:
        emit_json({"queue": dead, "replayed": replayed, "error": error})
    else:
        for item in replayed:
            print(f"replayed #{item['index']} ({', '.join(item['event_ids']) or 'no id'}; "
                  f"{item['reason']}) to {item['to']}")
        print(f"{len(replayed)} message{'s' if len(replayed) != 1 else ''} replayed from "
              f"{dead}")
    if error is not None:
        raise CliError(error, FAILED)
    if args.event_id is not None and not replayed:
        raise CliError(f"no message with event id {args.event_id} in {dead}", FAILED)
    return OK


async def purge(args: argparse.Namespace, dead: str, count: int,
                queue: aio_pika.abc.AbstractQueue) -> int:
    if not args.yes:
        raise CliError(f"this deletes the {count} message{'s' if count != 1 else ''} in "
                       f"{dead} for good; pass --yes to do it (`trackctl dlq list "
                       f"{args.queue}` shows them first)", USAGE)
    result = await queue.purge()
    purged = getattr(result, "message_count", count)
    if args.json:
        emit_json({"queue": dead, "purged": purged})
    else:
        print(f"purged {purged} message{'s' if purged != 1 else ''} from {dead}")
    return OK
