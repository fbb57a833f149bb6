"""Prometheus metrics. Routes are labelled by template (`/memories/{memory_id}`), never raw ids.

With several worker processes (`timeless serve --workers N`), PROMETHEUS_MULTIPROC_DIR is
set before they start, each process writes its values there, and /metrics adds them up.
"""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by route template, method and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template and method.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
FEED_BUILD = Histogram(
    "feed_build_seconds",
    "Time to build one feed page (queries and URL signing).",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)
MEDIA_PROCESSED = Counter(
    "media_processed_total",
    "Media processing outcomes.",
    ["outcome"],
    registry=REGISTRY,
)
MEDIA_PROCESSING_SECONDS = Histogram(
    "media_processing_seconds",
    "Time to inspect a media file and write its thumbnail.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
MEDIA_JOBS_KILLED = Counter(
    "media_jobs_killed_total",
    "Media jobs whose child process crashed, ran out of memory or of time (media failed).",
    ["cause"],
    registry=REGISTRY,
)
BACKGROUND_QUEUE_DEPTH = Gauge(
    "background_queue_depth",
    "Work waiting in background queues.",
    ["queue"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_POOL_CONNECTIONS = Gauge(
    "db_pool_connections",
    "Database pool connections by state.",
    ["state"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
ANALYTICS_DROPPED = Counter(
    "analytics_events_dropped_total",
    "Analytics events dropped because the buffer was full or a write failed.",
    registry=REGISTRY,
)

EVENT_STREAMS_OPEN = Gauge(
    "event_streams_open",
    "Open GET /events streams.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
EVENT_STREAMS_CLOSED = Counter(
    "event_streams_closed_total",
    "GET /events streams the server ended, by reason (too_slow, revoked, removed, shutdown).",
    ["reason"],
    registry=REGISTRY,
)


def render() -> bytes:
    """The text exposition: this process's registry, or every worker's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
