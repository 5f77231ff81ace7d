"""The certbot adapter: certbot's CLI, run non-interactively as a subprocess, and its files.

What counts as an answer from certbot, and what does not:

- Success is the exit status 0 *and* the files under `live/<name>/` (a new serial when
  a certificate was replaced). The certificate's not-before, not-after and serial are
  read from `live/<name>/cert.pem` with `cryptography`.
- Failures are classified from certbot's own debug log (`letsencrypt.log` in a fresh
  `--logs-dir` per run), which records every ACME response body verbatim. Those bodies
  are RFC 8555 problem documents whose `type` is a URN such as
  `urn:ietf:params:acme:error:rateLimited`, `unauthorized`, `connection`, `dns` or `caa`.
  The URNs are fixed by the ACME standard and spoken by every CA, so they stay the same
  across certbot releases, languages and CA vendors; certbot's console text is written
  for people, is reworded between releases and is not an interface. When the log holds
  no problem document, the ACME directory URL is probed: if it does not answer, the
  CA is unreachable (transient); otherwise certbot itself failed.

Two certbot processes on one `--config-dir` collide (the second exits 1). Every run
and every deletion happens inside `exclusive()`: an asyncio lock for this process and
an `flock` on `<certbot dir>/certifier.lock` for other processes sharing the directory.
Once the certifier is stopping (`refuse_new_work()`), the holder finishes its run and
everything still waiting for the directory, or arriving later, gets `Stopping`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from cryptography import x509

from shared.certificates import pem
from shared.certificates.pem import CertificateInfo
from shared.errors import TransientError

log = structlog.get_logger(__name__)

ACME_ERROR = "urn:ietf:params:acme:error:"
HOOK = Path(__file__).with_name("challenge_hook.py")
# Where the challenge hook reaches this certifier (services/certifier/challenges.py).
HOOK_SOCKET_ENV = "CERTIFIER_HOOK_SOCKET"
LOG_DIRS_KEPT = 50


class FailureKind(enum.StrEnum):
    VALIDATION = "validation"  # the CA could not validate the challenge: DNS, edge, answer
    REFUSED = "refused"  # the CA will not issue for this name (CAA, policy): customer must act
    RATE_LIMITED = "rate-limited"  # the CA says wait
    CA_UNREACHABLE = "ca-unreachable"  # the directory URL does not answer
    ACCOUNT = "account"  # the CA no longer knows our account (a reset CA); re-registers next run
    CONFIGURATION = "configuration"  # the CA refuses our account details: the operator must act
    CA_ERROR = "ca-error"  # the CA failed (serverInternal, badNonce, ...)
    LOCAL = "local"  # certbot itself failed: crash, timeout, lock, files missing


_KINDS: dict[str, FailureKind] = {
    **dict.fromkeys(("unauthorized", "connection", "dns", "incorrectResponse", "tls"),
                    FailureKind.VALIDATION),
    **dict.fromkeys(("caa", "rejectedIdentifier", "unsupportedIdentifier"),
                    FailureKind.REFUSED),
    "rateLimited": FailureKind.RATE_LIMITED,
    "accountDoesNotExist": FailureKind.ACCOUNT,
    **dict.fromkeys(("invalidContact", "unsupportedContact", "externalAccountRequired",
                     "userActionRequired"), FailureKind.CONFIGURATION),
}
_RETRY_AFTER_TEXT = re.compile(
    r"retry after (\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?)(?: ?(?:UTC|Z))?", re.I)
_RETRY_AFTER_HEADER = re.compile(r"^Retry-After: *(\d+)\s*$", re.M | re.I)
# The furthest a rate limit's reset is believed: a CA may say anything (up to numbers no
# datetime can hold); no CA limit runs longer than a week or so.
MAX_RETRY_AFTER = timedelta(days=30)


@dataclass(frozen=True)
class CertbotFailure:
    kind: FailureKind
    detail: str
    acme_error: str | None = None  # the URN's last part, e.g. "unauthorized"
    retry_after: datetime | None = None

    @property
    def code(self) -> str:
        return self.acme_error or self.kind.value


class CertbotError(Exception):
    def __init__(self, failure: CertbotFailure) -> None:
        super().__init__(f"{failure.code}: {failure.detail}")
        self.failure = failure


class Stopping(TransientError):
    """The certifier is stopping: no new certbot run starts. Transient with no delay, so
    the consumer hands the event back through the shortest retry tier to another
    certifier (or to this one's next start); nothing was asked of the CA."""

    def __init__(self) -> None:
        super().__init__("the certifier is stopping: handed back for another certifier",
                         delay_s=0.0, counts_attempt=False)


def read_certificate(path: Path) -> CertificateInfo:
    return pem.info(x509.load_pem_x509_certificate(path.read_bytes()))


def problems_in_log(text: str) -> list[dict[str, Any]]:
    """Every ACME problem document in a certbot debug log, in order (subproblems included)."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    for match in re.finditer(r"^\{", text, re.M):
        try:
            document, _ = decoder.raw_decode(text, match.start())
        except (json.JSONDecodeError, RecursionError):  # nested beyond the parser's depth
            continue
        found.extend(_problems(document))
    if not found:  # bodies logged on one line, or truncated: fall back to the bare URNs
        for urn in re.findall(r'"type":\s*"(urn:ietf:params:acme:error:[A-Za-z]+)"', text):
            found.append({"type": urn, "detail": ""})
    return found


def _problems(document: object) -> Iterator[dict[str, Any]]:
    """Every problem object in the document, in document order: walked with a stack of
    its own, not by recursion, so no nesting the JSON parser accepts can overflow it."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and kind.startswith(ACME_ERROR):
                yield node
            stack.extend(reversed(node.values()))
        elif isinstance(node, list):
            stack.extend(reversed(node))


def classify_log(text: str, now: datetime) -> CertbotFailure | None:
    """The failure the log records, from its last specific ACME problem; None if it has none."""
    problems = problems_in_log(text)
    specific = [p for p in problems if p["type"] != ACME_ERROR + "compound"] or problems
    if not specific:
        return None
    problem = specific[-1]
    name = str(problem["type"])[len(ACME_ERROR):]
    detail = str(problem.get("detail") or name)
    kind = _KINDS.get(name, FailureKind.CA_ERROR)
    retry_after = None
    if kind is FailureKind.RATE_LIMITED:
        retry_after = _retry_after(detail, text, now)
    return CertbotFailure(kind=kind, detail=detail, acme_error=name, retry_after=retry_after)


def _retry_after(detail: str, text: str, now: datetime) -> datetime | None:
    """When the CA says to come back, at most MAX_RETRY_AFTER from now."""
    latest = now + MAX_RETRY_AFTER
    match = _RETRY_AFTER_TEXT.search(detail)
    if match:
        with contextlib.suppress(ValueError):
            return min(datetime.fromisoformat(match.group(1).replace(" ", "T"))
                       .replace(tzinfo=UTC), latest)
    headers = _RETRY_AFTER_HEADER.findall(text)
    if headers:
        seconds = headers[-1]
        # Compared as text first: int() refuses over 4300 digits, timedelta far fewer.
        if len(seconds) > 12 or int(seconds) > MAX_RETRY_AFTER.total_seconds():
            return latest
        return now + timedelta(seconds=int(seconds))
    return None


class Certbot:
    """One certbot directory (`config/`, `work/`, `logs/`), one ACME server, one account."""

    def __init__(self, *, command: str, base_dir: Path, server: str, email: str | None,
                 ca_bundle: Path | None, challenge_dir: Path | None, timeout_s: float = 300.0,
                 lock_timeout_s: float | None = None,
                 environ: Mapping[str, str] | None = None, profile: str | None = None,
                 hook_socket: Path | None = None) -> None:
        self.command = command
        self.base_dir = base_dir.resolve()
        self.server = server
        self.email = email
        self.ca_bundle = ca_bundle
        # Single-host option: the hook also writes answers there (ACME_CHALLENGE_DIR).
        self.challenge_dir = challenge_dir.resolve() if challenge_dir is not None else None
        self.profile = profile  # ACME_PROFILE: asked for, the CA's default if it has none
        self.hook_socket = hook_socket
        self.timeout_s = timeout_s
        self.lock_timeout_s = lock_timeout_s if lock_timeout_s is not None else 2 * timeout_s
        self._environ = dict(environ if environ is not None else os.environ)
        self._lock = asyncio.Lock()
        self._refusing = False
        self.runs = 0  # certbot processes started by this adapter (tests count them)

    @property
    def config_dir(self) -> Path:
        return self.base_dir / "config"

    def live(self, name: str) -> Path:
        return self.config_dir / "live" / name

    @property
    def accounts_dir(self) -> Path:
        return self.config_dir / "accounts"

    def lineage(self, name: str) -> tuple[str, bytes]:
        """(fullchain PEM, private key PEM) of `name`'s certificate on disk."""
        live = self.live(name)
        return (live / "fullchain.pem").read_text(encoding="ascii"), \
            (live / "privkey.pem").read_bytes()

    def account_files(self) -> dict[str, str]:
        """certbot's account files (every server's), by path under `accounts/`: what the
        store keeps so that a certifier with an empty directory keeps its account."""
        root = self.accounts_dir
        if not root.is_dir():
            return {}
        return {str(path.relative_to(root)): path.read_text(encoding="utf-8")
                for path in sorted(root.rglob("*")) if path.is_file()}

    def has_account(self) -> bool:
        return self.accounts_dir.is_dir() and any(self.accounts_dir.rglob("regr.json"))

    def restore_account(self, files: Mapping[str, str]) -> None:
        """Write back what `account_files` returned, readable by this user only."""
        root = self.accounts_dir
        for relative, text in files.items():
            target = (root / relative).resolve()
            if root.resolve() not in target.parents:
                raise ValueError(f"account file outside accounts/: {relative!r}")
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            target.write_text(text, encoding="utf-8")
            target.chmod(0o600)

    def current(self, name: str) -> CertificateInfo | None:
        """The certificate on disk for `name`, or None when there is no complete set."""
        live = self.live(name)
        if not all((live / f).is_file() for f in ("cert.pem", "fullchain.pem", "privkey.pem")):
            return None
        try:
            return read_certificate(live / "cert.pem")
        except (OSError, ValueError) as exc:
            log.warning("certificate.unreadable", domain=name, error=str(exc))
            return None

    def refuse_new_work(self) -> None:
        """From now on `exclusive()` raises `Stopping` instead of handing out the directory
        (SIGTERM): whoever holds it finishes; whoever waits for it gives up (behind a
        holder in this process, once that one is done; behind another process, at once)."""
        self._refusing = True

    def _refuse(self) -> None:
        if self._refusing:
            raise Stopping

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the certbot directory: no other run here or in another process meanwhile."""
        self._refuse()
        async with self._lock:
            self._refuse()
            self.base_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.base_dir / "certifier.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                deadline = time.monotonic() + self.lock_timeout_s
                while True:
                    self._refuse()  # another process holds it: do not wait it out
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise CertbotError(CertbotFailure(
                                FailureKind.LOCAL,
                                f"another process held {self.base_dir}/certifier.lock for "
                                f"{self.lock_timeout_s:.0f} s")) from None
                        await asyncio.sleep(0.05)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    async def certonly(self, name: str, *, replace: CertificateInfo | None = None
                       ) -> CertificateInfo:
        """Obtain a certificate for `name` over HTTP-01; call inside `exclusive()`.

        `replace` is the certificate on disk to be replaced (a renewal): success then
        also means a different serial. Raises `CertbotError` with the classified failure.
        """
        logs_dir = self.base_dir / "logs" / (
            f"{datetime.now(UTC):%Y%m%dT%H%M%S.%f}-{os.getpid()}-{name}")
        hook = shlex.join([sys.executable, "-I", "-S", str(HOOK)])
        profile = ["--preferred-profile", self.profile] if self.profile else []
        args = [
            "certonly", "--non-interactive", "--agree-tos", "--no-eff-email",
            "--server", self.server,
            "--manual", "--preferred-challenges", "http",
            "--manual-auth-hook", f"{hook} auth", "--manual-cleanup-hook", f"{hook} cleanup",
            "--cert-name", name, "-d", name,
            "--config-dir", str(self.config_dir), "--work-dir", str(self.base_dir / "work"),
            "--logs-dir", str(logs_dir), "--max-log-backups", "0", *profile,
        ]
        args += ["--email", self.email] if self.email else ["--register-unsafely-without-email"]
        if replace is not None or self.live(name).exists():
            # Our renewal policy, not certbot's, decides when to replace a certificate.
            args.append("--force-renewal")
        status, stderr = await self._run(args)
        if status == 0:
            info = self.current(name)
            if info is None:
                raise CertbotError(CertbotFailure(
                    FailureKind.LOCAL, f"certbot exited 0 but live/{name}/ is incomplete"))
            if replace is not None and info.serial == replace.serial:
                raise CertbotError(CertbotFailure(
                    FailureKind.LOCAL, f"certbot exited 0 but live/{name}/ still holds "
                                       f"serial {info.serial}"))
            shutil.rmtree(logs_dir, ignore_errors=True)
            return info
        failure = await self._classify(logs_dir, status, stderr)
        if failure.kind is FailureKind.ACCOUNT:
            # The CA forgot our account (a reset staging CA or Pebble): register afresh.
            shutil.rmtree(self.config_dir / "accounts", ignore_errors=True)
        self._prune_logs()
        raise CertbotError(failure)

    async def delete(self, name: str) -> bool:
        """Remove `name`'s certificate, key and renewal file; call inside `exclusive()`."""
        renewal = self.config_dir / "renewal" / f"{name}.conf"
        if not renewal.exists() and not self.live(name).exists():
            return False
        status, stderr = await self._run([
            "delete", "--non-interactive", "--cert-name", name,
            "--config-dir", str(self.config_dir), "--work-dir", str(self.base_dir / "work"),
            "--logs-dir", str(self.base_dir / "logs" / "delete"), "--max-log-backups", "0",
        ])
        if status != 0 or self.live(name).exists():
            # A half-made lineage certbot will not delete: remove what it would have.
            for path in (self.live(name), self.config_dir / "archive" / name):
                shutil.rmtree(path, ignore_errors=True)
            renewal.unlink(missing_ok=True)
            log.warning("certbot.delete_fallback", domain=name, status=status,
                        stderr=stderr[-500:])
        return True

    async def probe(self) -> str | None:
        """None if the ACME directory answers with JSON, else why not."""
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_bundle) if self.ca_bundle else None)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
                    http.get(self.server, ssl=context) as response:
                if response.status != 200:
                    return f"{self.server} answered HTTP {response.status}"
                document = await response.json(content_type=None)
                if not isinstance(document, dict) or "newOrder" not in document:
                    return f"{self.server} is not an ACME directory"
        except aiohttp.ClientConnectorError as exc:
            return f"{self.server} unreachable: {exc.os_error}"
        except RecursionError:  # JSON nested deeper than the parser goes
            return f"{self.server} is not an ACME directory (JSON nested too deep)"
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, ValueError) as exc:
            return f"{self.server} unreachable: {str(exc) or type(exc).__name__}"
        return None

    async def _run(self, args: list[str]) -> tuple[int, str]:
        env = dict(self._environ)
        env.pop("ACME_CHALLENGE_DIR", None)
        env.pop(HOOK_SOCKET_ENV, None)
        if self.challenge_dir is not None:
            env["ACME_CHALLENGE_DIR"] = str(self.challenge_dir)
        if self.hook_socket is not None:
            env[HOOK_SOCKET_ENV] = str(self.hook_socket)
        if self.ca_bundle is not None:
            env["REQUESTS_CA_BUNDLE"] = str(self.ca_bundle.resolve())
        self.runs += 1
        process = await asyncio.create_subprocess_exec(
            self.command, *args, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                _, stderr = await process.communicate()
        except TimeoutError:
            _kill(process)
            await process.wait()
            raise CertbotError(CertbotFailure(
                FailureKind.LOCAL, f"certbot did not finish within {self.timeout_s:.0f} s"
            )) from None
        except asyncio.CancelledError:
            # Abandoned (the drain timeout of a stopping certifier): never leave certbot
            # running, and holding its locks, behind us.
            _kill(process)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await process.wait()
            raise
        assert process.returncode is not None
        return process.returncode, stderr.decode(errors="replace")

    async def _classify(self, logs_dir: Path, status: int, stderr: str) -> CertbotFailure:
        try:
            text = (logs_dir / "letsencrypt.log").read_text(errors="replace")
        except OSError:
            text = ""
        failure = classify_log(text, datetime.now(UTC))
        if failure is not None:
            return failure
        unreachable = await self.probe()
        if unreachable is not None:
            return CertbotFailure(FailureKind.CA_UNREACHABLE, unreachable)
        # For people reading the log line only; never used to decide anything.
        last_line = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
        return CertbotFailure(FailureKind.LOCAL, f"certbot exited {status} ({last_line[:300]}); "
                                                 f"see {logs_dir}/letsencrypt.log")

    def _prune_logs(self) -> None:
        root = self.base_dir / "logs"
        with contextlib.suppress(OSError):
            runs = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "delete")
            for old in runs[:-LOG_DIRS_KEPT]:
                shutil.rmtree(old, ignore_errors=True)


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
