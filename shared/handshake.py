"""What a TLS server presents for a server name, learnt by shaking hands with it.

The certifier and the edge agent both confirm that nginx serves a new certificate
before they say so: a TLS handshake (SNI = the domain) and the serial of the
certificate that comes back. Trust is not the question here, only which certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl

from cryptography import x509


async def presented_serial(host: str, port: int, name: str, *,
                           timeout_s: float = 2.0) -> str | None:
    """The serial (lower-case hex) of the certificate presented for SNI `name`; None if
    the handshake fails or no certificate comes back."""
    context = _context()
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=name)
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    try:
        tls = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        return format(x509.load_der_x509_certificate(der).serial_number, "x") if der else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


@functools.cache
def _context() -> ssl.SSLContext:
    """One client context for every probe: building one loads the system's trust store
    (tens of milliseconds), which a probe does not use anyway."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we compare serials; trust is not the question
    return context


def local_address(listen: str) -> tuple[str, int]:
    """Where this host reaches an nginx `listen` value (a bare port means every address)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "*", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)
