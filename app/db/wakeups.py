"""Wake-ups for the background jobs, through PostgreSQL LISTEN/NOTIFY.

Triggers (migration `20250210000000_job_wakeups.sql`) notify `timeless_media` when media is
registered and `timeless_mail` when mail is queued; PostgreSQL delivers a notification only
once its transaction has committed. A process that runs the background jobs listens on one
dedicated connection (`app.db.listener.PgListener`, as the live events do) and wakes the
matching job at once, so a `timeless worker` on another machine starts a file within
milliseconds of its registration rather than at its next poll.

A notification is only a hint. The jobs still poll (`MEDIA_SWEEP_INTERVAL_SECONDS`,
`MAIL_POLL_INTERVAL_SECONDS`), and every job is woken once after each (re)connection, so a
notification lost while the connection was down delays work and loses none. Through a
transaction pooler LISTEN does not work: there the wake-ups need
`EVENTS_LISTEN_DATABASE_URL` (a session), else the polls alone drive the jobs.
"""

from collections.abc import Callable, Mapping
from typing import Final

from app.db.listener import PgListener

MEDIA_CHANNEL: Final = "timeless_media"
MAIL_CHANNEL: Final = "timeless_mail"
# Its connection in pg_stat_activity, beside the live events' own.
APPLICATION_NAME: Final = "timeless-job-wakeups"


class JobWakeups:
    def __init__(self, dsn: str, handlers: Mapping[str, Callable[[], None]]) -> None:
        self._handlers = dict(handlers)
        self.listener = PgListener(
            dsn,
            list(self._handlers),
            on_notify=self._notified,
            on_connect=self._wake_all,
            application_name=APPLICATION_NAME,
        )

    def start(self) -> None:
        self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()

    async def wait_listening(self, within: float) -> bool:
        return await self.listener.wait_connected(within)

    def _wake_all(self) -> None:
        # Whatever was notified while nobody listened is found by the jobs' next pass.
        for wake in self._handlers.values():
            wake()

    def _notified(self, channel: str, _payload: str) -> None:
        wake = self._handlers.get(channel)
        if wake is not None:
            wake()
