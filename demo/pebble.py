"""A real ACME CA on loopback: Pebble, resolving names through a DNS server we run
(`dns_server=`, demo/dns.py) or through pebble-challtestsrv.

The local world issues real certificates with certbot, so it needs a CA that
validates HTTP-01 for names that exist only on this machine. Pebble connects to
127.0.0.1:`http_port` for every validation, which the world points at nginx's
plain-HTTP listener (`pebble-challtestsrv`, when no DNS server is given, answers
A=127.0.0.1 for every name). Pebble needs a TLS certificate for its own listener: a
throwaway CA and a `localhost`/`127.0.0.1` certificate are made with openssl; that CA
is what certbot must trust (`ACME_CA_BUNDLE`). Pebble makes a new root CA at every
start; `root_pem()` fetches it from the management port, for clients that check the
certificates Pebble issued (what a browser would trust).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from demo.net import free_port
from demo.processes import StartError


def make_listener_ca(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, listener certificate, listener key) for localhost and 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "key.pem", directory / "listener.csr", directory / "cert.pem"
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                   "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", ca_key, "-out", ca_cert, "-days", "2",
            "-subj", "/CN=tracking-domains local listener CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", ext)
    return ca_cert, cert, key


class Pebble:
    """challtestsrv + Pebble, started together; use as a context manager."""

    def __init__(self, directory: Path, *, http_port: int,
                 dns_server: str | None = None) -> None:
        self.directory = directory
        self.http_port = http_port
        # `127.0.0.1:PORT` of a DNS server we run (demo/dns.py);
        # None: start pebble-challtestsrv, which answers A=127.0.0.1 for every name.
        self.dns_server = dns_server
        self.acme_port = free_port()
        self.management_port = free_port()
        self.dns_port = free_port()
        self.dns_management_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}  # by program name
        self.listener_ca = directory / "listener" / "ca.pem"

    @property
    def directory_url(self) -> str:
        """The ACME directory (`ACME_DIRECTORY_URL`)."""
        return f"https://127.0.0.1:{self.acme_port}/dir"

    def start(self) -> Pebble:
        """Make the listener certificate, start the processes, wait for the directory."""
        _, cert, key = make_listener_ca(self.directory / "listener")
        config = self.directory / "pebble-config.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(cert), "privateKey": str(key), "httpPort": self.http_port,
            "tlsPort": free_port(), "ocspResponderURL": "",
            "externalAccountBindingRequired": False}}))
        if self.dns_server is None:
            self._spawn("challtestsrv", [
                "pebble-challtestsrv", "-dns01", f"127.0.0.1:{self.dns_port}",
                "-management", f"127.0.0.1:{self.dns_management_port}", "-http01", "",
                "-https01", "", "-tlsalpn01", "", "-defaultIPv6", ""], {})
        dns_server = self.dns_server or f"127.0.0.1:{self.dns_port}"
        self._spawn("pebble", ["pebble", "-config", str(config), "-dnsserver", dns_server],
                    # No pretend-slow validation, no rejected nonces, every order validated.
                    {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
                     "PEBBLE_AUTHZREUSE": "0"})
        self._wait_ready()
        return self

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = open(self.directory / f"{name}.log", "wb")  # noqa: SIM115 - child owns it
        self.processes[argv[0]] = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.directory)
        log.close()

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.listener_ca))

    def _wait_ready(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(self.directory_url, context=self._context(),
                                            timeout=1):
                    return
            except OSError as exc:
                for program, process in self.processes.items():
                    if process.poll() is not None:
                        raise StartError(f"{program} exited: {self.logs()}") from exc
                if time.monotonic() > deadline:
                    raise StartError(f"Pebble not ready: {exc}\n{self.logs()}") from exc
                time.sleep(0.05)

    def root_pem(self) -> str:
        """Pebble's root CA of this run (what a browser would need to trust)."""
        url = f"https://127.0.0.1:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=self._context(), timeout=5) as response:
            return response.read().decode()

    def logs(self) -> str:
        """The tail of each process's log, for a failure report."""
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.directory.glob("*.log")))

    def stop(self) -> None:
        """Kill the processes and wait for them."""
        # Pebble keeps everything in memory: nothing to save, so no graceful wait.
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        for process in self.processes.values():
            process.wait(10)

    def __enter__(self) -> Pebble:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
