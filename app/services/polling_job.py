"""The loop the queued background jobs share: the mail outbox, archive exports and imports.

Each job's queue is a table read with `FOR UPDATE SKIP LOCKED`, so any number of processes
may run the same job. A job runs passes until one finds nothing to do, then sleeps until it
is woken (something was queued and committed: `wake()`, called by the request that queued
it or by a LISTEN/NOTIFY wake-up) or until its poll interval runs out. The first pass runs
at once, so work a stopped process left behind goes on.
"""

import asyncio
import contextlib
import logging

logger = logging.getLogger(__name__)


class PollingJob:
    """Subclasses name the job and say what one pass does; the loop is here, once."""

    name: str = "job"

    def __init__(self, poll_interval_seconds: float) -> None:
        self._poll_interval = poll_interval_seconds
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self) -> None:
        """Start the loop; a poll interval <= 0 leaves the job off in this process."""
        if self._loop is None and self._poll_interval > 0:
            self._loop = asyncio.create_task(self._run_forever(), name=self.name)

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    def wake(self) -> None:
        """Work was queued and committed: do it now rather than at the next poll."""
        self._wake.set()

    async def run_pass(self) -> bool:
        """Do one unit of work; False when there was nothing to do."""
        raise NotImplementedError

    async def after_passes(self) -> None:
        """Housekeeping once the queue is empty (purges, sweeps); nothing by default."""

    async def _run_forever(self) -> None:
        while True:
            # Cleared before the passes: a wake-up that arrives during them is not lost.
            self._wake.clear()
            try:
                while await self.run_pass():
                    pass
                await self.after_passes()
            except Exception:
                logger.exception("%s pass failed", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
