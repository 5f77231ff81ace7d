"""Progress lines on stdout, each with the time of day: a bench of minutes says where it is."""

from __future__ import annotations

import time


def say(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)
