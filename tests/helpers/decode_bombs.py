"""Pictures that are small files but big once decoded: one or more of each accepted format.

Made by the real encoders (or, where an encoder would need the whole canvas in memory for
nothing, written byte by byte), in a child process: `python -m tests.helpers.decode_bombs DIR`.
A child keeps the canvases it builds out of the test process, whose memory the tests measure.
"""

import io
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import pillow_heif
from PIL import Image

pillow_heif.register_heif_opener()

RED = (200, 10, 10)


@dataclass(frozen=True)
class Bomb:
    name: str
    mime: str
    file: Path


# name → (MIME type, how to make it). Each costs 90-800 MiB decoded, yet is at most ~0.5 MB.
_KINDS = {
    "png-16-bit": "image/png",
    "jpeg-progressive": "image/jpeg",
    "gif-many-frames": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
}


def png_16_bit_grey(width: int, height: int) -> bytes:
    """A 16-bit greyscale PNG of zeros: 2 bytes a pixel decoded, ~1/1000 of that on disk.

    Compressed row by row, so making it never holds the decoded picture.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 2 * width)  # filter byte, then the samples
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gif_many_frames(width: int, height: int, frames: int) -> bytes:
    """A `width`×`height` animation of `frames` frames, each changing one pixel.

    Every viewer composes each frame on the whole canvas, so it decodes width × height ×
    frames bytes, while each frame costs 18 bytes in the file.
    """
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global table of 2 colours
    out = bytearray(b"GIF89a" + screen + b"\x00\x00\x00\xff\xff\xff")
    # One pixel of colour 0, LZW with a minimum code size of 2: clear, 0, end of information.
    pixel = bytes([2, 2, 0x44, 0x01, 0])
    for index in range(frames):
        out += b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: 1/100 s per frame
        out += b"\x2c" + struct.pack("<HHHHB", index % width, 0, 1, 1, 0) + pixel
    return bytes(out + b"\x3b")


def _encoded(image: Image.Image, format: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format, **options)
    return out.getvalue()


def make(name: str) -> bytes:
    if name == "png-16-bit":
        return png_16_bit_grey(8000, 8000)
    if name == "jpeg-progressive":
        canvas = Image.new("RGB", (4000, 4000), RED)
        return _encoded(canvas, "JPEG", quality=50, progressive=True, subsampling=0)
    if name == "gif-many-frames":
        return gif_many_frames(2000, 2000, 200)
    if name == "webp":
        return _encoded(Image.new("RGB", (3000, 3000), RED), "WEBP", lossless=True, method=0)
    if name == "heic":
        return _encoded(Image.new("RGB", (3000, 3000), RED), "HEIF", quality=10)
    raise ValueError(name)


def make_all(directory: Path) -> list[Bomb]:
    """Every bomb, written into `directory` by a child process."""
    subprocess.run([sys.executable, "-m", __name__, str(directory)], check=True)
    return [Bomb(name, mime, directory / name) for name, mime in _KINDS.items()]


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    for kind in _KINDS:
        (target / kind).write_bytes(make(kind))
