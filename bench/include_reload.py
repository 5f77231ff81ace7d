"""The bench's baseline: the include-and-reload design the certifier used before the
edge agent (one `server` block per domain with fixed certificate paths, nginx reloaded
for every new certificate). Only what decides its cost is kept: every block names its
own chain and key, which nginx parses again at each reload. It exists for
bench/edge_certificates.py only; no service writes such a file any more.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def render_blocks(chains: Mapping[str, Path], key: Path, *, https_listen: str) -> str:
    """An include for `http {}`: a handshake-refusing default server, then one server per
    name (sorted) with `chains[name]` and the shared `key`."""
    parts = [
        "ssl_protocols TLSv1.2 TLSv1.3;\n"
        "server_names_hash_bucket_size 128;\n"
        "server_names_hash_max_size 65536;\n"
        f"server {{\n    listen {https_listen} ssl default_server;\n"
        "    server_name _;\n    ssl_reject_handshake on;\n}\n"]
    for name in sorted(chains):
        parts.append(
            f"server {{\n    listen {https_listen} ssl;\n    server_name {name};\n"
            f'    ssl_certificate "{chains[name]}";\n    ssl_certificate_key "{key}";\n'
            "    return 204;\n}\n")
    return "".join(parts)
