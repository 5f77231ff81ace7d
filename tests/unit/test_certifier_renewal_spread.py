"""Renewals a rate limit holds back are spread after it, not piled on one moment (the
herd after a restore); failed ones are retried with a little jitter. Fakes stand in
for the store and the issuer: this is the scheduling logic only."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from services.certifier.handlers import Policy
from services.certifier.issuance import HeldBack
from services.certifier.ratelimits import Hold
from services.certifier.renewal import RenewalPolicy, renew_one
from services.certifier.store import CertificateRow
from shared.domain_status import DomainStatus

NOW = datetime(2026, 12, 2, tzinfo=UTC)
UNTIL = NOW + timedelta(hours=2)


class Postponed:
    """The store's `postpone_renewal`, recorded."""

    def __init__(self) -> None:
        self.at: dict[str, datetime | None] = {}

    async def postpone_renewal(self, name: str, at: datetime | None) -> None:
        self.at[name] = at


class HeldIssuer:
    ari = None

    async def ensure(self, name: str, *, replace_serial: str | None = None) -> HeldBack:
        return HeldBack(Hold(limit="orders", until=UNTIL, reason="300 orders in 3 hours"))


def row(name: str) -> CertificateRow:
    return CertificateRow(name=name, customer_id="c", status=DomainStatus.ACTIVE,
                          verified=True, certificate_serial="1",
                          certificate_expires_at=NOW + timedelta(days=30),
                          certificate_renew_at=NOW - timedelta(days=1))


async def test_held_back_renewals_are_spread_over_the_three_hours_after_the_limit() -> None:
    store = Postponed()
    renewal = RenewalPolicy()
    fakes: dict[str, Any] = {"store": store, "issuer": HeldIssuer(),
                             "publisher": None, "policy": Policy(), "renewal": renewal,
                             "rng": random.Random(5), "clock": lambda: NOW}
    for n in range(300):
        outcome = await renew_one(row(f"d{n}.test"), **fakes)
        assert outcome.name == "held-back"
    times = [at for at in store.at.values() if at is not None]
    assert len(times) == 300
    assert all(UNTIL <= at <= UNTIL + renewal.spread for at in times)
    per_half_hour = [sum(UNTIL + timedelta(minutes=30 * i) <= at
                         < UNTIL + timedelta(minutes=30 * (i + 1)) for at in times)
                     for i in range(6)]
    assert min(per_half_hour) > 25, per_half_hour  # about 50 each, none empty
