"""Encryption at rest for what the certificate store keeps secret: private keys, the ACME
account key.

Each secret is sealed with AES-256-GCM under the first key of `CERT_STORE_KEYS`
(`kid:secret,...`, read like `LINK_KEYS`: shared/settings/platform.py). The AES key is
HKDF-SHA256 of the secret's UTF-8 bytes with the kid in the `info`, so any secret of 32
characters or more gives a full-strength key and two kids never share one. A sealed
value is the 12-byte random nonce followed by the ciphertext and its 16-byte tag; the
kid is stored beside it (a column of its own), so any listed key opens it.

The associated data names what the secret belongs to (`purpose` and the domain or ACME
server), so a ciphertext copied onto another row does not decrypt: a key stolen from
one domain's row can never be served for another. Rotation: docs/certificates.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.settings import StoreKey

NONCE_BYTES = 12
_INFO = b"tracking-domains certificate store v1 kid="


class SealError(ValueError):
    """A sealed value cannot be opened: its kid is not listed, or it was altered, or it
    belongs to another row (the associated data differs). Never carries key material."""


@dataclass(frozen=True)
class Sealed:
    """A secret as stored: the kid of the key that sealed it, and nonce + ciphertext + tag."""

    kid: str
    blob: bytes = field(repr=False)


def _aes_key(key: StoreKey) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_INFO + key.kid.encode("ascii")).derive(key.secret)


def associated_data(purpose: str, subject: str) -> bytes:
    """What a sealed value is bound to: `purpose` ("private-key", "acme-account") and its
    subject (the domain name, the ACME directory URL)."""
    return f"{purpose}\0{subject}".encode()


class Keyring:
    """Seals with the first key, opens with any listed one."""

    def __init__(self, keys: Sequence[StoreKey]) -> None:
        if not keys:
            raise ValueError("at least one certificate store key is needed")
        self.current_kid = keys[0].kid
        self._ciphers = {key.kid: AESGCM(_aes_key(key)) for key in keys}

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def seal(self, plaintext: bytes, *, purpose: str, subject: str) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        cipher = self._ciphers[self.current_kid]
        blob = nonce + cipher.encrypt(nonce, plaintext, associated_data(purpose, subject))
        return Sealed(kid=self.current_kid, blob=blob)

    def open(self, sealed: Sealed, *, purpose: str, subject: str) -> bytes:
        cipher = self._ciphers.get(sealed.kid)
        if cipher is None:
            raise SealError(f"sealed under key id {sealed.kid!r}, which CERT_STORE_KEYS "
                            "does not list")
        if len(sealed.blob) < NONCE_BYTES + 16:
            raise SealError("sealed value is truncated")
        nonce, ciphertext = sealed.blob[:NONCE_BYTES], sealed.blob[NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, ciphertext, associated_data(purpose, subject))
        except InvalidTag:
            raise SealError(f"sealed value under key id {sealed.kid!r} does not open for "
                            f"this {purpose} (altered, or copied from another row)") from None

    def reseal(self, sealed: Sealed, *, purpose: str, subject: str) -> Sealed | None:
        """The value sealed under the current key; None when it already is."""
        if sealed.kid == self.current_kid:
            return None
        return self.seal(self.open(sealed, purpose=purpose, subject=subject),
                         purpose=purpose, subject=subject)
