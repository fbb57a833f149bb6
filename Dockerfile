# Timeless Love backend: multi-stage, slim, non-root.
#
# Reproducible and offline-friendly: no `# syntax=` line (the builder's own Dockerfile frontend
# is used, so no frontend image is fetched before the first instruction), the base image pinned
# by digest, dependencies from requirements.lock with their hashes. BuildKit is needed for the
# `RUN --mount` below: the default builder of Docker 23+, and `podman build` (add
# `--format docker` there to keep the HEALTHCHECK).
#
# The base: python:3.11-slim-bookworm (3.11.16), its multi-platform index digest. To bump it,
# read the current digest (`docker buildx imagetools inspect python:3.11-slim-bookworm`, the
# "Digest:" line; or `skopeo inspect docker://python:3.11-slim-bookworm`), replace it here,
# build, and run the test suite in the new image. A private registry or mirror:
# `--build-arg PYTHON_IMAGE=registry.example/python@sha256:...`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Dependencies first, exactly as locked (versions and hashes): this layer is rebuilt only when
# requirements.lock changes, so a change to app/ rebuilds in seconds. A pip configuration (a
# mirror's index-url, a proxy, certificates) comes in as a build secret and stays out of every
# layer: docker build --secret id=pipconf,src=$HOME/.config/pip/pip.conf -t timeless .
COPY requirements.lock ./
RUN --mount=type=secret,id=pipconf,target=/etc/pip.conf \
    pip install --require-hashes --no-deps -r requirements.lock
# The project itself, with what is already installed: nothing is resolved or fetched. Its
# migrations ship inside the package (app/db/migrations links to supabase/migrations).
COPY pyproject.toml README.md ./
COPY supabase/migrations ./supabase/migrations
COPY app ./app
RUN pip install --no-deps --no-build-isolation .

FROM ${PYTHON_IMAGE} AS runtime
# No compilers or build tools here: only the virtualenv built above.
# BUILTIN_POSTGRES_LOG=stderr: the built-in PostgreSQL logs to `docker logs`, not into /data.
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    WORKERS=2 \
    DATA_DIR=/data \
    BUILTIN_POSTGRES_LOG=stderr \
    SHUTDOWN_GRACE_SECONDS=7
RUN groupadd --system --gid 10001 timeless \
    && useradd --system --uid 10001 --gid timeless --home-dir /srv timeless \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
USER 10001
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health\", timeout=2)"]
# SIGTERM: requests still open after SHUTDOWN_GRACE_SECONDS are cut (503), then the built-in
# PostgreSQL is shut down cleanly; all within the 10 s Docker, podman and Kubernetes wait
# before SIGKILL. Longer budgets: raise both (docs/deployment.md). Unfinished media work stays
# in the database and is picked up by the sweep of any instance.
STOPSIGNAL SIGTERM
CMD ["timeless", "serve"]
