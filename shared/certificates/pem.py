"""Reading certificate chains and private keys (PEM) with `cryptography`."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization


class PemError(ValueError):
    """Not a usable chain, or a key that does not belong to its leaf."""


@dataclass(frozen=True)
class CertificateInfo:
    """What the services need to know of a leaf certificate."""

    not_before: datetime
    not_after: datetime
    serial: str  # lower-case hex, no leading zeros: as `certificate.issued` carries it

    @property
    def lifetime(self) -> timedelta:
        return self.not_after - self.not_before


def info(certificate: x509.Certificate) -> CertificateInfo:
    return CertificateInfo(not_before=certificate.not_valid_before_utc,
                           not_after=certificate.not_valid_after_utc,
                           serial=format(certificate.serial_number, "x"))


def leaf(chain_pem: str | bytes) -> x509.Certificate:
    """The first certificate of a PEM chain (the leaf, as certbot's fullchain.pem has it)."""
    data = chain_pem.encode("ascii") if isinstance(chain_pem, str) else chain_pem
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PemError(f"not a PEM certificate chain: {exc}") from None
    return certificates[0]


def check_pair(chain_pem: str, key_pem: bytes) -> CertificateInfo:
    """The leaf's facts, after checking that `key_pem` is the leaf's private key."""
    certificate = leaf(chain_pem)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PemError(f"not an unencrypted PEM private key: {type(exc).__name__}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            certificate.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise PemError("the private key does not belong to the chain's leaf certificate")
    return info(certificate)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ari_certificate_id(certificate: x509.Certificate) -> str | None:
    """The certificate's ACME Renewal Information identifier (RFC 9773, section 4.1):
    base64url of the Authority Key Identifier's keyIdentifier, ".", base64url of the
    serial's DER INTEGER content octets. None when the certificate has no AKI."""
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    key_id = extension.value.key_identifier
    if key_id is None:
        return None
    serial = certificate.serial_number
    # DER INTEGER: big-endian two's complement, a leading zero when the top bit is set.
    octets = serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=True)
    return f"{_b64url(key_id)}.{_b64url(octets)}"
