"""The documentation's settings tables list exactly the declared variables, with the
declared defaults and (README) the programs that read them.

README's table: the redirector's and the logger's variables, and those every service
reads. docs/troubleshooting.md, docs/certificates.md and docs/classification.md: the
verifier's, the certifier's and the classifier's, except those in README's table.
docs/trackctl.md: trackctl's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.settings import PROGRAMS, SERVICES

ROOT = Path(__file__).resolve().parents[2]
EVERY_SERVICE = frozenset.intersection(*(program.names for program in SERVICES.values()))
# In README's table, not repeated in a service's own: what every service reads, and the
# database every service but the classifier (which keeps no state) reads.
IN_README = EVERY_SERVICE | {"DATABASE_URL"}
_NAME = re.compile(r"`([A-Z][A-Z0-9_]*)`")


def table(doc: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped, header and rule left out) of the first table after
    `heading` in `doc`."""
    lines = (ROOT / doc).read_text().splitlines()
    start = lines.index(heading)
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


def variable(cell: str) -> str:
    match = _NAME.fullmatch(cell)
    assert match, f"{cell!r}: one variable per row, written `NAME`"
    return match.group(1)


def readers(name: str) -> list[str]:
    return [program for program in PROGRAMS if name in PROGRAMS[program].names]


def used_by(name: str) -> str:
    """`all services`, or the services by name; then trackctl if it reads it too."""
    programs = readers(name)
    services = [program for program in programs if program in SERVICES]
    words = ["all services"] if len(services) == len(SERVICES) else services
    return ", ".join(words + [program for program in programs if program not in SERVICES])


def default(name: str, programs: list[str]) -> str:
    """The default as the declarations show it; `program: default; ...` where the
    programs' defaults differ."""
    groups: dict[str, list[str]] = {}
    for program in programs:
        groups.setdefault(PROGRAMS[program][name].shown_default, []).append(program)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{', '.join(names)}: {shown}" for shown, names in groups.items())


def row_for(name: str, program: str) -> str:
    setting = PROGRAMS[program][name]
    return f"| `{name}` | {setting.shown_default} | {setting.help} |"


def check_names(found: list[str], expected: set[str], doc: str, program: str) -> None:
    assert len(found) == len(set(found)), f"{doc} lists a variable twice: {found}"
    missing = sorted(expected - set(found))
    assert not missing, f"{doc} does not list {missing}; for example:\n" + "\n".join(
        row_for(name, program if name in PROGRAMS[program].names else readers(name)[0])
        for name in missing)
    unknown = sorted(set(found) - expected)
    assert not unknown, f"{doc} lists {unknown}, which no program there declares"


def test_readme_lists_the_redirector_the_logger_and_every_service_settings() -> None:
    rows = table("README.md", "## Configuration")
    names = [variable(row[0]) for row in rows]
    expected = SERVICES["redirector"].names | SERVICES["logger"].names | EVERY_SERVICE
    check_names(names, set(expected), "README.md", "redirector")
    for name, row in zip(names, rows, strict=True):
        assert row[1] == used_by(name), f"README.md, {name}: used by {used_by(name)}"
        wanted = default(name, readers(name))
        assert row[2] == wanted, f"README.md, {name}: the default is {wanted}"


@pytest.mark.parametrize(("doc", "heading", "service"), [
    ("docs/troubleshooting.md", "## Settings (verifier)", "verifier"),
    ("docs/certificates.md", "## Settings", "certifier"),
    ("docs/classification.md", "## Settings (classifier)", "classifier"),
    ("docs/certificates.md", "## Settings (edge agent)", "edge"),
])
def test_a_service_table_lists_its_own_settings(doc: str, heading: str, service: str) -> None:
    rows = table(doc, heading)
    names = [variable(row[0]) for row in rows]
    check_names(names, set(SERVICES[service].names - IN_README), doc, service)
    for name, row in zip(names, rows, strict=True):
        wanted = default(name, [service])
        assert row[1] == wanted, f"{doc}, {name}: the default is {wanted}"


def test_trackctl_doc_lists_the_settings_trackctl_reads() -> None:
    rows = table("docs/trackctl.md", "# trackctl: the operator's command line")
    names = [name for row in rows for name in _NAME.findall(row[0])]
    check_names(names, set(PROGRAMS["trackctl"].names), "docs/trackctl.md", "trackctl")


def test_every_declared_variable_is_documented() -> None:
    documented = (SERVICES["redirector"].names | SERVICES["logger"].names
                  | SERVICES["verifier"].names | SERVICES["certifier"].names
                  | SERVICES["classifier"].names | SERVICES["edge"].names
                  | PROGRAMS["trackctl"].names)
    declared = frozenset.union(*(program.names for program in PROGRAMS.values()))
    assert declared == documented
