"""How much memory this process took at its peak while a block ran (Linux, from /proc).

The kernel keeps each process's peak resident size (VmHWM); writing 5 to
/proc/self/clear_refs resets it to the current size, so the peak of a block is measurable
without psutil and without sampling.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


@dataclass
class PeakGrowth:
    start: int = 0
    peak: int = 0

    @property
    def bytes(self) -> int:
        """How far above its size at the start the process went, at most."""
        return self.peak - self.start

    def __str__(self) -> str:
        return f"{self.bytes / MIB:.0f} MiB above the {self.start / MIB:.0f} MiB at the start"


@contextmanager
def peak_growth() -> Iterator[PeakGrowth]:
    growth = PeakGrowth()
    Path("/proc/self/clear_refs").write_text("5")
    growth.start = _status_kib("VmRSS") * 1024
    try:
        yield growth
    finally:
        growth.peak = _status_kib("VmHWM") * 1024
