"""Log lines are JSON and never carry a token, password, invite token or signed URL query."""

import contextvars
import io
import json
import logging
import sys
from collections.abc import Iterator
from unittest.mock import patch
from urllib.parse import parse_qs, urlsplit

import pytest

from app import log
from app.log import JsonFormatter, configure_logging, log_info, redact
from tests.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.factories import PASSWORD


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


async def run_account_flows(client, factory) -> list[str]:
    """Every auth flow; returns the secrets it used."""
    adult = await factory.register("adult")
    secrets = [PASSWORD, adult.access_token, adult.refresh_token]
    tokens = await factory.login(adult.email)
    secrets += [tokens["access_token"], tokens["refresh_token"]]
    refreshed = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    secrets += [refreshed.json()["access_token"], refreshed.json()["refresh_token"]]
    await client.post(f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    await client.post(f"{API}/auth/login", json={"email": adult.email, "password": "Wr0ng-pass!"})
    secrets.append("Wr0ng-pass!")
    invite = await factory.invite(adult, "teen")
    secrets.append(invite["token"])
    await client.get(f"{API}/invites/{invite['token']}")
    await client.post(
        f"{API}/invites/{invite['token']}/accept",
        json={"email": invite["email"], "password": PASSWORD, "display_name": "T"},
    )
    child = await client.post(
        f"{API}/auth/provision/child", json={"display_name": "Kid"}, headers=adult.headers
    )
    secrets.append(child.json()["password"])
    await client.get(f"{API}/auth/me", headers={"Authorization": "Bearer not.a.token"})
    await client.post(f"{API}/auth/logout", headers=adult.headers)
    return secrets


async def run_upload_flow(client, factory) -> list[str]:
    """Draft → signed upload → register → processed → signed thumbnail; returns the secrets."""
    family = await factory.family(["adult"])
    memory = await samples.create_memory(client, family.adult)
    ticket = (await samples.upload_url(client, family.adult, memory["id"], "image/jpeg")).json()
    data = samples.jpeg()
    assert (await samples.send_bytes(client, ticket, data)).status_code == 201
    registered = await samples.register(
        client, family.adult, memory["id"], ticket, mime_type="image/jpeg", file_size=len(data)
    )
    media = registered.json()
    await samples.wait_for_media(client, family.adult, memory["id"], media["id"])
    thumb = await client.get(
        f"{API}/storage/media/{media['id']}/url?variant=thumbnail", headers=family.adult.headers
    )
    await client.get(thumb.json()["access_url"])
    secrets = [family.adult.access_token]
    for url in (ticket["upload_url"], thumb.json()["access_url"]):
        query = parse_qs(urlsplit(url).query)
        secrets += [value for values in query.values() for value in values if len(value) >= 16]
    assert len(secrets) >= 3  # the signed URLs do carry signatures to look for
    return secrets


async def test_logs_are_json_and_hold_no_secret(client, factory, captured_logs):
    secrets = await run_account_flows(client, factory)
    secrets += await run_upload_flow(client, factory)
    lines = [line for line in captured_logs.getvalue().splitlines() if line.strip()]
    assert len(lines) >= 10
    # The test's own httpx client logs its request URLs; the server quiets httpx (log.py).
    records = [r for r in map(json.loads, lines) if r["logger"] != "httpx"]
    requests = [r for r in records if r.get("message") == "request"]
    assert {"request_id", "method", "route", "status", "duration_ms"} <= set(requests[-1])
    assert any("user_id" in r and "family_id" in r for r in requests)
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    for secret in secrets:
        assert secret not in text


def test_redact_masks_what_looks_secret():
    assert redact("Authorization: Bearer abc.def.ghi") == "Authorization: Bearer [REDACTED]"
    assert "hunter22" not in redact('{"password": "hunter22"}')
    assert "s3cr3t" not in redact("GET /x?token=s3cr3t&expires=1")
    assert "eyJ" not in redact("got eyJhbGciOi.eyJzdWIiOiIx.sig-part here")


def test_uvicorn_builds_no_access_line_of_its_own() -> None:
    # uvicorn builds its access line (client address, quoted path and query) for every
    # response whenever its logger reaches a handler, even a disabled one; ours is written by
    # the middleware, so after configure_logging uvicorn's must reach none.
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    try:
        configure_logging("info")
        assert not logging.getLogger("uvicorn.access").hasHandlers()
        assert logging.getLogger("uvicorn.error").hasHandlers()  # its errors still reach ours
    finally:
        root.handlers[:], level = kept
        root.setLevel(level)


@pytest.fixture
def installed_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """configure_logging("info") as the server runs it, its stdout a buffer; undone after.

    pytest's own capture handlers join the root logger for the test itself; the test body
    takes them off with `alone()` so lines reach the installed handler only, as in the server.
    """
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    root = logging.getLogger()
    kept = root.handlers[:], root.level, log._installed
    try:
        configure_logging("info")
        yield stream
    finally:
        root.handlers[:], level, log._installed = kept
        root.setLevel(level)


def alone() -> None:
    logging.getLogger().handlers[:] = [log._installed]


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


ACCESS_FIELDS = {"method": "GET", "route": "/api/v1/invites/{token}", "status": 200, "x": 1.5}


def test_a_line_written_directly_is_the_one_logging_writes(installed_handler) -> None:
    alone()
    logger = logging.getLogger("timeless.access")
    context = contextvars.copy_context()
    context.run(log.request_id_var.set, "req-1")
    context.run(log.user_id_var.set, "user-1")
    records: list[logging.LogRecord] = []
    with patch.object(logger, "handle", records.append):  # what logging's way would call
        context.run(log_info, logger, "request", ACCESS_FIELDS)  # only the installed handler
    assert records == []  # so it was written directly
    # A second handler on the way (a test's capture): the line goes through logging, to both.
    other = io.StringIO()
    handler = logging.StreamHandler(other)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    context.run(log_info, logger, "request", ACCESS_FIELDS)
    direct, through_logging = _lines(installed_handler)
    assert _lines(other) == [through_logging]
    assert direct.pop("ts") and through_logging.pop("ts")
    assert direct == through_logging
    assert list(direct) == [
        "level", "logger", "message", "request_id", "user_id", "method", "route", "status", "x",
    ]  # fmt: skip


def test_a_direct_line_keeps_levels_and_filters(installed_handler) -> None:
    alone()
    logger = logging.getLogger("timeless.access")
    logger.setLevel(logging.WARNING)
    try:
        log_info(logger, "request", ACCESS_FIELDS)
    finally:
        logger.setLevel(logging.NOTSET)
    dropped = logging.Filter("somewhere.else")  # passes only that logger's records
    logger.addFilter(dropped)
    try:
        log_info(logger, "request", ACCESS_FIELDS)
    finally:
        logger.removeFilter(dropped)
    assert installed_handler.getvalue() == ""
    log_info(logger, "request", ACCESS_FIELDS)
    assert len(_lines(installed_handler)) == 1


async def test_a_request_writes_one_access_line(installed_handler, client) -> None:
    alone()
    response = await client.get("/health", headers={"X-Request-ID": "from-the-client"})
    assert response.status_code == 200
    access = [line for line in _lines(installed_handler) if line["logger"] == "timeless.access"]
    assert len(access) == 1
    assert access[0]["request_id"] == "from-the-client"
    assert access[0]["route"] == "/health" and access[0]["status"] == 200
