"""`python -m demo`: the guided demo (`scripts/run --demo` installs what it needs, then runs it).

Builds the local world on 127.0.0.1 (demo/world.py), tells the story (demo/story.py),
then removes everything it made, whether the story passed, failed or was interrupted
(Ctrl-C, SIGTERM): the processes, the broker namespace `demo-<hex>`, the database
`td_demo_<hex>` and the temporary directory. Exit status: 0 only if every step passed
and the clean-up succeeded; 1 if a step or the clean-up failed; 2 if a tool the world
needs is missing; 130 if interrupted.

Servers: RabbitMQ at `AMQP_URL` (default amqp://guest:guest@127.0.0.1:5672/), and the
PostgreSQL server of `DATABASE_URL` when that is a postgresql:// URL (it must allow
CREATE DATABASE), else postgresql://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from demo.scratch import DEFAULT_ADMIN_DATABASE_URL, DEFAULT_AMQP_URL
from demo.story import CUSTOMER, NAME, TRACKING_HOST, Options, Story
from shared.domains import InvalidDomain, normalise_domain

TOOLS = {"pebble": "pebble", "nginx": "nginx", "openssl": "openssl"}  # command: package


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Bring up a local world on 127.0.0.1 (a DNS server, Pebble, nginx with "
                    "its edge agent, and the four services) and walk through one customer's "
                    "tracking domain: created, verified, certified, a link minted and clicked "
                    "over HTTPS, the click row shown. Everything it makes is removed at the end.")
    parser.add_argument(
        "--cname-target", default=TRACKING_HOST, metavar="HOST",
        help=f"where {CUSTOMER}'s CNAME points (default: the platform host, {TRACKING_HOST}); "
             "another name shows what a customer with a wrong record sees: the verification "
             "step fails with the verifier's reason and its fix, and the demo exits 1")
    parser.add_argument("--keep", action="store_true",
                        help="keep the world's files (service logs, certificates, nginx "
                             "configuration) instead of removing them")
    parser.add_argument("--stay", action="store_true",
                        help="after the story, keep the world running until Ctrl-C and print "
                             "the settings to explore it with trackctl and curl")
    return parser


def admin_database_url(environ: Mapping[str, str]) -> str:
    """DATABASE_URL's server when it is PostgreSQL (the demo makes its own database there),
    else the local default (the demo needs PostgreSQL, whatever `scripts/run` uses)."""
    url = environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgresql:", "postgres:", "postgresql+asyncpg:")) \
        else DEFAULT_ADMIN_DATABASE_URL


def remove_directory(directory: Path, story: Story) -> None:
    """The world's files go last, after every process that wrote them has stopped."""
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        story.cleanup_failures.append(f"could not remove {directory}")
    else:
        story.cleaned.append(f"removed {directory}")


def _interrupted(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stay(story: Story) -> None:
    """Keep the world up until Ctrl-C, saying how to look at it from another shell."""
    world = story.world
    exports = " ".join(f"{key}={shlex.quote(value)}"
                       for key, value in story.operator_env().items() if key != "LOG_LEVEL")
    port = world.nginx.https_port
    story.say(f"\nThe world stays up until Ctrl-C. In another shell, from {Path.cwd()}:")
    story.say(f"  export {exports}")
    story.say("  .venv/bin/trackctl domain list")
    story.say(f"  .venv/bin/trackctl doctor {NAME} --https-port {port} --ca-bundle {world.root}")
    story.say(f"  .venv/bin/trackctl link --customer {CUSTOMER} --campaign mine --recipient me "
              f"--port {port} https://example.com/")
    story.say(f"  curl -si --cacert {world.root} --resolve {NAME}:{port}:127.0.0.1 URL")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        story.say("")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cname_target = normalise_domain(args.cname_target)
    except InvalidDomain as exc:
        print(f"demo: --cname-target: {exc}", file=sys.stderr)
        return 2
    missing = [package for command, package in TOOLS.items()
               if shutil.which(command) is None and not Path(f"/usr/sbin/{command}").exists()]
    if missing:
        print(f"demo: needs the Debian packages {', '.join(missing)} (`scripts/run --demo` "
              "installs them)", file=sys.stderr)
        return 2
    directory = Path(tempfile.mkdtemp(prefix="td-demo-"))
    story = Story(Options(
        amqp_url=os.environ.get("AMQP_URL") or DEFAULT_AMQP_URL,
        admin_database_url=admin_database_url(os.environ),
        directory=directory, cname_target=cname_target))
    started = time.monotonic()
    passed = interrupted = False
    cleanup_started = started
    story_took = 0.0
    # Ctrl-C and SIGTERM both end the story through the clean-up. Our own SIGINT handler
    # also keeps asyncio.run from installing its own, which turns a Ctrl-C into the
    # cancellation of a task (that a library may swallow) instead of KeyboardInterrupt.
    previous = signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    try:
        with ExitStack() as cleanup:
            if not args.keep:
                cleanup.callback(remove_directory, directory, story)
            try:
                passed = story.run(cleanup)
                story_took = time.monotonic() - started
                if passed and args.stay:
                    stay(story)
            finally:
                # The clean-up is bounded; a second Ctrl-C must not leave half of it undone.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                cleanup_started = time.monotonic()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
    took = f"{(story_took or cleanup_started - started):.1f} s"
    if interrupted:
        story.say(f"\ninterrupted during {story.current}, after {took}.")
    elif passed:
        story.say(f"\ndemo passed: every step, in {took}.")
    else:
        story.say(f"\ndemo failed after {took} (see the FAIL line above).")
    story.say(f"cleaned up in {time.monotonic() - cleanup_started:.1f} s: "
              + "; ".join(story.cleaned) + ".")
    if args.keep:
        story.say(f"kept the world's files in {directory}")
    for failure in story.cleanup_failures:
        print(f"demo: clean-up: {failure}", file=sys.stderr)
    if interrupted:
        return 130
    return 0 if passed and not story.cleanup_failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
