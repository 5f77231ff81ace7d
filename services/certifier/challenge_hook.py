"""certbot's manual hooks for HTTP-01: publish the answer where every edge can serve it.

certbot runs `python -I -S challenge_hook.py auth` before asking the CA to validate,
and `... cleanup` afterwards, with `CERTBOT_DOMAIN`, `CERTBOT_TOKEN` and
`CERTBOT_VALIDATION` in the environment, and what the certifier passes down:

- `CERTIFIER_HOOK_SOCKET`: the certifier's Unix socket (services/certifier/challenges.py).
  One JSON line goes there; the certifier writes the answer to the database (table
  `acme_challenges`) and replies `ok` once it is committed, so every redirector on every
  edge serves it before the CA asks. Any other reply, or none within the timeout,
  fails the hook, and certbot does not ask the CA to validate.
- `ACME_CHALLENGE_DIR` (single-host option): the answer is also written to
  `ACME_CHALLENGE_DIR/<token>`, atomically (temporary file, then rename).

Standard library only: it runs without the project on the path, and starts in a few
milliseconds.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# The token alphabet the CA uses (base64url), and what the redirector accepts.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
SOCKET_TIMEOUT_S = 30.0


def _tell_certifier(path: str, action: str, environ: Mapping[str, str]) -> str | None:
    """Send the answer to the certifier; None when it confirmed, else what went wrong."""
    request = json.dumps({"action": action, "token": environ.get("CERTBOT_TOKEN", ""),
                          "domain": environ.get("CERTBOT_DOMAIN", ""),
                          "validation": environ.get("CERTBOT_VALIDATION", "")})
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(SOCKET_TIMEOUT_S)
            connection.connect(path)
            connection.sendall(request.encode("utf-8") + b"\n")
            reply = connection.makefile("rb").readline(1024).decode("utf-8", "replace").strip()
    except OSError as exc:
        return f"the certifier at {path} did not answer: {exc}"
    return None if reply == "ok" else f"the certifier said: {reply[:300]!r}"


def _write_file(directory: str, action: str, token: str, validation: str) -> None:
    target = Path(directory) / token
    if action == "cleanup":
        target.unlink(missing_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{token}.{os.getpid()}.tmp")
    temporary.write_text(validation, encoding="ascii")
    temporary.chmod(0o644)
    os.replace(temporary, target)


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    action = argv[1] if len(argv) > 1 else ""
    directory = environ.get("ACME_CHALLENGE_DIR", "")
    socket_path = environ.get("CERTIFIER_HOOK_SOCKET", "")
    token = environ.get("CERTBOT_TOKEN", "")
    if action not in ("auth", "cleanup") or not (directory or socket_path):
        print("usage: CERTIFIER_HOOK_SOCKET=... and/or ACME_CHALLENGE_DIR=... "
              "challenge_hook.py auth|cleanup", file=sys.stderr)
        return 2
    if not _TOKEN.match(token):
        print(f"challenge_hook: refusing token {token[:80]!r}", file=sys.stderr)
        return 2
    if directory:
        _write_file(directory, action, token, environ.get("CERTBOT_VALIDATION", ""))
    if socket_path:
        problem = _tell_certifier(socket_path, action, environ)
        if problem is not None:
            print(f"challenge_hook: {problem}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv, os.environ))
