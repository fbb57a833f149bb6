"""Playback renditions: an MP4 that Chrome, Firefox and Safari all play (H.264/AAC, ≤ 1080p,
`moov` first so playback starts before the whole file has arrived).

Two ways, chosen by `videos.PlaybackPlan`:

- **remux**: the streams are already H.264/AAC but in a QuickTime container: they are copied
  into MP4 unchanged (no quality loss; about as fast as copying the file).
- **transcode**: anything else (HEVC from iPhones, AV1, 10-bit or 4:2:2 H.264, PCM sound):
  decoded and encoded again with libx264 (CRF 23, `veryfast`) and AAC (128 kb/s stereo).

Both run in the calling thread only (codec threads = 1), so `time.thread_time()` is this
job's CPU time: past `MediaLimits.transcode_cpu_seconds` the job stops with a reason. Parallel
work comes from running several jobs at once. Progress (0..1, by timestamp) is written to
`progress_file` about once a second for whoever waits on the job; nothing is passed back
through memory, so this runs the same in a thread or a worker process.
"""

import os
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Final

import av

from app.adapters.media.common import (
    PLAYBACK_LONG_EDGE,
    PLAYBACK_SHORT_EDGE,
    MediaLimits,
    MediaRejected,
    Variant,
)
from app.adapters.media.videos import FFMPEG_DEMUXER, PlaybackPlan, frame_rotation, open_video

# libx264 when FFmpeg has it (PyAV's wheels do); the others are the fallbacks FFmpeg may
# offer for H.264 elsewhere. A build with none of them cannot make renditions.
_H264_ENCODERS: Final = ("libx264", "libopenh264")
_X264_OPTIONS: Final = {"preset": "veryfast", "crf": "23", "profile": "high", "threads": "1"}
_AUDIO_BITRATE: Final = 128_000
_AUDIO_RATE: Final = 48_000
_PROGRESS_EVERY_SECONDS: Final = 1.0
# `moov` before `mdat`: a browser can start playing after the first few KB.
_MP4_OPTIONS: Final = {"movflags": "+faststart"}


def make_playback(
    source: Path,
    mime: str,
    plan: PlaybackPlan,
    dest: Path,
    limits: MediaLimits,
    *,
    duration: float | None,
    progress_file: Path | None = None,
) -> Variant:
    """Write the playback rendition to `dest`; MediaRejected when it cannot be made."""
    budget = _CpuBudget(limits.transcode_cpu_seconds)
    progress = _Progress(progress_file, duration)
    try:
        if plan.method == "remux":
            width, height = _remux(source, mime, dest, budget, progress)
        else:
            width, height = _transcode(source, mime, dest, budget, progress)
    except MediaRejected:
        dest.unlink(missing_ok=True)
        raise
    except Exception as exc:
        dest.unlink(missing_ok=True)
        raise MediaRejected("the video could not be converted for playback") from exc
    progress.done()
    with dest.open("rb") as fh:
        os.fsync(fh.fileno())
    if plan.rotation in (90, 270):  # the size a viewer sees, as for the original
        width, height = height, width
    return Variant(
        name="playback",
        file=dest.name,
        mime_type="video/mp4",
        width=width,
        height=height,
        size=dest.stat().st_size,
    )


def h264_encoder() -> str | None:
    """The H.264 encoder this FFmpeg build has, if any."""
    for name in _H264_ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: S112 (absent from this build: try the next)
            continue
        return name
    return None


# Remux -----------------------------------------------------------------------------------


def _remux(
    source: Path, mime: str, dest: Path, budget: "_CpuBudget", progress: "_Progress"
) -> tuple[int, int]:
    with (
        open_video(source, FFMPEG_DEMUXER[mime]) as input_,
        av.open(str(dest), mode="w", format="mp4", options=_MP4_OPTIONS) as output,
    ):
        video = input_.streams.video[0]
        streams = [video] + ([input_.streams.audio[0]] if input_.streams.audio else [])
        # The template carries the codec parameters, the display matrix (rotation) among them.
        mapping = {stream.index: output.add_stream_from_template(stream) for stream in streams}
        for packet in input_.demux(streams):
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            out = mapping[packet.stream.index]
            if packet.stream is video and packet.pts is not None and packet.time_base:
                progress.at(float(packet.pts * packet.time_base))
            packet.stream = out
            output.mux(packet)
            budget.check()
        width, height = video.codec_context.width, video.codec_context.height
    return width, height


# Transcode ---------------------------------------------------------------------------------


def _transcode(
    source: Path, mime: str, dest: Path, budget: "_CpuBudget", progress: "_Progress"
) -> tuple[int, int]:
    encoder = h264_encoder()
    if encoder is None:
        raise MediaRejected("this server cannot convert videos for playback (no H.264 encoder)")
    with (
        open_video(source, FFMPEG_DEMUXER[mime]) as input_,
        av.open(str(dest), mode="w", format="mp4", options=_MP4_OPTIONS) as output,
    ):
        video = input_.streams.video[0]
        audio = input_.streams.audio[0] if input_.streams.audio else None
        for stream in (video, audio):
            if stream is not None:
                stream.codec_context.thread_count = 1
        time_base = video.time_base or Fraction(1, 90_000)
        rate = video.average_rate or video.guessed_rate or Fraction(30)
        out_video = output.add_stream(encoder, rate=rate, options=dict(_X264_OPTIONS))
        assert isinstance(out_video, av.VideoStream)
        out_video.codec_context.thread_count = 1
        out_video.pix_fmt = "yuv420p"
        out_video.time_base = time_base
        out_video.codec_context.time_base = time_base
        out_audio = None
        if audio is not None:
            out_audio = output.add_stream("aac", rate=_AUDIO_RATE, layout="stereo")
            assert isinstance(out_audio, av.AudioStream)
            out_audio.bit_rate = _AUDIO_BITRATE
            out_audio.codec_context.thread_count = 1
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=_AUDIO_RATE)
        size: tuple[int, int] | None = None
        next_pts = 0
        for packet in input_.demux([s for s in (video, audio) if s is not None]):
            for frame in _decoded(packet):
                if isinstance(frame, av.VideoFrame):
                    if size is None:
                        size = _playback_size(frame.width, frame.height)
                        out_video.width, out_video.height = size
                        rotation = frame_rotation(frame)
                        if rotation:
                            # Rotation travels as the display matrix, as phones write it: every
                            # browser honours it, and no pixel has to be turned.
                            out_video.set_display_rotation(rotation)
                    if frame.pts is None:
                        frame.pts = next_pts
                    next_pts = frame.pts + 1
                    progress.at(float(frame.pts * time_base))
                    scaled = frame.reformat(
                        width=size[0], height=size[1], format="yuv420p", interpolation="AREA"
                    )
                    scaled.pts, scaled.time_base = frame.pts, time_base
                    output.mux(out_video.encode(scaled))
                elif out_audio is not None and isinstance(frame, av.AudioFrame):
                    for resampled in resampler.resample(frame):
                        output.mux(out_audio.encode(resampled))
                budget.check()
        if size is None:
            raise MediaRejected("the video contains no decodable frames")
        output.mux(out_video.encode(None))
        if out_audio is not None:
            for resampled in resampler.resample(None):
                output.mux(out_audio.encode(resampled))
            output.mux(out_audio.encode(None))
        budget.check()
    return size


def _decoded(packet: av.Packet) -> Iterator[av.VideoFrame | av.AudioFrame]:
    for frame in packet.decode():
        if isinstance(frame, (av.VideoFrame, av.AudioFrame)):
            yield frame


def _playback_size(width: int, height: int) -> tuple[int, int]:
    """Fit in 1920 x 1080 (either way round), never upscaled, even sides (4:2:0 needs them)."""
    long_edge, short_edge = max(width, height), min(width, height)
    scale = min(PLAYBACK_LONG_EDGE / long_edge, PLAYBACK_SHORT_EDGE / short_edge, 1.0)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


# Limits and progress -------------------------------------------------------------------------


class _CpuBudget:
    def __init__(self, seconds: float):
        self._seconds = seconds
        self._started = time.thread_time()

    def check(self) -> None:
        if time.thread_time() - self._started > self._seconds:
            raise MediaRejected(
                f"converting the video for playback took too long (over {self._seconds:g} "
                "seconds of processing)"
            )


class _Progress:
    def __init__(self, file: Path | None, duration: float | None):
        self._file = file
        self._duration = duration if duration and duration > 0 else None
        self._written_at = time.monotonic()

    def at(self, seconds: float) -> None:
        if self._file is None or self._duration is None:
            return
        now = time.monotonic()
        if now - self._written_at < _PROGRESS_EVERY_SECONDS:
            return
        self._written_at = now
        self._write(min(max(seconds / self._duration, 0.0), 0.99))

    def done(self) -> None:
        if self._file is not None:
            self._write(1.0)

    def _write(self, value: float) -> None:
        assert self._file is not None
        # Replaced whole, so a reader never sees half a number; no fsync: it is only a hint.
        tmp = self._file.with_name(f".{self._file.name}.tmp")
        tmp.write_text(f"{value:.3f}")
        os.replace(tmp, self._file)
