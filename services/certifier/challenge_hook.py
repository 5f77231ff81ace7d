"""certbot's manual hooks for HTTP-01: publish the answer where every edge can serve it.

certbot runs `python -I -S challenge_hook.py auth` before asking the CA to validate,
and `... cleanup` afterwards, with `CERTBOT_TOKEN` and `CERTBOT_VALIDATION` in the
environment (and `ACME_CHALLENGE_DIR`, which the certifier passes down). The answer
is written to `ACME_CHALLENGE_DIR/<token>`, the flat layout every redirector reads
(`GET /.well-known/acme-challenge/<token>`), atomically (temporary file, then rename),
so an edge never serves half an answer. Put that directory on storage every edge
mounts, and whichever edge the CA reaches answers. Standard library only: it runs
without the project on the path, and starts in a few milliseconds.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# The token alphabet the CA uses (base64url), and what the redirector accepts.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    action = argv[1] if len(argv) > 1 else ""
    directory = environ.get("ACME_CHALLENGE_DIR", "")
    token = environ.get("CERTBOT_TOKEN", "")
    if action not in ("auth", "cleanup") or not directory:
        print("usage: ACME_CHALLENGE_DIR=... challenge_hook.py auth|cleanup", file=sys.stderr)
        return 2
    if not _TOKEN.match(token):
        print(f"challenge_hook: refusing token {token[:80]!r}", file=sys.stderr)
        return 2
    target = Path(directory) / token
    if action == "cleanup":
        target.unlink(missing_ok=True)
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{token}.{os.getpid()}.tmp")
    temporary.write_text(environ.get("CERTBOT_VALIDATION", ""), encoding="ascii")
    temporary.chmod(0o644)
    os.replace(temporary, target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv, os.environ))
