"""Videos: probing (PyAV) and a poster thumbnail from an early frame, turned upright."""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Final

import av
from PIL import Image

from app.adapters.media.common import MediaInfo, MediaRejected, check_pixels, fit

_FFMPEG_DEMUXER: Final[Mapping[str, str]] = MappingProxyType(
    {"video/mp4": "mov", "video/quicktime": "mov", "video/webm": "matroska"}
)

# Phones write a fade-in or a black first frame surprisingly often.
_VIDEO_THUMB_AT_SECONDS: Final = 0.5
# Videos


@dataclass(frozen=True)
class _VideoProbe:
    width: int
    height: int
    duration: float | None
    codec: str | None
    frame_count: int | None


def process_video(
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
        check_pixels(width, height, max_pixels)
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
    target_w, target_h = fit(frame.width, frame.height, thumb_size)
    # Scaling inside swscale avoids materialising a full-resolution RGB copy of the frame.
    image = frame.to_image(width=target_w, height=target_h, interpolation="AREA")
    if rotation == 90:
        image = image.transpose(Image.Transpose.ROTATE_90)
    elif rotation == 180:
        image = image.transpose(Image.Transpose.ROTATE_180)
    elif rotation == 270:
        image = image.transpose(Image.Transpose.ROTATE_270)
    return image.convert("RGB")
