"""Keeps `app.memory_changes` (what feed scrolls read back) no longer than scrolls live.

Every change to a memory's place in the feed leaves a row there (docs/feed.md, "Stable
scrolling"). A scroll can only need the rows since it began, and a cursor is refused 24
hours after its scroll began, so rows older than that (plus an hour's margin for clocks)
are removed once an hour, in one statement, by any number of processes at once.
"""

import asyncio
import contextlib
import logging
from datetime import timedelta

from app.adapters.cursors import MAX_AGE_SECONDS
from app.db.postgres import Database

logger = logging.getLogger(__name__)

KEEP = timedelta(seconds=MAX_AGE_SECONDS + 3600)
PURGE_INTERVAL_SECONDS = 3600.0
_PURGE = "select app.purge_memory_changes($1)"


class ScrollHistory:
    def __init__(self, database: Database, *, interval: float = PURGE_INTERVAL_SECONDS):
        self._database = database
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name="scroll-history-purge")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def purge(self) -> int:
        """Remove the changes no scroll can need any more; returns how many went."""
        # Background work on the service's behalf: no member, so the system session.
        async with self._database.system_session() as db:
            removed: int = await db.fetchval(_PURGE, KEEP)
        return removed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                removed = await self.purge()
            except Exception:
                logger.exception("scroll history purge failed")
            else:
                if removed:
                    logger.info("scroll history purged", extra={"changes": removed})
