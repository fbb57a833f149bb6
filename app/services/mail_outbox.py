"""The mail outbox: mail queued in the action's own transaction, sent by a background job.

An action that sends mail (a password reset, an invite with `send_email`) inserts the
rendered message into `app.mail_outbox` in its own transaction, so the mail exists if and
only if the action happened, and the request never waits on a mail server. `MailOutbox`
delivers what is due:

    pending ──claim──▶ sending ──▶ sent
       ▲                  │  └───▶ failed  (the server refuses the address for good)
       └── retry later ◀──┘        expired (still unsent at send_before)

A claim holds a message for `claim_seconds` (`claimed_until`), taken with
`FOR UPDATE SKIP LOCKED`, so several processes can send at once without sharing a message.
A failed attempt is retried after an exponential backoff (`MAIL_RETRY_BASE_SECONDS`,
doubled each attempt, capped at `MAIL_RETRY_MAX_SECONDS`) for as long as the message is
worth sending: an SMTP outage delays mail, it loses none.

Delivery is **at least once**, keyed by Message-ID. If the process dies after the server
took a message and before it was marked sent, the claim runs out and the message is sent
again, with the same Message-ID header: the copy is recognisably the same message (mail
clients and mailbox providers drop a repeated Message-ID), and nothing is ever lost. No
protocol lets a sender make SMTP exactly-once; the idempotency key is the honest substitute.

Bodies are erased once a message is finished (a reset link is a secret), and finished rows
are purged after `MAIL_OUTBOX_RETENTION_DAYS`.

The job runs in the API process today (`start`/`stop` from the lifespan); it holds nothing
but a database and a mailer, so a separate worker process can run it the same way.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr

from app.adapters.mail import Mailer, MailError, OutgoingMail
from app.config import Settings
from app.db.postgres import Connection, Database
from app.errors import ServiceUnavailable
from app.metrics import BACKGROUND_QUEUE_DEPTH
from app.services.mail_templates import RenderedMail
from app.services.polling_job import PollingJob

logger = logging.getLogger(__name__)

MAIL_UNAVAILABLE = "Mail cannot be sent: no mail server is configured"
# How many messages one pass claims at a time.
_BATCH = 10
_PURGE_EVERY_SECONDS = 3600.0


def new_message_id(settings: Settings) -> str:
    """A globally unique Message-ID, in the domain of MAIL_FROM."""
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or "timeless.invalid"
    return f"<{uuid.uuid4().hex}@{domain}>"


_QUEUE = """
insert into app.mail_outbox (message_id, kind, to_address, subject, text_body, html_body,
                             send_before)
values ($1, $2, $3, $4, $5, $6, $7)
"""


async def queue(
    db: Connection,
    settings: Settings,
    *,
    kind: str,
    to: str,
    mail: RenderedMail,
    send_before: datetime | None,
) -> None:
    """Queue a message in the caller's transaction (a system session)."""
    await db.execute(
        _QUEUE, new_message_id(settings), kind, to, mail.subject, mail.text, mail.html, send_before
    )


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    attempts: int
    mail: OutgoingMail


# Anything still unsent past its send_before, and not held by a live claim, is dropped.
_EXPIRE = """
update app.mail_outbox
set status = 'expired', text_body = null, html_body = null, claimed_until = null
where status = 'pending' and send_before < now()
  and (claimed_until is null or claimed_until < now())
"""
_CLAIM = """
with due as (
  select id from app.mail_outbox
  where status = 'pending' and next_attempt_at <= now()
    and (claimed_until is null or claimed_until < now())
  order by next_attempt_at
  limit $1
  for update skip locked
)
update app.mail_outbox o
set claimed_until = now() + make_interval(secs => $2), attempts = o.attempts + 1
from due
where o.id = due.id
returning o.id, o.attempts, o.message_id, o.to_address, o.subject, o.text_body, o.html_body
"""
# Each outcome is written only under the claim that produced it (same attempt number).
_SENT = """
update app.mail_outbox
set status = 'sent', sent_at = now(), claimed_until = null, text_body = null,
    html_body = null, last_error = null
where id = $1 and attempts = $2 and status = 'pending'
"""
_RETRY = """
update app.mail_outbox
set claimed_until = null, last_error = $3, next_attempt_at = now() + make_interval(secs => $4)
where id = $1 and attempts = $2 and status = 'pending'
"""
_FAILED = """
update app.mail_outbox
set status = 'failed', claimed_until = null, last_error = $3, text_body = null,
    html_body = null
where id = $1 and attempts = $2 and status = 'pending'
"""
_PURGE = """
delete from app.mail_outbox
where status <> 'pending' and created_at < now() - make_interval(days => $1)
"""


class MailOutbox(PollingJob):
    name = "mail-outbox"

    def __init__(self, database: Database, mailer: Mailer | None, settings: Settings):
        # MAIL_POLL_INTERVAL_SECONDS <= 0 leaves the sender off.
        super().__init__(settings.mail_poll_interval_seconds)
        self._database = database
        self._mailer = mailer
        self._settings = settings
        # Longer than any SMTP exchange can take, so a live sender never loses its claim.
        self.claim_seconds = max(60.0, 3 * settings.smtp_timeout_seconds)
        self._last_purge = 0.0

    # Lifecycle ------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False in production without SMTP_URL: nothing can be sent."""
        return self._mailer is not None

    def require_available(self) -> None:
        if not self.available:
            raise ServiceUnavailable(MAIL_UNAVAILABLE, code="mail_unavailable")

    async def run_pass(self) -> bool:
        return await self.send_due() > 0

    async def after_passes(self) -> None:
        await self._purge_now_and_then()

    # Work -----------------------------------------------------------------------------------

    async def send_due(self) -> int:
        """Send one batch of due messages; returns how many were attempted."""
        if self._mailer is None:
            return 0
        async with self._database.system_session() as db:
            await db.execute(_EXPIRE)
            rows = await db.fetch(_CLAIM, _BATCH, self.claim_seconds)
        claims = [
            Claimed(
                id=row["id"],
                attempts=row["attempts"],
                mail=OutgoingMail(
                    message_id=row["message_id"],
                    to=row["to_address"],
                    subject=row["subject"],
                    text=row["text_body"] or "",
                    html=row["html_body"] or "",
                ),
            )
            for row in rows
        ]
        BACKGROUND_QUEUE_DEPTH.labels("mail").set(len(claims))
        for claim in claims:
            await self._deliver(claim)
        BACKGROUND_QUEUE_DEPTH.labels("mail").set(0)
        return len(claims)

    async def _deliver(self, claim: Claimed) -> None:
        assert self._mailer is not None
        try:
            await self._mailer.send(claim.mail)
        except MailError as exc:
            await self._note_failure(claim, exc)
            return
        except Exception as exc:  # a bug in sending: retried like an outage
            logger.exception("mail sending error", extra={"outbox_id": str(claim.id)})
            await self._note_failure(claim, MailError(type(exc).__name__))
            return
        # Sent. If this write is lost (a crash, the database away), the claim runs out and
        # the message goes again with the same Message-ID: at least once, never lost.
        try:
            await self._write(_SENT, claim.id, claim.attempts)
        except Exception:
            logger.exception("sent mail not marked sent", extra={"outbox_id": str(claim.id)})

    async def _note_failure(self, claim: Claimed, error: MailError) -> None:
        extra = {"outbox_id": str(claim.id), "attempt": claim.attempts, "error": error.reason}
        try:
            if error.permanent:
                logger.error("mail refused for good; not retried", extra=extra)
                await self._write(_FAILED, claim.id, claim.attempts, error.reason)
            else:
                delay = self.backoff_seconds(claim.attempts)
                logger.warning("mail not sent; will retry", extra={**extra, "retry_in": delay})
                await self._write(_RETRY, claim.id, claim.attempts, error.reason, delay)
        except Exception:
            # The database is away too: the claim runs out and the message is tried again.
            logger.exception("could not record a mail failure", extra=extra)

    def backoff_seconds(self, attempts: int) -> float:
        base = self._settings.mail_retry_base_seconds
        return float(min(base * 2 ** max(0, attempts - 1), self._settings.mail_retry_max_seconds))

    async def _write(self, statement: str, *args: object) -> None:
        async with self._database.system_session() as db:
            await db.execute(statement, *args)

    async def _purge_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._last_purge < _PURGE_EVERY_SECONDS:
            return
        self._last_purge = now
        async with self._database.system_session() as db:
            await db.execute(_PURGE, self._settings.mail_outbox_retention_days)
