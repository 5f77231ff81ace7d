# syntax=docker/dockerfile:1
# One image for every service; the command picks which (compose.yaml):
#   python -m services.redirector | logger | verifier | certifier,  trackctl db upgrade
#
# The base is pinned to a patch release, the same in both stages (the virtualenv built in
# the first runs on the second's interpreter). For a release, pin the digest as well:
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm   # -> sha256:...
#   FROM python:3.11.13-slim-bookworm@sha256:<that digest>

# --- build: a virtualenv with the dependencies, then the project, compiled --------------
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone (empty packages stand in for the code),
# so editing the code rebuilds only the last layer.
COPY pyproject.toml README.md ./
RUN mkdir shared services && touch shared/__init__.py services/__init__.py \
 && /opt/venv/bin/pip install . \
 && /opt/venv/bin/pip uninstall -y tracking-domains
COPY shared ./shared
COPY services ./services
COPY trackctl ./trackctl
RUN /opt/venv/bin/pip install --no-deps .

# --- runtime: the interpreter, the virtualenv, an unprivileged user ----------------------
FROM python:3.11.13-slim-bookworm
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
