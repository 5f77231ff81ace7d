import time
import uuid

from services.redirector.event_ids import EventIds


def test_ids_are_distinct_version_7_uuids_across_pool_refills() -> None:
    ids = EventIds()
    made = [ids.next() for _ in range(10_000)]  # more than one pool
    assert len(set(made)) == len(made)
    for text in made[:50] + made[-50:]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_ids_carry_the_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    made = EventIds().next()
    after = time.time_ns() // 1_000_000
    assert before <= uuid.UUID(made).int >> 80 <= after


def test_later_ids_sort_after_earlier_ones_as_text() -> None:
    # What keeps the unique index on tracking_logs.event_id append-only.
    now = [1_780_000_000_000_000_000]

    def clock() -> int:
        now[0] += 1_000_000  # 1 ms per id
        return now[0]

    ids = EventIds(clock_ns=clock)
    made = [ids.next() for _ in range(1000)]
    assert made == sorted(made)


def test_ids_within_one_millisecond_differ_in_their_random_bits() -> None:
    ids = EventIds(clock_ns=lambda: 1_780_000_000_000_000_000)
    made = [ids.next() for _ in range(5000)]
    assert len(set(made)) == 5000
    assert len({m[:13] for m in made}) == 1  # the same time prefix
    assert len({m[15:18] for m in made}) > 1000  # 12 random bits right after the version
