"""A small DNS server on 127.0.0.1 (UDP and TCP, in its own thread) whose records we set.

The local world needs one resolver that the verifier (`DNS_NAMESERVERS`), Pebble
(`-dnsserver`) and `trackctl doctor` all ask, so the CA resolves a customer's name
through the same CNAME the verifier judged; and the tests need to change records and
break answers while services run. It answers like a recursive resolver that knows
every zone: CNAMEs are chased within its own records (the answer carries the chain),
a name with no records of its own nor below it is NXDOMAIN, and a name that exists
without the asked type is NODATA. Records may be changed at any time, and per-name
faults make it answer SERVFAIL, never answer (a timeout), or answer late:

    with DnsServer() as dns:
        dns.cname("track.customer-a.test", "click.platform.test")
        dns.a("click.platform.test", "127.0.0.1")
        dns.caa("customer-a.test", 'issue "pebble.example"')
        dns.fault("broken.test", "servfail")
        DNS_NAMESERVERS=dns.address  # "127.0.0.1:PORT"

`delay_s` delays every answer (the benchmark's slow resolver); `delay(name, s)`
delays answers about one name. A name written `*.zone` is a wildcard: its records answer
for any name below `zone` that has none of that type itself, and its faults and delays
apply to every name below `zone` (a whole blocklist zone answering SERVFAIL, say).
`set(..., ttl=N)` gives one record set its own TTL (the server's `ttl` otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Fault = Literal["servfail", "timeout", "refused"]
MAX_CHASE = 16
T = TypeVar("T")
V = TypeVar("V")


def _key(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _ancestors(name: str) -> list[str]:
    """`a.b.c` -> `b.c`, `c`: the zones a wildcard for `name` may sit at."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels))]


def _find(table: dict[Any, V], name: str, qtype: str | None = None) -> tuple[Any, V] | None:
    """`table`'s key and entry for `name` (keyed `(name, qtype)` when `qtype` is given),
    else for the closest wildcard `*.zone` above it; None if neither."""
    for candidate in (name, *(f"*.{zone}" for zone in _ancestors(name))):
        key = (candidate, qtype) if qtype is not None else candidate
        if key in table:
            return key, table[key]
    return None


def _lookup(table: dict[Any, V], name: str) -> V | None:
    found = _find(table, name)
    return None if found is None else found[1]


class DnsServer:
    """The server: records and faults by name, a query counter, and its own event loop."""

    def __init__(self, *, delay_s: float = 0.0, ttl: int = 60) -> None:
        self.delay_s = delay_s
        self.ttl = ttl
        self.port = 0
        self.queries: Counter[tuple[str, str]] = Counter()
        self._records: dict[tuple[str, str], list[str]] = {}
        self._ttls: dict[tuple[str, str], int] = {}
        self._faults: dict[str, Fault] = {}
        self._delays: dict[str, float] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="local-dns")
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    # --- life cycle -------------------------------------------------------------------

    @property
    def address(self) -> str:
        """What DNS_NAMESERVERS takes: `127.0.0.1:PORT`."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> DnsServer:
        """Bind UDP and TCP on one free port and answer from now on."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def stop(self) -> None:
        """Close both sockets and end the server's thread."""

        async def _stop() -> None:
            if self._udp is not None:
                self._udp.close()
            if self._tcp is not None:
                self._tcp.close()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        # UDP and TCP on the same port: take a free UDP port, then TCP on it (retry on a clash).
        for _ in range(20):
            udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp_sock.bind(("127.0.0.1", 0))
            port = udp_sock.getsockname()[1]
            tcp_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp_sock.bind(("127.0.0.1", port))
            except OSError:
                udp_sock.close()
                tcp_sock.close()
                continue
            break
        else:
            raise RuntimeError("no free port for the DNS server")
        self.port = port
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), sock=udp_sock)
        self._udp = transport
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)

    # --- records ----------------------------------------------------------------------

    def set(self, name: str, rdtype: str, *values: str, ttl: int | None = None) -> None:
        """Replace the `rdtype` records at `name` (no values: remove them), served with
        `ttl` (None: the server's)."""
        key = (_key(name), rdtype.upper())
        with self._lock:
            if values:
                self._records[key] = list(values)
            else:
                self._records.pop(key, None)
            if values and ttl is not None:
                self._ttls[key] = ttl
            else:
                self._ttls.pop(key, None)

    def cname(self, name: str, target: str) -> None:
        """`name CNAME target` (replacing any CNAME there)."""
        self.set(name, "CNAME", target.rstrip(".") + ".")

    def a(self, name: str, *addresses: str, ttl: int | None = None) -> None:
        """A records at `name` (none: remove them)."""
        self.set(name, "A", *addresses, ttl=ttl)

    def aaaa(self, name: str, *addresses: str) -> None:
        """AAAA records at `name` (none: remove them)."""
        self.set(name, "AAAA", *addresses)

    def caa(self, name: str, *values: str) -> None:
        """CAA records as `tag "value"` (flags 0) or `flags tag "value"`."""
        self.set(name, "CAA", *(v if v[:1].isdigit() else f"0 {v}" for v in values))

    def txt(self, name: str, *values: str) -> None:
        """TXT records at `name` (DNS-01 challenges), each value one string."""
        self.set(name, "TXT", *(f'"{v}"' for v in values))

    def remove(self, name: str) -> None:
        """Every record at `name` (it becomes NXDOMAIN unless names exist below it)."""
        key = _key(name)
        with self._lock:
            for existing in [k for k in self._records if k[0] == key]:
                del self._records[existing]
                self._ttls.pop(existing, None)

    def fault(self, name: str, fault: Fault | None) -> None:
        """Answer queries about `name` (or a chain through it) badly; None clears it."""
        self._set_or_clear(self._faults, name, fault)

    def delay(self, name: str, seconds: float | None) -> None:
        """Hold answers about `name` back for `seconds`; None clears it."""
        self._set_or_clear(self._delays, name, seconds)

    def _set_or_clear(self, table: dict[str, T], name: str, value: T | None) -> None:
        with self._lock:
            if value is None:
                table.pop(_key(name), None)
            else:
                table[_key(name)] = value

    def dig(self, name: str, rdtype: str = "A") -> list[str]:
        """What a client is answered for `name` / `rdtype`, one record a line as `dig` prints
        it: asked over UDP like any client would, so it shows the chain as served."""
        response = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1",
                                 port=self.port, timeout=2)
        return [line for rrset in response.answer for line in rrset.to_text().splitlines()]

    def query_count(self, name: str, rdtype: str | None = None) -> int:
        """Questions asked about `name` (of type `rdtype`, or any) since the start."""
        key = _key(name)
        return sum(n for (qname, qtype), n in self.queries.items()
                   if qname == key and (rdtype is None or qtype == rdtype.upper()))

    # --- answering --------------------------------------------------------------------

    def answer(self, wire: bytes) -> tuple[bytes | None, float]:
        """The response to one query (None: stay silent) and how long to hold it back."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None, 0.0
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire(), 0.0
        question = query.question[0]
        qname = _key(question.name.to_text())
        qtype = dns.rdatatype.to_text(question.rdtype)
        self.queries[(qname, qtype)] += 1
        with self._lock:
            delay = _lookup(self._delays, qname)
            records = dict(self._records)
            ttls = dict(self._ttls)
            faults = dict(self._faults)
        if delay is None:
            delay = self.delay_s
        name, seen = qname, set()
        for _ in range(MAX_CHASE):
            fault = _lookup(faults, name)
            if fault == "timeout":
                return None, 0.0
            if fault is not None:
                response.answer.clear()
                response.set_rcode(dns.rcode.SERVFAIL if fault == "servfail"
                                   else dns.rcode.REFUSED)
                return response.to_wire(), delay
            seen.add(name)
            found = _find(records, name, qtype)
            if found is not None:
                key, values = found
                response.answer.append(self._rrset(name, qtype, values,
                                                   ttls.get(key, self.ttl)))
                break
            target = records.get((name, "CNAME"))
            if target and qtype not in ("CNAME", "ANY"):
                response.answer.append(self._rrset(name, "CNAME", target,
                                                   ttls.get((name, "CNAME"), self.ttl)))
                name = _key(target[0])
                if name in seen:  # a loop: answer the chain as far as it goes
                    break
                continue
            if not any(key == name or key.endswith("." + name) for key, _ in records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            break
        return response.to_wire(), delay

    def _rrset(self, name: str, rdtype: str, values: list[str], ttl: int) -> dns.rrset.RRset:
        return dns.rrset.from_text_list(dns.name.from_text(name), ttl,
                                        dns.rdataclass.IN, rdtype, values)

    def _respond_later(self, wire: bytes, send: Callable[[bytes], None]) -> None:
        response, delay = self.answer(wire)
        if response is None:
            return
        if delay > 0:
            self._loop.call_later(delay, send, response)
        else:
            send(response)

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        def send(response: bytes) -> None:
            if not writer.is_closing():
                writer.write(struct.pack("!H", len(response)) + response)

        try:
            while True:
                header = await reader.readexactly(2)
                wire = await reader.readexactly(struct.unpack("!H", header)[0])
                self._respond_later(wire, send)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            # Give delayed answers on this connection a chance before closing.
            await asyncio.sleep(max([self.delay_s, *self._delays.values()], default=0.0))
            with contextlib.suppress(Exception):
                writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    # asyncio gives a datagram protocol a datagram transport: typeshed's DatagramProtocol
    # narrows the parameter the same way, with the same ignore. No isinstance check
    # instead: uvloop's UDPTransport is not a subclass of asyncio.DatagramTransport.
    def connection_made(self, transport: asyncio.DatagramTransport) -> None:  # type: ignore[override]
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        transport = self._transport

        def send(response: bytes) -> None:
            if transport is not None and not transport.is_closing():
                transport.sendto(response, addr)

        self._server._respond_later(data, send)
