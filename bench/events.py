"""Live updates benchmark: 1 000 idle GET /events streams on one worker, fan-out, slow readers.

Usage: python bench/events.py [--streams 1000] [--rounds 30] [--slow 50] [--burst 5000]
                              [--pgdata DIR] [--write-docs]

1. Starts the built-in PostgreSQL in --pgdata (created afresh, removed afterwards) and
   migrates it; starts `uvicorn app.main:configure_from_env --factory` with ONE worker.
2. Registers a family (an adult who writes, a teen who reads) through the API.
3. Opens --streams streams for the teen (each its own TCP connection, read by a small
   raw-socket SSE client in this process) and measures the server's RSS before and after:
   the memory one idle stream costs.
4. Fan-out: --rounds times, the adult posts a memory; every stream records when its
   `memory.published` arrived. Latency is from sending the POST (so it includes making the
   change) to the event at each stream; p50/p99 over every delivery, and the time until
   the LAST of the streams had it.
5. Slow readers: the idle streams are closed; --slow streams are opened that never read
   (a 4 KiB receive buffer), with 10 that read normally, and --burst events of ~4 KiB are
   published (50 per transaction). The server's RSS is sampled throughout: with a bounded
   queue per stream it must level off, whatever the burst; the slow streams are dropped
   (`event_streams_closed_total{reason="too_slow"}`) and the readers get everything.
6. The control: the same slow-reader phase on a second server whose queue is in effect
   unbounded (EVENTS_QUEUE_SIZE=1000000), to show what the bound prevents (--no-control
   skips it).

With --write-docs the results replace the "## Live updates" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feed import free_port, load_average, machine, stop_database  # noqa: E402

from app.db import embedded  # noqa: E402
from app.db.migrate import migrate  # noqa: E402

PASSWORD = "bench password 123"
JWT_SECRET = "bench-secret-key-that-is-long-enough-0123456789abcdef"
API = "/api/v1"
WAIT_SECONDS = 60.0
UNBOUNDED = 1_000_000
PADDING = "x" * 4000  # makes each burst event about 4 KiB on the wire


# A minimal SSE client on a raw socket: 1 000 of them cost the bench little CPU -------------------


@dataclass
class RawStream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    events: int = 0
    ended: bool = False
    task: asyncio.Task[None] | None = None


@dataclass
class Arrivals:
    """memory id → when each stream got its memory.published."""

    times: dict[str, list[float]] = field(default_factory=dict)
    waiters: dict[str, tuple[int, asyncio.Event]] = field(default_factory=dict)

    def record(self, memory_id: str, at: float) -> None:
        got = self.times.setdefault(memory_id, [])
        got.append(at)
        waiter = self.waiters.get(memory_id)
        if waiter is not None and len(got) >= waiter[0]:
            waiter[1].set()

    async def wait(self, memory_id: str, count: int) -> list[float]:
        done = asyncio.Event()
        self.waiters[memory_id] = (count, done)
        if len(self.times.get(memory_id, [])) >= count:
            done.set()
        await asyncio.wait_for(done.wait(), WAIT_SECONDS)
        return self.times[memory_id]


async def open_stream(
    port: int, token: str, *, arrivals: Arrivals | None, read: bool = True, rcvbuf: int = 0
) -> RawStream:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # Before connecting, so the advertised window stays small: the server's writes stall.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    writer.write(
        f"GET {API}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"stream refused: {status!r}")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    stream = RawStream(reader, writer)
    if read:
        stream.task = asyncio.create_task(read_events(stream, arrivals))
    return stream


async def read_events(stream: RawStream, arrivals: Arrivals | None) -> None:
    """Decode chunked transfer encoding, then SSE lines; record memory.published arrivals."""
    buffer = b""
    event_type = b""
    try:
        while True:
            size_line = await stream.reader.readline()
            if not size_line:
                break
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                break
            chunk = await stream.reader.readexactly(size + 2)
            buffer += chunk[:-2]
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"event: "):
                    event_type = line[7:]
                elif line.startswith(b"data: "):
                    stream.events += 1
                    if arrivals is not None and event_type == b"memory.published":
                        arrivals.record(json.loads(line[6:])["memory_id"], time.monotonic())
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        stream.ended = True


async def close_stream(stream: RawStream) -> None:
    if stream.task is not None:
        stream.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream.task
    stream.writer.transport.abort()


# The server -------------------------------------------------------------------------------------


def start_server(dsn: str, port: int, workdir: Path, queue_size: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "ENVIRONMENT": "production",
        "JWT_SECRET_KEY": JWT_SECRET,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "DATA_DIR": str(workdir / "data"),
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8192",
        "EVENTS_QUEUE_SIZE": str(queue_size),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [
        sys.executable, "-m", "uvicorn", "app.main:configure_from_env", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        "--log-level", "warning", "--workers", "1", "--timeout-graceful-shutdown", "5",
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return server
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the server did not start")


@dataclass
class Family:
    family_id: str
    writer: str  # access tokens
    reader: str


async def make_family(client: httpx.AsyncClient) -> Family:
    stamp = time.time_ns()
    founder = await client.post(
        f"{API}/auth/register/adult",
        json={"email": f"w-{stamp}@example.com", "password": PASSWORD, "display_name": "W"},
    )
    founder.raise_for_status()
    writer = founder.json()["tokens"]["access_token"]
    headers = {"Authorization": f"Bearer {writer}"}
    email = f"r-{stamp}@example.com"
    invite = await client.post(
        f"{API}/invites", json={"email": email, "role": "teen"}, headers=headers
    )
    invite.raise_for_status()
    joined = await client.post(
        f"{API}/invites/{invite.json()['token']}/accept",
        json={"email": email, "password": PASSWORD, "display_name": "R"},
    )
    joined.raise_for_status()
    return Family(founder.json()["family_unit_id"], writer, joined.json()["tokens"]["access_token"])


def rss_mib(process: psutil.Process) -> float:
    return process.memory_info().rss / 1024 / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def too_slow_drops(client: httpx.AsyncClient) -> int:
    text = (await client.get("/metrics")).text
    match = re.search(r'event_streams_closed_total\{reason="too_slow"\} ([0-9.e+]+)', text)
    return int(float(match.group(1))) if match else 0


# The phases --------------------------------------------------------------------------------------


async def idle_streams(
    port: int, family: Family, count: int, server: psutil.Process, arrivals: Arrivals
) -> tuple[list[RawStream], dict[str, float]]:
    await asyncio.sleep(2)
    before = rss_mib(server)
    streams: list[RawStream] = []
    for start in range(0, count, 100):
        batch = min(100, count - start)
        streams += await asyncio.gather(
            *(open_stream(port, family.reader, arrivals=arrivals) for _ in range(batch))
        )
    await asyncio.sleep(3)  # idle: only keep-alives from here
    after = rss_mib(server)
    return streams, {
        "rss_before_mib": before,
        "rss_after_mib": after,
        "per_stream_kib": (after - before) * 1024 / count,
    }


async def fan_out(
    client: httpx.AsyncClient, family: Family, streams: int, rounds: int, arrivals: Arrivals
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {family.writer}"}
    deliveries: list[float] = []
    lasts: list[float] = []
    for n in range(rounds):
        sent = time.monotonic()
        response = await client.post(
            f"{API}/memories", json={"title": f"Round {n}", "status": "published"},
            headers=headers,
        )  # fmt: skip
        response.raise_for_status()
        times = await arrivals.wait(response.json()["id"], streams)
        latencies = [(t - sent) * 1000 for t in times]
        deliveries += latencies
        lasts.append(max(latencies))
        await asyncio.sleep(0.2)
    return {
        "p50_ms": percentile(deliveries, 0.50),
        "p99_ms": percentile(deliveries, 0.99),
        "last_p50_ms": statistics.median(lasts),
        "last_max_ms": max(lasts),
    }


async def slow_readers(
    port: int, dsn: str, client: httpx.AsyncClient, family: Family, server: psutil.Process,
    slow: int, burst: int,
) -> dict[str, object]:  # fmt: skip
    readers = [await open_stream(port, family.reader, arrivals=None) for _ in range(10)]
    stalled = [
        await open_stream(port, family.reader, arrivals=None, read=False, rcvbuf=4096)
        for _ in range(slow)
    ]
    drops_before = await too_slow_drops(client)
    await asyncio.sleep(2)
    samples = [(0, rss_mib(server))]
    conn = await asyncpg.connect(dsn)
    try:
        for sent in range(0, burst, 50):
            async with conn.transaction():
                for n in range(sent, sent + 50):
                    await conn.execute(
                        "select app.publish_live_event($1, 'export.progress', $2::text::jsonb)",
                        family.family_id,
                        json.dumps({"export_id": str(n), "status": "running", "pad": PADDING}),
                    )
            if (sent + 50) % 500 == 0:
                await asyncio.sleep(0.2)
                samples.append((sent + 50, rss_mib(server)))
    finally:
        await conn.close()
    deadline = time.monotonic() + WAIT_SECONDS
    while any(r.events < burst for r in readers if not r.ended):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    samples.append((burst, rss_mib(server)))
    result: dict[str, object] = {
        "samples": samples,
        "dropped_slow": await too_slow_drops(client) - drops_before,
        "readers_complete": sum(1 for r in readers if r.events >= burst),
        "readers_dropped": sum(1 for r in readers if r.ended),
    }
    for stream in readers + stalled:
        await close_stream(stream)
    return result


# Report -------------------------------------------------------------------------------------------


def write_docs(section: str) -> Path:
    """Replace (or add) the "## Live updates" section of docs/performance.md, nothing else."""
    path = ROOT / "docs" / "performance.md"
    text = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(r"^## Live updates\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip() + "\n\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
    path.write_text(text.rstrip() + "\n")
    return path


DOCS_SECTION = """## Live updates

Measured by `bench/events.py` on {machine}.
Command: `{command}`. One uvicorn worker; the built-in PostgreSQL, the server and the
benchmark's own clients (raw-socket SSE readers in one asyncio process) share the CPUs.
1-minute load average: {loads} (above ~2, other work was competing for the CPUs).

| {streams} idle streams on one worker | |
|---|---:|
| server RSS before / after opening them | {rss_before_mib:.0f} / {rss_after_mib:.0f} MiB |
| **RSS per idle stream** | **{per_stream_kib:.1f} KiB** |
| fan-out latency to every stream, p50 / p99 ({rounds} events × {streams} streams) | \
**{p50_ms:.0f} / {p99_ms:.0f} ms** |
| time until the last of the {streams} had it, median / max | \
{last_p50_ms:.0f} / {last_max_ms:.0f} ms |

Latency runs from sending `POST /memories` (so it includes creating the memory and its
commit) to the `memory.published` event at each stream: trigger → NOTIFY at commit → this
worker's LISTEN connection → one query for the new event → the frame is rendered once and
queued to each of the {streams} streams → each stream's task writes it.

Slow readers: {slow} streams that never read (4 KiB receive buffer) and 10 that read, while
{burst} events of ~4 KiB are published (50 per transaction), queue size {queue_size}:

| events published | {sample_header} |
|---|{sample_align}
| server RSS, MiB, queue {queue_size} | {sample_values} |
{control_row}
{dropped_slow} of the {slow} stalled streams were dropped (`too_slow`, with a `retry:` hint);
{readers_complete} of the 10 reading streams received all {burst} events
({readers_dropped} dropped). {verdict}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--slow", type=int, default=50)
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--queue-size", type=int, default=256, help="EVENTS_QUEUE_SIZE")
    parser.add_argument("--pgdata", type=Path, default=ROOT / "bench" / ".data" / "pg-events")
    parser.add_argument("--no-control", action="store_true", help="skip the unbounded control")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    workdir = args.pgdata.parent
    if args.pgdata.exists():
        if not (args.pgdata / "PG_VERSION").exists():
            parser.error(f"{args.pgdata} exists and is not a PostgreSQL data directory")
        shutil.rmtree(args.pgdata)
    workdir.mkdir(parents=True, exist_ok=True)

    print(f"machine: {machine()}; load average {load_average()}", flush=True)
    load_before = load_average()
    dsn = embedded.start(args.pgdata)
    asyncio.run(migrate(dsn))
    port = free_port()
    server = start_server(dsn, port, workdir, args.queue_size)
    control: list[tuple[int, float]] = []
    try:
        results = asyncio.run(run(args, dsn, port, psutil.Process(server.pid)))
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        if not args.no_control:
            print("control: the same slow readers with an unbounded queue", flush=True)
            port = free_port()
            server = start_server(dsn, port, workdir, UNBOUNDED)
            control = asyncio.run(run_control(args, dsn, port, psutil.Process(server.pid)))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        stop_database(args.pgdata)
        shutil.rmtree(args.pgdata, ignore_errors=True)
        shutil.rmtree(workdir / "data", ignore_errors=True)

    samples = results.pop("samples")
    verdict = f"RSS moved {growth(samples):+.1f} MiB from 500 events to the end of the burst"
    control_row = ""
    if control:
        verdict += f"; on the control server (unbounded queue) it moved {growth(control):+.1f} MiB."
        control_row = (
            f"| server RSS, MiB, queue {UNBOUNDED:,} (the control) | "
            + " | ".join(f"{rss:.0f}" for _, rss in control)
            + " |\n"
        )
    else:
        verdict += "."
    section = DOCS_SECTION.format(
        machine=machine(),
        command=" ".join(["python bench/events.py", *sys.argv[1:]]),
        loads=f"{load_before} before, {load_average()} after",
        streams=args.streams,
        rounds=args.rounds,
        slow=args.slow,
        burst=args.burst,
        queue_size=args.queue_size,
        sample_header=" | ".join(f"{n:,}" for n, _ in samples),
        sample_align="---:|" * len(samples),
        sample_values=" | ".join(f"{rss:.0f}" for _, rss in samples),
        control_row=control_row,
        verdict=verdict,
        **results,
    )
    print("\n" + section)
    if args.write_docs:
        print(f"wrote {write_docs(section)}")


def growth(samples: list[tuple[int, float]]) -> float:
    """RSS from the sample after the first 500 events to the last one."""
    return samples[-1][1] - samples[1][1] if len(samples) > 2 else 0.0


async def run_control(
    args: argparse.Namespace, dsn: str, port: int, server: psutil.Process
) -> list[tuple[int, float]]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        family = await make_family(client)
        slow = await slow_readers(port, dsn, client, family, server, args.slow, args.burst)
    print(f"  {slow}", flush=True)
    samples: list[tuple[int, float]] = slow["samples"]  # type: ignore[assignment]
    return samples


async def run(args: argparse.Namespace, dsn: str, port: int, server: psutil.Process) -> dict:
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        family = await make_family(client)
        arrivals = Arrivals()
        print(f"opening {args.streams} streams", flush=True)
        streams, memory = await idle_streams(port, family, args.streams, server, arrivals)
        print(f"  {memory}", flush=True)
        print(f"fan-out, {args.rounds} rounds", flush=True)
        latency = await fan_out(client, family, args.streams, args.rounds, arrivals)
        print(f"  {latency}", flush=True)
        for stream in streams:
            await close_stream(stream)
        print(f"slow readers: {args.slow} stalled, burst of {args.burst}", flush=True)
        slow = await slow_readers(port, dsn, client, family, server, args.slow, args.burst)
        print(f"  {slow}", flush=True)
    return {**memory, **latency, **slow}


if __name__ == "__main__":
    main()
