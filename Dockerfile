# One image for every service; the command picks which (compose.yaml):
#   python -m services.redirector | logger | verifier | certifier,  trackctl db upgrade
#
# No `# syntax=` line: the builder's own Dockerfile frontend is used, so a build needs no
# image registry but for the base image.
#
# The base comes from a build argument, the same in both stages (the virtualenv built in
# the first runs on the second's interpreter). The default is the official image pinned
# to a patch release; for a release, pin the digest as well:
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm   # -> sha256:...
#   docker build --build-arg BASE_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest> .
# Without registry access, scripts/images makes a base from Debian's packages
# (python3 and python3-venv) and builds with --build-arg BASE_IMAGE=local/python3:bookworm.
# Only `python3` is assumed on the base's PATH: the official image and Debian's
# package put the interpreter in different places.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

# --- build: a virtualenv with the dependencies, then the project, compiled --------------
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# /opt/venv is what the runtime gets; /opt/tools only builds the project's wheel.
RUN python3 -m venv /opt/venv && python3 -m venv /opt/tools \
 && /opt/tools/bin/pip install -q "setuptools>=68" wheel
# Dependencies first, from the lockfile (every package of the tree pinned with its hashes;
# scripts/lock writes it), so editing the code rebuilds only the last layers (and needs no
# package index).
COPY requirements/runtime.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --require-hashes -r /tmp/requirements.txt
WORKDIR /src
# The whole build context: .dockerignore keeps out everything that is not the package,
# so a new top-level package needs no change here.
COPY . ./
RUN /opt/tools/bin/pip wheel -q --no-deps --no-build-isolation --wheel-dir /tmp/wheel . \
 && /opt/venv/bin/pip install --no-deps /tmp/wheel/*.whl

# --- runtime: the interpreter, the virtualenv, an unprivileged user ----------------------
FROM ${BASE_IMAGE}
# uid/gid 10001: fixed, so volumes prepared by compose's `prepare-volumes` step match.
RUN groupadd --system --gid 10001 tracking \
 && useradd --system --uid 10001 --gid tracking --home-dir /app --shell /usr/sbin/nologin \
      tracking \
 && mkdir -p /app/var/spool /app/var/certbot /app/var/acme-challenge /app/var/nginx \
 && chown -R tracking:tracking /app
COPY --from=build /opt/venv /opt/venv
# The certifier's NGINX_RELOAD_COMMAND in compose (see deploy/nginx/reload-watcher.sh).
COPY --chmod=0755 deploy/nginx/reload-request.sh /usr/local/bin/nginx-reload-request
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER tracking:tracking
CMD ["trackctl", "--help"]
