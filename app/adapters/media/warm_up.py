"""Imported by the media sandbox's forkserver only: decode one tiny file of each kind.

Libraries initialise much lazily, on their first file: Pillow's plugins, libheif's decoder
plugins, FFmpeg's demuxers and codecs, LittleCMS. Done here, once, in the process every
job's child is forked from, no job pays it again (measured: 35-90 ms per job). Every decoder
thread started here has ended when this import returns, so the forkserver still forks from a
single-threaded process. Nothing here may fail the import: a library that cannot be warmed
is simply initialised by the first job that needs it.
"""

import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import av
import pillow_heif
from PIL import Image

from app.adapters.media import process_file

logger = logging.getLogger(__name__)


def _picture() -> Image.Image:
    return Image.linear_gradient("L").resize((64, 48)).convert("RGB")


def _jpeg() -> bytes:
    out = io.BytesIO()
    _picture().save(out, "JPEG")
    return out.getvalue()


def _png() -> bytes:
    out = io.BytesIO()
    _picture().save(out, "PNG")
    return out.getvalue()


def _heic() -> bytes:
    out = io.BytesIO()
    pillow_heif.from_pillow(_picture()).save(out, quality=50)
    return out.getvalue()


def _mp4() -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(10):
            frame = av.VideoFrame.from_image(_picture())
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return out.getvalue()


_SAMPLES: tuple[tuple[str, Callable[[], bytes]], ...] = (
    ("image/jpeg", _jpeg),
    ("image/png", _png),
    ("image/heic", _heic),
    ("video/mp4", _mp4),
)


def warm_up() -> None:
    with tempfile.TemporaryDirectory(prefix="timeless-warm-up-") as folder:
        for mime, make in _SAMPLES:
            try:
                source, output = Path(folder) / "sample", Path(folder) / mime.replace("/", "-")
                source.write_bytes(make())
                output.mkdir()
                process_file(source, mime, output)
            except Exception as exc:
                logger.warning("media warm-up skipped", extra={"mime": mime, "error": repr(exc)})


warm_up()


import gc  # noqa: E402

gc.freeze()
