"""A real SMTP server for the mail tests: aiosmtpd, in process, on a free local port.

`SmtpServer.start()` / `stop()` can be called again and again on the same port, so a test
can take the mail server away for a while and bring it back. Every message received is
kept, parsed, in `messages` (aiosmtpd runs in its own thread; appending is thread safe).
"""

import email
import email.policy
import re
import socket
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI

from app.main import create_app
from app.services.mail_outbox import MailOutbox
from tests.conftest import make_settings

_TOKEN = re.compile(r"[?&]token=([A-Za-z0-9_-]+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self._controller is None:
            self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
            self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        # An address the server will never take, for the permanent-failure test.
        if address.startswith("refused-"):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def token_in(message: EmailMessage) -> str:
    found = _TOKEN.search(text_of(message))
    assert found, text_of(message)
    return found.group(1)


# Fixtures: a module imports these names to get its own SMTP server and an app sending to it.


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def mail_app(
    migrated_database_url: str, data_dir: Path, smtp_server: SmtpServer
) -> AsyncIterator[FastAPI]:
    """An app on the shared database whose mail goes to `smtp_server` over real SMTP."""
    settings = make_settings(
        migrated_database_url,
        data_dir,
        smtp_url=smtp_server.url,
        smtp_starttls=False,
        smtp_timeout_seconds=5.0,
        mail_from="Timeless Love <no-reply@timeless.test>",
        frontend_url="https://app.timeless.test",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def mail_client(mail_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=mail_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def outbox_of(app: FastAPI) -> MailOutbox:
    outbox: MailOutbox = app.state.context.outbox
    return outbox


async def deliver(app: FastAPI) -> int:
    """Run the app's outbox sender until nothing is due; how many attempts it made."""
    attempts = 0
    while sent := await outbox_of(app).send_due():
        attempts += sent
    return attempts
