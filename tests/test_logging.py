"""Log lines are JSON and never carry a token, password, invite token or signed URL query."""

import io
import json
import logging
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from app.log import JsonFormatter, configure_logging, redact
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
