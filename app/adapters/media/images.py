"""Photos: header checks, decoding (Pillow, pillow-heif) and derivatives, upright and in sRGB.

Everything here is synchronous and CPU/IO bound on purpose: callers run it off the event loop.
Every decoder is pinned to the sniffed format so a file cannot be re-interpreted as something
else by a library's own probing.
"""

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

import pillow_heif
from PIL import Image, ImageCms

from app.adapters.media.capture import from_exif
from app.adapters.media.common import (
    THUMBNAIL_SIZE,
    Capture,
    MediaInfo,
    MediaLimits,
    MediaRejected,
    check_pixels,
    fit,
)
from app.errors import Invalid, PayloadTooLarge
from app.models.media_types import PILLOW_FORMAT

pillow_heif.register_heif_opener()

# Only these formats can hold animations we care about; MPO (multi-picture JPEG) and HEIF
# image collections are not animations, so their extra pictures are not counted as frames.
_ANIMATED_FORMATS: Final = frozenset({"GIF", "WEBP", "PNG", "AVIF"})

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

# Bytes per sample of the decoded pixels, where not one.
_SAMPLE_BYTES: Final[Mapping[str, int]] = MappingProxyType(
    {"I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}
)
# What our own decode of one frame holds at its peak, per byte of the picture as Pillow keeps
# it (2- to 4-channel pixels in 4 bytes): libwebp keeps two RGBA canvases and hands over a
# copy that Pillow copies again; libheif turns YCbCr planes into an RGB buffer that Pillow
# copies; a JPEG is counted as libjpeg holds it (see `decode_cost`). Measured with Pillow 13,
# pillow-heif 1.8, plus a margin: tests/attacks/test_decode_bombs.py fails if a library
# upgrade makes a decode outgrow its estimate.
_PEAK_PER_HELD_BYTE: Final[Mapping[str, float]] = MappingProxyType(
    {"JPEG": 1.25, "PNG": 1.5, "GIF": 1.5, "WEBP": 4.5, "HEIF": 2.5}
)
# Rows converted at once while shrinking a big picture: a few MiB at most, whatever its size.
_BAND_PIXELS: Final = 1 << 20


# Images


@dataclass(frozen=True)
class DecodeCost:
    """What decoding a picture costs in memory, known from its header alone."""

    width: int
    height: int
    frames: int
    # width × height × channels × bytes per sample × frames: what every viewer decodes.
    decoded_bytes: int
    # What our own decode (the first frame, for the thumbnail) holds at its peak.
    peak_bytes: int

    def over(self, max_bytes: int) -> bool:
        return max(self.decoded_bytes, self.peak_bytes) > max_bytes

    def describe(self) -> str:
        frames = f", {self.frames} frames" if self.frames > 1 else ""
        needed = max(self.decoded_bytes, self.peak_bytes)
        return f"{self.width}x{self.height}{frames}: about {_mib(needed)} MiB once decoded"


def decode_cost(im: Image.Image) -> DecodeCost:
    """The memory a picture needs once decoded, from the header Pillow has read.

    Pixels alone do not bound it: a 16-bit picture takes twice the bytes of an 8-bit one,
    every frame of an animation is decoded by whoever views it, some decoders hold several
    copies, and a progressive JPEG keeps every 16-bit coefficient of the whole picture until
    its last scan has arrived.
    """
    width, height = im.size
    frames = _image_frame_count(im)
    channels = len(im.getbands())
    sample_bytes = _SAMPLE_BYTES.get(im.mode, 1)
    if im.format == "HEIF" and int(im.info.get("bit_depth") or 8) > 8:
        sample_bytes = 2  # libheif decodes 10- and 12-bit planes into 16-bit samples
    if im.format == "JPEG":
        # libjpeg: every coefficient (2 bytes) when progressive; a baseline JPEG is decoded
        # scaled down (`draft`), so its full size is a generous stand-in.
        held = channels * (2 if "progressive" in im.info else 1)
    elif im.mode == "L" or im.mode in _SAMPLE_BYTES:
        held = sample_bytes  # one grey sample a pixel
    else:
        # Colour, and palette or bilevel pictures too: those are converted to RGB(A) before
        # they are shrunk (whole, when small enough not to be shrunk in bands).
        held = 4
    factor = _PEAK_PER_HELD_BYTE.get(im.format or "", max(_PEAK_PER_HELD_BYTE.values()))
    return DecodeCost(
        width=width,
        height=height,
        frames=frames,
        decoded_bytes=width * height * channels * sample_bytes * frames,
        peak_bytes=math.ceil(width * height * held * factor),
    )


def _mib(size: int) -> int:
    return math.ceil(size / (1024 * 1024))


def process_image(
    source: Path, mime: str, limits: MediaLimits, size: int
) -> tuple[MediaInfo, Image.Image, Capture]:
    """Check and decode a photo: its facts, and its first frame upright, in sRGB, within
    `size` x `size` (the largest derivative; smaller ones are made from it)."""
    pillow_format = PILLOW_FORMAT[mime]
    try:
        with Image.open(source, formats=[pillow_format]) as im:
            width, height = im.size
            check_pixels(width, height, limits.max_pixels)
            cost = decode_cost(im)
            if cost.over(limits.max_decoded_bytes):
                raise MediaRejected(
                    f"the picture needs too much memory to decode ({cost.describe()})"
                )
            frame_count = cost.frames
            if frame_count > limits.max_frames:
                raise MediaRejected(
                    f"the animation has too many frames ({frame_count}; "
                    f"at most {limits.max_frames})"
                )
            tiles = tile_count(im)
            if tiles > limits.max_tiles:
                raise MediaRejected(
                    f"the picture is split into too many tiles ({tiles} tiles; "
                    f"at most {limits.max_tiles})"
                )
            orientation = _exif_orientation(im)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            icc_profile = im.info.get("icc_profile")
            capture = from_exif(im)
            _draft_for_thumbnail(im, size)
            im.load()
            picture = _thumbnail_from_image(im, size, orientation, icc_profile)
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
    return info, picture, capture


def _image_frame_count(im: Image.Image) -> int:
    if im.format not in _ANIMATED_FORMATS:
        return 1
    # Pillow counts GIF/APNG frames by walking block headers without decoding pixels, and WebP
    # reads the count from the demuxer, so this stays cheap even for large animations.
    return int(getattr(im, "n_frames", 1))


def tile_count(im: Image.Image) -> int:
    """How many separately coded tiles make the picture: 1 unless it is a HEIF grid.

    pillow-heif reads the grid's layout from the header (the `grid` item's rows and
    columns) without decoding a tile. Pillow's AVIF plugin (libavif) does not tell; libavif
    bounds AVIF grids itself.
    """
    tiling = im.info.get("tiling")
    if not isinstance(tiling, Mapping):
        return 1
    columns, rows = tiling.get("num_columns"), tiling.get("num_rows")
    if not isinstance(columns, int) or not isinstance(rows, int):
        return 1
    return max(1, columns * rows)


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        # A mangled EXIF block is common (editors, messengers) and not a reason to refuse a photo.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _draft_for_thumbnail(im: Image.Image, thumb_size: int) -> None:
    # draft() lets libjpeg decode at 1/2, 1/4 or 1/8 scale (and pillow_heif pick an embedded
    # preview); asking for twice the final size matches Image.thumbnail's reducing_gap=2 quality.
    # For the 1600 px preview of a 12 MP photo that is a full decode; libjpeg's DCT scaling
    # to 1/2 (asking for the final size) looked the same in the measurements of
    # docs/memories.md, but kept 1/4 of the memory, so the request is capped at the final
    # size once it passes the thumbnail's.
    target_w, target_h = fit(im.width, im.height, thumb_size)
    gap = 2 if thumb_size <= THUMBNAIL_SIZE else 1
    im.draft(None, (target_w * gap, target_h * gap))


def _thumbnail_from_image(
    im: Image.Image, thumb_size: int, orientation: int, icc_profile: bytes | None
) -> Image.Image:
    frame = _shrink_normalised(im, thumb_size)
    # Resizing before transposing is equivalent for a square box and avoids rotating megapixels.
    frame.thumbnail((thumb_size, thumb_size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    transpose = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    if transpose is not None:
        frame = frame.transpose(transpose)
    rgb = _flatten_to_rgb(frame)
    return _to_srgb(rgb, icc_profile)


def _shrink_normalised(im: Image.Image, thumb_size: int) -> Image.Image:
    """The picture in an 8-bit mode, shrunk by a whole factor to about twice the thumbnail.

    Converting the whole picture first would hold it twice or more (16-bit greys pass
    through 32-bit, a palette becomes RGBA, and even a plain copy doubles it), so it is
    converted and box-reduced a band of rows at a time: memory stays the decoded picture
    plus a few MiB, whatever the mode.
    """
    target_w, target_h = fit(im.width, im.height, thumb_size)
    factor = max(1, min(im.width // (target_w * 2), im.height // (target_h * 2)))
    if factor == 1:
        return _normalise_mode(im)
    rows = max(1, _BAND_PIXELS // (im.width * factor)) * factor
    shrunk: Image.Image | None = None
    for top in range(0, im.height, rows):
        band = _normalise_mode(im.crop((0, top, im.width, min(top + rows, im.height))))
        reduced = band.reduce(factor)
        if shrunk is None:
            size = (math.ceil(im.width / factor), math.ceil(im.height / factor))
            shrunk = Image.new(reduced.mode, size)
        shrunk.paste(reduced, (0, top // factor))
    assert shrunk is not None
    return shrunk


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


def check_image_header(mime: str, max_pixels: int, max_decoded_bytes: int, file: Path) -> None:
    """Refuse, before it is kept, an image that would explode when decoded.

    Only the header is read (cheap; a GIF's frames are counted by walking its blocks without
    decoding them); the full decode and everything else happens in the media processor.
    Videos are probed there too. Raises the API's errors: this runs while an upload is
    received.
    """
    pillow_format = PILLOW_FORMAT.get(mime)
    if pillow_format is None:
        return
    try:
        with Image.open(file, formats=[pillow_format]) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"The picture has too many pixels to be processed ({width}x{height}; "
                    f"at most {max_pixels // 1_000_000} megapixels)"
                )
            cost = decode_cost(image)
    except PayloadTooLarge:
        raise
    except Image.DecompressionBombError:
        raise PayloadTooLarge("The picture has too many pixels to be processed") from None
    except Exception:
        raise Invalid("The image is corrupt or cannot be read") from None
    if cost.over(max_decoded_bytes):
        raise PayloadTooLarge(
            f"The picture needs too much memory to be processed ({cost.describe()}; "
            f"at most {_mib(max_decoded_bytes)} MiB)"
        )
