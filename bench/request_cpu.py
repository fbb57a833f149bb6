"""CPU per request, in process: the app called as ASGI, no HTTP server, no load generator.

Usage: bench/http_ceilings.py runs it (`--cpu`) as `python bench/request_cpu.py DATA_DIR TOKEN`
with the server's environment.

DATA_DIR is a running `timeless serve`'s (its built-in PostgreSQL is joined, not started);
TOKEN an access token of a member whose family has the feed to read. Each endpoint is
called in a loop, one request at a time, and the process's CPU time (user + system, so the
socket writes to PostgreSQL count) is divided by the requests: the best of several rounds.
On a shared 2-core machine requests per second move with whatever else runs; CPU time per
request moves much less, and it is what a worker's throughput is the inverse of. It leaves
out what the HTTP server costs (the same for every endpoint) and PostgreSQL's own CPU.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 5
CASES = (
    ("bare FastAPI", None, "/health", b""),
    ("GET /health", "app", "/health", b""),
    ("GET /api/v1/auth/me", "app", "/api/v1/auth/me", b""),
    ("GET /api/v1/feed?page_size=20", "app", "/api/v1/feed", b"page_size=20"),
)
# Requests per round, by how expensive each is.
COUNTS = {"/health": 2000, "/api/v1/auth/me": 400, "/api/v1/feed": 100}


def scope(path: str, query: bytes, token: str | None) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def cpu_per_request(app: Any, path: str, query: bytes, token: str | None) -> float:
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for _ in range(50):  # warm up: caches, prepared statements, the pool
        await app(scope(path, query, token), receive, send)
    if set(statuses) != {200}:
        raise RuntimeError(f"{path} answered {sorted(set(statuses))}")
    count, best = COUNTS[path], float("inf")
    for _ in range(ROUNDS):
        gc.collect()
        started = time.process_time()
        for _ in range(count):
            await app(scope(path, query, token), receive, send)
        best = min(best, (time.process_time() - started) / count)
    return best * 1e6


async def measure(token: str) -> dict[str, float]:
    from fastapi import FastAPI

    from app.config import get_settings
    from app.main import create_app

    bare = FastAPI()

    @bare.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app = create_app(get_settings())
    results = {}
    async with app.router.lifespan_context(app):
        for name, which, path, query in CASES:
            target = app if which else bare
            results[name] = await cpu_per_request(target, path, query, token if which else None)
    return results


def main() -> None:
    data_dir, token = Path(sys.argv[1]), sys.argv[2]
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DATA_DIR", str(data_dir))
    from app.db import embedded
    from app.log import configure_logging

    os.environ["DATABASE_URL"] = embedded.start(data_dir / "pg")  # joins the server's
    # The access lines go where the server's go (a file), as they would when served.
    log = (data_dir / "request_cpu.log").open("a")
    sys.stdout, real_stdout = log, sys.stdout
    configure_logging("info")
    try:
        import uvloop

        results = uvloop.run(measure(token))
    finally:
        sys.stdout = real_stdout
        embedded.release(data_dir / "pg")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
