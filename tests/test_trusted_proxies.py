"""TRUSTED_PROXIES: forwarded headers are believed from those proxies only.

For rate limits (per client IP), log lines and the URLs the server writes. A client at
127.0.0.2 plays the proxy (httpx's in-process transport sets the peer address; the real
server test binds its client socket to 127.0.0.2).
"""

import argparse
import ipaddress
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from app import cli
from app.config import Settings, get_settings
from app.log import client_ip_var
from app.main import create_app
from app.proxy import TrustedProxyMiddleware, request_origin
from tests.conftest import make_settings
from tests.faults.server import JWT_SECRET, ROOT, free_port
from tests.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.factories import PASSWORD, Factory, unique_email

PROXY = "127.0.0.2"
WILDCARD = "0.0.0.0"  # noqa: S104 (what the server is told to listen on, never bound here)
REGISTRATIONS_PER_HOUR = 10
_addresses = itertools.count(1)


def a_client_address() -> str:
    """A fresh documentation address (RFC 5737) per use: every test has its own allowance."""
    index = next(_addresses)
    return f"203.0.{113 + index // 250}.{index % 250 + 1}"


# The middleware alone ----------------------------------------------------------------------------


async def seen_by_the_app(
    peer: str, headers: dict[str, str], trusted: list[str], scheme: str = "http"
) -> dict[str, Any]:
    """What the app behind TrustedProxyMiddleware sees of one request."""
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(
            client=scope["client"][0],
            scheme=scope["scheme"],
            headers={name.decode(): value.decode() for name, value in scope["headers"]},
            origin=request_origin(),
            logged_client=client_ip_var.get(),
        )

    networks = [ipaddress.ip_network(item) for item in trusted]
    middleware = TrustedProxyMiddleware(app, trusted=networks)
    scope = {
        "type": "http",
        "scheme": scheme,
        "client": (peer, 50000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    await middleware(scope, receive, send)
    return seen


async def test_an_untrusted_peer_is_the_client_and_its_forwarded_headers_are_dropped():
    seen = await seen_by_the_app(
        "127.0.0.1",
        {
            "Host": "api.example.org",
            "X-Forwarded-For": "198.51.100.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
        },
        trusted=[PROXY],
    )
    assert seen["client"] == seen["logged_client"] == "127.0.0.1"
    assert seen["scheme"] == "http"
    assert seen["origin"] == "http://api.example.org"
    assert not any(name.startswith("x-forwarded") for name in seen["headers"])


async def test_nothing_is_trusted_by_default_not_even_loopback():
    seen = await seen_by_the_app("127.0.0.1", {"X-Forwarded-For": "198.51.100.7"}, trusted=[])
    assert seen["client"] == "127.0.0.1"


async def test_a_trusted_proxy_names_the_client_scheme_and_host():
    seen = await seen_by_the_app(
        PROXY,
        {
            "Host": "127.0.0.1:8000",
            "X-Forwarded-For": "198.51.100.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "photos.example.org",
        },
        trusted=[PROXY],
    )
    assert seen["client"] == seen["logged_client"] == "198.51.100.7"
    assert seen["scheme"] == "https"
    assert seen["headers"]["host"] == "photos.example.org"
    assert seen["origin"] == "https://photos.example.org"


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        # The client's own X-Forwarded-For, with the proxy's entry appended: the left part
        # is whatever the client wrote, so the nearest untrusted entry is the client.
        ("10.9.9.9, 198.51.100.7", "198.51.100.7"),
        ("1.1.1.1, 2.2.2.2, 198.51.100.7", "198.51.100.7"),
        # A chain of trusted proxies (a CDN, then a balancer in 10.0.0.0/8).
        ("198.51.100.7, 10.0.0.5", "198.51.100.7"),
        ("198.51.100.7, 10.0.0.5, 10.0.0.6", "198.51.100.7"),
        # Ports and brackets as some proxies write them; IPv6.
        ("198.51.100.7:4711", "198.51.100.7"),
        ("[2001:db8::7]:4711", "2001:db8::7"),
        ("2001:db8::7", "2001:db8::7"),
        # Garbage stops the walk at the last address a trusted proxy vouched for.
        ("not-an-address, 10.0.0.5", "10.0.0.5"),
        ("unknown", PROXY),
        # Only trusted proxies all along: the farthest one.
        ("10.0.0.5, 10.0.0.6", "10.0.0.5"),
    ],
)
async def test_the_forwarded_chain_is_walked_from_the_nearest_hop(forwarded_for, client):
    seen = await seen_by_the_app(
        PROXY, {"X-Forwarded-For": forwarded_for}, trusted=[PROXY, "10.0.0.0/8"]
    )
    assert seen["client"] == client


async def test_an_ipv4_peer_seen_through_an_ipv6_socket_is_recognised():
    seen = await seen_by_the_app(
        f"::ffff:{PROXY}", {"X-Forwarded-For": "198.51.100.7"}, trusted=[PROXY]
    )
    assert seen["client"] == "198.51.100.7"


@pytest.mark.parametrize(
    "host", ["evil.example/path?x=", "a b", "evil.example@good", "", "0.0.0.0:8000", "[::]:8000"]
)
async def test_a_host_that_could_bend_a_url_or_reaches_nobody_gives_no_origin(host):
    seen = await seen_by_the_app("127.0.0.1", {"Host": host}, trusted=[])
    assert seen["origin"] is None


async def test_a_trusted_proxys_odd_forwarded_host_or_proto_is_ignored():
    seen = await seen_by_the_app(
        PROXY,
        {"Host": "api.example.org", "X-Forwarded-Host": "a/b", "X-Forwarded-Proto": "gopher"},
        trusted=[PROXY],
    )
    assert seen["origin"] == "http://api.example.org"


# The setting ---------------------------------------------------------------------------------


def test_trusted_proxies_are_read_as_addresses_and_networks(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8 ,::1,")
    networks = Settings().trusted_proxies
    assert [str(n) for n in networks] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
    monkeypatch.setenv("TRUSTED_PROXIES", '["192.0.2.0/24"]')
    assert [str(n) for n in Settings().trusted_proxies] == ["192.0.2.0/24"]
    monkeypatch.setenv("TRUSTED_PROXIES", "")
    assert Settings().trusted_proxies == []


def test_a_trusted_proxy_that_is_not_an_address_stops_start_up(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRUSTED_PROXIES", "127.0.0.1,proxy.internal")
    with pytest.raises(pydantic.ValidationError, match="TRUSTED_PROXIES"):
        Settings()


# Through the app: rate limits and URLs --------------------------------------------------------


@pytest.fixture(scope="module")
async def proxied_app(migrated_database_url: str, data_dir: Path) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        migrated_database_url,
        data_dir,
        rate_limit_enabled=True,
        trusted_proxies=[PROXY],
        public_base_url="",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def client_at(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def register(client: httpx.AsyncClient, **headers: str) -> httpx.Response:
    return await client.post(
        f"{API}/auth/register/adult",
        json={"email": unique_email(), "password": PASSWORD, "display_name": "Proxied"},
        headers=headers,
    )


async def test_a_client_behind_the_trusted_proxy_has_its_own_allowance(proxied_app):
    first, second = a_client_address(), a_client_address()
    async with client_at(proxied_app, PROXY) as proxy:
        for _ in range(REGISTRATIONS_PER_HOUR):
            response = await register(proxy, **{"X-Forwarded-For": first})
            assert response.status_code == 201, response.text

        assert (await register(proxy, **{"X-Forwarded-For": first})).status_code == 429
        # Everyone else behind the same proxy is still welcome.
        assert (await register(proxy, **{"X-Forwarded-For": second})).status_code == 201


async def test_rotating_x_forwarded_for_through_the_proxy_does_not_reset_the_allowance(
    proxied_app,
):
    client = a_client_address()
    async with client_at(proxied_app, PROXY) as proxy:
        statuses = [
            (await register(proxy, **{"X-Forwarded-For": f"198.51.100.{i}, {client}"})).status_code
            for i in range(REGISTRATIONS_PER_HOUR + 1)
        ]
    assert statuses == [201] * REGISTRATIONS_PER_HOUR + [429]


async def test_rotating_x_forwarded_for_from_an_untrusted_address_does_not_help(proxied_app):
    attacker = f"127.0.{next(_addresses) % 250}.9"  # loopback, but not the trusted proxy
    async with client_at(proxied_app, attacker) as direct:
        statuses = [
            (await register(direct, **{"X-Forwarded-For": a_client_address()})).status_code
            for _ in range(REGISTRATIONS_PER_HOUR + 1)
        ]
    assert statuses == [201] * REGISTRATIONS_PER_HOUR + [429]


async def test_registrations_refused_as_invalid_spend_no_allowance(proxied_app):
    client = a_client_address()
    async with client_at(proxied_app, PROXY) as proxy:
        for _ in range(REGISTRATIONS_PER_HOUR + 5):
            refused = await proxy.post(
                f"{API}/auth/register/adult",
                json={"email": "not-an-email", "password": "short", "display_name": ""},
                headers={"X-Forwarded-For": client},
            )
            assert refused.status_code == 422, refused.text

        accepted = await register(proxy, **{"X-Forwarded-For": client})
    assert accepted.status_code == 201, accepted.text


async def test_signed_urls_use_the_address_the_trusted_proxy_received(proxied_app):
    async with client_at(proxied_app, PROXY) as proxy:
        adult = await Factory(proxy).register("adult")
        memory = await samples.create_memory(proxy, adult)
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "photos.example.org"}
        ticket = await proxy.post(
            f"{API}/storage/upload-url",
            json={"memory_id": memory["id"], "file_name": "a.jpg", "mime_type": "image/jpeg"},
            headers={**adult.headers, **forwarded},
        )
    assert ticket.status_code == 200, ticket.text
    assert ticket.json()["upload_url"].startswith(
        "https://photos.example.org/api/v1/storage/objects/memories/"
    )


async def test_signed_urls_ignore_forwarded_headers_from_anyone_else(proxied_app):
    async with client_at(proxied_app, "127.0.0.3") as direct:
        adult = await Factory(direct).register("adult")
        memory = await samples.create_memory(direct, adult)
        ticket = await direct.post(
            f"{API}/storage/upload-url",
            json={"memory_id": memory["id"], "file_name": "a.jpg", "mime_type": "image/jpeg"},
            headers={**adult.headers, "X-Forwarded-Host": "evil.example"},
        )
    assert ticket.json()["upload_url"].startswith("http://testserver/api/v1/storage/objects/")


# A real server started by `timeless serve` -------------------------------------------------------


@pytest.fixture
def served(migrated_database_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`timeless serve` on 127.0.0.1 with TRUSTED_PROXIES=127.0.0.2, logging at INFO."""
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SUPABASE_", "DATABASE_", "REDIS_", "PUBLIC_", "TRUSTED_"))
    }
    env.update(
        ENVIRONMENT="test",
        DATABASE_URL=migrated_database_url,
        DATA_DIR=str(tmp_path),
        JWT_SECRET_KEY=JWT_SECRET,
        TRUSTED_PROXIES=PROXY,
        LOG_LEVEL="INFO",
        MEDIA_SWEEP_INTERVAL_SECONDS="0",
        ORPHAN_SWEEP_INTERVAL_SECONDS="0",
    )
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield url, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def logged_clients(log_path: Path, request_id: str) -> list[str]:
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return [line.get("client_ip") for line in lines if line.get("request_id") == request_id]


def test_a_real_server_believes_only_the_trusted_proxy(served: tuple[str, Path]) -> None:
    url, log_path = served
    from_proxy = httpx.Client(transport=httpx.HTTPTransport(local_address=PROXY))
    direct = httpx.Client()
    with from_proxy, direct:
        # Today's uvicorn default believed X-Forwarded-For from 127.0.0.1: no longer.
        forwarded = {"X-Forwarded-For": "198.51.100.7"}
        direct.get(f"{url}/health", headers={**forwarded, "X-Request-ID": "from-loopback"})
        from_proxy.get(f"{url}/health", headers={**forwarded, "X-Request-ID": "from-proxy"})
        time.sleep(0.2)  # let the log lines reach the file

    assert logged_clients(log_path, "from-loopback") == ["127.0.0.1"]
    assert logged_clients(log_path, "from-proxy") == ["198.51.100.7"]


# Host 0.0.0.0 (review item 13) -------------------------------------------------------------------


@pytest.fixture(scope="module")
async def wildcard_app(migrated_database_url: str, data_dir: Path) -> AsyncIterator[FastAPI]:
    """HOST=0.0.0.0 and no PUBLIC_BASE_URL, as the Dockerfile and README's multi-worker line."""
    settings = make_settings(migrated_database_url, data_dir, host=WILDCARD, public_base_url="")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def test_with_host_0_0_0_0_signed_urls_follow_the_address_the_client_used(wildcard_app):
    transport = httpx.ASGITransport(app=wildcard_app, client=("192.0.2.44", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://192.0.2.10:8000") as c:
        adult = await Factory(c).register("adult")
        memory = await samples.create_memory(c, adult)
        media = await samples.upload(c, adult, memory["id"], samples.jpeg((40, 40)), "image/jpeg")
        url = await c.get(f"{API}/storage/media/{media['id']}/url", headers=adult.headers)

    assert url.json()["access_url"].startswith("http://192.0.2.10:8000/api/v1/storage/objects/")
    assert WILDCARD not in url.text


def test_outside_a_request_a_wildcard_host_becomes_loopback():
    assert Settings(host=WILDCARD, port=8123, public_base_url="").base_url == (
        "http://127.0.0.1:8123"
    )
    assert Settings(host="::", port=8123, public_base_url="").base_url == "http://[::1]:8123"
    assert Settings(host=WILDCARD, public_base_url="https://a.example/").base_url == (
        "https://a.example"
    )


def test_serve_on_0_0_0_0_warns_and_leaves_uvicorn_no_forwarded_headers_to_believe(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, migrated_database_url: str
) -> None:
    import uvicorn

    ran: dict[str, Any] = {}
    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("HOST", WILDCARD)
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    monkeypatch.setattr(cli, "_migrate", lambda dsn: None)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: ran.update(kwargs))
    get_settings.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="timeless.cli"):
            # _serve, what `timeless serve` runs once the database is up: main would replace
            # the log handlers caplog reads, cmd_serve this process's SIGTERM handler.
            cli._serve(
                argparse.Namespace(host=None, port=8123, workers=None, no_worker=False),
                migrated_database_url,
            )
        public = os.environ.get("PUBLIC_BASE_URL", "")
    finally:
        get_settings.cache_clear()

    assert ran["host"] == WILDCARD and ran["proxy_headers"] is False
    assert WILDCARD not in public
    assert any("PUBLIC_BASE_URL is not set" in r.getMessage() for r in caplog.records)
