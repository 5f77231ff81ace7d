"""`trackctl` entry point: argument parsing and dispatch to one module per command group.

Exit status: 0 ok, 1 a check failed or the command could not do what was asked,
2 usage or configuration error (argparse's own errors are 2 as well). Each command
module is imported only when its command runs, so `trackctl --help` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Sequence

from shared.domain_status import DomainStatus
from shared.errors import SettingsError
from trackctl.output import USAGE, CliError, EscapingStream

COMMAND_MODULES = {"db": "db", "link": "links", "domain": "domain_commands", "dlq": "dlq",
                   "clicks": "clicks", "doctor": "doctor", "reputation": "reputation",
                   "certificates": "certificates"}
DLQ_SERVICES = ("logger", "verifier", "verifier.destinations", "certifier", "classifier")


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackctl",
        description="Operate tracking-domains: database, links, domains, dead letters, "
                    "clicks, reputation, diagnosis. Settings come from the services' "
                    "environment variables (AMQP_URL, AMQP_EXCHANGE, DATABASE_URL, TRACKING_HOST, "
                    "LINK_KEYS, DNS_NAMESERVERS). See docs/trackctl.md.")
    commands = parser.add_subparsers(dest="command", required=True)

    database = commands.add_parser("db", help="database schema (Alembic migrations)")
    db_commands = database.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="migrate DATABASE_URL to the newest schema")
    upgrade.add_argument("revision", nargs="?", default="head")
    db_commands.add_parser("current", help="print the schema revision DATABASE_URL is at")

    link = commands.add_parser("link", help="print a signed tracking URL")
    link.add_argument("--customer", required=True, help="customer id")
    link.add_argument("--campaign", required=True, help="campaign id")
    link.add_argument("--recipient", required=True, help="recipient id (opaque; not an address)")
    link.add_argument("--domain", help="tracking domain (default: the customer's active one, "
                                       "else TRACKING_HOST)")
    link.add_argument("--scheme", choices=("https", "http"), default="https")
    link.add_argument("--port", type=int, help="add a port to the URL (local testing)")
    link.add_argument("--honeypot", action="store_true",
                      help="mark the link h=1: hidden in the message, only machines follow it")
    link.add_argument("url", help="destination: an absolute http(s) URL")

    _domain_parser(commands)
    _dlq_parser(commands)

    clicks = commands.add_parser("clicks", help="a campaign's human and bot clicks")
    clicks.add_argument("--campaign", required=True, help="campaign id")
    clicks.add_argument("--customer", help="customer id (campaign ids are per customer)")
    clicks.add_argument("--since", help="from: 24h, 7d, 30m, or 2026-05-01[T10:00Z]")
    clicks.add_argument("--until", help="before: same forms as --since")
    _json_flag(clicks)

    doctor = commands.add_parser(
        "doctor", help="check DNS, HTTPS, the database row and a real click for one domain")
    doctor.add_argument("name", help="the tracking domain, e.g. track.customer.com")
    doctor.add_argument("--connect", metavar="ADDRESS",
                        help="connect to this address instead of the one DNS gives (test "
                             "one edge, or a local nginx)")
    doctor.add_argument("--https-port", type=int, default=443, metavar="PORT",
                        help="HTTPS port (default 443)")
    doctor.add_argument("--ca-bundle", metavar="PEM",
                        help="trust these CA certificates instead of the system's "
                             "(staging, Pebble)")
    doctor.add_argument("--redirector", metavar="URL",
                        help="request the link from this redirector (http://HOST:PORT) "
                             "instead of over HTTPS: tests the redirector and logger even "
                             "when HTTPS is broken")
    doctor.add_argument("--destination", default="https://example.com/?trackctl-doctor",
                        help="where the test link redirects to")
    doctor.add_argument("--timeout", type=_positive_float, default=5.0, metavar="S",
                        help="connect/answer timeout for TLS and HTTP (default 5)")
    doctor.add_argument("--click-timeout", type=_positive_float, default=10.0, metavar="S",
                        help="how long to wait for the click row (default 10)")
    _json_flag(doctor)

    _reputation_parser(commands)
    commands.add_parser("up", help="run every service of the pipeline until Ctrl-C")
    return parser


def _reputation_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reputation = commands.add_parser(
        "reputation", help="what the DNS blocklists list now (the verifier's reputation "
                           "watch): per list, and every listed domain")
    reputation.add_argument("--destinations", action="store_true",
                            help="customers whose links lead to listed destinations")
    reputation.add_argument("--customer", help="with --destinations: only this customer")
    reputation.add_argument("--limit", type=_positive_int, default=500,
                            help="with --destinations: at most this many (default 500)")
    _json_flag(reputation)


def _domain_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    domain = commands.add_parser("domain", help="customers' tracking domains")
    sub = domain.add_subparsers(dest="domain_command", required=True)
    add = sub.add_parser("add", help="publish domain.created, as the platform does")
    add.add_argument("name")
    add.add_argument("--customer", required=True, help="the owning customer's id")
    _json_flag(add)
    listing = sub.add_parser("list", help="tracking domains, by customer and name")
    listing.add_argument("--customer")
    *statuses, last = DomainStatus
    listing.add_argument("--status", help=f"{', '.join(statuses)} or {last}")
    listing.add_argument("--limit", type=_positive_int, default=500)
    _json_flag(listing)
    show = sub.add_parser("show", help="one domain: status, verification, certificate, "
                                       "errors, ACME requests, blocklists")
    show.add_argument("name")
    _json_flag(show)
    recheck = sub.add_parser("recheck", help="publish domain.created again: check it now")
    recheck.add_argument("name")
    _json_flag(recheck)
    delete = sub.add_parser("delete", help="publish domain.deleted, as the platform does")
    delete.add_argument("name")
    delete.add_argument("--customer", help="needed only when the domain has no row")
    delete.add_argument("--yes", action="store_true", help="really delete it")
    _json_flag(delete)


def _dlq_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certificates = commands.add_parser(
        "certificates", help="the certificate store's keys: what each seals, re-encrypting")
    sub = certificates.add_subparsers(dest="certificates_command", required=True)
    _json_flag(sub.add_parser("keys", help="how many secrets each CERT_STORE_KEYS key id seals"))
    _json_flag(sub.add_parser("reseal", help="re-encrypt every secret under the first key "
                                             "(after a rotation)"))

    dlq = commands.add_parser("dlq", help="dead-lettered messages: inspect, replay, purge")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    queue_help = f"the service whose dead-letter queue it is: {', '.join(DLQ_SERVICES)}"
    listing = sub.add_parser("list", help="what is there and why (nothing is consumed)")
    listing.add_argument("queue", help=queue_help)
    listing.add_argument("--limit", type=_positive_int, default=50)
    _json_flag(listing)
    show = sub.add_parser("show", help="one message in full (nothing is consumed)")
    show.add_argument("queue", help=queue_help)
    show.add_argument("--index", type=_positive_int, help="its number in `dlq list`")
    show.add_argument("--event-id", help="an event id it carries (or its message id)")
    show.set_defaults(limit=None)
    _json_flag(show)
    replay = sub.add_parser("replay", help="publish messages again (after a fix), then "
                                           "remove them from the dead-letter queue")
    replay.add_argument("queue", help=queue_help)
    replay.add_argument("--limit", type=_positive_int, help="at most this many")
    replay.add_argument("--event-id", help="only the message carrying this event id")
    replay.add_argument("--reason", choices=("malformed", "rejected", "exhausted"),
                        help="only messages dead-lettered for this reason")
    replay.add_argument("--via-exchange", action="store_true",
                        help="publish to the exchange with the original routing key (every "
                             "queue bound to it gets a copy) instead of to the service's "
                             "own queue")
    _json_flag(replay)
    purge = sub.add_parser("purge", help="delete every message in the dead-letter queue")
    purge.add_argument("queue", help=queue_help)
    purge.add_argument("--yes", action="store_true", help="really delete them")
    purge.set_defaults(limit=None)
    _json_flag(purge)


def quiet_logs() -> None:
    """trackctl speaks for itself: library chatter (aiormq's connection warnings, the
    services' structlog lines) stays off stdout, which `--json` keeps for one document;
    the services' warnings and errors go to stderr."""
    import logging

    import structlog

    logging.getLogger().addHandler(logging.NullHandler())
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def main(argv: Sequence[str] | None = None) -> None:
    # Stored data never reaches the terminal with its control characters (output.py).
    sys.stdout = EscapingStream(sys.stdout)
    sys.stderr = EscapingStream(sys.stderr)
    args = build_parser().parse_args(argv)
    if args.command != "up":
        quiet_logs()
    try:
        if args.command == "up":
            from trackctl import up

            status = up.run(os.environ)
        else:
            module = importlib.import_module(f"trackctl.{COMMAND_MODULES[args.command]}")
            status = asyncio.run(module.run(args, os.environ))
    except SettingsError as exc:
        print(f"trackctl: configuration error: {exc}", file=sys.stderr)
        status = USAGE
    except CliError as exc:
        print(f"trackctl: {exc.message}", file=sys.stderr)
        status = exc.status
    except KeyboardInterrupt:
        status = 130
    sys.stdout.flush()
    raise SystemExit(status)


if __name__ == "__main__":
    main()
