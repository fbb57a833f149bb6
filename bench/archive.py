"""The family archive: export throughput and memory against Python's own zipfile.

Usage:
    python bench/archive.py                           # 2 000 media of 1 MiB (~2 GiB)
    python bench/archive.py --media 200 --size 262144  # a quick run
    python bench/archive.py --runs 3 --keep /tmp/archive-bench

One family is made through the real API (a real app over the built-in PostgreSQL), then its
memories and media rows are inserted with SQL and their files written straight into the
built-in storage (incompressible bytes behind a JPEG signature, like photos). Then, in the same
process and alternating `--runs` times:

- `zipfile`: Python's `zipfile.ZipFile(..., ZIP_STORED).write()` of the same files, in the same
  order, then fsync: the floor any zip writer in Python stands on;
- `export`: the real job (`POST /families/me/exports`, then `ArchiveExporter.run_next()`): the
  snapshot, three passes, SHA-256 of every file, memories.json, index.html, the tag files,
  progress writes, and the zip made durable (fsync) and moved into the archives bucket.

Each measurement reports seconds, MiB/s of media and the process's peak RSS above its size at
the start (VmHWM, reset through /proc/self/clear_refs before each measurement: Linux only).
The target (issue 13): the export at >= 70 % of zipfile's throughput, memory flat.

Then the import of that very archive (one export made once, not measured), each run into a
new family, through `import_service.import_local` (what `timeless import` and the server's
import job run):

- `import (register only)`: every file read from the zip, hashed, sniffed, stored and
  registered with its memory; media processing excluded (the media stay `pending`);
- `import + processing (as the server)`: the same with the media handed to the media
  processor as they are registered, as the server's import job does (a batch as large as
  the processor's slots, each batch processed at once), until every media is `completed`
  (or failed: counted); beside it `import + processing, one file at a time`, as the job
  did before;
- `import, then the sweep`: registration only, then the processor's sweep with its
  `MEDIA_PROCESSING_WORKERS` slots, until every media is done.

Imports report files per minute. The files are real JPEGs (random pixels, so incompressible
like photos, sized to `--size`), each made distinct by a comment segment: the import checks
their type and processing decodes them. Each imported family is deleted after its
measurement (rows and files), so nothing is processed twice.

More measurements are added to `MEASUREMENTS`: each gets the prepared `Bench` and returns a
`Row`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import asyncpg
import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import Environment, Settings
from app.context import AppContext
from app.db import embedded
from app.db.migrate import migrate
from app.main import create_app
from app.services import import_service

MIB = 1024 * 1024
MEDIA_PER_MEMORY = 10


@dataclass
class Bench:
    context: AppContext
    client: httpx.AsyncClient
    headers: dict[str, str]
    family_id: uuid.UUID
    # (path on disk, name in the zip) of every media file, in archive order.
    files: list[tuple[Path, str]]
    media_bytes: int
    workdir: Path
    pg: asyncpg.Pool
    # The export the imports read (made once, on first use).
    export_zip: Path | None = None


@dataclass
class Row:
    name: str
    seconds: float
    peak_rss_growth: int
    detail: str = ""


# Memory ------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


async def measured(name: str, work: Callable[[], Awaitable[str]]) -> Row:
    """Time `work` and the peak RSS it adds to this process."""
    Path("/proc/self/clear_refs").write_text("5")  # noqa: ASYNC240 (VmHWM := VmRSS, instant)
    start_rss = _status_kib("VmRSS") * 1024
    started = time.perf_counter()
    detail = await work()
    seconds = time.perf_counter() - started
    peak = _status_kib("VmHWM") * 1024
    return Row(name, seconds, peak - start_rss, detail)


# The measurements ----------------------------------------------------------------------------


async def zipfile_baseline(bench: Bench) -> Row:
    out = bench.workdir / "baseline.zip"

    def write() -> str:
        with out.open("wb") as file:
            with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for path, name in bench.files:
                    archive.write(path, name)
            file.flush()
            os.fsync(file.fileno())
        return f"{out.stat().st_size / MIB:,.0f} MiB zip"

    async def work() -> str:
        return await asyncio.to_thread(write)

    row = await measured("zipfile (ZIP_STORED, fsync)", work)
    out.unlink()
    return row


async def export(bench: Bench) -> Row:
    async def work() -> str:
        response = await bench.client.post(
            "/api/v1/families/me/exports", json={}, headers=bench.headers
        )
        assert response.status_code == 202, response.text
        assert await bench.context.exporter.run_next()
        job = (
            await bench.client.get(
                f"/api/v1/families/me/exports/{response.json()['id']}", headers=bench.headers
            )
        ).json()
        assert job["status"] == "completed", job
        return f"{job['size_bytes'] / MIB:,.0f} MiB zip, {job['progress']['files_done']:,} files"

    row = await measured("export (the job, end to end)", work)
    # The next run's export replaces this one; remove it now to keep the disk use down.
    await bench.context.exporter.sweep()
    return row


async def export_zip(bench: Bench) -> Path:
    """The family's archive, made once by the real job and kept (hard-linked) in workdir."""
    if bench.export_zip is None:
        response = await bench.client.post(
            "/api/v1/families/me/exports", json={}, headers=bench.headers
        )
        assert response.status_code == 202, response.text
        assert await bench.context.exporter.run_next()
        path = await bench.pg.fetchval(
            "select storage_path from public.archive_exports where id = $1",
            uuid.UUID(response.json()["id"]),
        )
        archives = bench.context.local_archives
        assert archives is not None
        bench.export_zip = bench.workdir / "export.zip"
        os.link(archives.local_file(path), bench.export_zip)
        await bench.context.exporter.sweep()
    return bench.export_zip


async def _import(bench: Bench, *, process: bool, sweep: bool, one_at_a_time: bool = False) -> str:
    archive = await export_zip(bench)
    _headers, family, user = await register(bench.client)
    context = bench.context

    async def one_by_one(media_ids: list[uuid.UUID]) -> None:
        for media_id in media_ids:
            await context.media.process([media_id])

    try:
        report = await import_service.import_local(
            context.database,
            context.storage,
            context.settings,
            path=archive,
            family_unit_id=family,
            user_id=user,
            on_media=(one_by_one if one_at_a_time else context.media.process) if process else None,
        )
        assert report.media_imported == len(bench.files), report.as_json()
        if process or sweep:
            for _ in range(10):  # the sweep takes whatever is still pending
                if not await _unfinished(bench.pg, family):
                    break
                await context.media.sweep()
        statuses = dict(
            await bench.pg.fetch(
                "select processing_status, count(*) from public.memory_media"
                " where family_unit_id = $1 group by 1",
                family,
            )
        )
    finally:
        await forget_family(bench, family)
    return ", ".join(f"{count:,} {status}" for status, count in sorted(statuses.items()))


async def _unfinished(pg: asyncpg.Pool, family: uuid.UUID) -> int:
    count: int = await pg.fetchval(
        "select count(*) from public.memory_media where family_unit_id = $1"
        " and processing_status in ('pending', 'processing')",
        family,
    )
    return count


async def forget_family(bench: Bench, family: uuid.UUID) -> None:
    """Delete an imported family, rows and files, so the next measurement starts alike."""
    await bench.context.analytics.flush()  # its buffered events name the family
    await bench.pg.execute("delete from public.memories where family_unit_id = $1", family)
    await bench.pg.execute("delete from public.family_units where id = $1", family)
    storage = bench.context.local_storage
    assert storage is not None
    folder = storage.local_file(f"{family}/x").parent
    await asyncio.to_thread(shutil.rmtree, folder, True)


async def import_registered(bench: Bench) -> Row:
    return await measured(
        "import (register only)", lambda: _import(bench, process=False, sweep=False)
    )


async def import_processed(bench: Bench) -> Row:
    return await measured(
        "import + processing (as the server)", lambda: _import(bench, process=True, sweep=False)
    )


async def import_processed_one_at_a_time(bench: Bench) -> Row:
    """What the server's import job did before it handed over a batch per slot."""
    return await measured(
        "import + processing, one file at a time",
        lambda: _import(bench, process=True, sweep=False, one_at_a_time=True),
    )


async def import_then_sweep(bench: Bench) -> Row:
    return await measured(
        "import, then the sweep", lambda: _import(bench, process=False, sweep=True)
    )


MEASUREMENTS: list[tuple[str, Callable[[Bench], Awaitable[Row]]]] = [
    ("zipfile", zipfile_baseline),
    ("export", export),
    ("import", import_registered),
    ("import+processing", import_processed),
    ("import+processing-one-at-a-time", import_processed_one_at_a_time),
    ("import+sweep", import_then_sweep),
]


# Setting up -----------------------------------------------------------------------------------


async def register(client: httpx.AsyncClient) -> tuple[dict[str, str], uuid.UUID, uuid.UUID]:
    """A new family with its adult: (headers, family id, user id)."""
    response = await client.post(
        "/api/v1/auth/register/adult",
        json={
            "email": f"bench-{uuid.uuid4().hex[:8]}@example.com",
            "password": "correct horse battery",
            "display_name": "Ada",
            "family_name": "The Benchmarks",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    headers = {"Authorization": f"Bearer {body['tokens']['access_token']}"}
    return headers, uuid.UUID(body["family_unit_id"]), uuid.UUID(body["user_id"])


def noise_jpeg(size: int) -> bytes:
    """A real JPEG of random pixels (incompressible, like a photo's data) of about `size`."""

    def encoded(width: int, height: int) -> bytes:
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return out.getvalue()

    per_pixel = len(encoded(256, 192)) / (256 * 192)
    width = max(16, int((size / per_pixel * 4 / 3) ** 0.5))
    return encoded(width, max(16, width * 3 // 4))


def distinct(jpeg: bytes, index: int) -> bytes:
    """The same picture with a comment segment (FF FE) naming `index`: other bytes, still a
    JPEG every decoder reads."""
    return jpeg[:2] + b"\xff\xfe\x00\x0a" + index.to_bytes(8, "big") + jpeg[2:]


async def make_family(
    context: AppContext, client: httpx.AsyncClient, count: int, size: int, pg: asyncpg.Pool
) -> tuple[dict[str, str], uuid.UUID, list[tuple[Path, str]], int]:
    headers, family, user = await register(client)
    storage = context.local_storage
    assert storage is not None
    files: list[tuple[Path, str]] = []
    memory_id = uuid.uuid4()
    payload = noise_jpeg(size)  # one picture, made distinct per file: fast to make
    total = 0
    for index in range(count):
        if index % MEDIA_PER_MEMORY == 0:
            memory_id = await pg.fetchval(
                "insert into public.memories (family_unit_id, user_id, title, status, "
                "memory_date, created_at) values ($1, $2, $3, 'published', $4, "
                "now() + make_interval(secs => $5)) returning id",
                family,
                user,
                f"Day {index // MEDIA_PER_MEMORY}",
                date(2000 + index // 365 % 25, 1 + index // 30 % 12, 1 + index % 28),
                float(index),
            )
        media_id = uuid.uuid4()
        path = f"{family}/{memory_id}/{media_id}.jpg"
        file = storage.local_file(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        data = distinct(payload, index)
        file.write_bytes(data)
        total += len(data)
        await pg.execute(
            "insert into public.memory_media (id, memory_id, family_unit_id, storage_path, "
            "file_name, mime_type, file_size, processing_status, created_at) values ($1, $2, $3, "
            "$4, $5, 'image/jpeg', $6, 'completed', now() + make_interval(secs => $7))",
            media_id,
            memory_id,
            family,
            path,
            f"IMG_{index:05d}.jpg",
            len(data),
            float(index),
        )
        files.append((file, f"media/{index:05d}.jpg"))
    return headers, family, files, total


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {memory:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


async def run(args: argparse.Namespace, workdir: Path) -> None:
    dsn = embedded.start(workdir / "pg")
    await migrate(dsn)
    settings = Settings(
        environment=Environment.TEST,
        database_url=dsn,  # type: ignore[arg-type]
        data_dir=workdir,
        jwt_secret_key="bench-secret-key-that-is-long-enough-0123456789",  # type: ignore[arg-type]  # noqa: S106
        public_base_url="http://bench",
        rate_limit_enabled=False,
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
        media_sweep_interval_seconds=0,
        orphan_sweep_interval_seconds=0,
        mail_poll_interval_seconds=0,
        archive_poll_interval_seconds=0,  # the bench runs the job itself
        import_poll_interval_seconds=0,
        job_wakeups=False,  # media is processed only when a measurement asks
    )
    app = create_app(settings)
    pg = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    async with app.router.lifespan_context(app):
        context: AppContext = app.state.context
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            started = time.perf_counter()
            headers, family, files, total = await make_family(
                context, client, args.media, args.size, pg
            )
            took = time.perf_counter() - started
            print(
                f"made {args.media:,} JPEGs of ~{total / args.media / MIB:.2f} MiB "
                f"({total / MIB:,.0f} MiB) in {took:.0f} s"
            )
            bench = Bench(context, client, headers, family, files, total, workdir, pg)
            chosen = [(n, m) for n, m in MEASUREMENTS if not args.only or n in args.only]
            rows: dict[str, list[Row]] = {name: [] for name, _ in chosen}
            load_before = os.getloadavg()[0]
            for run_index in range(args.runs):
                for name, measure in chosen:
                    row = await measure(bench)
                    rows[name].append(row)
                    print(
                        f"run {run_index + 1}: {row.name:36} {row.seconds:7.2f} s "
                        f"{bench.media_bytes / MIB / row.seconds:8.0f} MiB/s "
                        f"{len(bench.files) / row.seconds * 60:8,.0f} files/min  "
                        f"peak RSS +{row.peak_rss_growth / MIB:.1f} MiB  {row.detail}",
                        flush=True,
                    )
            load_after = os.getloadavg()[0]
    await pg.close()
    report(args, bench, rows, load_before, load_after)


def report(
    args: argparse.Namespace,
    bench: Bench,
    rows: dict[str, list[Row]],
    load_before: float,
    load_after: float,
) -> None:
    print()
    print(f"machine: {machine()}")
    only = f" --only {' '.join(args.only)}" if args.only else ""
    print(
        f"command: python bench/archive.py --media {args.media} --size {args.size} "
        f"--runs {args.runs}{only}"
    )
    print(f"1-minute load average: {load_before:.2f} before, {load_after:.2f} after")
    print(f"media processing workers: {bench.context.settings.media_processing_workers}")
    print()
    print("| measurement | median s | MiB/s | files/min | peak RSS growth (max) |")
    print("|---|---:|---:|---:|---:|")
    medians = {}
    for name, measured_rows in rows.items():
        seconds = statistics.median(row.seconds for row in measured_rows)
        medians[name] = seconds
        peak = max(row.peak_rss_growth for row in measured_rows)
        print(
            f"| {measured_rows[0].name} | {seconds:.2f} | "
            f"{bench.media_bytes / MIB / seconds:,.0f} | "
            f"{len(bench.files) / seconds * 60:,.0f} | {peak / MIB:.1f} MiB |"
        )
    if "zipfile" in medians and "export" in medians:
        ratio = medians["zipfile"] / medians["export"]
        print()
        print(f"export throughput = {ratio:.0%} of zipfile's (target >= 70 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", type=int, default=2000, help="media files (default 2000)")
    parser.add_argument(
        "--size", type=int, default=MIB, help="bytes per file (default 1 MiB: ~2 GiB in all)"
    )
    parser.add_argument("--runs", type=int, default=2, help="alternating runs of each (default 2)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[name for name, _ in MEASUREMENTS],
        help="run only these measurements (default: all)",
    )
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="tl-archive-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(run(args, workdir))
    finally:
        embedded.release(workdir / "pg")
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
