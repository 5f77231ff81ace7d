"""What a handler made of one piece of work: one shape for every service.

A piece of work (an event, a periodic recheck, a renewal) ends in one `Outcome`, which
the handler logs in its one summary line and counts in its metrics:

- `name` is the line's `outcome` field and the metrics' `outcome` label, so it comes
  from a small fixed set per handler (never a domain name or free text);
- `code` is a reason a program can act on (a docs/troubleshooting.md code, an ACME error);
- `detail` is the same for people (the line's error or reason);
- `retry_in_s`, when set, asks for the same work again after that long: the handler
  raises `TransientError` with it, and the message waits in a retry tier.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    code: str | None = None
    detail: str | None = None
    retry_in_s: float | None = None
