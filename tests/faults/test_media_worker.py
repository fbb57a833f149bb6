"""`timeless worker` beside API processes that only serve (issue 12, item 5).

Real processes on one database and one storage folder: API processes started with
BACKGROUND_JOBS=false (what `timeless serve --no-worker` sets) and a `timeless worker` whose
media jobs run the decoder stand-in of tests/helpers/decoder_double.py (the real decoder
unless a file carries a marker). Also: the API process's memory while it processes media
itself (`timeless serve` without --no-worker).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from PIL import Image

from app.adapters.media.sandbox import CRASHED_REASON, MEMORY_REASON
from tests.faults.server import (
    ApiServer,
    EmbeddedPostgres,
    TimelessServe,
    Worker,
    stop_postgres_in,
)
from tests.helpers import decoder_double as double
from tests.helpers.factories import Factory, Member
from tests.helpers.media_samples import blank_png, create_memory, jpeg, upload, wait_for_media

pytestmark = pytest.mark.faults

MiB = 1024 * 1024
SERVE_ONLY = {"BACKGROUND_JOBS": "false"}
# The worker polls once an hour: what it processes quickly, a NOTIFY woke it for.
WORKER = {
    "MEDIA_SWEEP_INTERVAL_SECONDS": "3600",
    "MEDIA_JOB_MEMORY_BYTES": str(256 * MiB),
    "MEDIA_PROCESSING_WORKERS": "2",
}

_STATUSES = """
select id::text, processing_status, processing_attempts, thumbnail_path, metadata
from public.memory_media where id = any($1::uuid[])
"""


async def _statuses(conn: asyncpg.Connection, ids: list[str]) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(_STATUSES, ids)
    return {row["id"]: {**row, "metadata": json.loads(row["metadata"])} for row in rows}


async def _until_finished(
    conn: asyncpg.Connection, ids: list[str], seconds: float = 90
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while True:
        rows = await _statuses(conn, ids)
        if len(rows) == len(ids) and all(
            row["processing_status"] in ("completed", "failed") for row in rows.values()
        ):
            return rows
        assert time.monotonic() < deadline, f"not finished: {rows}"
        await asyncio.sleep(0.1)


async def _until(condition: Callable[[], Any], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


async def _listening(conn: asyncpg.Connection) -> bool:
    found = await conn.fetchval(
        "select count(*) from pg_stat_activity where query like 'LISTEN%timeless_%'"
    )
    return bool(found)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_two_api_processes_and_a_worker_share_one_database(
    postgres: EmbeddedPostgres, fault_dir: Path, pg_conn: asyncpg.Connection
) -> None:
    data_dir = fault_dir / "shared"
    first = ApiServer(postgres.dsn, data_dir, SERVE_ONLY)
    second = ApiServer(postgres.dsn, data_dir, SERVE_ONLY)
    worker = Worker(postgres.dsn, data_dir, WORKER)
    try:
        first.start()
        second.start()
        worker.start()
        await _until(lambda: _listening(pg_conn), "the worker listens for registrations")
        worker_pid = worker.pid
        uploads: list[tuple[str, bytes]] = [
            ("ok-1", jpeg((640, 480))),
            ("segfault", double.with_marker(jpeg((64, 48)), double.SEGFAULT)),
            ("ok-2", jpeg((480, 640))),
            ("memory", double.with_marker(jpeg((64, 48)), double.MEMORY_BOMB)),
            ("ok-3", jpeg((300, 200))),
            ("ok-4", jpeg((200, 300))),
        ]
        async with (
            httpx.AsyncClient(base_url=first.url, timeout=30) as one,
            httpx.AsyncClient(base_url=second.url, timeout=30) as two,
        ):
            adult: Member = await Factory(one).register("adult")
            memory = await create_memory(one, adult, title="Two servers, one worker")
            ids: dict[str, str] = {}
            for index, (name, data) in enumerate(uploads):
                # Alternate: each API process registers half of them.
                client = one if index % 2 == 0 else two
                media = await upload(client, adult, memory["id"], data, "image/jpeg")
                ids[name] = str(media["id"])

        rows = await _until_finished(pg_conn, list(ids.values()))
        assert worker.alive() and worker.pid == worker_pid, worker.log_tail()
        by_name = {name: rows[media_id] for name, media_id in ids.items()}
        assert by_name["segfault"]["processing_status"] == "failed"
        assert by_name["segfault"]["metadata"]["error"] == CRASHED_REASON
        assert by_name["memory"]["processing_status"] == "failed"
        assert by_name["memory"]["metadata"]["error"] == MEMORY_REASON
        for name in ("ok-1", "ok-2", "ok-3", "ok-4"):
            row = by_name[name]
            assert row["processing_status"] == "completed", row
            assert (data_dir / "storage" / "memories" / row["thumbnail_path"]).is_file()
        assert all(row["processing_attempts"] == 1 for row in rows.values()), rows
        # The API processes decoded nothing: they never even started a child process.
        for server in (first, second):
            assert psutil.Process(server.pid).children(recursive=True) == []
    finally:
        worker.stop()
        second.stop()
        first.stop()


async def test_kill_9_of_the_worker_mid_job_loses_nothing(
    postgres: EmbeddedPostgres, fault_dir: Path, pg_conn: asyncpg.Connection
) -> None:
    data_dir = fault_dir / "killed"
    quick_takeover = {
        **WORKER,
        "MEDIA_STALE_AFTER_SECONDS": "3",
        "MEDIA_SWEEP_INTERVAL_SECONDS": "1",
        "MEDIA_PROCESSING_WORKERS": "1",
    }
    api = ApiServer(postgres.dsn, data_dir, SERVE_ONLY)
    first = Worker(postgres.dsn, data_dir, quick_takeover)
    second = Worker(postgres.dsn, data_dir, quick_takeover)
    try:
        api.start()
        first.start()
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            adult = await Factory(client).register("adult")
            memory = await create_memory(client, adult, title="Interrupted")
            ids = [
                str(
                    (
                        await upload(
                            client,
                            adult,
                            memory["id"],
                            double.with_marker(jpeg((320 + index, 240)), double.SLOW),
                            "image/jpeg",
                        )
                    )["id"]
                )
                for index in range(3)
            ]

        async def a_job_runs() -> bool:
            rows = await _statuses(pg_conn, ids)
            return any(row["processing_status"] == "processing" for row in rows.values())

        await _until(a_job_runs, "the worker started a job")
        # The job's child (under the forkserver) is found before the kill, to check it dies too.
        children = [p.pid for p in psutil.Process(first.pid).children(recursive=True)]
        assert children, "no job process found"
        first.kill()
        for pid in children:

            async def gone(pid: int = pid) -> bool:
                return not _alive(pid)

            await _until(gone, f"process {pid} ends with the worker", seconds=30)
        at_kill = await _statuses(pg_conn, ids)
        interrupted = [i for i, row in at_kill.items() if row["processing_status"] == "processing"]
        assert interrupted, at_kill

        second.start()
        rows = await _until_finished(pg_conn, ids)
    finally:
        second.stop()
        first.stop()
        api.stop()

    for row in rows.values():
        assert row["processing_status"] == "completed", row
        with Image.open(data_dir / "storage" / "memories" / row["thumbnail_path"]) as image:
            assert image.format == "JPEG"
    for media_id in interrupted:
        assert rows[media_id]["processing_attempts"] == 2, rows[media_id]


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


class _PeakRss:
    """Samples VmRSS of a process every 10 ms in a thread."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, _vm_kib(self.pid, "VmRSS"))
            time.sleep(0.01)


async def test_the_api_process_memory_stays_flat_while_it_processes_media(
    postgres: EmbeddedPostgres, fault_dir: Path, pg_conn: asyncpg.Connection
) -> None:
    # `timeless serve` without --no-worker: the API process runs the jobs, but each decode
    # happens in a child. 12 MP PNGs (48 MB each once decoded) leave its memory where it was.
    data_dir = fault_dir / "rss"
    server = ApiServer(postgres.dsn, data_dir, {"MEDIA_PROCESSING_WORKERS": "2"})
    pictures = [await asyncio.to_thread(blank_png, 4000, 3000, seed=i) for i in range(13)]
    try:
        server.start()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            adult = await Factory(client).register("adult")
            memory = await create_memory(client, adult, title="Scans")
            # Warm-up: every code path of upload and processing has run once.
            first = await upload(client, adult, memory["id"], pictures[0], "image/png")
            await _until_finished(pg_conn, [str(first["id"])])
            baseline_kib = _vm_kib(server.pid, "VmRSS")
            baseline_hwm_kib = _vm_kib(server.pid, "VmHWM")
            with _PeakRss(server.pid) as rss:
                ids = [
                    str((await upload(client, adult, memory["id"], data, "image/png"))["id"])
                    for data in pictures[1:]
                ]
                rows = await _until_finished(pg_conn, ids)
            hwm_kib = _vm_kib(server.pid, "VmHWM")
    finally:
        server.stop()

    assert all(row["processing_status"] == "completed" for row in rows.values()), rows
    # The highest sample, and the kernel's own high-water mark (which no sampling can miss).
    growth_mib = max(rss.peak_kib - baseline_kib, hwm_kib - baseline_hwm_kib) / 1024
    assert growth_mib < 24, f"the API process grew by {growth_mib:.1f} MiB while processing"


async def test_timeless_serve_no_worker_and_timeless_worker_on_the_built_in_database() -> None:
    # The commands themselves, from `/`, on one data folder: `serve --no-worker` starts the
    # built-in PostgreSQL, `worker` uses the same one (and leaves it running when it stops).
    root = Path(tempfile.mkdtemp(prefix="tlw-"))  # short: PostgreSQL's socket lives in it
    data = root / "data"
    serve = TimelessServe(data, serve_args=("--no-worker",))
    worker: subprocess.Popen[bytes] | None = None
    worker_log = root / "worker.log"
    try:
        with serve:
            async with httpx.AsyncClient(base_url=serve.url, timeout=30) as client:
                adult = await Factory(client).register("adult")
                memory = await create_memory(client, adult, title="Left for the worker")
                media = await upload(client, adult, memory["id"], jpeg(), "image/jpeg")
                assert media["processing_status"] == "pending"
                worker = _start_worker(serve, worker_log)
                done = await wait_for_media(client, adult, memory["id"], media["id"], seconds=90)
                assert done["processing_status"] == "completed", done["metadata"]
                # Whoever processed it, it was not the API process: it never started a child
                # process of its own (its PostgreSQL runs apart, under pg_ctl).
                children = psutil.Process(serve.process.pid).children(recursive=True)  # type: ignore[union-attr]
                assert [p for p in children if p.name() != "postgres"] == []

                worker.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(worker.wait, 30) == 0, worker_log.read_text()
                # The API (and its database) carries on without the worker.
                again = await client.get(f"/api/v1/memories/{memory['id']}", headers=adult.headers)
                assert again.status_code == 200
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        stop_postgres_in(data / "pg")
        shutil.rmtree(root, ignore_errors=True)


def _start_worker(serve: TimelessServe, log_path: Path) -> subprocess.Popen[bytes]:
    """`timeless worker` with serve's environment (so on the same data folder)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            serve.command("worker"),
            cwd=serve.cwd,
            env={**serve.environment(), "LOG_LEVEL": "INFO"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
