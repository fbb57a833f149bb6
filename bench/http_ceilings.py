"""HTTP ceilings: the project's cheapest routes against a bare FastAPI app, measured with wrk.

(Named so, not http.py, which would shadow the standard library's http package.)

Usage: python bench/http_ceilings.py [--duration 8] [--connections 8] [--workers 1,2] [--cpu]
                                     [--write-docs]

wrk (a C load generator, Debian package `wrk`: `apt-get install wrk`) drives each endpoint
with 1 thread and N connections for the given time, one after the other, in one run:

- a bare FastAPI app in the same virtualenv returning {"status": "ok"} (bench/bare_app.py),
- GET /health (touches nothing but the middleware stack),
- the floor of a request that reads as a member (bench/floor_app.py: a bare FastAPI route that
  runs a transaction of trivial statements on the project's PostgreSQL, in three round trips,
  the fewest such a read can take through asyncpg, and in /auth/me's four),
- GET /api/v1/auth/me (token check, one RLS transaction, one row),
- GET /api/v1/feed?page_size=20 (20 published memories, each with a processed photo),

each against one uvicorn process with N workers, on the built-in PostgreSQL created afresh in a
temporary folder. Each row also says how much CPU the server's processes and the
built-in PostgreSQL used per request while wrk ran (from /proc): which of the two a route
waits on. It prints a table and the ratios against issue #15's targets: health ≥ 70 %
of the bare app, /auth/me ≥ 50 % of /health, the feed ≥ 50 % of /auth/me, and how each scales
from 1 to 2 workers; and what the floors reach against /health: how far the /auth/me target is
within reach of any implementation on this machine. A Python load generator would take CPU
from the server on a 2-core machine; wrk takes a fraction of one core. With --cpu it also
measures, on the one-worker server's database and data, the CPU time each endpoint costs in
process (bench/request_cpu.py): on a shared machine that moves far less than requests per second.
With --write-docs the "## HTTP ceilings" section of docs/performance.md is replaced by the
results.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench password 123"
JWT_SECRET = "bench-secret-key-that-is-long-enough-0123456789abcdef"
FEED_ITEMS = 20
TARGETS = {"health": 0.70, "me": 0.50, "feed": 0.50}
BARE, HEALTH, ME = "bare FastAPI", "GET /health", "GET /api/v1/auth/me"
FLOOR_THREE = "floor: BEGIN, 1 statement, COMMIT"
FLOOR_FOUR = "floor: BEGIN, 2 statements, COMMIT"
FLOOR_DECLARED = "floor: BEGIN, 1 statement, COMMIT, dependencies declared"
FEED_PATH = f"/api/v1/feed?page_size={FEED_ITEMS}"
FEED = f"GET {FEED_PATH}"


@dataclass
class Result:
    name: str
    workers: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # CPU time per request during the row (from /proc): the server's processes, and every
    # PostgreSQL process of the built-in server. None for the bare app (no database).
    server_us: float | None = None
    postgres_us: float | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def start_bare(
    port: int, workers: int, app: str = "bare_app", database_url: str | None = None
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "uvicorn", f"bench.{app}:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "DATABASE_URL": database_url} if database_url else None
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    wait_for(f"http://127.0.0.1:{port}/docs", process)
    return process


def built_in_database_url(data_dir: Path) -> str:
    """The DSN of the running project's built-in PostgreSQL, joined and let go at once (the
    server keeps it running)."""
    code = (
        "import sys; from pathlib import Path; from app.db import embedded; "
        "pg = Path(sys.argv[1]); url = embedded.start(pg); embedded.release(pg); print(url)"
    )
    command = [sys.executable, "-c", code, str(data_dir / "pg")]
    output = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return output.stdout.strip().splitlines()[-1]


def project_env(port: int, data_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "JWT_SECRET_KEY": JWT_SECRET,
        "DATA_DIR": str(data_dir),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "RATE_LIMIT_ENABLED": "false",  # all the load comes from one address
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8192",
    }
    env.pop("DATABASE_URL", None)
    return env


def start_project(port: int, workers: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """`timeless serve` as an operator runs it (built-in PostgreSQL, access log on)."""
    env = project_env(port, data_dir)
    command = [
        sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip
    log = (data_dir / "server.log").open("ab")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    wait_for(f"http://127.0.0.1:{port}/health/ready", process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def photo_bytes(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1200, 900), ((index * 37) % 256, 90, 160)).save(buffer, "JPEG")
    return buffer.getvalue()


def seed_family(base: str) -> str:
    """A family with FEED_ITEMS published memories, each with a processed photo; a token."""
    api = f"{base}/api/v1"
    with httpx.Client(timeout=60) as client:
        response = client.post(
            f"{api}/auth/register/adult",
            json={
                "email": f"bench-http-{time.time_ns()}@example.com",
                "password": PASSWORD,
                "display_name": "Bench",
                "family_name": "Bench family",
            },
        )
        response.raise_for_status()
        token = response.json()["tokens"]["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        media_ids = []
        for index in range(FEED_ITEMS):
            memory = client.post(
                f"{api}/memories",
                json={"title": f"Memory {index}", "status": "published", "tags": ["bench"]},
                headers=auth,
            )
            memory.raise_for_status()
            memory_id = memory.json()["id"]
            body = photo_bytes(index)
            target = client.post(
                f"{api}/storage/upload-url",
                json={
                    "memory_id": memory_id,
                    "file_name": f"p{index}.jpg",
                    "mime_type": "image/jpeg",
                    "file_size": len(body),
                },
                headers=auth,
            )
            target.raise_for_status()
            upload = target.json()
            client.request(
                upload["method"], upload["upload_url"], content=body, headers=upload["headers"]
            ).raise_for_status()
            media = client.post(
                f"{api}/memories/{memory_id}/media",
                json={
                    "storage_path": upload["storage_path"],
                    "file_name": f"p{index}.jpg",
                    "mime_type": "image/jpeg",
                    "file_size": len(body),
                },
                headers=auth,
            )
            media.raise_for_status()
            media_ids.append(media.json()["id"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            feed = client.get(f"{api}/feed?page_size={FEED_ITEMS}", headers=auth).json()
            statuses = [m["processing_status"] for item in feed["items"] for m in item["media"]]
            if len(statuses) == FEED_ITEMS and all(s == "completed" for s in statuses):
                return token
            time.sleep(0.5)
    raise RuntimeError("the photos were not processed in time")


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, token: str | None, connections: int, seconds: float) -> dict[str, float]:
    """One wrk run (1 thread): requests, req/s, p50 and p99 in ms, non-2xx answers."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", url]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    latencies = {m[1]: float(m[2]) * _UNIT_MS[m[3]] for m in _LATENCY.finditer(output)}
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {
        "requests": int(re.search(r"(\d+) requests in", output)[1]),  # type: ignore[index]
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]),  # type: ignore[index]
        "p50_ms": latencies["50"],
        "p99_ms": latencies["99"],
        "errors": int(errors[1]) if errors else 0,
    }


def run_wrk(
    name: str,
    url: str,
    workers: int,
    duration: int,
    connections: int,
    token: str | None,
    server: subprocess.Popen[bytes] | None = None,
    data_dir: Path | None = None,
) -> Result:
    server_before, postgres_before = cpu_seconds(server, data_dir)
    row = wrk(url, token, connections, duration)
    server_after, postgres_after = cpu_seconds(server, data_dir)
    result = Result(name, workers, row["rps"], row["p50_ms"], row["p99_ms"], int(row["errors"]))
    if server is not None and row["requests"]:
        result.server_us = (server_after - server_before) / row["requests"] * 1e6
        result.postgres_us = (postgres_after - postgres_before) / row["requests"] * 1e6
    return result


def _process_cpu(pid: int) -> tuple[str, float, int]:
    """(name, user + system CPU seconds, parent pid) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return name, ticks / os.sysconf("SC_CLK_TCK"), int(fields[1])


def cpu_seconds(
    server: subprocess.Popen[bytes] | None, data_dir: Path | None = None
) -> tuple[float, float]:
    """CPU seconds used so far by the server's own processes (the server and its workers) and
    by the built-in PostgreSQL whose data is under `data_dir` (its postmaster and every
    backend: other PostgreSQL servers on the machine are left out)."""
    if server is None or data_dir is None:
        return 0.0, 0.0
    processes: dict[int, tuple[str, float, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                processes[int(entry)] = _process_cpu(int(entry))
            except (OSError, ValueError):
                continue  # ended meanwhile
    postmasters = set()
    for pid, (name, _, _) in processes.items():
        if name == "postgres":
            with contextlib.suppress(OSError):
                if str(data_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    postmasters.add(pid)
    return _tree_cpu(processes, {server.pid}), _tree_cpu(processes, postmasters)


def _tree_cpu(processes: dict[int, tuple[str, float, int]], roots: set[int]) -> float:
    members = set(roots)
    for pid, (_, _, parent) in sorted(processes.items()):  # children have higher pids, mostly
        if parent in members:
            members.add(pid)
    return sum(processes[pid][1] for pid in members if pid in processes)


def request_cpu(port: int, data_dir: Path, token: str) -> dict[str, float]:
    """bench/request_cpu.py against this server's database, in a process of its own."""
    command = [sys.executable, str(ROOT / "bench" / "request_cpu.py"), str(data_dir), token]
    env = project_env(port, data_dir)
    output = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def measure(
    workers: int, duration: int, connections: int, cpu: dict[str, float] | None = None
) -> list[Result]:
    results = []
    bare_port, port = free_port(), free_port()
    bare = start_bare(bare_port, workers)
    try:
        bare_url = f"http://127.0.0.1:{bare_port}/health"
        results.append(run_wrk(BARE, bare_url, workers, duration, connections, None))
    finally:
        stop(bare)
    data_dir = Path(tempfile.mkdtemp(prefix="tl-bench-"))
    project = start_project(port, workers, data_dir)
    try:
        base = f"http://127.0.0.1:{port}"
        token = seed_family(base)
        health = run_wrk(
            HEALTH, f"{base}/health", workers, duration, connections, None, project, data_dir
        )
        results.append(health)
        results += floors(workers, duration, connections, data_dir)
        for name, path in ((ME, "/api/v1/auth/me"), (FEED, FEED_PATH)):
            url = base + path
            result = run_wrk(name, url, workers, duration, connections, token, project, data_dir)
            results.append(result)
        if cpu is not None:
            cpu.update(request_cpu(port, data_dir, token))
    finally:
        stop(project)
        shutil.rmtree(data_dir, ignore_errors=True)
    return results


def floors(workers: int, duration: int, connections: int, data_dir: Path) -> list[Result]:
    """The floor app's rows, on the project's PostgreSQL (whose CPU they count)."""
    port = free_port()
    floor = start_bare(port, workers, "floor_app", built_in_database_url(data_dir))
    try:
        return [
            run_wrk(name, f"http://127.0.0.1:{port}{path}", workers, duration, connections,
                    None, floor, data_dir)
            for name, path in (
                (FLOOR_THREE, "/three"),
                (FLOOR_DECLARED, "/three/declared"),
                (FLOOR_FOUR, "/four"),
            )
        ]  # fmt: skip
    finally:
        stop(floor)


def table(results: list[Result]) -> str:
    lines = [
        "| workers | endpoint | req/s | p50 | p99 | non-2xx | server CPU / req "
        "| PostgreSQL CPU / req |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        server = "—" if r.server_us is None else f"{r.server_us:,.0f} µs"
        postgres = "—" if r.postgres_us is None else f"{r.postgres_us:,.0f} µs"
        lines.append(
            f"| {r.workers} | {r.name} | {r.rps:,.0f} | {r.p50_ms:.1f} ms | {r.p99_ms:.1f} ms "
            f"| {r.errors} | {server} | {postgres} |"
        )
    return "\n".join(lines)


def ratios(results: list[Result]) -> str:
    lines = []
    by_workers: dict[int, list[Result]] = {}
    for r in results:
        by_workers.setdefault(r.workers, []).append(r)
    for workers, rows in sorted(by_workers.items()):
        row = {r.name: r for r in rows}
        bare, health, me, feed = row[BARE], row[HEALTH], row[ME], row[FEED]
        checks = (
            ("/health vs bare FastAPI", health.rps / bare.rps, TARGETS["health"]),
            ("/auth/me vs /health", me.rps / health.rps, TARGETS["me"]),
            ("feed vs /auth/me", feed.rps / me.rps, TARGETS["feed"]),
        )
        for label, value, target in checks:
            verdict = "meets" if value >= target else "below"
            lines.append(
                f"- {workers} worker(s): {label}: {value:.0%} (target ≥ {target:.0%}: {verdict})"
            )
        three, four = row[FLOOR_THREE].rps, row[FLOOR_FOUR].rps
        declared = row[FLOOR_DECLARED].rps
        lines.append(
            f"- {workers} worker(s): the floors against /health (the /auth/me target is "
            f"{TARGETS['me']:.0%}): three round trips {three / health.rps:.0%}, declared "
            f"as endpoints declare their dependencies {declared / health.rps:.0%}, four "
            f"{four / health.rps:.0%}; /auth/me reaches {me.rps / four:.0%} of its floor"
        )
        # A worker's time per request adds up: the floor's, plus what the project's
        # middleware (log line, metrics, request id, CORS) costs /health beyond a bare
        # route, which /auth/me goes through as well.
        ceiling = 1 / (1 / declared + 1 / health.rps - 1 / bare.rps)
        lines.append(
            f"- {workers} worker(s): so /auth/me cannot pass {ceiling:,.0f} req/s here, "
            f"{ceiling / health.rps:.0%} of /health, before any of its own work (the "
            f"token, entering as the member, the read under RLS, the answer)"
        )
    if 1 in by_workers and 2 in by_workers:
        for one, two in zip(by_workers[1], by_workers[2], strict=True):
            lines.append(f"- 2 workers / 1 worker, {one.name}: {two.rps / one.rps:.2f}×")
    return "\n".join(lines)


def cpu_table(cpu: dict[str, float]) -> str:
    lines = ["| endpoint | CPU per request, in process | × bare FastAPI |", "|---|---:|---:|"]
    bare = cpu["bare FastAPI"]
    for name, micros in cpu.items():
        lines.append(f"| {name} | {micros:,.0f} µs | {micros / bare:.1f}× |")
    health, me, feed = (cpu[n] for n in list(cpu)[1:])
    lines += [
        "",
        f"In CPU terms, leaving out the HTTP server's share (the same for every endpoint): "
        f"/health costs what {bare / health:.0%} of a bare route's throughput would "
        f"(target ≥ 70 %), /auth/me {health / me:.0%} of /health (≥ 50 %), the feed "
        f"{me / feed:.0%} of /auth/me (≥ 50 %).",
    ]
    return "\n".join(lines)


def write_docs(text: str) -> None:
    path = ROOT / "docs" / "performance.md"
    current = path.read_text()
    section = f"## HTTP ceilings\n\n{text}\n"
    pattern = re.compile(r"## HTTP ceilings\n.*?(?=\n## |\Z)", re.S)
    updated = pattern.sub(section, current) if pattern.search(current) else f"{current}\n{section}"
    path.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="comma separated, e.g. 1,2")
    parser.add_argument("--cpu", action="store_true", help="also CPU per request, in process")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (Debian/Ubuntu)")
    results: list[Result] = []
    cpu: dict[str, float] | None = {} if args.cpu else None
    for workers in (int(w) for w in args.workers.split(",")):
        results.extend(
            measure(workers, args.duration, args.connections, cpu if workers == 1 else None)
        )
    machine = (
        f"{platform.node()}: {os.cpu_count()} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    command = "python bench/http_ceilings.py " + " ".join(sys.argv[1:])
    text = (
        f"Machine: {machine}. Command: `{command}`. wrk -t1 -c{args.connections} "
        f"-d{args.duration}s per row, one row after the other; the server and PostgreSQL on "
        f"the same 2 cores as wrk. CPU per request: user + system time of the server's "
        f"processes and of PostgreSQL's during the row (/proc), divided by its requests."
        f"\n\n{table(results)}\n\n{ratios(results)}"
    )
    if cpu:
        text += f"\n\n{cpu_table(cpu)}"
    print(text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
