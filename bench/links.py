"""The signed links the HTTP systems are loaded with, and the request wrk makes of them."""

from __future__ import annotations

from pathlib import Path

from demo.net import https_get
from shared.links import LinkSigner
from shared.settings import parse_link_keys

TRACKING_HOST = "click.bench.test"
LINK_KEYS = "bench:" + "bench-signing-secret-0123456789abcdef"
# A browser's: the redirector flags scanners and scripts as bots, and these clicks are a
# person's.
USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0 Safari/537.36")

Links = list[tuple[str, dict[str, str]]]


def make_links(count: int, minted_at: int | None = None) -> Links:
    """`count` distinct signed links: (token, the fields it was minted from) each; with
    `minted_at`, each carries that minting time `t` (docs/links.md)."""
    signer = LinkSigner(parse_link_keys(LINK_KEYS))
    links = []
    for i in range(count):
        fields = {"customer_id": f"cust-{i % 20}", "campaign_id": f"camp-{i % 200}",
                  "recipient_id": f"rcpt-{i:07d}",
                  "url": f"https://shop{i % 20}.example/products/{i}?utm_source=email"
                         f"&utm_campaign=camp-{i % 200}"}
        links.append((signer.mint_token(
            customer_id=fields["customer_id"], campaign_id=fields["campaign_id"],
            recipient_id=fields["recipient_id"], url=fields["url"], minted_at=minted_at),
            fields))
    return links


def write_paths(links: Links, path: Path) -> Path:
    """The paths file bench/paths.lua reads: one /t/<token> per line."""
    path.write_text("".join(f"/t/{token}\n" for token, _ in links))
    return path


def check_redirects(port: int, token: str, url: str) -> None:
    """The server answers a link with a 302 to its URL, and a forged one with a 404."""
    status, headers, _ = https_get(port, TRACKING_HOST, f"/t/{token}", user_agent=USER_AGENT)
    if status != 302 or headers.get("Location") != url:
        raise RuntimeError(f"expected 302 to {url}, got {status} {headers.get('Location')}")
    status, _, _ = https_get(port, TRACKING_HOST, f"/t/{token[:-4]}AAAA",
                             user_agent=USER_AGENT)
    if status != 404:
        raise RuntimeError(f"a forged link got {status}, not 404")
