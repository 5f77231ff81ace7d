"""The guided demo, and the local world it runs in.

`python -m demo` brings up a self-contained world on 127.0.0.1 (a DNS server, Pebble
as the ACME CA, nginx and its edge agent, and the verifier, certifier, redirector and
logger processes), walks through one customer's tracking domain from its DNS record to
a logged click, and removes everything it made. The same world (`demo.world.local_world`) runs the
end-to-end tests and the lifecycle benchmark, so what the demo shows is what they check.

Modules, each named for what it wraps: `dns` (a DNS server we control), `pebble`
(the ACME CA), `nginx`, `processes` (the service child processes), `net` (ports and
HTTPS requests on loopback), `scratch` (the demo's own database and broker namespace),
`databases` (migrated scratch databases cloned from a template, for tests and
benchmarks), `world` (all of them together), `story` (the walk-through's steps).
"""
