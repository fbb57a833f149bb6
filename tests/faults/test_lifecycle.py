"""`timeless serve` as a container runs it: stops in time, stops its PostgreSQL, survives kills.

Each test runs the real command (built-in PostgreSQL, migrations, uvicorn) in a subprocess,
started from `/` (not the checkout), on a data folder of its own:

- SIGTERM with a slow upload open (two workers and PostgreSQL's log on stderr, as the image
  runs it): within the 10 s that Docker, podman and Kubernetes wait before SIGKILL, and with
  the default SHUTDOWN_GRACE_SECONDS, the process exits 0, the upload is answered 503
  (nothing of it is kept), and PostgreSQL's log says it shut down.
- SIGKILL of the server leaves its PostgreSQL running: the next start stops that one cleanly and
  starts afresh (the data kept); SIGINT then stops both.
- The whole container killed: the next start finds a `postmaster.pid` whose pid is now another
  process, and starts anyway (crash recovery), then exits leaving nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from app.db.migrate import available_migrations
from tests.faults.server import TimelessServe, postgres_processes_in, stop_postgres_in
from tests.helpers.factories import Factory
from tests.helpers.media_samples import create_memory, jpeg, upload_url

pytestmark = pytest.mark.faults

# What Docker (`docker stop`), podman and Kubernetes wait after SIGTERM before SIGKILL.
ORCHESTRATOR_STOP_TIMEOUT_SECONDS = 10
SHUT_DOWN = "database system is shut down"


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short path: PostgreSQL's Unix socket lives in it.
    root = Path(tempfile.mkdtemp(prefix="tll-"))
    data = root / "data"
    yield data
    stop_postgres_in(data / "pg")
    subprocess.run(["rm", "-rf", str(root)], check=False)


def _dsn(pgdata: Path) -> str:
    return f"postgresql://postgres@/timeless?host={pgdata.resolve()}"


def _running(pid: int) -> bool:
    # Not a zombie: a stopped server's processes may wait here for a parent to reap them.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stored_files(data: Path) -> list[Path]:
    return [path for path in (data / "storage").rglob("*") if path.is_file()]


def _wait_for(condition: Callable[[], bool], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


async def test_sigterm_with_a_slow_upload_open_stops_in_time_and_stops_postgres(data_dir: Path):
    server = TimelessServe(data_dir, env={"BUILTIN_POSTGRES_LOG": "stderr", "WORKERS": "2"})
    with server:
        # Started from `/`: the migrations came from the package, all of them.
        conn = await asyncpg.connect(_dsn(server.pgdata))
        try:
            applied = await conn.fetch("select version from supabase_migrations.schema_migrations")
        finally:
            await conn.close()
        assert sorted(r["version"] for r in applied) == [m.version for m in available_migrations()]

        photo = jpeg()
        padding = 200_000  # sent at 2 KB per 0.1 s: 10 s, longer than the shutdown grace
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            adult = await Factory(client).register("adult")
            memory = await create_memory(client, adult, title="Sent slowly")
            ticket = await upload_url(
                client, adult, memory["id"], "image/jpeg", file_size=len(photo) + padding
            )
            assert ticket.status_code == 200, ticket.text
        grant = ticket.json()
        target = httpx.URL(grant["upload_url"])

        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = [
            f"PUT {target.raw_path.decode()} HTTP/1.1",
            f"Host: 127.0.0.1:{server.port}",
            *(f"{name}: {value}" for name, value in grant["headers"].items()),
            f"Content-Length: {len(photo) + padding}",
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + photo)
        await writer.drain()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(padding // 2048):
                    await asyncio.sleep(0.1)
                    writer.write(b"\0" * 2048)
                    await writer.drain()

        sending = asyncio.create_task(trickle())
        answer = asyncio.create_task(reader.read())
        incoming = data_dir / "storage" / "memories" / ".incoming"
        await asyncio.to_thread(
            _wait_for,
            lambda: incoming.is_dir() and any(incoming.iterdir()),
            "the upload being received",
        )

        server.signal(signal.SIGTERM)
        stopping = time.monotonic()
        try:
            code = await asyncio.to_thread(server.wait, ORCHESTRATOR_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 10 s after SIGTERM:\n{server.log_tail()}")
        took = time.monotonic() - stopping
        response = await asyncio.wait_for(answer, 10)
        sending.cancel()
        writer.close()

    log = server.log_text()
    assert code == 0, f"exit {code} after {took:.1f} s:\n{server.log_tail()}"
    # The client was told, in HTTP, to come back: not a 500, not a silent close.
    assert response.startswith(b"HTTP/1.1 503"), response[:300]
    assert b"retry-after: 2" in response.lower()
    assert b'"code": "service_unavailable"' in response
    assert "Exception in ASGI application" not in log
    assert _stored_files(data_dir) == [], "part of the upload was kept"
    # PostgreSQL was shut down, not killed: its own log says so, on the server's output.
    assert SHUT_DOWN in log, server.log_tail()
    assert not (server.pgdata / "log").exists(), "the log went to a file in the volume"
    assert postgres_processes_in(server.pgdata) == []
    assert not (server.pgdata / "postmaster.pid").exists()


async def test_after_sigkill_the_next_start_stops_the_leftover_and_sigint_stops_all(
    data_dir: Path,
):
    first = TimelessServe(data_dir).start()  # the fixture cleans up if the test fails
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
            adult = await Factory(client).register("adult")
    finally:
        first.kill()
    leftover = postgres_processes_in(first.pgdata)
    assert leftover, "SIGKILL of the server should leave its PostgreSQL running (the scenario)"

    second = TimelessServe(data_dir)
    with second:
        assert "left running by a process that did not stop it" in second.log_text()
        assert not any(_running(pid) for pid in leftover), "the leftover still runs"
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
            login = await client.post(
                "/api/v1/auth/login", json={"email": adult.email, "password": adult.password}
            )
            assert login.status_code == 200, login.text  # the data survived
        second.signal(signal.SIGINT)
        code = await asyncio.to_thread(second.wait, ORCHESTRATOR_STOP_TIMEOUT_SECONDS)
    # A graceful stop either way: uvicorn consumes the signal (0) or passes it on (130).
    assert code in (0, 130), second.log_tail()
    assert postgres_processes_in(second.pgdata) == []
    pg_log = (second.pgdata / "log").read_text()
    # The leftover stopped cleanly: no crash recovery at the restart; and the last stop too.
    assert "not properly shut down" not in pg_log
    assert pg_log.count(SHUT_DOWN) == 2, pg_log


def test_a_killed_container_with_its_pid_reused_starts_again(data_dir: Path):
    first = TimelessServe(data_dir).start()
    first.kill()
    # Everything in the container dies at once: PostgreSQL too, without a shutdown.
    for pid in postgres_processes_in(first.pgdata):
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    _wait_for(lambda: not postgres_processes_in(first.pgdata), "PostgreSQL killed")
    # After a restart its pid belongs to another process (in a container, often one of ours).
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        pid_file = first.pgdata / "postmaster.pid"
        lines = pid_file.read_text().split("\n")
        pid_file.write_text("\n".join([str(stranger.pid), *lines[1:]]))

        result = first.run("migrate")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "removed a stale postmaster.pid" in result.stdout + result.stderr
        assert stranger.poll() is None, "the other process was touched"
    finally:
        stranger.kill()
        stranger.wait()
    # A normal exit stops the server it started.
    assert postgres_processes_in(first.pgdata) == []
    pg_log = (first.pgdata / "log").read_text()
    assert "not properly shut down" in pg_log  # it was killed: recovered, as it should be
    assert pg_log.rstrip().endswith(SHUT_DOWN), pg_log[-2000:]
