"""ACME Renewal Information (RFC 9773): the certificate identifier, the window, the draw."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from acme.client import _renewal_info_path_component
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.certifier.ari import (
    DEFAULT_RETRY_AFTER,
    MAX_RETRY_AFTER,
    MIN_RETRY_AFTER,
    RenewalWindow,
    parse_retry_after,
    parse_window,
)
from services.certifier.issuance import stable_rng
from shared.certificates.pem import CertificateInfo, ari_certificate_id

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def certificate(serial: int, key_id: bytes | None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.test")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=90)))
    if key_id is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(
            key_identifier=key_id, authority_cert_issuer=None,
            authority_cert_serial_number=None), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_the_certificate_identifier_is_rfc_9773s_example() -> None:
    key_id = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    assert ari_certificate_id(certificate(0x87654321, key_id)) == \
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000,
                                    x509.random_serial_number()])
def test_the_identifier_matches_certbots_acme_library(serial: int) -> None:
    cert = certificate(serial, bytes(range(20)))
    assert ari_certificate_id(cert) == _renewal_info_path_component(cert)


def test_a_certificate_without_an_authority_key_identifier_has_none() -> None:
    assert ari_certificate_id(certificate(5, None)) is None


def test_the_moment_is_inside_what_is_left_of_the_window() -> None:
    window = RenewalWindow(start=NOW + timedelta(days=1), end=NOW + timedelta(days=3))
    rng = random.Random(3)
    moments = [window.choose(NOW, rng) for _ in range(500)]
    assert all(window.start <= m <= window.end for m in moments)
    assert len({m.date() for m in moments}) >= 2  # spread, not one moment
    inside = NOW + timedelta(days=2)
    assert all(inside <= window.choose(inside, rng) <= window.end for _ in range(100))
    assert window.choose(NOW + timedelta(days=4), rng) == NOW + timedelta(days=4)


def test_the_draw_is_stable_per_certificate_and_window() -> None:
    window = RenewalWindow(start=NOW, end=NOW + timedelta(days=2))
    info = CertificateInfo(not_before=NOW, not_after=NOW + timedelta(days=90), serial="ab")
    first = window.choose(NOW, stable_rng(info, window))
    assert window.choose(NOW, stable_rng(info, window)) == first
    other = CertificateInfo(not_before=NOW, not_after=NOW + timedelta(days=90), serial="ac")
    assert window.choose(NOW, stable_rng(other, window)) != first


def test_renewal_info_documents_and_retry_after() -> None:
    window = parse_window({"suggestedWindow": {"start": "2026-12-05T00:00:00Z",
                                               "end": "2026-12-06T00:00:00+00:00"}},
                          timedelta(hours=1))
    assert (window.start, window.end) == (NOW + timedelta(days=3), NOW + timedelta(days=4))
    bad: object
    for bad in ({}, {"suggestedWindow": {"start": "2026-12-06T00:00:00Z",
                                         "end": "2026-12-05T00:00:00Z"}},
                {"suggestedWindow": {"start": "2026-12-05", "end": "2026-12-06"}},
                {"suggestedWindow": "soon"}, []):
        with pytest.raises(ValueError):
            parse_window(bad, DEFAULT_RETRY_AFTER)
    assert parse_retry_after(None) == DEFAULT_RETRY_AFTER
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT") == DEFAULT_RETRY_AFTER
    assert parse_retry_after("3") == MIN_RETRY_AFTER
    assert parse_retry_after("21600") == timedelta(hours=6)
    assert parse_retry_after("99999999") == MAX_RETRY_AFTER
