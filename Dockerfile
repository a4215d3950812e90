# Every Roomcast image: auth, rooms, history and gateway, chosen with SERVICE.
#
# Build from the repository root (the context needs pyproject.toml, libs/, services/,
# tools/load/ and deploy/image/):
#   docker build --build-arg SERVICE=gateway -t roomcast/gateway:dev .
#   make images        # all four, with podman or docker
# All services ship from one Python distribution, so the builder stage is the same for
# the four images (built once, then cached) and only the final stage names the service.
#
# BASE_IMAGE: any Debian-like image with python3 (3.11+) and the venv module. The
# default is the official slim image; `make images` uses a local mmdebstrap image where
# no registry is reachable (tools/build_base_image.sh). Both stages must use the same
# base: the venv's interpreter is a symlink into it.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS builder

# PIP_CERT: the system CA bundle (both bases have it), so a build behind a TLS-inspecting
# proxy works when the host's bundle is mounted over it.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt

# binutils for `strip` below, in the builder only (its own layer, cached across builds).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends binutils=2.40-* \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY libs ./libs
COPY services ./services
COPY tools/load ./tools/load
# Wheels first (constraints.txt pins every dependency; every compiled one has a
# manylinux wheel, so no compiler is needed), then the venv from those wheels only.
# pip byte-compiles the venv here, so the read-only final image never writes a .pyc.
# pip and setuptools are build tools: the services never import them. --use-pep517:
# a pure-Python dependency published only as an sdist with a setup.py (http-ece) is
# built in an isolated environment with its own setuptools and wheel, which the
# venv's older pip would otherwise expect installed.
# Then dead weight out of the venv (the final image copies it whole): the extensions'
# symbol tables and debug sections (strip --strip-unneeded keeps the dynamic symbols
# Python imports by; grpc, cryptography and uvloop shrink by ~17 MB; every .so in the
# venv is an extension module, none a patchelf'd vendored library), the packages' own
# test suites, and type stubs (.pyi), which only a type checker reads.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-cache-dir --use-pep517 --wheel-dir /wheels -c constraints.txt . \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/roomcast-*.whl \
    && /opt/venv/bin/pip uninstall --yes setuptools pip \
    && find /opt/venv -name '*.so' -type f -exec strip --strip-unneeded {} + \
    && find /opt/venv -depth -type d \( -name tests -o -name test \) -path '*/site-packages/*' \
         -exec rm -rf {} + \
    && find /opt/venv -name '*.pyi' -type f -delete

FROM ${BASE_IMAGE}

# auth | rooms | history | gateway | notifier
ARG SERVICE

LABEL org.opencontainers.image.title="roomcast-${SERVICE}" \
      org.opencontainers.image.description="Roomcast ${SERVICE} service" \
      org.opencontainers.image.licenses="MIT"

# No writes outside /tmp (an emptyDir or tmpfs at run time): no bytecode, HOME in /tmp.
# Every service binds all interfaces in a container (the settings default, 127.0.0.1,
# is for bare metal); each service reads only its own prefix.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    ROOMCAST_SERVICE=${SERVICE} \
    ROOMCAST_AUTH_HOST=0.0.0.0 \
    ROOMCAST_ROOMS_HOST=0.0.0.0 \
    ROOMCAST_HISTORY_HOST=0.0.0.0 \
    ROOMCAST_GATEWAY_HOST=0.0.0.0 \
    ROOMCAST_NOTIFIER_HOST=0.0.0.0

COPY --from=builder /opt/venv /opt/venv
COPY deploy/image/healthcheck.py /opt/roomcast/healthcheck.py

# The entry point is the service's console script under one fixed name (exec form
# cannot expand SERVICE). A numeric, non-root user (Kubernetes' runAsNonRoot can only
# verify a numeric UID), written directly so any base works, with or without useradd.
RUN case "${SERVICE}" in auth|rooms|history|gateway|notifier) ;; \
      *) echo "--build-arg SERVICE=auth|rooms|history|gateway|notifier is required" >&2; exit 1 ;; esac \
    && ln -s "/opt/venv/bin/roomcast-${SERVICE}" /usr/local/bin/roomcast-service \
    && echo "roomcast:x:10001:10001:Roomcast:/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
    && echo "roomcast:x:10001:" >> /etc/group

USER 10001:10001
# auth 8081; rooms 50051 (gRPC) and 8082 (HTTP); history 8083; gateway 8080 (REST and
# WebSocket); notifier 8084. Every service serves /healthz, /readyz and /metrics on its
# HTTP port.
EXPOSE 8080 8081 8082 8083 8084 50051
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "/opt/roomcast/healthcheck.py"]

# Exec form: the service's Python process is PID 1 and receives SIGTERM itself
# (graceful drain within ROOMCAST_<SVC>_SHUTDOWN_GRACE_SECONDS).
ENTRYPOINT ["roomcast-service"]
