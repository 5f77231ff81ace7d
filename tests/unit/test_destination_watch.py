"""The destination watch's pure parts: a click's destination, the bounded memory, event ids."""

from __future__ import annotations

import pytest

from services.verifier.destinations import (
    BoundedMap,
    destination_host,
    destination_of,
    event_id_for,
)
from services.verifier.reputation.blocklists import Kind
from shared.events import (
    BATCH,
    STRUCTURED,
    ClickDestinations,
    DomainCreated,
    Event,
    decode_click_destinations,
    encode_batch,
    encode_event,
)
from tests.support.amqp import click


@pytest.mark.parametrize(("url", "host"), [
    ("https://www.shop.example/a/b?x=1#f", "www.shop.example"),
    ("http://user:pw@Shop.Example:8443/", "Shop.Example"),
    ("https://shop.example.", "shop.example."),
    ("https://shop.example?q=http://other.example/", "shop.example"),
    ("https://shop.example#@other.example", "shop.example"),
    ("https://[2001:db8::1]/x", ""),
    ("mailto:someone@example.com", ""),
])
def test_destination_host(url: str, host: str) -> None:
    assert destination_host(url) == host


@pytest.mark.parametrize(("host", "destination"), [
    ("www.shop.example", "shop.example"),
    ("Shop.Example", "shop.example"),
    ("a.b.shop.co.uk", "shop.co.uk"),
    ("someone.github.io", "someone.github.io"),
    ("www.bücher.example", "xn--bcher-kva.example"),
    ("192.0.2.7", None),
    ("", None),
    ("localhost", None),
    ("bad_name.example", None),
])
def test_destination_is_the_registered_domain(host: str, destination: str | None) -> None:
    assert destination_of(host) == destination


def test_bounded_map_never_grows_past_its_limit_and_drops_the_oldest_first() -> None:
    memory: BoundedMap[int, int] = BoundedMap(100)
    for key in range(1000):
        memory.put(key, key)
        assert len(memory) <= 100
    assert 999 in memory and 0 not in memory
    memory.put(999, -1)  # replacing never evicts
    assert memory.get(999) == -1


def test_event_ids_are_derived_from_customer_destination_and_list() -> None:
    first = event_id_for("cust-1", "phish.test", Kind.DBL)
    assert first == event_id_for("cust-1", "phish.test", Kind.DBL)
    assert first != event_id_for("cust-2", "phish.test", Kind.DBL)
    assert first != event_id_for("cust-1", "phish2.test", Kind.DBL)


def test_click_messages_decode_to_one_view_of_their_clicks_whatever_the_content_type() -> None:
    raws = [encode_event(click(n, url=f"https://s{n}.example/"), source="/t", event_id=f"e{n}")
            for n in range(3)]
    other = encode_event(DomainCreated(domain="a.example", customer_id="c"), source="/t")
    batch = encode_batch([raws[0], b'{"not": "a click"}', other, raws[1], raws[2]])
    for body, content_type in ((batch, BATCH), (batch, STRUCTURED), (raws[0], STRUCTURED),
                               (raws[0], None)):
        [event] = decode_click_destinations(body, content_type)
        assert isinstance(event, Event) and event.raw == body
        assert event.type == "click.tracked"
        assert isinstance(event.data, ClickDestinations)
        wanted = 3 if body is batch else 1
        assert [c.url for c in event.data.clicks] == [
            f"https://s{n}.example/" for n in range(wanted)]
        assert {(c.customer_id, c.campaign_id) for c in event.data.clicks} == {
            ("cust-1", "camp-1")}
    assert decode_click_destinations(b"not json", BATCH) == []
    assert decode_click_destinations(encode_batch([other]), BATCH) == []
