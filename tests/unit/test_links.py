"""Signed tracking links: minting, verifying, rotation, tampering, destinations."""

from __future__ import annotations

import hmac

import pytest

import shared.links as links
from shared.links import MAX_ID_LENGTH, MAX_TOKEN_LENGTH, LinkError, LinkSigner, check_destination
from shared.settings import LinkKey

NEW = LinkKey(kid="k2026", secret=b"test-signing-secret-0123456789abcdef")
OLD = LinkKey(kid="old", secret=b"o" * 40)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def mint(signer: LinkSigner, url: str = "https://example.com/", **ids: str) -> str:
    values = {"customer_id": "cust-a", "campaign_id": "camp-1", "recipient_id": "r42", **ids}
    return signer.mint_token(url=url, customer_id=values["customer_id"],
                             campaign_id=values["campaign_id"],
                             recipient_id=values["recipient_id"])


def test_round_trip() -> None:
    signer = LinkSigner([NEW, OLD])
    token = mint(signer, "https://example.com/sale?x=1")
    assert token.startswith("v1.k2026.")
    assert len(token.split(".")) == 4
    link = signer.verify(token)
    assert (link.customer_id, link.campaign_id, link.recipient_id, link.url, link.kid) == (
        "cust-a", "camp-1", "r42", "https://example.com/sale?x=1", "k2026")


def test_token_uses_only_url_safe_characters() -> None:
    token = mint(LinkSigner([NEW]), "https://example.com/ü?q=a+b&x=%20#frag🎉")
    assert set(token) <= set(B64URL + ".")


def test_a_signer_needs_a_key() -> None:
    with pytest.raises(ValueError):
        LinkSigner([])


# --- key rotation ---------------------------------------------------------------------------

def test_old_key_still_listed_verifies() -> None:
    old_token = mint(LinkSigner([OLD]))
    link = LinkSigner([NEW, OLD]).verify(old_token)
    assert link.kid == "old"


def test_first_key_signs() -> None:
    assert mint(LinkSigner([NEW, OLD])).startswith("v1.k2026.")
    assert mint(LinkSigner([OLD, NEW])).startswith("v1.old.")


def test_token_of_a_removed_key_is_refused() -> None:
    old_token = mint(LinkSigner([OLD]))
    with pytest.raises(LinkError):
        LinkSigner([NEW]).verify(old_token)


def test_same_kid_with_another_secret_is_refused() -> None:
    token = mint(LinkSigner([NEW]))
    with pytest.raises(LinkError):
        LinkSigner([LinkKey(kid="k2026", secret=b"z" * 40)]).verify(token)


# --- tampering ------------------------------------------------------------------------------

def _single_character_changes(token: str, start: int, end: int) -> list[str]:
    variants = []
    for index in range(start, end):
        for char in B64URL + ".=+/ ":
            if char != token[index]:
                variants.append(token[:index] + char + token[index + 1:])
    return variants


def test_changing_any_character_before_the_signature_is_refused() -> None:
    signer = LinkSigner([NEW, OLD])
    token = mint(signer, "https://example.com/ä?x=1#y")
    signature_start = token.rindex(".") + 1
    accepted = []
    for variant in _single_character_changes(token, 0, signature_start):
        try:
            signer.verify(variant)
        except LinkError:
            continue
        accepted.append(variant)
    assert accepted == []


def test_changing_any_character_of_the_signature_is_refused() -> None:
    signer = LinkSigner([NEW])
    token = mint(signer)
    signature_start = token.rindex(".") + 1
    accepted = []
    for variant in _single_character_changes(token, signature_start, len(token)):
        try:
            signer.verify(variant)
        except LinkError:
            continue
        accepted.append(variant[signature_start:])
    assert accepted == []


def test_signature_with_padding_is_refused() -> None:
    signer = LinkSigner([NEW])
    token = mint(signer)
    with pytest.raises(LinkError):
        signer.verify(token + "=")


def test_standard_alphabet_in_the_signature_is_refused() -> None:
    signer = LinkSigner([NEW])
    token = next(t for n in range(500)
                 if "-" in (t := mint(signer, recipient_id=f"r{n}")).rsplit(".", 1)[1])
    variant = token[: token.rindex(".")] + "." + token.rsplit(".", 1)[1].replace("-", "+")
    with pytest.raises(LinkError):
        signer.verify(variant)


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1],
    lambda t: t[: t.rindex(".")],
    lambda t: t + ".",
    lambda t: t + ".x",
    lambda t: "v2" + t[2:],
    lambda t: "V1" + t[2:],
    lambda t: "." + t,
    lambda t: t.replace(".", "..", 1),
    lambda t: "",
    lambda t: "v1...",
    lambda t: t[:20],
    lambda t: t.replace("v1.k2026.", "v1.old."),
    lambda t: t.replace("v1.k2026.", "v1.nobody."),
    lambda t: t + "A",
    lambda t: t[: t.rindex(".") + 1] + "é" * 43,
], ids=["drop-last", "no-signature", "trailing-dot", "extra-part", "v2", "V1", "leading-dot",
        "double-dot", "empty", "empty-parts", "truncated", "other-kid", "unknown-kid",
        "longer-signature", "non-ascii-signature"])
def test_mangled_tokens_are_refused(mangle) -> None:
    signer = LinkSigner([NEW, OLD])
    with pytest.raises(LinkError):
        signer.verify(mangle(mint(signer)))


def test_overlong_token_is_refused_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_hmac(*args, **kwargs):
        raise AssertionError("HMAC computed for an overlong token")

    monkeypatch.setattr(links.hmac, "digest", no_hmac)
    with pytest.raises(LinkError, match="too long"):
        LinkSigner([NEW]).verify("v1.k2026." + "A" * MAX_TOKEN_LENGTH + ".sig")


def test_verify_compares_macs_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = LinkSigner([NEW])
    token = mint(signer)
    calls: list[tuple[object, object]] = []  # whatever verify passes: checked below
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    signer.verify(token)
    assert len(calls) == 1
    # The canonical base64url text of the 32-byte MAC (43 characters) against the token's.
    assert all(isinstance(x, bytes) and len(x) == 43 for x in calls[0])
    assert calls[0][1] == token.rsplit(".", 1)[1].encode()
    with pytest.raises(LinkError):
        signer.verify(token[:-2] + ("AA" if token[-2:] != "AA" else "BA"))
    assert len(calls) == 2

    # And the answer is compare_digest's: forcing it to False refuses a good token.
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: False)
    with pytest.raises(LinkError):
        signer.verify(token)


# --- destinations ---------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://example.com/",
    "http://example.org",
    "HTTPS://EXAMPLE.COM/Path",
    "https://shop.example/ü/päth?q=a%20b&x=1#frag",
    "https://example.com/a%2F%3F%23?x=%E2%82%AC",
    "https://example.com/search?q=a+b&c=d&e=",
    "https://example.com/🎉?tag=🙂#😀",
    "https://bücher.example:8443/Straße",
    "https://user:pw@example.com/",
    "https://[2001:db8::1]:8443/x",
    "https://example.com/?" + "x" * 5000,
    "https://example.com/a'b\"c\\d<e>",
    "https://example.com/\u00a0nbsp-is-not-ascii-space",
])
def test_destination_comes_back_byte_exact(url: str) -> None:
    signer = LinkSigner([NEW])
    link = signer.verify(mint(signer, url))
    assert link.url == url
    assert link.url.encode("utf-8") == url.encode("utf-8")


@pytest.mark.parametrize("url", [
    "javascript:alert(1)",
    "JavaScript://example.com/%0Aalert(1)",
    "data:text/html,hi",
    "mailto:a@example.com",
    "ftp://example.com/",
    "/relative/path",
    "relative/path",
    "//example.com/x",
    "example.com",
    "https:example.com",
    "https:/example.com",
    "https://",
    "https:///path",
    "https://?x",
    "https://#x",
    "https://@example.com",
    "",
    "https://example.com/a b",
    "https://example.com/a\tb",
    "https://example.com/\r\nSet-Cookie: x=1",
    "https://example.com/\n",
    "https://example.com/\x00",
    "https://example.com/\x7f",
    " https://example.com/",
    "https://example.com/ ",
])
def test_minting_refuses_unsafe_destinations(url: str) -> None:
    with pytest.raises(LinkError):
        mint(LinkSigner([NEW]), url)
    with pytest.raises(LinkError):
        check_destination(url)


def test_destination_without_a_host_is_refused() -> None:
    with pytest.raises(LinkError):
        check_destination("http://:80/x")


def test_too_long_destination_is_refused() -> None:
    with pytest.raises(LinkError, match="8192"):
        mint(LinkSigner([NEW]), "https://example.com/?" + "x" * 7000)


# --- ids ------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["customer_id", "campaign_id", "recipient_id"])
def test_minting_refuses_empty_ids(field: str) -> None:
    with pytest.raises(LinkError, match="empty"):
        mint(LinkSigner([NEW]), **{field: ""})


@pytest.mark.parametrize("field", ["customer_id", "campaign_id", "recipient_id"])
def test_id_length_limit(field: str) -> None:
    signer = LinkSigner([NEW])
    link = signer.verify(mint(signer, **{field: "é" * MAX_ID_LENGTH}))
    assert getattr(link, field) == "é" * MAX_ID_LENGTH
    with pytest.raises(LinkError, match=str(MAX_ID_LENGTH)):
        mint(signer, **{field: "x" * (MAX_ID_LENGTH + 1)})


def test_ids_round_trip_with_json_special_characters() -> None:
    signer = LinkSigner([NEW])
    ids = {"customer_id": 'cu"st\\a', "campaign_id": "キャンペーン", "recipient_id": "a/b\u2028c"}
    link = signer.verify(mint(signer, **ids))
    assert (link.customer_id, link.campaign_id, link.recipient_id) == tuple(ids.values())


def test_mint_url() -> None:
    signer = LinkSigner([NEW])
    url = signer.mint_url("track.example.com:8080", customer_id="c", campaign_id="k",
                          recipient_id="r", url="https://example.com/", scheme="http")
    prefix = "http://track.example.com:8080/t/"
    assert url.startswith(prefix)
    assert signer.verify(url[len(prefix):]).customer_id == "c"


@pytest.mark.parametrize("field", ["customer_id", "campaign_id", "recipient_id"])
def test_minting_refuses_nul_in_ids(field: str) -> None:
    with pytest.raises(LinkError):
        mint(LinkSigner([NEW]), **{field: "a\x00b"})


def test_verify_refuses_nul_in_ids() -> None:
    import base64
    import json

    payload = json.dumps({"c": "a\x00b", "k": "k", "r": "r", "u": "https://example.com/"},
                         separators=(",", ":")).encode()
    signed = "v1.k2026." + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    mac = hmac.new(NEW.secret, signed.encode(), "sha256").digest()
    token = signed + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(LinkError):
        LinkSigner([NEW]).verify(token)


@pytest.mark.parametrize("key_length", [1, 32, 63, 64, 65, 200])
def test_the_precomputed_mac_is_hmac_sha256(key_length: int) -> None:
    # Keys longer than SHA-256's 64-byte block are hashed first (RFC 2104); secrets
    # from LINK_KEYS can be any length from 32 characters up.
    key = bytes((7 * n + key_length) % 256 for n in range(key_length))
    mac = links._Mac(key)
    for message in (b"", b"v1.k.payload", bytes(range(256)) * 5):
        assert mac.digest(message) == hmac.digest(key, message, "sha256")
    assert mac.digest(b"a") == mac.digest(b"a")  # the keyed states are copied, not consumed


def test_minting_time_and_honeypot_round_trip() -> None:
    signer = LinkSigner([NEW])
    plain = signer.verify(mint(signer))
    assert (plain.minted_at, plain.honeypot) == (None, False)
    token = signer.mint_token(customer_id="c", campaign_id="k", recipient_id="r",
                              url="https://example.com/", minted_at=1796083200, honeypot=True)
    link = signer.verify(token)
    assert (link.minted_at, link.honeypot) == (1796083200, True)
    with pytest.raises(LinkError, match="minting time"):
        signer.mint_token(customer_id="c", campaign_id="k", recipient_id="r",
                          url="https://example.com/", minted_at=-1)


@pytest.mark.parametrize("extra", ['"t":"1796083200"', '"h":true', '"t":1.5'])
def test_optional_fields_of_another_type_are_refused(extra: str) -> None:
    payload = ('{"c":"c","k":"k","r":"r","u":"https://example.com/",' + extra + "}").encode()
    signed = f"v1.{NEW.kid}.{links._b64encode(payload)}"
    token = f"{signed}.{links._b64encode(hmac.digest(NEW.secret, signed.encode(), 'sha256'))}"
    with pytest.raises(LinkError, match="malformed payload"):
        LinkSigner([NEW]).verify(token)
