"""Signed tracking links: minted by the platform, verified by the redirector with no database.

Format (docs/links.md is the contract for other languages)::

    https://<host>/t/v1.<kid>.<payload>.<signature>

- `payload`: base64url (no padding) of a UTF-8 JSON object with string fields
  `c` (customer id), `k` (campaign id), `r` (recipient id), `u` (destination URL),
  and two optional integers: `t` (minting time, Unix seconds: the platform mints at
  send time) and `h` (1: a honeypot link the platform hides from people). Unknown
  fields are ignored, so later versions can add some (as `t` and `h` were).
- `signature`: base64url (no padding) of HMAC-SHA256(secret of `kid`, the ASCII
  text `v1.<kid>.<payload>`).  Signing the encoded text, not the JSON, means no
  implementation has to reproduce our JSON byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Annotated

import msgspec

from shared.settings import LinkKey

VERSION = "v1"
PATH_PREFIX = "/t/"
MAX_TOKEN_LENGTH = 8192
MAX_ID_LENGTH = 256


class LinkError(ValueError):
    """A link cannot be minted (bad input) or verified (forged, truncated, unknown key)."""


_IdText = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class _Payload(msgspec.Struct, omit_defaults=True):
    c: _IdText
    k: _IdText
    r: _IdText
    u: str
    t: int | None = None
    h: int = 0


class Link(msgspec.Struct, frozen=True):
    """What a verified tracking link carries.

    A msgspec Struct, not a frozen dataclass: one is made per click, and the
    dataclass's `__init__` cost much more (docs/performance.md).
    """

    customer_id: str
    campaign_id: str
    recipient_id: str
    url: str
    kid: str
    minted_at: int | None = None  # `t`: Unix seconds, when the platform sent the mail
    honeypot: bool = False  # `h: 1`: a link hidden from people, so only machines follow it


_BLOCK = 64  # SHA-256's block size: what HMAC pads the key to
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


class _Mac:
    """HMAC-SHA256 (RFC 2104) under one key, the key's two padded hash states made once.

    `hmac.digest` sets an OpenSSL 3 HMAC context up on every call, which costs more than
    copying the two keyed states, and the signature is checked on every click (figures:
    docs/performance.md). tests/unit/test_links.py checks it against `hmac.digest`.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_payload_decoder = msgspec.json.Decoder(_Payload)
_payload_encoder = msgspec.json.Encoder()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# Spaces and control characters never belong in a URL, and CR/LF in a Location
# header would split the response: refused when minting and again when verifying.
_UNSAFE_RE = re.compile(r"[\x00-\x20\x7f]")
_SCHEME_RE = re.compile(r"^https?://[^/?#@:]", re.IGNORECASE)


def check_destination(url: str) -> None:
    """Raise `LinkError` unless `url` is an absolute http(s) URL safe to redirect to."""
    if not url[:8].lower().startswith(("http://", "https://")):
        raise LinkError("destination must be an absolute http:// or https:// URL")
    if not _SCHEME_RE.match(url):
        raise LinkError("destination has no host")
    if _UNSAFE_RE.search(url):
        raise LinkError("destination contains spaces or control characters; percent-encode them")


class LinkSigner:
    """Mints with the first key, verifies with any: keys rotate without breaking sent links."""

    def __init__(self, keys: Sequence[LinkKey]) -> None:
        if not keys:
            raise ValueError("at least one link key is needed")
        self._signing = keys[0]
        self._macs = {key.kid: _Mac(key.secret) for key in keys}

    def mint_token(self, *, customer_id: str, campaign_id: str, recipient_id: str,
                   url: str, minted_at: int | None = None, honeypot: bool = False) -> str:
        for name, value in (("customer", customer_id), ("campaign", campaign_id),
                            ("recipient", recipient_id)):
            if not value:
                raise LinkError(f"{name} id must not be empty")
            if len(value) > MAX_ID_LENGTH:
                raise LinkError(f"{name} id must be at most {MAX_ID_LENGTH} characters")
            if "\x00" in value:
                raise LinkError(f"{name} id must not contain the NUL character")
        check_destination(url)
        if minted_at is not None and minted_at < 0:
            raise LinkError("the minting time must be Unix seconds, not negative")
        payload = _payload_encoder.encode(
            _Payload(c=customer_id, k=campaign_id, r=recipient_id, u=url, t=minted_at,
                     h=1 if honeypot else 0)
        )
        signed = f"{VERSION}.{self._signing.kid}.{_b64encode(payload)}"
        signature = self._macs[self._signing.kid].digest(signed.encode("ascii"))
        token = f"{signed}.{_b64encode(signature)}"
        if len(token) > MAX_TOKEN_LENGTH:
            raise LinkError(f"the link would be {len(token)} characters; at most "
                            f"{MAX_TOKEN_LENGTH} are allowed")
        return token

    def mint_url(self, host: str, *, customer_id: str, campaign_id: str, recipient_id: str,
                 url: str, scheme: str = "https", minted_at: int | None = None,
                 honeypot: bool = False) -> str:
        token = self.mint_token(customer_id=customer_id, campaign_id=campaign_id,
                                recipient_id=recipient_id, url=url, minted_at=minted_at,
                                honeypot=honeypot)
        return f"{scheme}://{host}{PATH_PREFIX}{token}"

    def verify(self, token: str) -> Link:
        """Return the link `token` carries, or raise `LinkError`. Constant-time on the MAC."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise LinkError("too long")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise LinkError("not a v1 token")
        _, kid, payload_b64, signature_b64 = parts
        mac = self._macs.get(kid)
        if mac is None:
            raise LinkError("unknown key id")
        try:
            signed = token[: len(token) - len(signature_b64) - 1].encode("ascii")
            given = signature_b64.encode("ascii")
        except UnicodeEncodeError:
            raise LinkError("malformed token") from None
        # Compare the text with the one canonical encoding of the MAC: a padded or
        # otherwise re-encoded signature is a different token and is refused.
        expected = _b64encode(mac.digest(signed)).encode("ascii")
        if not hmac.compare_digest(expected, given):
            raise LinkError("bad signature")
        try:
            # Not the validating decoder: the MAC already covers these exact characters,
            # and the plain one is several times faster on every click.
            payload = _payload_decoder.decode(
                base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
        except (binascii.Error, ValueError, msgspec.DecodeError):
            # Signed by us yet unreadable: only a key leak or a minting bug gets here.
            raise LinkError("malformed payload") from None
        url = payload.u
        if not _SCHEME_RE.match(url) or _UNSAFE_RE.search(url):
            raise LinkError("destination is not a safe absolute http(s) URL")
        if "\x00" in payload.c or "\x00" in payload.k or "\x00" in payload.r:
            # Such a click could never be stored: refuse the link rather than lose the click.
            raise LinkError("an id contains the NUL character")
        return Link(customer_id=payload.c, campaign_id=payload.k, recipient_id=payload.r,
                    url=url, kid=kid, minted_at=payload.t, honeypot=payload.h == 1)
