"""The certificate store's keyring: AES-GCM under CERT_STORE_KEYS, bound to its row."""

from __future__ import annotations

import pytest

from shared.certificates import Keyring, Sealed, SealError
from shared.errors import SettingsError
from shared.settings import CERT_STORE_KEYS, StoreKey

NEW = "k2027:" + "n" * 40
OLD = "k2026:" + "o" * 40


def keyring(value: str) -> Keyring:
    return Keyring(CERT_STORE_KEYS.parse(value))


def test_seals_with_the_first_key_and_opens_with_any_listed() -> None:
    sealed = keyring(OLD).seal(b"key material", purpose="private-key", subject="a.test")
    assert sealed.kid == "k2026"
    rotated = keyring(f"{NEW},{OLD}")
    assert rotated.open(sealed, purpose="private-key", subject="a.test") == b"key material"
    assert rotated.seal(b"x", purpose="private-key", subject="a.test").kid == "k2027"


def test_a_value_bound_to_one_row_does_not_open_for_another() -> None:
    ring = keyring(OLD)
    sealed = ring.seal(b"key material", purpose="private-key", subject="a.test")
    with pytest.raises(SealError, match="copied from another row"):
        ring.open(sealed, purpose="private-key", subject="b.test")
    with pytest.raises(SealError):
        ring.open(sealed, purpose="acme-account", subject="a.test")


def test_tampering_an_unknown_kid_and_truncation_are_refused_without_key_material() -> None:
    ring = keyring(OLD)
    sealed = ring.seal(b"key material", purpose="private-key", subject="a.test")
    flipped = Sealed(kid=sealed.kid, blob=sealed.blob[:-1] + bytes([sealed.blob[-1] ^ 1]))
    with pytest.raises(SealError):
        ring.open(flipped, purpose="private-key", subject="a.test")
    with pytest.raises(SealError, match="does not list"):
        keyring(NEW).open(sealed, purpose="private-key", subject="a.test")
    with pytest.raises(SealError, match="truncated"):
        ring.open(Sealed(kid=sealed.kid, blob=b"short"), purpose="private-key", subject="a")
    assert "o" * 10 not in repr(sealed) + repr(CERT_STORE_KEYS.parse(OLD))


def test_the_same_secret_under_two_kids_gives_two_keys() -> None:
    one = Keyring([StoreKey("one", b"s" * 40)])
    two = Keyring([StoreKey("two", b"s" * 40)])
    sealed = one.seal(b"x", purpose="p", subject="s")
    with pytest.raises(SealError):
        two.open(Sealed(kid="two", blob=sealed.blob), purpose="p", subject="s")


def test_reseal_moves_old_values_to_the_first_key_only() -> None:
    sealed = keyring(OLD).seal(b"key", purpose="private-key", subject="a.test")
    rotated = keyring(f"{NEW},{OLD}")
    moved = rotated.reseal(sealed, purpose="private-key", subject="a.test")
    assert moved is not None and moved.kid == "k2027"
    assert keyring(NEW).open(moved, purpose="private-key", subject="a.test") == b"key"
    assert rotated.reseal(moved, purpose="private-key", subject="a.test") is None


@pytest.mark.parametrize(("value", "message"), [
    ("", "entry 1 must be kid:secret"),
    ("k1:short", "at least 32 characters, got 5"),
    (f"{OLD},{OLD}", "entries 1 and 2: the same key id appears twice"),
    ("bad kid!:" + "x" * 40, "the key id"),
])
def test_cert_store_keys_follow_the_link_keys_rules(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        CERT_STORE_KEYS.parse(value)
    assert str(caught.value).startswith("CERT_STORE_KEYS")
    assert "xxxxxxxx" not in str(caught.value)
