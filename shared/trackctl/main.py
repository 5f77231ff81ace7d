"""`trackctl` entry point: argument parsing and dispatch to one module per command group."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from shared.errors import SettingsError
from shared.trackctl import db, links, up


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackctl", description="Operate tracking-domains: database, links, services.")
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
    link.add_argument("url", help="destination: an absolute http(s) URL")

    commands.add_parser("up", help="run every service of the pipeline until Ctrl-C")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "db":
            status = asyncio.run(db.run(args, os.environ))
        elif args.command == "link":
            status = asyncio.run(links.run(args, os.environ))
        else:
            status = up.run(os.environ)
    except SettingsError as exc:
        print(f"trackctl: configuration error: {exc}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        status = 130
    raise SystemExit(status)


if __name__ == "__main__":
    main()
