"""A stand-in for the media decoder that misbehaves on request, to test the job sandbox.

`process_file` is the real `app.adapters.media.process_file` unless the file carries one of
the markers below (anywhere; appended after a JPEG's end it still uploads as a JPEG): then it
crashes with SIGSEGV, allocates until its memory ceiling, spins on the CPU, sleeps, or
takes a few seconds (to be caught mid-job). Everything here is module-level, so it travels to
the sandbox's child processes by reference, as the real decoder does.

`run_worker()` is `timeless worker` with this stand-in in place of the real decoder:
`python -c "from tests.helpers.decoder_double import run_worker; run_worker()"`.
"""

import ctypes
import time
from pathlib import Path
from typing import Any

from app.adapters import media

SEGFAULT = b"TIMELESS-TEST-SEGFAULT"
MEMORY_BOMB = b"TIMELESS-TEST-MEMORY-BOMB"
SPIN = b"TIMELESS-TEST-SPIN"
HANG = b"TIMELESS-TEST-HANG"
SLOW = b"TIMELESS-TEST-SLOW"
SLOW_SECONDS = 4.0
MARKERS = (SEGFAULT, MEMORY_BOMB, SPIN, HANG, SLOW)


def with_marker(data: bytes, marker: bytes) -> bytes:
    return data + marker


def process_file(source: Path, *args: Any, **kwargs: Any) -> Any:
    data = Path(source).read_bytes()
    if SEGFAULT in data:
        segfault()
    if MEMORY_BOMB in data:
        allocate_forever()
    if SPIN in data:
        spin()
    if HANG in data:
        sleep_forever()
    if SLOW in data:
        time.sleep(SLOW_SECONDS)
    return media.process_file(source, *args, **kwargs)


def segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def allocate_forever() -> None:
    kept = []
    while True:
        # Written to, so the pages are really taken (as a decoder's output buffer would be).
        kept.append(bytearray(32 * 1024 * 1024))


def spin() -> None:
    while True:
        pass


def sleep_forever() -> None:
    while True:
        time.sleep(60)


def burn(cpu_seconds: float) -> int:
    """Spend this much CPU time; returns the pid (to tell a reused child from a new one)."""
    import os

    started = time.process_time()
    while time.process_time() - started < cpu_seconds:
        pass
    return os.getpid()


_hoard: list[bytearray] = []


def hoard(megabytes: int) -> int:
    """Keep this much memory past the job's end, as a leaking decoder would; returns the pid."""
    import os

    _hoard.append(bytearray(megabytes * 1024 * 1024))
    return os.getpid()


def answer(value: Any) -> Any:
    return value


def refuse(reason: str) -> None:
    raise media.MediaRejected(reason)


def break_down() -> None:
    raise RuntimeError("a bug in the decoder glue")


def getpid_and_sleep(path: str, seconds: float) -> None:
    """Write this child's pid to `path`, then sleep (to be found, and killed, mid-job)."""
    import os

    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)


def run_worker() -> None:
    import app.services.media_processor as media_processor
    from app.cli import main

    media_processor.process_file = process_file  # type: ignore[assignment]
    main(["worker"])
