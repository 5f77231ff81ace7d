"""Every program's declared settings, for the tests that check docs and deployment
against them (the declarations are the truth; see shared/settings)."""

from __future__ import annotations

from services.certifier.settings import PROGRAM as CERTIFIER
from services.classifier.settings import PROGRAM as CLASSIFIER
from services.edge.settings import PROGRAM as EDGE
from services.logger.settings import PROGRAM as LOGGER
from services.redirector.settings import PROGRAM as REDIRECTOR
from services.verifier.settings import PROGRAM as VERIFIER
from shared.settings import Program
from trackctl.settings import PROGRAM as TRACKCTL

SERVICES: dict[str, Program] = {program.name: program
                                for program in (REDIRECTOR, LOGGER, VERIFIER, CERTIFIER, EDGE,
                                                CLASSIFIER)}
PROGRAMS: dict[str, Program] = {**SERVICES, TRACKCTL.name: TRACKCTL}
