# syntax=docker/dockerfile:1
# Switchyard in one image: the gateway, the local Triton (CPU, from the
# nvidia-pytriton wheel) and the bundled models, built in at image build time.
#
#   docker build -t switchyard .
#   # model in image: gateway + its own Triton; gRPC on 8500, metrics on 8502
#   docker run --rm --shm-size=256m -p 8500:8500 -p 8502:8502 switchyard
#   # model load: a model repository of your own, mounted
#   docker run --rm --shm-size=256m -v "$PWD/models:/models:ro" -p 8500:8500 switchyard serve --model-repository /models
#   # a Triton replica for gateways elsewhere (compose.yaml, deploy/k8s)
#   docker run --rm --shm-size=256m -p 8001:8001 switchyard triton --model-repository /opt/switchyard/models
#
# BASE may be any Debian-based image: an official Python image (the default)
# or a bare Debian (CI builds on one made with debootstrap, having no
# registry); Debian's python3 is installed only when the base has none.
# Behind a TLS-inspecting proxy, give pip its CA bundle as a build secret:
#   docker build --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt .
ARG BASE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
# What both stages need: Python, its shared library (the Triton Python
# backend's stub links against it) and tini (PID 1: forwards signals, reaps
# the backend stubs Triton leaves behind).
FROM ${BASE} AS python
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN set -eu; \
    apt-get update; \
    if command -v python3 >/dev/null; then packages=tini; else packages="tini python3"; fi; \
    apt-get install -y --no-install-recommends $packages; \
    version="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"; \
    if ! ldconfig -p | grep -q "libpython${version}\.so\.1\.0"; then \
        apt-get install -y --no-install-recommends "libpython${version}"; \
    fi; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------
FROM python AS build
RUN set -eu; \
    if ! python3 -m venv /tmp/venv-probe >/dev/null 2>&1; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3-venv; \
        apt-get clean; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    rm -rf /tmp/venv-probe; \
    python3 -m venv /opt/switchyard/venv
ENV PATH=/opt/switchyard/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# The dependencies (the triton and batch extras: no dev, spark or postgres) in a
# layer of their own, rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
COPY scripts/requirements.py scripts/
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca-certificates \
    set -eu; \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi; \
    python scripts/requirements.py triton batch > /tmp/requirements.txt; \
    pip install -r /tmp/requirements.txt

COPY . ./
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca-certificates \
    set -eu; \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi; \
    pip install --no-deps . && \
    pip check && \
    switchyard models build --out /opt/switchyard/models

# ---------------------------------------------------------------------------
FROM python AS runtime
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/switchyard \
        --shell /usr/sbin/nologin switchyard
COPY --from=build /opt/switchyard /opt/switchyard
# Inside a container the gateway and its metrics listen on every address.
ENV PATH=/opt/switchyard/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SWITCHYARD_HOST=0.0.0.0 \
    SWITCHYARD_PORT=8500 \
    SWITCHYARD_METRICS_HOST=0.0.0.0 \
    SWITCHYARD_METRICS_PORT=8502
USER 10001:10001
WORKDIR /var/lib/switchyard
# gRPC (gateway), metrics (gateway); a Triton replica listens on 8001 (gRPC), 8000 (HTTP), 8002 (metrics).
EXPOSE 8500 8502 8001 8000 8002
ENTRYPOINT ["tini", "--", "switchyard"]
CMD ["serve", "--model-repository", "/opt/switchyard/models"]
