"""Bytes against visible quality for the 1600 px preview: WebP and JPEG at several qualities.

Usage: python bench/preview_quality.py [--size 4032x3024] [--keep DIR]
Needs numpy (for SSIM): `pip install numpy`; it is not a dependency of the service.

Four 12 MP pictures are generated with what makes real photos hard or easy to compress:
fine texture (foliage, hair), smooth gradients (sky, skin; banding shows), sharp high-contrast
edges (text on a scan) and sensor noise (a night shot). Each is brought to 1600 px exactly as
the pipeline does (LANCZOS), then encoded; quality is measured against that lossless
reference: SSIM (luma, 8x8 windows; 1.0 = identical, ≥ 0.95 is hard to tell apart at viewing
size) and PSNR. docs/memories.md has the table and the choice.
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

PREVIEW = 1600


# Pictures -----------------------------------------------------------------------------------


def _octaves(size: tuple[int, int], seed: int, octaves: int = 6) -> Image.Image:
    """Fractal noise: coarse blobs to fine grain, like foliage or gravel."""
    rng = np.random.default_rng(seed)
    width, height = size
    total = np.zeros((height, width), dtype=np.float32)
    for octave in range(octaves):
        step = 2 ** (octaves - octave)
        small = rng.random((max(2, height // step), max(2, width // step)), dtype=np.float32)
        layer = Image.fromarray((small * 255).astype(np.uint8)).resize(size, Image.BICUBIC)
        total += np.asarray(layer, dtype=np.float32) / (octave + 1)
    total -= total.min()
    total /= total.max()
    return Image.fromarray((total * 255).astype(np.uint8))


def landscape(size: tuple[int, int]) -> Image.Image:
    width, height = size
    sky = np.linspace([70, 130, 210], [200, 225, 245], height // 2, dtype=np.float32)
    image = np.zeros((height, width, 3), dtype=np.float32)
    image[: height // 2] = sky[:, None, :]
    ground = np.asarray(_octaves((width, height - height // 2), 1), dtype=np.float32) / 255
    image[height // 2 :] = np.stack([40 + 90 * ground, 70 + 120 * ground, 20 + 50 * ground], -1)
    picture = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for i in range(40):  # trees: sharp dark edges against the sky
        x = (i * 97) % width
        draw.polygon(
            [(x, height // 2), (x + 60, height // 2 - 300 - i * 5), (x + 120, height // 2)],
            fill=(20, 50 + i, 25),
        )
    return picture


def portrait(size: tuple[int, int]) -> Image.Image:
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    face = np.exp(-(((x - width / 2) / (width / 4)) ** 2 + ((y - height / 2) / (height / 3)) ** 2))
    skin = np.stack([120 + 110 * face, 90 + 90 * face, 80 + 70 * face], -1)
    picture = Image.fromarray(skin.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    rng = np.random.default_rng(2)
    for _ in range(3000):  # hair: thin dark curves
        x0, y0 = rng.integers(0, width), rng.integers(0, height // 3)
        draw.line(
            [(x0, y0), (x0 + rng.integers(-80, 80), y0 + rng.integers(40, 200))],
            fill=(40, 25, 15),
            width=2,
        )
    return picture.filter(ImageFilter.GaussianBlur(1))


def scan(size: tuple[int, int]) -> Image.Image:
    paper = _octaves(size, 3, octaves=4).point(lambda v: 225 + v // 10).convert("RGB")
    draw = ImageDraw.Draw(paper)
    font = ImageFont.load_default(size=48)
    for row in range(60):
        draw.text(
            (150, 120 + row * 46),
            "The summer we spent by the lake, 1987 " * 3,
            fill=(30, 30, 60),
            font=font,
        )
    return paper


def night(size: tuple[int, int]) -> Image.Image:
    width, height = size
    rng = np.random.default_rng(4)
    base = np.linspace(10, 60, width, dtype=np.float32)[None, :, None].repeat(height, 0)
    noise = rng.normal(0, 12, (height, width, 3)).astype(np.float32)
    picture = Image.fromarray((base.repeat(3, 2) + noise).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for i in range(30):  # street lights
        draw.ellipse((i * 130, 900, i * 130 + 40, 940), fill=(255, 220, 150))
    return picture


PICTURES: dict[str, Callable[[tuple[int, int]], Image.Image]] = {
    "landscape": landscape,
    "portrait": portrait,
    "scan": scan,
    "night": night,
}


# Measures -----------------------------------------------------------------------------------


def luma(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 8) -> float:
    """Mean SSIM over non-overlapping 8x8 windows (Wang et al. 2004 constants)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    h, w = (a.shape[0] // window) * window, (a.shape[1] // window) * window
    shape = (h // window, window, w // window, window)
    x, y = a[:h, :w].reshape(shape), b[:h, :w].reshape(shape)
    mx, my = x.mean((1, 3)), y.mean((1, 3))
    vx, vy = x.var((1, 3)), y.var((1, 3))
    cov = ((x - mx[:, None, :, None]) * (y - my[:, None, :, None])).mean((1, 3))
    value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(value.mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


CANDIDATES: list[tuple[str, str, dict[str, object]]] = [
    *(("JPEG", f"JPEG q{q}", {"quality": q, "optimize": True}) for q in (70, 75, 80, 85, 90)),
    *(("WEBP", f"WebP q{q}", {"quality": q, "method": 4}) for q in (70, 75, 80, 85, 90)),
    ("WEBP", "WebP q80 m2", {"quality": 80, "method": 2}),
    ("WEBP", "WebP q80 m6", {"quality": 80, "method": 6}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="4032x3024")
    parser.add_argument("--keep", type=Path, help="write the references and encodings here")
    args = parser.parse_args()
    size = tuple(int(part) for part in args.size.split("x"))
    assert len(size) == 2
    rows: dict[str, list[tuple[int, float, float, float]]] = {name: [] for _, name, _ in CANDIDATES}
    for picture_name, make in PICTURES.items():
        original = make(size)  # type: ignore[arg-type]
        reference = original.copy()
        reference.thumbnail((PREVIEW, PREVIEW), Image.Resampling.LANCZOS)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            reference.save(args.keep / f"{picture_name}.png")
        ref = luma(reference)
        print(f"{picture_name}: reference {reference.size[0]}x{reference.size[1]}")
        for fmt, name, options in CANDIDATES:
            started = time.perf_counter()
            buffer = io.BytesIO()
            reference.save(buffer, fmt, **options)
            seconds = time.perf_counter() - started
            decoded = Image.open(io.BytesIO(buffer.getvalue()))
            if args.keep:
                (args.keep / f"{picture_name} {name}.{fmt.lower()}").write_bytes(buffer.getvalue())
            got = luma(decoded)
            row = (len(buffer.getvalue()), ssim(ref, got), psnr(ref, got), seconds)
            rows[name].append(row)
            print(
                f"  {name:12} {row[0] / 1024:7.0f} KiB  SSIM {row[1]:.4f}  "
                f"PSNR {row[2]:5.1f} dB  {row[3] * 1000:5.0f} ms"
            )
    print("\nmean over the pictures")
    print("| encoding | KiB | SSIM | PSNR dB | encode ms |")
    print("|---|---|---|---|---|")
    for name, values in rows.items():
        kib = statistics.mean(v[0] for v in values) / 1024
        print(
            f"| {name} | {kib:.0f} | {statistics.mean(v[1] for v in values):.4f} | "
            f"{statistics.mean(v[2] for v in values):.1f} | "
            f"{statistics.mean(v[3] for v in values) * 1000:.0f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
