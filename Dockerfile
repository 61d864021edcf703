# syntax=docker/dockerfile:1
# hetplace's image: the operator (`hetplace run`) and the site gateway (`hetplace gateway --site SITE`);
# the entrypoint is `hetplace` and the chart passes the command and its flags. Two stages: the builder
# installs the wheel and its pinned dependencies into a venv; the runtime copies that venv alone.
# No Docker engine runs on the build machine, so CI does not build this (README: Status and limits).
# Pin the base by digest at release (python:3.11.13-slim-bookworm@sha256:…): the tag is exact, the
# digest cannot be looked up from here.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/hetplace && /opt/hetplace/bin/pip install pip==26.3
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/hetplace/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/hetplace/bin/pip install /wheels/hetplace-*.whl \
 && /opt/hetplace/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="hetplace" \
      org.opencontainers.image.description="Places Triton-served models on GPU, CPU and Arm node pools" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/hetplace /opt/hetplace
# The chart mounts a read-only root filesystem with an emptyDir on /tmp; the user has no home of its own.
ENV PATH=/opt/hetplace/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
# A numeric non-root user (the chart's runAsUser), so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
WORKDIR /tmp
# The operator: /metrics (HETPLACE_METRICS_PORT) and kopf's health endpoint (--liveness).
# The gateway: KServe-V2 HTTP (--http-port) and gRPC (--grpc-port), and /metrics (--metrics-port).
EXPOSE 8080 8081 8000 8001 9090
ENTRYPOINT ["hetplace"]
