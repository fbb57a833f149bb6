"""Sending one mail message: a real SMTP client, and the development stand-in.

`SmtpMailer` speaks SMTP with the standard library's `smtplib`, in a worker thread so the
event loop never waits on the network: one connection per message, which suits mail this
rare (reset links and invites, a handful an hour). `aiosmtplib` would do the same on the
loop; it is not worth a dependency for that. `SMTP_URL` says where:

    smtp://user:password@host:587     plain connection, then STARTTLS (SMTP_STARTTLS=true)
    smtps://user:password@host:465    TLS from the first byte

`LogMailer` is what development and test use without `SMTP_URL`: each message is written
to the log, in a line that says plainly that it was not sent, and in full (links included,
which the log's own redaction may mask) to `DATA_DIR/mail/<id>.eml`. It is never built in
production (`app.context.build_mailer`).

Both raise `MailError`; `permanent` says whether trying again could help (a recipient the
server refuses) or not (everything else: the server down, a timeout, a refused login).
"""

import asyncio
import logging
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingMail:
    # The Message-ID header, the same on every attempt at this message.
    message_id: str
    to: str
    subject: str
    text: str
    html: str


class MailError(Exception):
    def __init__(self, reason: str, *, permanent: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Mailer(Protocol):
    async def send(self, mail: OutgoingMail) -> None:
        """Hand the message to the mail server; raise MailError if it was not taken."""


def build_message(mail: OutgoingMail, sender: str) -> EmailMessage:
    """Plain text with an HTML alternative, carrying the outbox's Message-ID."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = mail.message_id
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    tls: bool  # smtps://: TLS from the start
    starttls: bool
    timeout: float
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str, *, starttls: bool, timeout: float) -> "SmtpConfig":
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            # Never echo the URL: it may hold the password.
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:port or smtps://...")
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 587),
            tls=tls,
            starttls=starttls and not tls,
            timeout=timeout,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


class SmtpMailer:
    def __init__(self, config: SmtpConfig, sender: str):
        self._config = config
        self._sender = sender

    async def send(self, mail: OutgoingMail) -> None:
        message = build_message(mail, self._sender)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        config = self._config
        try:
            smtp: smtplib.SMTP
            if config.tls:
                smtp = smtplib.SMTP_SSL(
                    config.host,
                    config.port,
                    timeout=config.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
            with smtp:
                if config.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if config.username:
                    smtp.login(config.username, config.password or "")
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            # 5xx: the server will never take it for this address; 4xx: maybe later.
            raise MailError(
                f"recipient refused ({', '.join(map(str, codes))})",
                permanent=all(code >= 500 for code in codes),
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise MailError(f"SMTP error {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise MailError(type(exc).__name__) from None


class LogMailer:
    """Development without SMTP_URL: the message goes to the log and to a file, not out."""

    def __init__(self, directory: Path, sender: str):
        self._directory = directory
        self._sender = sender

    async def send(self, mail: OutgoingMail) -> None:
        message = build_message(mail, self._sender)
        path = self._directory / f"{mail.message_id.strip('<>').replace('@', '_at_')}.eml"
        await asyncio.to_thread(self._write, path, message.as_bytes())
        logger.warning(
            "MAIL NOT SENT (no SMTP_URL; development only): written to the log and to a file",
            extra={
                "mail_to": mail.to,
                "subject": mail.subject,
                "body": mail.text,
                "file": str(path),
            },
        )

    def _write(self, path: Path, content: bytes) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
