"""docs/events.md cannot drift: every JSON example decodes as the type its section documents."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from shared.broker.names import BINDINGS, RETRY_DELAYS_MS
from shared.broker.topology import Topology
from shared.events import BATCH, EVENT_TYPES, STRUCTURED, Event, decode_message, schema_of

DOC = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text(encoding="utf-8")
_HEADING_RE = re.compile(r"^#+ ")
_TYPE_HEADING_RE = re.compile(r"^### `([a-z]+\.[a-z]+)`\s*$")


def _sections() -> dict[str, str]:
    """Text of each `### `<type>`` section, up to the next heading of any level."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in DOC.splitlines():
        if _HEADING_RE.match(line):
            match = _TYPE_HEADING_RE.match(line)
            current = match.group(1) if match else None
            if current is not None:
                sections[current] = []
            continue
        if current is not None:
            sections[current].append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def _json_blocks() -> list[tuple[str | None, str]]:
    """(type whose section holds it, text) of every ```json block in the document."""
    blocks: list[tuple[str | None, str]] = []
    current: str | None = None
    lines = iter(DOC.splitlines())
    for line in lines:
        if _HEADING_RE.match(line):
            match = _TYPE_HEADING_RE.match(line)
            current = match.group(1) if match else None
        elif line.strip() == "```json":
            body = []
            for inner in lines:
                if inner.strip() == "```":
                    break
                body.append(inner)
            blocks.append((current, "\n".join(body)))
    return blocks


BLOCKS = _json_blocks()
SECTIONS = _sections()


def test_every_event_type_has_a_section_and_an_example() -> None:
    assert set(SECTIONS) == set(EVENT_TYPES)
    documented = {section for section, _ in BLOCKS}
    assert documented == set(EVENT_TYPES)


@pytest.mark.parametrize(("section", "text"), BLOCKS,
                         ids=[f"{s}-{n}" for n, (s, _) in enumerate(BLOCKS)])
def test_json_example_decodes_as_the_documented_type(section: str | None, text: str) -> None:
    assert section is not None, "a ```json block outside an event type's section"
    body = text.encode("utf-8")
    content_type = BATCH if text.lstrip().startswith("[") else STRUCTURED
    decoded = decode_message(body, content_type)
    assert decoded
    for item in decoded:
        assert isinstance(item, Event), getattr(item, "reason", item)
        assert item.type == section
        assert isinstance(item.data, EVENT_TYPES[section])
        assert item.time.utcoffset() is not None


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_each_section_documents_every_field_and_the_schema(name: str) -> None:
    cls = EVENT_TYPES[name]
    section = SECTIONS[name]
    for field in msgspec.structs.fields(cls):
        assert f"| `{field.name}` |" in section, f"{name}: field {field.name} not in its table"
    assert f'"dataschema": "{schema_of(cls)}"' in section


def test_examples_use_only_known_fields() -> None:
    # Unknown fields are tolerated by consumers, so a typo in the docs would go unseen.
    for section, text in BLOCKS:
        assert section is not None
        known = {f.name for f in msgspec.structs.fields(EVENT_TYPES[section])}
        events = msgspec.json.decode(text)
        for event in events if isinstance(events, list) else [events]:
            assert set(event["data"]) <= known, (section, set(event["data"]) - known)


def test_queue_names_and_retry_tiers_match_the_topology() -> None:
    topology = Topology("tracking")
    for service, keys in BINDINGS.items():
        queue = topology.queue(service).replace("tracking.", "<exchange>.")
        row = next(line for line in DOC.splitlines() if line.startswith(f"| `{queue}` |"))
        for key in keys:
            assert f"`{key}`" in row
    assert "tiers: " + ", ".join(f"{d}ms" for d in RETRY_DELAYS_MS) in DOC
    assert topology.retry_queue("verifier", RETRY_DELAYS_MS[0]) in DOC
    assert topology.dead_queue("logger") in DOC


def test_dead_letter_headers_are_documented() -> None:
    from shared.broker import consumer

    for header in (consumer.REASON_HEADER, consumer.ERROR_HEADER, consumer.ATTEMPT_HEADER,
                   consumer.QUEUE_HEADER, consumer.ROUTING_KEY_HEADER, consumer.DEAD_AT_HEADER,
                   consumer.LAST_ERROR_HEADER):
        assert f"`{header}`" in DOC
    for reason in ("malformed", "rejected", "exhausted"):
        assert f"`{reason}`" in DOC
