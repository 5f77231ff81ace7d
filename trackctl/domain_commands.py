"""`trackctl domain add|list|show|recheck|delete`.

`add` and `delete` publish `domain.created` / `domain.deleted` exactly as the upstream
platform does (a CloudEvent on the deployment's exchange, with publisher confirms);
the verifier and certifier do the rest. `list` and `show` read `tracking_domains`
(and `acme_events`). `recheck` publishes `domain.created` again; what that makes the
verifier do depends on the row's status (see `recheck_plan` and docs/trackctl.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aio_pika
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.broker.publisher import Publisher
from shared.db.models import AcmeEvent, EdgeCertificate, TrackingDomain
from shared.domain_status import DomainStatus
from shared.domain_status import is_tombstone as status_is_tombstone
from shared.domains import (
    InvalidDomain,
    normalise_domain,
    platform_host_of,
)
from shared.errors import TransientError
from shared.events import DomainCreated, DomainDeleted, EventData, encode_event, new_event_id
from shared.settings import TRACKING_HOST, tracking_host_aliases
from trackctl import connections
from trackctl.output import (
    OK,
    USAGE,
    CliError,
    emit_json,
    fields,
    fmt_relative,
    jsonable,
    shorten,
    table,
    utc_now,
)
from trackctl.reputation import describe, fetch_reputation
from trackctl.settings import reader

T = TrackingDomain.__table__.c
A = AcmeEvent.__table__.c
E = EdgeCertificate.__table__.c
COLUMNS = (T.name, T.customer_id, T.status, T.verified, T.matched_by, T.dns_chain,
           T.last_error, T.check_due_at, T.certificate_serial, T.certificate_issued_at,
           T.certificate_expires_at, T.certificate_renew_at, T.created_at, T.updated_at,
           T.verified_at, T.registered_domain, T.isolation_warning)
MAX_CUSTOMER_ID = 256


# --- pure parts ------------------------------------------------------------------------------

def parse_name(raw: str, environ: Mapping[str, str]) -> str:
    """The normal form of a domain given on the command line, or a usage error. With
    TRACKING_HOST set, the platform's own host, its TRACKING_HOST_ALIASES (and names
    under them) are refused too."""
    try:
        name = normalise_domain(raw)
    except InvalidDomain as exc:
        raise CliError(f"{raw!r} cannot be a tracking domain: {exc}", USAGE) from None
    env = reader(environ)
    tracking_host = env[TRACKING_HOST.optional()]
    if tracking_host:
        aliases = tracking_host_aliases(env, tracking_host)
        if platform_host_of(name, (tracking_host, *aliases)) is not None:
            raise CliError(f"{name} is the platform's own tracking host (or under it); a "
                           f"customer's domain must CNAME to {tracking_host}", USAGE)
    return name


def check_customer(customer: str) -> str:
    customer = customer.strip()
    if not customer or len(customer) > MAX_CUSTOMER_ID or "\x00" in customer:
        raise CliError(f"--customer must be 1-{MAX_CUSTOMER_ID} characters", USAGE)
    return customer


def is_tombstone(row: Mapping[str, Any]) -> bool:
    """A deleted pending domain, kept until its rechecks drain (shared/domain_status.py)."""
    return status_is_tombstone(row["status"], row["check_due_at"])


@dataclass(frozen=True)
class RecheckPlan:
    """What `domain recheck` does for a row, and what it will cause."""

    publish: bool
    schedule_dns_check: bool
    effect: str


def recheck_plan(row: Mapping[str, Any]) -> RecheckPlan:
    """How the verifier treats a repeated `domain.created`, per status
    (services/verifier/handlers.py `verify_domain`):

    - pending: judged at once (its own delayed recheck still runs too; harmless);
    - rejected / lapsed: a newer event restarts verification (pending, new deadline),
      judged at once;
    - verified / active: never downgraded; `domain.verified` is announced again, so the
      certifier retries a missing certificate now (and does nothing for a good one).
      DNS of such a domain is checked by the verifier's schedule, so `check_due_at` is
      set to now as well: the next scheduler pass (VERIFIER_SCHEDULE_POLL_S) rechecks it.
    - a tombstone (deleted while pending) would be re-added: refused, use `domain add`.
    """
    status = DomainStatus(row["status"])
    if is_tombstone(row):
        return RecheckPlan(False, False, "")
    if status == DomainStatus.PENDING:
        return RecheckPlan(True, False, "the verifier checks its DNS now (it stays pending "
                                        "until DNS is right, then becomes verified)")
    if status.can_become(DomainStatus.PENDING):
        return RecheckPlan(True, False, f"the verifier restarts verification ({status} -> "
                                        "pending, with a new deadline) and checks DNS now")
    return RecheckPlan(True, True, (
        "the verifier announces domain.verified again, so the certifier retries a missing "
        "or failed certificate now (a good one is left alone), and its scheduler rechecks "
        "DNS at its next pass"))


# --- database --------------------------------------------------------------------------------

async def fetch_domain(engine: AsyncEngine, name: str) -> dict[str, Any] | None:
    async with engine.connect() as connection:
        row = (await connection.execute(select(*COLUMNS).where(T.name == name))).first()
    return None if row is None else jsonable(row._asdict())


async def fetch_domains(engine: AsyncEngine, *, customer: str | None, status: str | None,
                        limit: int) -> list[dict[str, Any]]:
    query = select(*COLUMNS).order_by(T.customer_id, T.name).limit(limit)
    if customer is not None:
        query = query.where(T.customer_id == customer)
    if status is not None:
        query = query.where(T.status == status)
    async with engine.connect() as connection:
        return [jsonable(row._asdict()) for row in (await connection.execute(query)).all()]


async def fetch_acme_events(engine: AsyncEngine, name: str, limit: int = 10
                            ) -> list[dict[str, Any]]:
    query = (select(A.kind, A.at).where(A.name == name).order_by(A.at.desc(), A.id.desc())
             .limit(limit))
    async with engine.connect() as connection:
        return [jsonable(row._asdict()) for row in (await connection.execute(query)).all()]


async def fetch_edges(engine: AsyncEngine, name: str) -> list[dict[str, Any]]:
    """Which serial each edge serves for `name` (edge_certificates, by edge)."""
    query = (select(E.edge_id, E.serial, E.installed_at).where(E.domain == name)
             .order_by(E.edge_id))
    async with engine.connect() as connection:
        return [jsonable(row._asdict()) for row in (await connection.execute(query)).all()]


async def schedule_dns_check(engine: AsyncEngine, name: str, now: datetime) -> bool:
    """Make a verified/active domain due for the verifier's periodic DNS check now."""
    statement = (update(TrackingDomain.__table__)
                 .where(T.name == name,
                        T.status.in_((DomainStatus.VERIFIED, DomainStatus.ACTIVE)))
                 .values(check_due_at=now, updated_at=T.updated_at))
    async with engine.begin() as connection:
        return (await connection.execute(statement)).rowcount == 1


# --- publishing ------------------------------------------------------------------------------

async def publish(environ: Mapping[str, str], data: EventData, *,
                  time: datetime | None = None) -> str:
    """Publish one event as the platform would (structured CloudEvent, routing key = its
    type, persistent, mandatory, confirmed); returns its id once the broker confirmed."""
    async with connections.broker(environ) as (settings, connection, channel):
        exchange = await connections.existing_exchange(connection, channel, settings)
        publisher = Publisher(channel, exchange, source=connections.source(), timeout_s=15)
        event_id = new_event_id()
        try:
            if time is None:
                return await publisher.publish_event(data, event_id=event_id)
            body = encode_event(data, source=connections.source(), event_id=event_id,
                                time=time)
            await publisher.publish(data.TYPE, body, message_id=event_id)
            return event_id
        except TransientError as exc:
            raise CliError(f"{data.TYPE} was not routed: {exc.reason}") from None
        except aio_pika.exceptions.PublishError as exc:
            raise CliError(f"{data.TYPE} was not routed ({exc}): no queue is bound to it; "
                           "start a service to declare the topology") from None
        except (aio_pika.exceptions.AMQPError, TimeoutError) as exc:
            raise CliError(f"the broker did not confirm {data.TYPE}: "
                           f"{str(exc) or type(exc).__name__}") from None


# --- commands --------------------------------------------------------------------------------

async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    command = args.domain_command
    if command == "add":
        return await add(args, environ)
    if command == "list":
        return await list_(args, environ)
    if command == "show":
        return await show(args, environ)
    if command == "recheck":
        return await recheck(args, environ)
    return await delete(args, environ)


async def add(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    name = parse_name(args.name, environ)
    customer = check_customer(args.customer)
    event_id = await publish(environ, DomainCreated(domain=name, customer_id=customer))
    if args.json:
        emit_json({"published": DomainCreated.TYPE, "event_id": event_id, "domain": name,
                   "customer_id": customer})
    else:
        print(f"published {DomainCreated.TYPE} for {name} (customer {customer}), event id "
              f"{event_id}.\nThe verifier checks its DNS now; follow it with "
              f"`trackctl domain show {name}`.")
    return OK


async def list_(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.status is not None and args.status not in tuple(DomainStatus):
        raise CliError(f"--status must be one of {', '.join(DomainStatus)}", USAGE)
    async with connections.database(environ) as engine:
        rows = await fetch_domains(engine, customer=args.customer, status=args.status,
                                   limit=args.limit)
    if args.json:
        emit_json(rows)
        return OK
    if not rows:
        print("no tracking domains" + _filters(args))
        return OK
    print(table(
        ("name", "customer", "status", "matched_by", "certificate expires", "updated",
         "last error"),
        [(row["name"], row["customer_id"], row["status"], row["matched_by"],
          row["certificate_expires_at"], row["updated_at"], shorten(row["last_error"], 60))
         for row in rows]))
    suffix = f" (the first {args.limit}; use --limit)" if len(rows) >= args.limit else ""
    print(f"\n{len(rows)} domain{'s' if len(rows) != 1 else ''}{_filters(args)}{suffix}")
    return OK


def _filters(args: argparse.Namespace) -> str:
    parts = []
    if args.customer is not None:
        parts.append(f"customer {args.customer}")
    if args.status is not None:
        parts.append(f"status {args.status}")
    return f" for {', '.join(parts)}" if parts else ""


async def show(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    name = parse_name(args.name, environ)
    async with connections.database(environ) as engine:
        row = await fetch_domain(engine, name)
        if row is None:
            raise CliError(f"no tracking domain {name} in the database (add it with "
                           f"`trackctl domain add {name} --customer C`)")
        acme = await fetch_acme_events(engine, name)
        reputation = await fetch_reputation(engine, name)
        edges = await fetch_edges(engine, name)
    if args.json:
        emit_json({**row, "tombstone": is_tombstone(row), "acme_events": acme,
                   "reputation": reputation, "edges": edges})
        return OK
    print(render_show(row, acme, utc_now(), reputation, edges))
    return OK


def render_show(row: Mapping[str, Any], acme: list[dict[str, Any]], now: datetime,
                reputation: Sequence[Mapping[str, Any]] = (),
                edges: Sequence[Mapping[str, Any]] = ()) -> str:
    status = row["status"] + (" (deleted by the customer; kept as a tombstone until its "
                              "rechecks drain)" if is_tombstone(row) else "")
    pairs: list[tuple[str, object]] = [
        ("domain", row["name"]),
        ("customer", row["customer_id"]),
        ("status", status),
        ("verified", row["verified"]),
        ("matched by", row["matched_by"]),
        ("dns chain", row["dns_chain"]),
        ("registered domain", row.get("registered_domain")),
        ("isolation warning", row.get("isolation_warning")),
        ("last error", row["last_error"]),
        ("certificate serial", row["certificate_serial"]),
        ("certificate issued", row["certificate_issued_at"]),
        ("certificate expires", fmt_relative(row["certificate_expires_at"], now)),
        ("renewal from", fmt_relative(row["certificate_renew_at"], now)),
        ("next dns check", fmt_relative(row["check_due_at"], now)),
        ("created", row["created_at"]),
        ("verified at", row["verified_at"]),
        ("updated", fmt_relative(row["updated_at"], now)),
    ]
    text = fields(pairs)
    if acme:
        text += "\n\nrecent ACME requests (acme_events, newest first):\n" + table(
            ("at", "kind"), [(event["at"], event["kind"]) for event in acme])
    else:
        text += "\n\nno ACME requests recorded for it (acme_events)"
    if reputation:
        text += "\n\nblocklists (the verifier's reputation watch):\n" + "\n".join(
            "  " + describe(entry, now) for entry in reputation)
    else:
        text += ("\n\nblocklists: not looked up (only verified and active domains are "
                 "watched, and only while REPUTATION_LISTS names lists)")
    if edges:
        serial = row["certificate_serial"]
        text += "\n\nserved by (edge_certificates, as each edge agent confirmed):\n" + table(
            ("edge", "serial", "installed", ""),
            [(edge["edge_id"], edge["serial"], edge["installed_at"],
              "" if serial is None or edge["serial"] == serial else "behind")
             for edge in edges])
    else:
        text += "\n\nserved by no edge (edge_certificates)"
    return text


async def recheck(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    name = parse_name(args.name, environ)
    async with connections.database(environ) as engine:
        row = await fetch_domain(engine, name)
        if row is None:
            raise CliError(f"no tracking domain {name} in the database; add it with "
                           f"`trackctl domain add {name} --customer C`")
        plan = recheck_plan(row)
        if not plan.publish:
            raise CliError(f"{name} was deleted by its customer (a tombstone until its "
                           "rechecks drain); a recheck would bring it back. Add it again with "
                           f"`trackctl domain add {name} --customer {row['customer_id']}`")
        # The verifier restarts a rejected or lapsed domain only for an event newer than
        # the row's last change: never let a clock behind the verifier's make it stale.
        at = max(utc_now(), row["updated_at"] + timedelta(milliseconds=1))
        event_id = await publish(environ, DomainCreated(domain=name,
                                                        customer_id=row["customer_id"]),
                                 time=at)
        scheduled = plan.schedule_dns_check and await schedule_dns_check(engine, name,
                                                                         utc_now())
    if args.json:
        emit_json({"published": DomainCreated.TYPE, "event_id": event_id, "domain": name,
                   "customer_id": row["customer_id"], "status": row["status"],
                   "dns_check_scheduled": scheduled, "effect": plan.effect})
    else:
        print(f"published {DomainCreated.TYPE} for {name} ({row['status']}, customer "
              f"{row['customer_id']}), event id {event_id}: {plan.effect}.")
    return OK


async def delete(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    name = parse_name(args.name, environ)
    given = check_customer(args.customer) if args.customer is not None else None
    async with connections.database(environ) as engine:
        row = await fetch_domain(engine, name)
    if row is None:
        if given is None:
            raise CliError(f"no tracking domain {name} in the database; to publish "
                           "domain.deleted anyway, name its customer with --customer")
        customer = given
    else:
        if given is not None and row["customer_id"] != given:
            raise CliError(f"{name} belongs to customer {row['customer_id']}, not {given}; "
                           "the services ignore a delete from another customer")
        customer = row["customer_id"]
    if not args.yes:
        raise CliError(f"this deletes {name} of customer {customer}: its certificate and "
                       "nginx server are removed and its links fall back to the platform "
                       "host. Pass --yes to do it.", USAGE)
    event_id = await publish(environ, DomainDeleted(domain=name, customer_id=customer))
    if args.json:
        emit_json({"published": DomainDeleted.TYPE, "event_id": event_id, "domain": name,
                   "customer_id": customer})
    else:
        print(f"published {DomainDeleted.TYPE} for {name} (customer {customer}), event id "
              f"{event_id}.")
    return OK
