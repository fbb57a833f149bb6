# syntax=docker/dockerfile:1
# Timeless Love backend: multi-stage, slim, non-root.

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY app ./app
# The project itself, with the version ranges its pyproject declares.
# hadolint ignore=DL3013
RUN pip install ".[redis]"

FROM python:3.11-slim AS runtime
# No compilers or build tools here: only the virtualenv built above and the migrations.
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    WORKERS=2 \
    DATA_DIR=/data
RUN groupadd --system --gid 10001 timeless \
    && useradd --system --uid 10001 --gid timeless --home-dir /srv timeless \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
COPY --chown=10001:10001 supabase ./supabase
USER 10001
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health\", timeout=2)"]
# SIGTERM lets uvicorn finish in-flight requests (up to 30 s); unfinished media work
# stays in the database and is picked up by the sweep of any instance.
STOPSIGNAL SIGTERM
CMD ["timeless", "serve"]
