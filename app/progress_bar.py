"""A progress bar for long operator commands (imports, exports), on a terminal only.

Written to stderr with a carriage return, so it redraws in place; when stderr is not a
terminal (a log file, CI) nothing is drawn and the command's own log lines say what happened.
"""

import sys
import time
from typing import TextIO

_WIDTH = 30


class ProgressBar:
    def __init__(self, label: str, stream: TextIO | None = None, min_interval: float = 0.1):
        self._label = label
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty()
        self._min_interval = min_interval
        self._last = 0.0

    def update(self, done: int, total: int, bytes_done: int = 0) -> None:
        now = time.monotonic()
        if not self._enabled or (now - self._last < self._min_interval and done < total):
            return
        self._last = now
        share = done / total if total else 0.0
        filled = round(_WIDTH * share)
        size = f"  {bytes_done / 1024 / 1024:,.1f} MiB" if bytes_done else ""
        self._stream.write(
            f"\r{self._label} [{'#' * filled}{'-' * (_WIDTH - filled)}] {done}/{total}{size}"
        )
        self._stream.flush()

    def close(self) -> None:
        if self._enabled:
            self._stream.write("\n")
            self._stream.flush()
