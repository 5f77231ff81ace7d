import uuid

from services.redirector.event_ids import EventIds


def test_ids_are_distinct_version_4_uuids_across_pool_refills():
    ids = EventIds()
    made = [ids.next() for _ in range(10_000)]  # more than one pool
    assert len(set(made)) == len(made)
    for text in made[:50] + made[-50:]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
