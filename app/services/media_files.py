"""Validation, probing and thumbnailing of uploaded photos and videos.

Everything here is synchronous and CPU/IO bound on purpose: callers run it in a thread pool.
The module never trusts the client: the declared MIME type must agree with the magic bytes,
and every decoder is pinned to the sniffed format so a file cannot be re-interpreted as
something else by a library's own probing.
"""

from __future__ import annotations

import io
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Final

import av
import pillow_heif
from PIL import Image, ImageCms

pillow_heif.register_heif_opener()

__all__ = [
    "ALLOWED_MIME_TYPES",
    "EXTENSION_FOR_MIME",
    "MediaInfo",
    "MediaRejected",
    "mime_matches",
    "process_file",
    "sniff_mime",
]

IMAGE_MIME_TYPES: Final = frozenset(
    {"image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/heif"}
)
VIDEO_MIME_TYPES: Final = frozenset({"video/mp4", "video/webm", "video/quicktime"})
ALLOWED_MIME_TYPES: Final[frozenset[str]] = IMAGE_MIME_TYPES | VIDEO_MIME_TYPES

EXTENSION_FOR_MIME: Final[Mapping[str, str]] = MappingProxyType(
    {
        "image/jpeg": "jpg",
        "image/png": "png",
        "image/gif": "gif",
        "image/webp": "webp",
        "image/heic": "heic",
        "image/heif": "heif",
        "video/mp4": "mp4",
        "video/webm": "webm",
        "video/quicktime": "mov",
    }
)

SNIFF_BYTES: Final = 64

_HEIC_BRANDS: Final = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"})
_HEIF_BRANDS: Final = frozenset({b"mif1", b"msf1", b"heif"})
# AVIF shares the mif1/msf1 structural brands with HEIF but needs a decoder we do not accept.
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_QUICKTIME_BRANDS: Final = frozenset({b"qt  "})
_MP4_BRANDS: Final = frozenset(
    {
        b"isom",
        b"iso2",
        b"iso3",
        b"iso4",
        b"iso5",
        b"iso6",
        b"mp41",
        b"mp42",
        b"mp71",
        b"avc1",
        b"dash",
        b"M4V ",
        b"M4VH",
        b"M4VP",
        b"MSNV",
        b"mmp4",
        b"XAVC",
    }
)

# Pillow plugin names; pinning them stops Pillow from trying every other plugin on the bytes.
_PILLOW_FORMAT: Final[Mapping[str, str]] = MappingProxyType(
    {
        "image/jpeg": "JPEG",
        "image/png": "PNG",
        "image/gif": "GIF",
        "image/webp": "WEBP",
        "image/heic": "HEIF",
        "image/heif": "HEIF",
    }
)
# Only these formats can hold animations we care about; MPO (multi-picture JPEG) and HEIF
# image collections are not animations, so their extra pictures are not counted as frames.
_ANIMATED_FORMATS: Final = frozenset({"GIF", "WEBP", "PNG"})

_FFMPEG_DEMUXER: Final[Mapping[str, str]] = MappingProxyType(
    {"video/mp4": "mov", "video/quicktime": "mov", "video/webm": "matroska"}
)

# Phones write a fade-in or a black first frame surprisingly often.
_VIDEO_THUMB_AT_SECONDS: Final = 0.5
_JPEG_QUALITY: Final = 85
_WHITE: Final = (255, 255, 255)

_ORIENTATION_TAG: Final = 0x0112
_TRANSPOSE_FOR_ORIENTATION: Final[Mapping[int, Image.Transpose]] = MappingProxyType(
    {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }
)
_SIXTEEN_BIT_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class MediaRejected(Exception):
    """The upload is not an acceptable photo or video.

    ``reason`` is shown to end users, so it never contains paths or library internals.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MediaInfo:
    mime_type: str
    width: int | None
    height: int | None
    duration: float | None
    codec: str | None
    frame_count: int | None


def sniff_mime(head: bytes) -> str | None:
    """Identify an allowed media type from the first bytes of a file, or return ``None``."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and head[12:15] == b"VP8":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return _sniff_ftyp(head)
    if head.startswith(b"\x1a\x45\xdf\xa3") and _ebml_doctype(head) == b"webm":
        return "video/webm"
    return None


def _sniff_ftyp(head: bytes) -> str | None:
    box_size = int.from_bytes(head[:4], "big")
    # 16 = size + "ftyp" + major brand + minor version; smaller (or 64-bit "1") is malformed.
    if box_size < 16 or len(head) < 12:
        return None
    major = head[8:12]
    compatible_end = min(box_size, len(head))
    compatible = {head[i : i + 4] for i in range(16, compatible_end - 3, 4)}
    if major in _HEIC_BRANDS:
        return "image/heic"
    if major in _HEIF_BRANDS:
        if compatible & _HEIC_BRANDS:
            return "image/heic"
        if compatible & _AVIF_BRANDS:
            return None
        return "image/heif"
    if major in _QUICKTIME_BRANDS:
        return "video/quicktime"
    if major in _MP4_BRANDS:
        return "video/mp4"
    return None


def _read_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int]:
    """Decode an EBML variable-length integer; raises IndexError/ValueError on bad input."""
    first = data[pos]
    if first == 0:
        raise ValueError("EBML vint longer than 8 bytes")
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        raise IndexError("EBML vint runs past the sniffed bytes")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, pos + length


def _ebml_doctype(head: bytes) -> bytes | None:
    try:
        header_size, pos = _read_vint(head, 4, keep_marker=False)
        end = min(len(head), pos + header_size)
        while pos < end:
            element_id, pos = _read_vint(head, pos, keep_marker=True)
            size, pos = _read_vint(head, pos, keep_marker=False)
            if element_id == 0x4282:
                value = head[pos : pos + size]
                return value if len(value) == size else None
            pos += size
    except (IndexError, ValueError):
        return None
    return None


def mime_matches(declared: str, sniffed: str | None) -> bool:
    """Whether the client's declared type is consistent with what the bytes actually are."""
    if sniffed is None:
        return False
    declared = declared.split(";", 1)[0].strip().lower()
    if declared == sniffed:
        return True
    # Encoders pick between these brands inconsistently (iOS writes heic under mif1, phones write
    # MP4 under the qt brand and vice versa), so clients cannot be expected to know which one.
    lenient = ({"image/heic", "image/heif"}, {"video/mp4", "video/quicktime"})
    return any(declared in group and sniffed in group for group in lenient)


def process_file(
    source: Path,
    declared_mime: str,
    thumbnail_dest: Path,
    *,
    max_pixels: int = 100_000_000,
    thumb_size: int = 400,
) -> MediaInfo:
    """Validate an upload, probe it and write a metadata-free JPEG thumbnail.

    The returned ``mime_type`` is the sniffed type (it may differ from ``declared_mime`` only
    within the heic/heif and mp4/quicktime leniencies); store that one.

    Raises ``MediaRejected`` for anything wrong with the upload itself. ``OSError`` escapes only
    for server-side trouble: an unreadable ``source`` or an unwritable thumbnail directory.
    """
    with source.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head:
        raise MediaRejected("the file is empty")
    declared = declared_mime.split(";", 1)[0].strip().lower()
    if declared not in ALLOWED_MIME_TYPES:
        raise MediaRejected("this file type is not supported")
    sniffed = sniff_mime(head)
    if sniffed is None:
        raise MediaRejected("the file is not a supported photo or video format")
    if not mime_matches(declared, sniffed):
        raise MediaRejected(f"the file content is {sniffed}, not {declared}")

    if sniffed in IMAGE_MIME_TYPES:
        info, thumbnail = _process_image(source, sniffed, max_pixels, thumb_size)
    else:
        info, thumbnail = _process_video(source, sniffed, max_pixels, thumb_size)
    _write_atomically(_encode_jpeg(thumbnail), thumbnail_dest)
    return info


# ---------------------------------------------------------------------------------------------
# Images


def _process_image(
    source: Path, mime: str, max_pixels: int, thumb_size: int
) -> tuple[MediaInfo, Image.Image]:
    pillow_format = _PILLOW_FORMAT[mime]
    try:
        with Image.open(source, formats=[pillow_format]) as im:
            width, height = im.size
            _check_pixels(width, height, max_pixels)
            frame_count = _image_frame_count(im)
            orientation = _exif_orientation(im)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            icc_profile = im.info.get("icc_profile")
            _draft_for_thumbnail(im, thumb_size)
            im.load()
            thumb = _thumbnail_from_image(im, thumb_size, orientation, icc_profile)
    except MediaRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaRejected("the image dimensions are too large") from exc
    except Exception as exc:
        # Pillow and libheif signal corrupt input with a zoo of types (OSError, SyntaxError,
        # ValueError, EOFError, struct.error, ...); all of them mean the same thing to a user.
        raise MediaRejected("the image is corrupt, truncated or cannot be decoded") from exc
    info = MediaInfo(
        mime_type=mime,
        width=width,
        height=height,
        duration=None,
        codec=None,
        frame_count=frame_count,
    )
    return info, thumb


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise MediaRejected("the file has no picture dimensions")
    if width * height > max_pixels:
        raise MediaRejected(f"the picture is too large ({width}x{height} pixels)")


def _image_frame_count(im: Image.Image) -> int:
    if im.format not in _ANIMATED_FORMATS:
        return 1
    # Pillow counts GIF/APNG frames by walking block headers without decoding pixels, and WebP
    # reads the count from the demuxer, so this stays cheap even for large animations.
    return int(getattr(im, "n_frames", 1))


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        # A mangled EXIF block is common (editors, messengers) and not a reason to refuse a photo.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _fit(width: int, height: int, box: int) -> tuple[int, int]:
    """Largest size with the same aspect ratio that fits in box x box, never upscaled."""
    scale = min(box / width, box / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _draft_for_thumbnail(im: Image.Image, thumb_size: int) -> None:
    # draft() lets libjpeg decode at 1/2, 1/4 or 1/8 scale (and pillow_heif pick an embedded
    # preview); asking for twice the final size matches Image.thumbnail's reducing_gap=2 quality.
    target_w, target_h = _fit(im.width, im.height, thumb_size)
    im.draft(None, (target_w * 2, target_h * 2))


def _thumbnail_from_image(
    im: Image.Image, thumb_size: int, orientation: int, icc_profile: bytes | None
) -> Image.Image:
    frame = _normalise_mode(im)
    # Resizing before transposing is equivalent for a square box and avoids rotating megapixels.
    frame.thumbnail((thumb_size, thumb_size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    transpose = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    if transpose is not None:
        frame = frame.transpose(transpose)
    rgb = _flatten_to_rgb(frame)
    return _to_srgb(rgb, icc_profile)


def _normalise_mode(im: Image.Image) -> Image.Image:
    if im.mode in _SIXTEEN_BIT_MODES:
        # Pillow clips 16-bit greys into 8 bits instead of scaling them, which turns them white.
        return im.convert("I").point(lambda value: value / 256).convert("L")
    has_transparency = "transparency" in im.info
    if im.mode in _ALPHA_MODES or has_transparency:
        return im.convert("RGBA")
    if im.mode in ("RGB", "L"):
        return im.copy()
    # Palette images resize with NEAREST and CMYK has no sensible resampling; go to RGB first.
    return im.convert("RGB")


def _flatten_to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, _WHITE)
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB")


def _to_srgb(im: Image.Image, icc_profile: bytes | None) -> Image.Image:
    # The thumbnail ships without a profile, so wide-gamut sources (Display P3 from iPhones)
    # would look washed out unless the pixels are converted to sRGB first.
    if not icc_profile:
        return im
    try:
        source_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        if source_profile.profile.xcolor_space.strip() != "RGB":
            return im
        # Built per call: LittleCMS profile handles are not documented as safe to share between
        # the worker threads that run this module, and creating one costs microseconds.
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        converted = ImageCms.profileToProfile(im, source_profile, srgb, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken profile only costs colour accuracy; the pixels themselves are fine.
        return im
    return converted if converted is not None else im


# ---------------------------------------------------------------------------------------------
# Videos


@dataclass(frozen=True)
class _VideoProbe:
    width: int
    height: int
    duration: float | None
    codec: str | None
    frame_count: int | None


def _process_video(
    source: Path, mime: str, max_pixels: int, thumb_size: int
) -> tuple[MediaInfo, Image.Image]:
    demuxer = _FFMPEG_DEMUXER[mime]
    try:
        probe, frame = _probe_and_grab(source, demuxer, max_pixels)
        if frame is None:
            # No keyframe at/after the target (long GOP or very short clip): take the first one.
            frame = _grab_first_frame(source, demuxer)
        if frame is None:
            raise MediaRejected("the video contains no decodable frames")
        rotation = _frame_rotation(frame)
        thumb = _thumbnail_from_frame(frame, thumb_size, rotation)
        width, height = frame.width or probe.width, frame.height or probe.height
    except MediaRejected:
        raise
    except Exception as exc:
        # FFmpeg errors carry the file name in their message, so only a generic reason is shown.
        raise MediaRejected("the video is corrupt, truncated or cannot be decoded") from exc
    if rotation in (90, 270):
        width, height = height, width
    info = MediaInfo(
        mime_type=mime,
        width=width,
        height=height,
        duration=probe.duration,
        codec=probe.codec,
        frame_count=probe.frame_count,
    )
    return info, thumb


def _open_video(source: Path, demuxer: str) -> av.container.InputContainer:
    # Forcing the demuxer keeps FFmpeg from probing the bytes as some other container. An absolute
    # path can never be mistaken for a "proto:" URL, and the whitelist stops the demuxer from
    # following references inside the file to network resources.
    return av.open(
        str(source.absolute()),
        mode="r",
        format=demuxer,
        options={"protocol_whitelist": "file"},
    )


def _probe_and_grab(
    source: Path, demuxer: str, max_pixels: int
) -> tuple[_VideoProbe, av.VideoFrame | None]:
    with _open_video(source, demuxer) as container:
        if not container.streams.video:
            raise MediaRejected("the file has no video track")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_pixels(width, height, max_pixels)
        probe = _VideoProbe(
            width=width,
            height=height,
            duration=_video_duration(container, stream),
            codec=_codec_name(stream),
            frame_count=stream.frames or None,
        )
        frame = None
        if probe.duration is not None and probe.duration > _VIDEO_THUMB_AT_SECONDS:
            frame = _grab_keyframe_after(container, stream, _VIDEO_THUMB_AT_SECONDS)
    return probe, frame


def _video_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    return None


def _codec_name(stream: av.VideoStream) -> str | None:
    codec = stream.codec_context.codec
    # canonical_name is the format ("av1"), name can be the decoder library ("libdav1d").
    return codec.canonical_name if codec is not None else None


def _grab_keyframe_after(
    container: av.container.InputContainer, stream: av.VideoStream, seconds: float
) -> av.VideoFrame | None:
    time_base: Fraction | None = stream.time_base
    if time_base is None:
        return None
    target = (stream.start_time or 0) + int(seconds / time_base)
    try:
        # backward=False lands on the first keyframe at or after the target, so only one GOP
        # start has to be decoded instead of everything between the previous keyframe and 0.5 s.
        container.seek(target, stream=stream, backward=False)
    except av.FFmpegError:
        return None
    return _first_decoded(container, stream)


def _grab_first_frame(source: Path, demuxer: str) -> av.VideoFrame | None:
    # Reopening is simpler and more reliable than seeking back after a failed forward seek.
    with _open_video(source, demuxer) as container:
        if not container.streams.video:
            return None
        return _first_decoded(container, container.streams.video[0])


def _first_decoded(
    container: av.container.InputContainer, stream: av.VideoStream
) -> av.VideoFrame | None:
    for frame in container.decode(stream):
        return frame
    return None


def _frame_rotation(frame: av.VideoFrame) -> int:
    """Counter-clockwise display rotation in degrees, normalised to 0/90/180/270."""
    try:
        degrees = frame.rotation
    except Exception:
        return 0
    if not isinstance(degrees, (int, float)) or not math.isfinite(degrees):
        return 0
    quarter = round(degrees / 90) % 4
    return quarter * 90


def _thumbnail_from_frame(frame: av.VideoFrame, thumb_size: int, rotation: int) -> Image.Image:
    target_w, target_h = _fit(frame.width, frame.height, thumb_size)
    # Scaling inside swscale avoids materialising a full-resolution RGB copy of the frame.
    image = frame.to_image(width=target_w, height=target_h, interpolation="AREA")
    if rotation == 90:
        image = image.transpose(Image.Transpose.ROTATE_90)
    elif rotation == 180:
        image = image.transpose(Image.Transpose.ROTATE_180)
    elif rotation == 270:
        image = image.transpose(Image.Transpose.ROTATE_270)
    return image.convert("RGB")


# ---------------------------------------------------------------------------------------------
# Output


def _encode_jpeg(image: Image.Image) -> bytes:
    # Pillow falls back to im.info for some markers (e.g. the JPEG comment); an empty info dict
    # plus no exif/icc arguments guarantees nothing from the source leaks into the thumbnail.
    image.info = {}
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="JPEG", quality=_JPEG_QUALITY, optimize=True)
    except Exception as exc:
        raise MediaRejected("a preview could not be created for this file") from exc
    return buffer.getvalue()


def _write_atomically(data: bytes, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Hidden, random and in the same directory, so os.replace is an atomic rename.
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}.tmp")
    created = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        created = True
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            # Without fsync a power loss after the rename can leave a zero-length thumbnail.
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        if created:
            tmp.unlink(missing_ok=True)
        raise
