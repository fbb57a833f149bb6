"""The mail outbox against a real SMTP server: outages delay mail and lose none, a crash
between sending and marking sent repeats a message under the same Message-ID (at least
once), invites can be mailed, and without a mail server development logs what production
refuses."""

import asyncio
import json
import logging
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.adapters.mail import SmtpConfig, SmtpMailer
from app.config import Environment
from app.context import build_mailer
from app.log import JsonFormatter
from app.main import create_app
from app.services import mail_outbox
from app.services.mail_outbox import MailOutbox
from tests.conftest import make_settings
from tests.helpers import API
from tests.helpers.factories import Factory, unique_email
from tests.helpers.smtp import SmtpServer, deliver, outbox_of, text_of, token_in

# The SMTP server and the app that mails through it (module-scoped fixtures).
pytest_plugins = ["tests.helpers.smtp"]

_ROW = (
    "select status, attempts, last_error, next_attempt_at, claimed_until, text_body "
    "from app.mail_outbox where to_address = $1"
)


@pytest.fixture(scope="module")
def mail_factory(mail_client: httpx.AsyncClient) -> Factory:
    return Factory(mail_client)


async def _queue_reset(client: httpx.AsyncClient, factory: Factory) -> str:
    member = await factory.register("adult")
    response = await client.post(f"{API}/auth/password-reset", json={"email": member.email})
    assert response.status_code == 202
    assert member.email
    return member.email


async def _time_passes(pg: asyncpg.Pool, address: str) -> None:
    """The backoff (or a dead sender's hold) has run out for this message."""
    await pg.execute(
        "update app.mail_outbox set next_attempt_at = now(),"
        " claimed_until = case when claimed_until is null then null"
        "                      else now() - interval '1 second' end"
        " where to_address = $1",
        address,
    )


async def test_an_smtp_outage_delays_mail_and_loses_none(
    mail_app: FastAPI, mail_client, mail_factory: Factory, smtp_server: SmtpServer, pg
):
    address = await _queue_reset(mail_client, mail_factory)
    smtp_server.stop()
    try:
        for attempt in (1, 2, 3):
            await deliver(mail_app)
            row = await pg.fetchrow(_ROW, address)
            assert row["status"] == "pending"  # still in the outbox
            assert row["attempts"] == attempt
            assert row["last_error"]
            assert row["text_body"]  # the message is kept until it goes
            await _time_passes(pg, address)
    finally:
        smtp_server.start()
    await deliver(mail_app)
    await _time_passes(pg, address)
    await deliver(mail_app)  # nothing more to do
    assert len(smtp_server.to(address)) == 1  # exactly one delivery
    row = await pg.fetchrow(_ROW, address)
    assert row["status"] == "sent"
    assert row["attempts"] == 4
    assert row["text_body"] is None


async def test_retries_back_off_exponentially_up_to_a_cap(
    mail_app: FastAPI, mail_client, mail_factory: Factory, smtp_server: SmtpServer, pg
):
    outbox = outbox_of(mail_app)
    base = mail_app.state.settings.mail_retry_base_seconds
    cap = mail_app.state.settings.mail_retry_max_seconds
    assert [outbox.backoff_seconds(n) for n in (1, 2, 3, 4)] == [base, 2 * base, 4 * base, 8 * base]
    assert outbox.backoff_seconds(50) == cap
    address = await _queue_reset(mail_client, mail_factory)
    smtp_server.stop()
    try:
        await deliver(mail_app)
        row = await pg.fetchrow(
            _ROW + " and next_attempt_at > now() + make_interval(secs => $2)", address, base - 2
        )
        assert row is not None  # not tried again before the backoff has passed
        assert await outbox.send_due() == 0 or not smtp_server.to(address)
    finally:
        smtp_server.start()
    await _time_passes(pg, address)
    await deliver(mail_app)
    assert len(smtp_server.to(address)) == 1


async def test_a_crash_between_sending_and_marking_sent_repeats_the_same_message_id(
    mail_app: FastAPI,
    mail_client,
    mail_factory: Factory,
    smtp_server: SmtpServer,
    pg,
    monkeypatch: pytest.MonkeyPatch,
):
    """At least once, keyed by Message-ID: the second copy is the same message."""
    address = await _queue_reset(mail_client, mail_factory)
    outbox = outbox_of(mail_app)
    original = outbox._write

    async def crash_on_mark_sent(statement: str, *args: object) -> None:
        if statement == mail_outbox._SENT:
            raise ConnectionError("the process died here")
        await original(statement, *args)

    monkeypatch.setattr(outbox, "_write", crash_on_mark_sent)
    await deliver(mail_app)
    monkeypatch.undo()
    assert len(smtp_server.to(address)) == 1
    row = await pg.fetchrow(_ROW, address)
    assert row["status"] == "pending"
    assert row["claimed_until"] is not None  # held by the "dead" sender ...
    await deliver(mail_app)
    assert len(smtp_server.to(address)) == 1  # ... so nobody sends it while the hold lasts

    await _time_passes(pg, address)  # the hold runs out: another sender takes it
    await deliver(mail_app)
    copies = smtp_server.to(address)
    assert len(copies) == 2
    assert copies[0]["Message-ID"] == copies[1]["Message-ID"]  # one message, twice
    assert len({token_in(copy) for copy in copies}) == 1
    assert (await pg.fetchrow(_ROW, address))["status"] == "sent"


async def test_an_address_the_server_refuses_for_good_is_not_retried(
    mail_app: FastAPI, smtp_server: SmtpServer, pg
):
    address = f"refused-{uuid.uuid4().hex[:8]}@example.com"
    async with mail_app.state.context.database.system_session() as db:
        await mail_outbox.queue(
            db,
            mail_app.state.settings,
            kind="invite",
            to=address,
            mail=mail_outbox.RenderedMail("s", "t", "<p>h</p>"),
            send_before=None,
        )
    await deliver(mail_app)
    row = await pg.fetchrow(_ROW, address)
    assert row["status"] == "failed"
    assert "550" in row["last_error"]
    await _time_passes(pg, address)
    await deliver(mail_app)
    assert (await pg.fetchrow(_ROW, address))["attempts"] == 1


async def test_mail_still_unsent_when_it_stops_mattering_is_dropped(
    mail_app: FastAPI, mail_client, mail_factory: Factory, smtp_server: SmtpServer, pg
):
    address = await _queue_reset(mail_client, mail_factory)
    await pg.execute(
        "update app.mail_outbox set send_before = now() - interval '1 second'"
        " where to_address = $1",
        address,
    )
    await deliver(mail_app)
    row = await pg.fetchrow(_ROW, address)
    assert row["status"] == "expired" and row["text_body"] is None
    assert smtp_server.to(address) == []


async def test_the_background_sender_delivers_without_being_asked(
    mail_app: FastAPI, mail_client, mail_factory: Factory, smtp_server: SmtpServer
):
    """The job as `timeless serve` (or a worker) runs it: start, it sends what is due, stop."""
    address = await _queue_reset(mail_client, mail_factory)
    settings = mail_app.state.settings.model_copy(update={"mail_poll_interval_seconds": 0.2})
    mailer = SmtpMailer(
        SmtpConfig.from_url(smtp_server.url, starttls=False, timeout=5), settings.mail_from
    )
    sender = MailOutbox(mail_app.state.context.database, mailer, settings)
    sender.start()
    try:
        for _ in range(100):  # waits for an outcome, at most 10 s; asserts no duration
            if smtp_server.to(address):
                break
            await asyncio.sleep(0.1)
    finally:
        await sender.stop()
    assert len(smtp_server.to(address)) == 1


# Invites by mail ----------------------------------------------------------------------------


async def test_an_invite_can_be_mailed(
    mail_app: FastAPI, mail_client, mail_factory: Factory, smtp_server: SmtpServer
):
    founder = await mail_factory.register("adult", family_name="The Oaks & <Elms>")
    invitee = unique_email("invitee")
    response = await mail_client.post(
        f"{API}/invites",
        json={"email": invitee, "role": "teen", "send_email": True},
        headers=founder.headers,
    )
    assert response.status_code == 201, response.text
    invite = response.json()
    await deliver(mail_app)
    (message,) = smtp_server.to(invitee)
    assert "The Oaks & <Elms>" in message["Subject"]
    assert invite["invite_link"] in text_of(message)
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "The Oaks &amp; &lt;Elms&gt;" in html  # names are escaped in HTML
    accepted = await mail_client.post(
        f"{API}/invites/{token_in(message)}/accept",
        json={"email": invitee, "password": "correct horse battery", "display_name": "Tim"},
    )
    assert accepted.status_code == 201, accepted.text


async def test_an_invite_is_not_mailed_unless_asked(
    mail_app: FastAPI, mail_client, mail_factory: Factory, smtp_server: SmtpServer, pg
):
    founder = await mail_factory.register("adult")
    invitee = unique_email("quiet")
    response = await mail_client.post(
        f"{API}/invites", json={"email": invitee, "role": "adult"}, headers=founder.headers
    )
    assert response.status_code == 201
    await deliver(mail_app)
    assert smtp_server.to(invitee) == []
    assert (
        await pg.fetchval("select count(*) from app.mail_outbox where to_address = $1", invitee)
        == 0
    )


# Without a mail server ----------------------------------------------------------------------


async def test_production_without_smtp_refuses_a_mailed_invite_and_creates_nothing(
    migrated_database_url: str, data_dir: Path, factory: Factory, pg
):
    founder = await factory.register("adult")
    invitee = unique_email("nomail")
    settings = make_settings(migrated_database_url, data_dir, environment=Environment.PRODUCTION)
    assert build_mailer(settings) is None  # never the log in production
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            refused = await c.post(
                f"{API}/invites",
                json={"email": invitee, "role": "teen", "send_email": True},
                headers=founder.headers,
            )
            plain = await c.post(
                f"{API}/invites", json={"email": invitee, "role": "teen"}, headers=founder.headers
            )
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "mail_unavailable"
    assert "mail server" in refused.json()["detail"]
    assert plain.status_code == 201  # without send_email nothing needs mail
    assert (
        await pg.fetchval("select count(*) from public.invitations where email = $1", invitee) == 1
    )


async def test_development_without_smtp_writes_mail_to_the_log_and_a_file(
    app: FastAPI,
    client: httpx.AsyncClient,
    factory: Factory,
    caplog: pytest.LogCaptureFixture,
    data_dir: Path,
):
    member = await factory.register("adult")
    assert member.email
    await client.post(f"{API}/auth/password-reset", json={"email": member.email})
    with caplog.at_level(logging.WARNING, logger="app.adapters.mail"):
        await deliver(app)
    records = [r for r in caplog.records if getattr(r, "mail_to", None) == member.email]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["message"].startswith("MAIL NOT SENT")
    assert line["subject"] == "Reset your Timeless Love password"
    eml = Path(line["file"])
    assert eml.parent == data_dir / "mail"
    content = await asyncio.to_thread(eml.read_text)
    assert "reset-password?token=" in content  # the whole message, link included
