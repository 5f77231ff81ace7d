"""The certifier's end of the challenge hook: a Unix socket that puts HTTP-01 answers in
the database, where every redirector on every edge reads them (no shared directory).

certbot runs the hook (challenge_hook.py) as a child process; it sends one JSON line
`{"action": "auth"|"cleanup", "token", "domain", "validation"}` and waits. The answer is
committed before `ok` is sent, so the CA never asks before every edge can answer. The
socket lives in a directory only this user can enter, made at start and removed at stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import structlog

from shared.certificates import ChallengeAnswers
from shared.certificates.challenges import TOKEN_RE

log = structlog.get_logger(__name__)

WRITE_TIMEOUT_S = 20.0
MAX_LINE = 8192


class ChallengeRelay:
    """Serves the hook's socket while the certifier runs; `path` is what certbot gets."""

    def __init__(self, answers: ChallengeAnswers) -> None:
        self._answers = answers
        self._directory: Path | None = None
        self._server: asyncio.Server | None = None
        self.published = 0

    @property
    def path(self) -> Path:
        assert self._directory is not None, "start() first"
        return self._directory / "hook.sock"

    async def start(self) -> None:
        # A short path of our own: a Unix socket path is limited to 107 bytes.
        self._directory = Path(tempfile.mkdtemp(prefix="td-certifier-"))
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                       limit=MAX_LINE)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reply = "error: unreadable request"
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                line = await reader.readline()
                reply = await self._handle(line)
        except (TimeoutError, ValueError, OSError) as exc:
            reply = f"error: {type(exc).__name__}"
        except Exception as exc:  # the database: certbot must hear "not published"
            reply = f"error: {type(exc).__name__}: {exc}"[:300]
            log.warning("challenge.publish_failed", error=reply)
        finally:
            with contextlib.suppress(Exception):
                writer.write(reply.encode("utf-8") + b"\n")
                await writer.drain()
                writer.close()
                await writer.wait_closed()

    async def _handle(self, line: bytes) -> str:
        request = json.loads(line)
        if not isinstance(request, dict):
            return "error: not an object"
        action, token = request.get("action"), request.get("token")
        if not isinstance(token, str) or not TOKEN_RE.match(token):
            return "error: not an ACME token"
        if action == "auth":
            validation, domain = request.get("validation"), request.get("domain")
            if not isinstance(validation, str) or not isinstance(domain, str):
                return "error: validation and domain must be text"
            await self._answers.publish(token, domain, validation)
            self.published += 1
            log.debug("challenge.published", domain=domain, token=token)
            return "ok"
        if action == "cleanup":
            await self._answers.withdraw(token)
            return "ok"
        return "error: unknown action"
