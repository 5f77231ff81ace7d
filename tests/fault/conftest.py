"""Fixtures of the fault tier: service processes that never outlive their test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.links import LinkSigner
from shared.settings import BrokerSettings, DatabaseSettings, LinkKey
from tests.fault.harness import Services


@pytest.fixture
def services(broker: BrokerSettings, database: DatabaseSettings,
             tmp_path: Path) -> Iterator[Services]:
    started = Services(broker=broker, database=database, tmp_path=tmp_path)
    try:
        yield started
    finally:
        started.close()
        # Shown by pytest only when the test failed: the end of every service log.
        for process in started.started:
            print(f"----- {process.name} ({process.log_path.name}) -----")
            print("\n".join(process.log_text().splitlines()[-60:]))


@pytest.fixture
def signer(link_keys: tuple[LinkKey, ...]) -> LinkSigner:
    return LinkSigner(link_keys)
