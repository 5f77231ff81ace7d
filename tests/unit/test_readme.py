"""What the README tells a newcomer holds: the commands that need root say so, and the
first click's explanation matches what the code does with it."""

from __future__ import annotations

import re
from pathlib import Path

from services.redirector.bots import request_reasons

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def test_the_commands_that_install_debian_packages_say_they_need_root() -> None:
    run = (ROOT / "scripts" / "run").read_text()
    tests = (ROOT / "scripts" / "test").read_text()
    assert "apt-get install" in (ROOT / "scripts" / "bootstrap").read_text()
    demo = re.search(r'--demo.*?APT_PACKAGES="([^"]+)" scripts/bootstrap', run, re.S)
    suite = re.search(r'APT_PACKAGES="([^"]+)" scripts/bootstrap', tests)
    assert demo is not None and suite is not None
    section = _section("Run it")
    assert "as root" in section
    for package in {*demo.group(1).split(), *suite.group(1).split()}:
        assert f"`{package}`" in section, package
    assert "`scripts/run --demo` and `scripts/test`" in section


def test_the_first_click_explains_the_token_the_stored_row_and_the_bot_flag() -> None:
    section = _section("Run it")
    block = section[section.index("Then mint and click a link"):]
    assert "v1...." not in block  # no placeholder that looks like a token to paste
    assert "trackctl clicks --campaign spring" in block
    assert "`user-agent:curl`" in block and "bot" in block
    assert request_reasons("GET", "curl/7.88.1") == ("user-agent:curl",)
