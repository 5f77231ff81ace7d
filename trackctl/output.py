"""What every trackctl command shares: errors with exit codes, tables, JSON, times.

Exit codes: 0 ok, 1 a check failed (or what was asked could not be done: a missing
domain, an unreachable broker), 2 usage or configuration error. People get aligned
tables; `--json` prints one JSON document (datetimes as RFC 3339 UTC) for scripts.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TextIO, overload

OK = 0
FAILED = 1
USAGE = 2


class CliError(Exception):
    """Stop the command: `message` goes to stderr as `trackctl: <message>`."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --- times -----------------------------------------------------------------------------------

def utc_now() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...


@overload
def as_utc(value: None) -> None: ...


def as_utc(value: datetime | None) -> datetime | None:
    """Aware UTC (SQLite hands back naive datetimes, which are UTC here)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def fmt_time(value: datetime | None) -> str:
    value = as_utc(value)
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_span(seconds: float) -> str:
    """A duration for people: 45 s, 12 min, 5 h, 89 d."""
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def fmt_relative(value: datetime | None, now: datetime) -> str:
    """`2026-08-01 12:00:00Z (in 89 d)` or `(3 h ago)`."""
    value = as_utc(value)
    if value is None:
        return "-"
    delta = (value - now).total_seconds()
    when = f"in {fmt_span(delta)}" if delta >= 0 else f"{fmt_span(delta)} ago"
    return f"{fmt_time(value)} ({when})"


_SPAN_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_SPAN_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a span back from now (`90s`, `30m`, `24h`, `7d`, `2w`) or an RFC 3339 /
    ISO 8601 date or time (`2026-05-01`, `2026-05-01T10:00`, `...Z`, `...+02:00`; without
    an offset it is UTC). Raises `CliError` (usage) otherwise."""
    match = _SPAN_RE.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _SPAN_UNITS[
            match.group(2).lower()])
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        try:
            day = date.fromisoformat(candidate)
        except ValueError:
            raise CliError(f"cannot read {text!r} as a time: give a span such as 24h, 7d, "
                           "30m, or a date/time such as 2026-05-01 or 2026-05-01T10:00Z",
                           USAGE) from None
        parsed = datetime(day.year, day.month, day.day)
    return as_utc(parsed)


# --- text ------------------------------------------------------------------------------------

def shorten(text: str | None, width: int) -> str:
    """One line of at most `width` characters (newlines folded, '…' when cut)."""
    if text is None:
        return "-"
    line = " ".join(str(text).split())
    if len(line) <= width:
        return line
    return line[: max(0, width - 1)] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *,
          right: Sequence[str] = ()) -> str:
    """Aligned columns under a header line; `right` names the right-aligned columns."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))

    def line(values: Sequence[str]) -> str:
        parts = [value.rjust(widths[i]) if headers[i] in right else value.ljust(widths[i])
                 for i, value in enumerate(values)]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return fmt_time(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def fields(pairs: Sequence[tuple[str, object]]) -> str:
    """`label: value` lines with the values aligned."""
    width = max((len(label) for label, _ in pairs), default=0)
    return "\n".join(f"{label + ':':<{width + 1}} {_cell(value)}" for label, value in pairs)


# --- the terminal ----------------------------------------------------------------------------

# What trackctl never writes raw, whatever stored data holds: the C0 controls but newline
# and tab, DEL, the C1 controls (0x9b is a CSI on many terminals) and the bidi controls
# that reorder what is shown. Stored data comes from customers, CAs, browsers and anyone
# who can publish on the broker.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str) -> str:
    """`text` with each unsafe character as `\\xNN` (or `\\uNNNN` above 0xff)."""
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class EscapingStream:
    """A text stream that passes everything written through `escape_controls`: set as
    sys.stdout and sys.stderr for a trackctl command, so no output path is missed."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(escape_controls(text))

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self._stream, name)


# --- JSON ------------------------------------------------------------------------------------

def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(document: object) -> str:
    """Indented JSON, non-ASCII kept; json escapes C0 itself, and the other characters
    `escape_controls` would catch are written as `\\uNNNN` (still valid JSON)."""
    text = json.dumps(document, default=_json_default, indent=2, ensure_ascii=False)
    return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def emit_json(document: object) -> None:
    print(to_json(document))


def jsonable(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with datetimes made aware UTC (serialised by `to_json`)."""
    return {key: (as_utc(value) if isinstance(value, datetime) else value)
            for key, value in mapping.items()}


def warn(message: str) -> None:
    print(f"trackctl: {message}", file=sys.stderr)
