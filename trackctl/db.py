"""`trackctl db upgrade|current`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

from shared.db import migrate
from shared.settings import DatabaseSettings
from trackctl.settings import reader


async def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = DatabaseSettings.read(reader(environ))
    if args.db_command == "upgrade":
        try:
            await migrate.upgrade(settings, args.revision)
        except OSError as exc:
            print(f"trackctl: cannot reach the database at {settings.safe_url}: {exc}",
                  file=sys.stderr)
            return 1
        revision = await migrate.current(settings)
        print(f"database {settings.safe_url} is at revision {revision}")
        return 0
    revision = await migrate.current(settings)
    print(revision or "none")
    return 0
