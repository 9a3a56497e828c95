# syntax=docker/dockerfile:1
#
# The gridwatch image: one image for every service. Each container runs
# `gridwatch <command>` (init, ingest, alerts, imagery, api, simulate); see
# docker-compose.yml.
# No HEALTHCHECK here: what "healthy" means differs per command, so each service
# declares its own in docker-compose.yml.
#
#   docker build -t gridwatch:latest .

# Must satisfy pyproject.toml's requires-python (tests/test_compose.py checks).
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv holding gridwatch and its pinned dependencies ---------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first, from the lock alone, so this layer survives source changes.
# Every wheel gridwatch needs is on PyPI for amd64 and arm64: no compiler needed.
COPY deploy/constraints.txt /tmp/constraints.txt
RUN pip install --requirement /tmp/constraints.txt

# Then gridwatch itself, non-editable (its package data, the Alembic migrations and
# the demo community file, go into site-packages with it). --constraint makes pip
# refuse any version other than the locked one; pip check proves the set consistent.
# pip and setuptools are not needed at run time: they leave the image.
WORKDIR /src
COPY . .
RUN pip install --constraint /tmp/constraints.txt . \
 && pip check \
 && pip uninstall --yes pip setuptools

# --- runtime: the virtualenv on a clean base, run by an unprivileged user ------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="gridwatch" \
      org.opencontainers.image.description="Smart-community IoT monitoring backend"

# GW_STATE_DIR: where gridwatch keeps local state (the SQLite file, when no
# GW_DATABASE_URL is given); the compose deployment uses PostgreSQL instead.
# GW_ENV=production: secrets have no made-up defaults (the API refuses to start
# without GW_API_SECRET_KEY, and makes no development admin).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GW_STATE_DIR=/var/lib/gridwatch \
    GW_ENV=production

# The snapshot directory and the broker files' directory exist in the image, owned by
# the user: Docker gives a new named volume mounted there (imagery-data,
# mosquitto-auth) the ownership of the image's directory.
RUN groupadd --system --gid 10001 gridwatch \
 && useradd --system --uid 10001 --gid gridwatch --home-dir /var/lib/gridwatch \
        --create-home --shell /usr/sbin/nologin gridwatch \
 && install -d -o gridwatch -g gridwatch /var/lib/gridwatch/imagery /var/lib/gridwatch/mosquitto/auth

# Owned by root: the code is read-only to the user running it.
COPY --from=build /opt/venv /opt/venv

# Numeric, so orchestrators can verify that the user is not root.
USER 10001:10001
WORKDIR /var/lib/gridwatch

ENTRYPOINT ["gridwatch"]
CMD ["--help"]
