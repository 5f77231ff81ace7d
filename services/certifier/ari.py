"""ACME Renewal Information (RFC 9773): when the CA would like a certificate renewed.

A CA that offers it lists `renewalInfo` in its directory. `GET <renewalInfo>/<certID>`
(certID: shared.certificates.pem.ari_certificate_id) answers a `suggestedWindow`
(`start`, `end`, RFC 3339) and a `Retry-After` saying when to ask again. The client
picks a uniformly random moment inside the window, so the CA spreads its subscribers'
renewals, and it can move a window earlier (a mass revocation) and be heard within a
Retry-After. A CA without `renewalInfo` (Pebble 2.4) gets the fallback: a third of
the lifetime before expiry, jittered (issuance.renew_at).

Errors never stop a renewal: no answer is treated as no ARI for this round.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog

log = structlog.get_logger(__name__)

DEFAULT_RETRY_AFTER = timedelta(hours=6)
# A CA's Retry-After is believed within these bounds: never a tight polling loop, never
# so long that a moved window goes unnoticed until it has passed.
MIN_RETRY_AFTER = timedelta(minutes=1)
MAX_RETRY_AFTER = timedelta(days=1)
DIRECTORY_TTL = timedelta(hours=12)


@dataclass(frozen=True)
class RenewalWindow:
    start: datetime
    end: datetime
    retry_after: timedelta = DEFAULT_RETRY_AFTER

    def choose(self, now: datetime, rng: random.Random) -> datetime:
        """A uniformly random moment in what is left of the window; `now` once it ended."""
        start = max(self.start, now)
        if self.end <= start:
            return now
        return start + (self.end - start) * rng.random()


def parse_window(document: Any, retry_after: timedelta) -> RenewalWindow:
    """The `suggestedWindow` of a renewalInfo response; ValueError when malformed."""
    try:
        window = document["suggestedWindow"]
        start = datetime.fromisoformat(str(window["start"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(window["end"]).replace("Z", "+00:00"))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"no suggestedWindow: {exc!r}") from None
    if start.tzinfo is None or end.tzinfo is None or end < start:
        raise ValueError("suggestedWindow is not a window of two times with offsets")
    return RenewalWindow(start=start, end=end, retry_after=retry_after)


def parse_retry_after(value: str | None) -> timedelta:
    """Retry-After in seconds, within MIN..MAX_RETRY_AFTER; the default when absent."""
    if value is None or not value.strip().isdigit() or len(value.strip()) > 9:
        return DEFAULT_RETRY_AFTER
    return min(max(timedelta(seconds=int(value.strip())), MIN_RETRY_AFTER), MAX_RETRY_AFTER)


class AriClient:
    """renewalInfo lookups against one ACME directory (the certifier's CA)."""

    def __init__(self, directory_url: str, *, ca_bundle: Path | None = None,
                 timeout_s: float = 10.0) -> None:
        self.directory_url = directory_url
        self._ssl = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._base: str | None = None
        self._base_read_at: datetime | None = None

    async def _get(self, url: str) -> tuple[Any, str | None]:
        async with aiohttp.ClientSession(timeout=self._timeout) as http, \
                http.get(url, ssl=self._ssl) as response:
            if response.status != 200:
                raise ValueError(f"{url} answered HTTP {response.status}")
            return await response.json(content_type=None), response.headers.get("Retry-After")

    async def base_url(self, now: datetime) -> str | None:
        """The directory's `renewalInfo` (None: the CA offers no ARI), read twice a day."""
        if self._base_read_at is None or now - self._base_read_at > DIRECTORY_TTL:
            document, _ = await self._get(self.directory_url)
            base = document.get("renewalInfo") if isinstance(document, dict) else None
            self._base = base.rstrip("/") if isinstance(base, str) and base else None
            self._base_read_at = now
        return self._base

    async def window(self, ari_id: str, now: datetime) -> RenewalWindow | None:
        """The CA's suggested window for the certificate `ari_id`; None when the CA has no
        ARI or did not answer (logged: the fallback schedule applies)."""
        try:
            base = await self.base_url(now)
            if base is None:
                return None
            document, retry_after = await self._get(f"{base}/{ari_id}")
            return parse_window(document, parse_retry_after(retry_after))
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, ValueError,
                RecursionError) as exc:
            log.warning("ari.unavailable", url=self.directory_url,
                        error=str(exc) or type(exc).__name__)
            return None
