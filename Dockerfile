# syntax=docker/dockerfile:1
# One image for every paystream process; the subcommand is the argument:
#   docker run IMAGE ingest | process | fetch | archive | replay | rebuild | tail | run
# Build: docker build -t paystream:dev .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with paystream and its dependencies ------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# A compiler only for a dependency without a wheel for the target platform; it stays in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/paystream
ENV PATH=/opt/paystream/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY paystream ./paystream
COPY ingest ./ingest
COPY processors ./processors
COPY schemas ./schemas
# A regular (non-editable) install: the runtime stage needs only the virtualenv, not /src.
RUN pip install .

# --- runtime: the virtualenv, tini and an unprivileged user ---------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# tini is PID 1: it forwards SIGTERM to paystream (graceful shutdown: the processor commits, ingest drains) and
# reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 paystream \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin paystream \
 && mkdir -p /var/lib/paystream/state \
 && chown -R 10001:10001 /var/lib/paystream
COPY --from=build /opt/paystream /opt/paystream
ENV PATH=/opt/paystream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PAYSTREAM_STATE_DIR=/var/lib/paystream/state \
    PAYSTREAM_HTTP__HOST=0.0.0.0
WORKDIR /var/lib/paystream
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# 8080: ingest HTTP (webhooks, /healthz, /readyz, /metrics); 9100: /metrics and probes of the others.
EXPOSE 8080 9100
ENTRYPOINT ["/usr/bin/tini", "--", "paystream"]
CMD ["--help"]
