"""Variants, playback renditions, capture metadata and placeholders of `process_file`, on real
files of every accepted format; and that no derivative carries EXIF, XMP or GPS.

The API side (signed URLs, duplicates, keep_location, memory_date, avatars) is in
tests/test_media_api.py.
"""

import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import ExifTags, Image

from app.adapters.media import MediaLimits, MediaRejected, MediaResult, process_file
from app.adapters.media.common import PROGRESS_FILE
from tests.helpers import media_samples as samples

# Markers of metadata that must never reach a derivative (EXIF, XMP, ICC, GPS, comments).
_METADATA_MARKERS = (b"Exif\x00\x00", b"http://ns.adobe.com/xap", b"adobe:ns:meta", b"ICC_PROFILE")
_VIDEO_METADATA_KEYS = ("location", "com.apple.quicktime.location.iso6709", "creation_time")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def run(tmp_path: Path, out: Path, data: bytes, mime: str, **limits: Any) -> MediaResult:
    source = tmp_path / "original"
    source.write_bytes(data)
    return process_file(source, mime, out, MediaLimits(**limits))


def assert_clean_still(file: Path, box: int) -> Image.Image:
    """A JPEG within box x box, RGB, without any metadata block."""
    raw = file.read_bytes()
    with Image.open(file) as image:
        image.load()
        assert image.format == "JPEG"
        assert image.mode == "RGB"
        assert max(image.size) <= box
        assert len(image.getexif()) == 0
        for key in ("exif", "xmp", "icc_profile", "comment"):
            assert key not in image.info, key
        for marker in _METADATA_MARKERS:
            assert marker not in raw, marker
        return image.copy()


def assert_clean_playback(file: Path) -> tuple[int, int]:
    """H.264/AAC MP4, moov before mdat, ≤ 1080p, no location or capture metadata."""
    data = file.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # fast start
    for marker in (b"\xa9xyz", b"ISO6709", b"creationdate"):  # QuickTime location and date atoms
        assert marker not in data, marker
    with av.open(str(file)) as container:
        assert container.format.name.startswith("mov,mp4")
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert video.codec_context.format.name == "yuv420p"
        assert max(video.width, video.height) <= 1920 and min(video.width, video.height) <= 1080
        assert all(stream.codec_context.name == "aac" for stream in container.streams.audio)
        tags = {key.lower() for key in container.metadata} | {
            key.lower() for stream in container.streams for key in stream.metadata
        }
        assert not tags & set(_VIDEO_METADATA_KEYS), tags
        return video.width, video.height


# Every image type, with EXIF (orientation, camera, GPS, capture time) wherever it can carry it.


def _exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "Apple"
    exif[ExifTags.Base.Model] = "iPhone 15"
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.DateTimeOriginal] = "2024:06:01 14:03:07"
    sub[0x9011] = "+02:00"  # OffsetTimeOriginal
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (52.0, 31.0, 12.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (13.0, 24.0, 36.0),
    }
    return exif


def _encoded(format: str, size: tuple[int, int] = (2400, 1800), **options: Any) -> bytes:
    out = io.BytesIO()
    samples.picture(size).save(out, format, **options)
    return out.getvalue()


XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><home>52.52,13.40</home></x:xmpmeta>'

IMAGES = {
    "jpeg": (lambda: _encoded("JPEG", exif=_exif().tobytes(), xmp=XMP), "image/jpeg"),
    "png": (lambda: _encoded("PNG", exif=_exif().tobytes()), "image/png"),
    "gif": (lambda: _encoded("GIF"), "image/gif"),
    "webp": (lambda: _encoded("WEBP", exif=_exif().tobytes(), xmp=XMP), "image/webp"),
    "heic": (lambda: _encoded("HEIF", exif=_exif().tobytes(), quality=60), "image/heic"),
    "avif": (lambda: _encoded("AVIF", exif=_exif().tobytes(), xmp=XMP), "image/avif"),
}


@pytest.mark.parametrize("kind", IMAGES)
def test_every_image_type_gets_clean_thumbnail_and_preview(tmp_path, out, kind) -> None:
    make, mime = IMAGES[kind]

    result = run(tmp_path, out, make(), mime)

    assert result.mime_type == mime
    assert (result.info.width, result.info.height) == (2400, 1800)
    variants = {variant.name: variant for variant in result.variants}
    assert set(variants) == {"thumbnail", "preview"}  # a photo has no playback
    thumbnail = assert_clean_still(out / variants["thumbnail"].file, 400)
    preview = assert_clean_still(out / variants["preview"].file, 1600)
    assert thumbnail.size == (400, 300) and preview.size == (1600, 1200)
    for variant, image in ((variants["thumbnail"], thumbnail), (variants["preview"], preview)):
        assert (variant.width, variant.height) == image.size
        assert variant.mime_type == "image/jpeg"
        assert variant.size == (out / variant.file).stat().st_size
    # Left half red, right half blue: the picture survived.
    left, right = preview.getpixel((400, 900)), preview.getpixel((1200, 900))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    assert left[0] > 150 and right[2] > 150
    assert result.placeholder and 6 <= len(result.placeholder) <= 40


def test_small_photo_is_never_upscaled(tmp_path, out) -> None:
    result = run(tmp_path, out, samples.jpeg((300, 200), orientation=1), "image/jpeg")

    sizes = {variant.name: (variant.width, variant.height) for variant in result.variants}
    assert sizes == {"thumbnail": (300, 200), "preview": (300, 200)}


def test_capture_facts_from_exif(tmp_path, out) -> None:
    make, mime = IMAGES["jpeg"]

    capture = run(tmp_path, out, make(), mime).capture

    assert capture.taken_at == datetime(2024, 6, 1, 14, 3, 7, tzinfo=timezone(timedelta(hours=2)))
    assert (capture.camera_make, capture.camera_model) == ("Apple", "iPhone 15")
    assert (capture.latitude, capture.longitude) == (52.52, 13.41)


@pytest.mark.parametrize("kind", ["heic", "avif", "webp", "png"])
def test_capture_facts_from_other_formats(tmp_path, out, kind) -> None:
    make, mime = IMAGES[kind]

    capture = run(tmp_path, out, make(), mime).capture

    assert capture.taken_at == datetime(2024, 6, 1, 14, 3, 7, tzinfo=timezone(timedelta(hours=2)))
    assert capture.camera_model == "iPhone 15"
    assert capture.latitude == 52.52


def test_capture_time_without_offset_is_local(tmp_path, out) -> None:
    exif = _exif()
    del exif.get_ifd(ExifTags.IFD.Exif)[0x9011]

    capture = run(tmp_path, out, _encoded("JPEG", exif=exif.tobytes()), "image/jpeg").capture

    assert capture.taken_at == datetime(2024, 6, 1, 14, 3, 7)  # naive: the wall clock


def test_broken_exif_block_still_gives_every_variant(tmp_path, out) -> None:
    """A mangled EXIF block (editors, messengers) costs the capture facts, not the photo."""
    broken = samples.with_broken_exif(_encoded("JPEG", size=(800, 600), exif=_exif().tobytes()))

    result = run(tmp_path, out, broken, "image/jpeg")

    assert {variant.name for variant in result.variants} == {"thumbnail", "preview"}
    assert result.capture.taken_at is None and result.capture.latitude is None
    for variant in result.variants:
        assert_clean_still(out / variant.file, 1600)


def test_heic_grid_is_refused_past_its_tile_limit_from_its_header(tmp_path, out) -> None:
    """A grid's tiles are counted from the header; at the limit the photo is made as usual."""
    grid = samples.heic_grid(3, 2)  # 192 x 128 px in 6 tiles of 64 px

    at_limit = run(tmp_path, out, grid, "image/heic", max_tiles=6)
    with pytest.raises(MediaRejected, match=r"too many tiles \(6 tiles; at most 5\)"):
        run(tmp_path, out, grid, "image/heic", max_tiles=5)

    assert (at_limit.info.width, at_limit.info.height) == (192, 128)
    assert {variant.name for variant in at_limit.variants} == {"thumbnail", "preview"}


# Videos -------------------------------------------------------------------------------------


def make_video(
    path: Path,
    container: str,
    codec: str,
    *,
    size: tuple[int, int] = (640, 360),
    frames: int = 30,
    audio: str | None = None,
    rotation: int | None = None,
    metadata: dict[str, str] | None = None,
    pix_fmt: str = "yuv420p",
) -> bytes:
    with av.open(str(path), mode="w", format=container) as output:
        output.metadata.update(metadata or {})
        stream = output.add_stream(codec, rate=30)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        if rotation is not None:
            stream.set_display_rotation(rotation)
        sound = None
        if audio is not None:
            sound = output.add_stream(audio, rate=48_000, layout="stereo")
            assert isinstance(sound, av.AudioStream)
        for index in range(frames):
            frame = av.VideoFrame.from_image(samples.picture(size, (index * 8 % 256, 90, 40)))
            frame.pts = index
            output.mux(stream.encode(frame))
            if sound is not None:
                chunk = av.AudioFrame(format=sound.format.name, layout="stereo", samples=1600)
                for plane in chunk.planes:
                    plane.update(bytes(plane.buffer_size))
                chunk.sample_rate, chunk.pts = 48_000, index * 1600
                output.mux(sound.encode(chunk))
        output.mux(stream.encode(None))
        if sound is not None:
            output.mux(sound.encode(None))
    return path.read_bytes()


LOCATION = {
    "location": "+52.5200+013.4050/",
    "com.apple.quicktime.location.ISO6709": "+52.5200+013.4050+034.000/",
    "com.apple.quicktime.creationdate": "2024-06-01T14:03:07+0200",
    "make": "Apple",
    "model": "iPhone 15",
    "creation_time": "2024-06-01T12:03:07.000000Z",
}

VIDEOS = {
    # name: (container, codec, audio, mime, playback expected)
    "mp4 h264+aac plays as is": ("mp4", "libx264", "aac", "video/mp4", None),
    "webm vp9+opus plays as is": ("webm", "libvpx-vp9", "libopus", "video/webm", None),
    "mov h264+aac is remuxed": ("mov", "libx264", "aac", "video/quicktime", (640, 360)),
    "mov h264+pcm is transcoded": ("mov", "libx264", "pcm_s16le", "video/quicktime", (640, 360)),
    "mp4 hevc is transcoded": ("mp4", "libx265", "aac", "video/mp4", (640, 360)),
    "mov hevc is transcoded": ("mov", "libx265", None, "video/quicktime", (640, 360)),
}


@pytest.mark.parametrize("name", VIDEOS)
def test_videos_get_poster_and_playback_when_browsers_need_one(tmp_path, out, name) -> None:
    container, codec, audio, mime, playback = VIDEOS[name]
    data = make_video(
        tmp_path / f"in.{container}", container, codec, audio=audio, metadata=dict(LOCATION)
    )

    result = run(tmp_path, out, data, mime)

    variants = {variant.name: variant for variant in result.variants}
    assert_clean_still(out / variants["thumbnail"].file, 400)
    assert_clean_still(out / variants["preview"].file, 1600)
    assert (variants["preview"].width, variants["preview"].height) == (640, 360)
    if playback is None:
        assert "playback" not in variants
    else:
        assert variants["playback"].mime_type == "video/mp4"
        assert assert_clean_playback(out / variants["playback"].file) == playback
        assert (variants["playback"].width, variants["playback"].height) == playback
        assert (out / PROGRESS_FILE).read_text() == "1.000"


def test_hevc_iphone_video_is_rotated_scaled_and_keeps_its_sound(tmp_path, out) -> None:
    """A portrait iPhone clip: stored landscape with a display rotation, larger than 1080p."""
    data = make_video(
        tmp_path / "in.mov",
        "mov",
        "libx265",
        size=(2560, 1440),
        frames=6,
        audio="aac",
        rotation=-90,
        metadata=dict(LOCATION),
    )

    result = run(tmp_path, out, data, "video/quicktime")

    assert (result.info.width, result.info.height) == (1440, 2560)  # upright
    variants = {variant.name: variant for variant in result.variants}
    assert (variants["preview"].width, variants["preview"].height) == (900, 1600)
    playback = variants["playback"]
    assert (playback.width, playback.height) == (1080, 1920)  # upright, 1080p
    assert_clean_playback(out / playback.file)
    with av.open(str(out / playback.file)) as container:
        frame = next(container.decode(video=0))
        assert abs(frame.rotation) == 90  # turned by the display matrix, as phones do
        assert len(container.streams.audio) == 1
    capture = result.capture
    assert capture.taken_at == datetime(2024, 6, 1, 14, 3, 7, tzinfo=timezone(timedelta(hours=2)))
    assert (capture.camera_make, capture.latitude, capture.longitude) == ("Apple", 52.52, 13.405)


def test_quicktime_creation_time_is_utc(tmp_path, out) -> None:
    data = make_video(
        tmp_path / "in.mp4", "mp4", "libx264", metadata={"creation_time": "2023-12-31T23:30:00Z"}
    )

    capture = run(tmp_path, out, data, "video/mp4").capture

    assert capture.taken_at == datetime(2023, 12, 31, 23, 30, tzinfo=UTC)


def test_transcode_past_its_cpu_budget_fails_with_a_reason(tmp_path, out) -> None:
    data = make_video(tmp_path / "in.mp4", "mp4", "libx265", frames=30)

    with pytest.raises(MediaRejected, match="took too long"):
        run(tmp_path, out, data, "video/mp4", transcode_cpu_seconds=0.0)

    assert list(out.iterdir()) == []  # nothing half made is left behind


def test_sha256_only_when_asked(tmp_path, out) -> None:
    import hashlib

    data = samples.jpeg((64, 64))

    assert run(tmp_path, out, data, "image/jpeg").sha256 is None
    assert run(tmp_path, out, data, "image/jpeg", compute_sha256=True).sha256 == (
        hashlib.sha256(data).hexdigest()
    )
