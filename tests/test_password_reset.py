"""Password reset by email, end to end: a real SMTP server receives the link, the link works
once, and asking reveals nothing about which addresses have an account."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.config import Environment
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import API
from tests.helpers.accounts import Login, assert_alive, assert_dead, sign_in
from tests.helpers.factories import PASSWORD, Factory, unique_email
from tests.helpers.smtp import deliver, html_of, text_of, token_in

# The SMTP server and the app that mails through it (module-scoped fixtures).
pytest_plugins = ["tests.helpers.smtp"]

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture(scope="module")
def mail_factory(mail_client: httpx.AsyncClient) -> Factory:
    return Factory(mail_client)


async def _ask(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post(f"{API}/auth/password-reset", json={"email": email})


async def _confirm(client: httpx.AsyncClient, token: str, password: str = NEW_PASSWORD):
    return await client.post(
        f"{API}/auth/password-reset/confirm", json={"token": token, "new_password": password}
    )


async def _reset_token(mail_app: FastAPI, client, smtp_server, email: str) -> str:
    response = await _ask(client, email)
    assert response.status_code == 202, response.text
    await deliver(mail_app)
    return token_in(smtp_server.to(email)[-1])


# The happy path ---------------------------------------------------------------------------


async def test_the_reset_mail_arrives_and_its_link_works_once(
    mail_app: FastAPI, mail_client: httpx.AsyncClient, mail_factory: Factory, smtp_server
):
    member = await mail_factory.register("adult")
    first = Login(member.access_token, member.refresh_token)
    second = await sign_in(mail_client, member.email, PASSWORD)

    response = await _ask(mail_client, member.email.upper())
    assert response.status_code == 202, response.text
    assert response.content == b""
    assert smtp_server.to(member.email) == []  # queued, not sent while the request waited
    await deliver(mail_app)

    (message,) = smtp_server.to(member.email)
    assert message["From"] == "Timeless Love <no-reply@timeless.test>"
    assert message["Subject"] == "Reset your Timeless Love password"
    assert message["Message-ID"].endswith("@timeless.test>")
    token = token_in(message)
    assert f"https://app.timeless.test/reset-password?token={token}" in text_of(message)
    assert f'href="https://app.timeless.test/reset-password?token={token}"' in html_of(message)
    assert "30 minutes" in text_of(message)

    confirmed = await _confirm(mail_client, token)
    assert confirmed.status_code == 204, confirmed.text
    await assert_dead(mail_client, first, second)  # every login ends
    refused = await mail_client.post(
        f"{API}/auth/login", json={"email": member.email, "password": PASSWORD}
    )
    assert refused.status_code == 401
    await sign_in(mail_client, member.email, NEW_PASSWORD)

    again = await _confirm(mail_client, token, "yet another passphrase")
    assert again.status_code == 400, again.text
    assert again.json()["code"] == "reset_token_invalid"
    await sign_in(mail_client, member.email, NEW_PASSWORD)  # the reuse changed nothing


async def test_using_one_link_spends_every_other_link_of_the_account(
    mail_app: FastAPI, mail_client, mail_factory: Factory, smtp_server
):
    member = await mail_factory.register("adult")
    older = await _reset_token(mail_app, mail_client, smtp_server, member.email)
    newer = await _reset_token(mail_app, mail_client, smtp_server, member.email)
    assert older != newer
    assert (await _confirm(mail_client, newer)).status_code == 204
    assert (await _confirm(mail_client, older, "some other passphrase")).status_code == 400
    await sign_in(mail_client, member.email, NEW_PASSWORD)


# Known and unknown addresses look the same -------------------------------------------------


async def test_unknown_email_gets_the_same_answer_and_nothing_is_stored(
    mail_client: httpx.AsyncClient, mail_factory: Factory, pg: asyncpg.Pool
):
    member = await mail_factory.register("adult")
    nobody = unique_email("nobody")
    known, unknown = await _ask(mail_client, member.email), await _ask(mail_client, nobody)
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content == b""
    differing = {
        name
        for name in set(known.headers) | set(unknown.headers)
        if known.headers.get(name) != unknown.headers.get(name)
    }
    assert differing <= {"x-request-id"}
    assert (
        await pg.fetchval("select count(*) from app.mail_outbox where to_address = $1", nobody) == 0
    )
    assert (
        await pg.fetchval(
            "select count(*) from app.password_reset_tokens where user_id = $1",
            uuid.UUID(member.id),
        )
        == 1
    )


class _RecordingConnection:
    """Passes every call on to the connection and notes what was run, with what shape."""

    def __init__(self, conn: Any, log: list[tuple[str, str, tuple[str, ...]]]):
        self._conn = conn
        self._log = log

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)
        if name not in ("execute", "fetch", "fetchrow", "fetchval"):
            return attr

        async def recorded(query: str, *args: Any) -> Any:
            shapes = tuple(
                f"str[{len(a)}]" if isinstance(a, str) else type(a).__name__ for a in args
            )
            self._log.append((name, query, shapes))
            return await attr(query, *args)

        return recorded


async def test_known_and_unknown_addresses_do_exactly_the_same_work(
    mail_app: FastAPI,
    mail_client: httpx.AsyncClient,
    mail_factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
):
    """Timing without a stopwatch: both answers run the same statements with arguments of
    the same shapes (the same lengths, a token drawn and hashed and a mail rendered for
    either), and neither waits on the mail server. Timed assertions would be flaky; this
    shows there is nothing for a stopwatch to find."""
    member = await mail_factory.register("adult")
    database = mail_app.state.context.database
    original = database.system_session
    log: list[tuple[str, str, tuple[str, ...]]] = []

    @asynccontextmanager
    async def recording_session() -> AsyncIterator[Any]:
        async with original() as conn:
            yield _RecordingConnection(conn, log)

    monkeypatch.setattr(database, "system_session", recording_session)
    # Same length, so any difference would come from the code, not the input.
    unknown = member.email.replace("adult-", "nbody-")
    assert len(unknown) == len(member.email)
    await _ask(mail_client, member.email)
    known_work = list(log)
    log.clear()
    await _ask(mail_client, unknown)
    assert log == known_work
    assert len(known_work) == 1  # one statement: token and mail together, or nothing


async def test_a_provisioned_child_without_email_cannot_be_reached(
    mail_client: httpx.AsyncClient, mail_factory: Factory, pg: asyncpg.Pool
):
    family = await mail_factory.family(["adult"])
    child = await mail_factory.provision_child(family.adult)
    assert child.username
    by_username = await _ask(mail_client, child.username)
    assert by_username.status_code == 422  # a username is not an email address
    assert (
        await pg.fetchval(
            "select count(*) from app.password_reset_tokens where user_id = $1", uuid.UUID(child.id)
        )
        == 0
    )
    await sign_in(mail_client, child.username, child.password)  # nothing changed


# Bad tokens and passwords -------------------------------------------------------------------


@pytest.mark.parametrize("token", ["x", "A" * 43, "not a token at all, with spaces"])
async def test_unknown_tokens_are_400_and_change_nothing(
    mail_client: httpx.AsyncClient, mail_factory: Factory, token: str
):
    member = await mail_factory.register("adult")
    response = await _confirm(mail_client, token)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "reset_token_invalid"
    assert "expired" in body["detail"]
    await assert_alive(mail_client, Login(member.access_token, member.refresh_token))


async def test_an_expired_link_is_refused_and_changes_nothing(
    mail_app: FastAPI, mail_client, mail_factory: Factory, smtp_server, pg: asyncpg.Pool
):
    member = await mail_factory.register("adult")
    token = await _reset_token(mail_app, mail_client, smtp_server, member.email)
    stored = await pg.fetchrow(
        "select created_at, expires_at from app.password_reset_tokens where user_id = $1",
        uuid.UUID(member.id),
    )
    assert (stored["expires_at"] - stored["created_at"]).total_seconds() == 30 * 60
    await pg.execute(
        "update app.password_reset_tokens set expires_at = now() - interval '1 second'"
        " where user_id = $1",
        uuid.UUID(member.id),
    )
    response = await _confirm(mail_client, token)
    assert response.status_code == 400
    assert response.json()["code"] == "reset_token_invalid"
    await assert_alive(mail_client, Login(member.access_token, member.refresh_token))
    await sign_in(mail_client, member.email, PASSWORD)


async def test_a_weak_new_password_is_422_and_the_link_still_works(
    mail_app: FastAPI, mail_client, mail_factory: Factory, smtp_server
):
    member = await mail_factory.register("adult")
    token = await _reset_token(mail_app, mail_client, smtp_server, member.email)
    weak = await _confirm(mail_client, token, "short")
    assert weak.status_code == 422
    await assert_alive(mail_client, Login(member.access_token, member.refresh_token))
    assert (await _confirm(mail_client, token)).status_code == 204


async def test_only_the_hash_of_a_token_is_stored(
    mail_app: FastAPI, mail_client, mail_factory: Factory, smtp_server, pg: asyncpg.Pool
):
    member = await mail_factory.register("adult")
    token = await _reset_token(mail_app, mail_client, smtp_server, member.email)
    stored = await pg.fetchval(
        "select token_hash from app.password_reset_tokens where user_id = $1",
        uuid.UUID(member.id),
    )
    assert stored != token and token not in stored
    # ... and the sent mail's body, which held the link, is gone from the outbox.
    bodies = await pg.fetch(
        "select text_body, html_body from app.mail_outbox where to_address = $1", member.email
    )
    assert bodies and all(row["text_body"] is None and row["html_body"] is None for row in bodies)


# Limits and a missing mail server -----------------------------------------------------------


@pytest.fixture
async def limited_client(migrated_database_url: str, data_dir) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(
        make_settings(migrated_database_url, data_dir, rate_limit_enabled=True)
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def test_requests_are_limited_per_email_known_or_not(
    limited_client: httpx.AsyncClient, factory: Factory
):
    member = await factory.register("adult")
    for address in (member.email, unique_email("nobody")):
        answers = [(await _ask(limited_client, address)).status_code for _ in range(6)]
        assert answers == [202] * 5 + [429], address


async def test_requests_are_limited_per_ip(limited_client: httpx.AsyncClient):
    answers = [(await _ask(limited_client, unique_email("ip"))).status_code for _ in range(20)]
    assert answers == [202] * 20
    response = await _ask(limited_client, unique_email("ip"))
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0


async def test_production_without_a_mail_server_refuses_every_address_alike(
    migrated_database_url: str, data_dir, factory: Factory
):
    member = await factory.register("adult")
    settings = make_settings(migrated_database_url, data_dir, environment=Environment.PRODUCTION)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            known, unknown = await _ask(c, member.email), await _ask(c, unique_email("x"))
    for response in (known, unknown):
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "mail_unavailable"
    assert known.json()["detail"] == unknown.json()["detail"]
