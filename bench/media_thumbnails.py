"""Time app.adapters.media.images.process_file on realistic phone-sized inputs.

Usage: python bench/media_thumbnails.py [--runs 9] [--no-pin] [--keep DIR]

Inputs are generated first (unpinned, so generation stays quick); the measurements then run
pinned to a single CPU so the numbers describe one worker thread of the upload pipeline.
Library thread defaults are left untouched and printed, because that is what production uses.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import PIL
import pillow_heif
from PIL import Image, ImageChops, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.adapters.media import process_file

PHOTO_SIZE = (4000, 3000)
VIDEO_SIZE = (1920, 1080)
VIDEO_FPS = 30
VIDEO_SECONDS = 30


@dataclass(frozen=True)
class Case:
    label: str
    path: Path
    mime: str


def noisy_photo(size: tuple[int, int]) -> Image.Image:
    # Per-channel gaussian noise over a gradient: realistic entropy, so JPEG/HEVC cannot cheat.
    width, height = size
    noise = Image.merge("RGB", [Image.effect_noise(size, 40) for _ in range(3)])
    gradient = Image.linear_gradient("L").resize(size).convert("RGB")
    photo = Image.blend(noise, gradient, 0.5)
    draw = ImageDraw.Draw(photo)
    for i in range(12):
        x, y = (i * 331) % width, (i * 197) % height
        draw.ellipse((x, y, x + width // 6, y + height // 6), fill=(40 * i % 255, 90, 160))
    return photo


def make_jpeg(path: Path) -> None:
    noisy_photo(PHOTO_SIZE).save(path, "JPEG", quality=92)


def make_heic(path: Path) -> None:
    noisy_photo(PHOTO_SIZE).save(path, "HEIF", quality=80)


def make_phone_like_heic(path: Path) -> None:
    # iPhones store 512x512 HEVC tiles at roughly 1.5-3 MB per 12 MP; sensor noise is mostly
    # denoised away, which the blur imitates. Decode cost scales with bitrate, hence both cases.
    photo = noisy_photo(PHOTO_SIZE).filter(ImageFilter.GaussianBlur(1.2))
    photo.save(path, "HEIF", quality=60, tile_size=512)


def make_mp4(path: Path, *, gop: int) -> None:
    base = noisy_photo(VIDEO_SIZE)
    # A handful of shifted copies gives motion without paying for 900 noise generations.
    variants = [
        av.VideoFrame.from_image(ImageChops.offset(base, 8 * i, 4 * i)).reformat(format="yuv420p")
        for i in range(8)
    ]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=VIDEO_FPS)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = VIDEO_SIZE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for index in range(VIDEO_FPS * VIDEO_SECONDS):
            frame = variants[index % len(variants)]
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def generate(workdir: Path) -> list[Case]:
    cases = [
        (Case("JPEG 4000x3000 (12 MP)", workdir / "photo.jpg", "image/jpeg"), make_jpeg),
        (
            Case("HEIC 12 MP, noisy like the JPEG", workdir / "photo.heic", "image/heic"),
            make_heic,
        ),
        (
            Case("HEIC 12 MP, phone-like 512 tiles", workdir / "tiled.heic", "image/heic"),
            make_phone_like_heic,
        ),
        (
            Case("MP4 h264 1080p 30 s, keyframe every 1 s", workdir / "gop30.mp4", "video/mp4"),
            lambda p: make_mp4(p, gop=VIDEO_FPS),
        ),
        (
            Case("MP4 h264 1080p 30 s, keyframe every 250", workdir / "gop250.mp4", "video/mp4"),
            lambda p: make_mp4(p, gop=250),
        ),
    ]
    ready: list[Case] = []
    maker: Callable[[Path], None]
    for case, maker in cases:
        if not case.path.exists():
            started = time.perf_counter()
            maker(case.path)
            print(f"generated {case.path.name} in {time.perf_counter() - started:.1f} s")
        ready.append(case)
    return ready


def pin_to_one_cpu() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity on this platform)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def decoder_threads(sample: Path) -> str:
    with av.open(str(sample)) as container:
        context = container.streams.video[0].codec_context
        return f"thread_type={context.thread_type.name}, thread_count={context.thread_count}"


def time_case(case: Case, thumbs: Path, runs: int) -> list[float]:
    dest = thumbs / case.path.stem
    dest.mkdir(exist_ok=True)
    process_file(case.path, case.mime, dest)  # warm caches and lazy library initialisation
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        process_file(case.path, case.mime, dest)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--no-pin", action="store_true", help="use every CPU the OS allows")
    parser.add_argument("--keep", type=Path, help="directory to keep (and reuse) the inputs in")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="media-bench-") as scratch:
        workdir = args.keep or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        thumbs = Path(scratch) / "thumbs"
        cases = generate(workdir)
        pinning = "not pinned" if args.no_pin else pin_to_one_cpu()

        print()
        print(f"python {platform.python_version()}, Pillow {PIL.__version__}, ", end="")
        print(f"pillow-heif {pillow_heif.__version__}, PyAV {av.__version__}")
        print(f"CPU: {platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}")
        print(f"threads: {pinning}; Pillow single-threaded; ", end="")
        print(f"libheif decode_threads={pillow_heif.options.DECODE_THREADS}; ", end="")
        print(f"FFmpeg decoder {decoder_threads(cases[-1].path)} (library defaults)")
        print()
        print("| input | size on disk | median ms | min ms | max ms | runs |")
        print("|---|---:|---:|---:|---:|---:|")
        for case in cases:
            timings = time_case(case, thumbs, args.runs)
            megabytes = case.path.stat().st_size / 1_000_000
            print(
                f"| {case.label} | {megabytes:.1f} MB | {statistics.median(timings):.1f} "
                f"| {min(timings):.1f} | {max(timings):.1f} | {args.runs} |"
            )


if __name__ == "__main__":
    main()
