"""Videos: probing (PyAV), a poster from an early frame turned upright, and whether browsers
can play the file as it is (else `app.adapters.media.playback` makes a rendition that they can).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

import av
from PIL import Image

from app.adapters.media.capture import from_video_metadata
from app.adapters.media.common import (
    PLAYBACK_LONG_EDGE,
    PLAYBACK_SHORT_EDGE,
    Capture,
    MediaInfo,
    MediaLimits,
    MediaRejected,
    check_pixels,
    fit,
)

FFMPEG_DEMUXER: Final[Mapping[str, str]] = MappingProxyType(
    {"video/mp4": "mov", "video/quicktime": "mov", "video/webm": "matroska"}
)

# Phones write a fade-in or a black first frame surprisingly often.
_VIDEO_THUMB_AT_SECONDS: Final = 0.5

# What Chrome, Firefox and Safari all play, by container (the sniffed type). H.264 only in
# 8-bit 4:2:0 (High 10, 4:2:2 and 4:4:4 profiles decode in none of them without help);
# HEVC plays in Safari and only on some hardware elsewhere; AV1 not in older Safari. A
# QuickTime (.mov) file plays in Safari but Firefox refuses the container, so its streams
# are copied into MP4 when they are playable themselves (a remux: seconds, no quality loss).
_PLAYABLE_VIDEO: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {"video/mp4": frozenset({"h264"}), "video/webm": frozenset({"vp8", "vp9"})}
)
_PLAYABLE_AUDIO: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {"video/mp4": frozenset({"aac", "mp3"}), "video/webm": frozenset({"opus", "vorbis"})}
)
_PLAYABLE_PIXEL_FORMATS: Final = frozenset({"yuv420p", "yuvj420p"})
# What may be copied into an MP4 as it is.
_REMUXABLE_VIDEO: Final = frozenset({"h264"})
_REMUXABLE_AUDIO: Final = frozenset({"aac", "mp3"})


@dataclass(frozen=True)
class PlaybackPlan:
    """How to make the playback rendition: copy the streams into MP4, or re-encode them."""

    method: Literal["remux", "transcode"]
    reason: str
    # The display rotation (counter-clockwise degrees) the rendition keeps, as phones write it.
    rotation: int = 0


@dataclass(frozen=True)
class _VideoProbe:
    width: int
    height: int
    duration: float | None
    codec: str | None
    frame_count: int | None
    capture: Capture
    playback: PlaybackPlan | None


def process_video(
    source: Path, mime: str, limits: MediaLimits, size: int
) -> tuple[MediaInfo, Image.Image, Capture, PlaybackPlan | None]:
    """Check and probe a video: its facts, a poster within `size` x `size` (upright), and
    how to make a playback rendition if browsers cannot play it as it is (else None)."""
    demuxer = FFMPEG_DEMUXER[mime]
    try:
        probe, frame = _probe_and_grab(source, mime, demuxer, limits)
        if frame is None:
            # No keyframe at/after the target (long GOP or very short clip): take the first one.
            frame = _grab_first_frame(source, demuxer)
        if frame is None:
            raise MediaRejected("the video contains no decodable frames")
        rotation = frame_rotation(frame)
        poster = _thumbnail_from_frame(frame, size, rotation)
        playback = replace(probe.playback, rotation=rotation) if probe.playback else None
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
    return info, poster, probe.capture, playback


def open_video(source: Path, demuxer: str) -> av.container.InputContainer:
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
    source: Path, mime: str, demuxer: str, limits: MediaLimits
) -> tuple[_VideoProbe, av.VideoFrame | None]:
    with open_video(source, demuxer) as container:
        if not container.streams.video:
            raise MediaRejected("the file has no video track")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        check_pixels(width, height, limits.max_pixels)
        duration = _video_duration(container, stream)
        if duration is not None and duration > limits.max_video_seconds:
            raise MediaRejected(
                f"the video is too long ({duration / 60:.0f} minutes; "
                f"at most {limits.max_video_seconds / 60:.0f})"
            )
        if duration is not None and duration <= 0:
            raise MediaRejected("the video is empty (it lasts 0 seconds)")
        tags = {**dict(stream.metadata), **dict(container.metadata)}
        probe = _VideoProbe(
            width=width,
            height=height,
            duration=duration,
            codec=_codec_name(stream),
            frame_count=stream.frames or None,
            capture=from_video_metadata(tags),
            playback=_playback_plan(mime, container, stream),
        )
        frame = None
        if probe.duration is not None and probe.duration > _VIDEO_THUMB_AT_SECONDS:
            frame = _grab_keyframe_after(container, stream, _VIDEO_THUMB_AT_SECONDS)
    return probe, frame


def _playback_plan(
    mime: str, container: av.container.InputContainer, stream: av.VideoStream
) -> PlaybackPlan | None:
    """None when Chrome, Firefox and Safari all play the file as it is."""
    video = _codec_name(stream) or "unknown"
    pixels = stream.codec_context.format.name if stream.codec_context.format else "unknown"
    audio = _codec_name(container.streams.audio[0]) if container.streams.audio else None
    pixels_ok = pixels in _PLAYABLE_PIXEL_FORMATS
    if (
        video in _PLAYABLE_VIDEO.get(mime, frozenset())
        and pixels_ok
        and (audio is None or audio in _PLAYABLE_AUDIO.get(mime, frozenset()))
    ):
        return None
    if (
        video in _REMUXABLE_VIDEO
        and pixels_ok
        and (audio is None or audio in _REMUXABLE_AUDIO)
        and _fits_playback_box(stream.codec_context.width, stream.codec_context.height)
    ):
        return PlaybackPlan("remux", f"{video} in a container not every browser plays")
    sound = f" with {audio} sound" if audio else ""
    return PlaybackPlan("transcode", f"{video} ({pixels}){sound} does not play in every browser")


def _fits_playback_box(width: int, height: int) -> bool:
    return max(width, height) <= PLAYBACK_LONG_EDGE and min(width, height) <= PLAYBACK_SHORT_EDGE


def _video_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    return None


def _codec_name(stream: av.VideoStream | av.AudioStream) -> str | None:
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
    with open_video(source, demuxer) as container:
        if not container.streams.video:
            return None
        return _first_decoded(container, container.streams.video[0])


def _first_decoded(
    container: av.container.InputContainer, stream: av.VideoStream
) -> av.VideoFrame | None:
    for frame in container.decode(stream):
        return frame
    return None


def frame_rotation(frame: av.VideoFrame) -> int:
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
