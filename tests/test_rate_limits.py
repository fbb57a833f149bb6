"""Rate limits (per client IP and per account) and login answers that reveal nothing.

The limiter reads a fake clock here, never the wall clock: each test starts 50 ms before a
boundary of every window the rules use and time moves only when a test moves it, so where a
real window boundary falls during the run changes nothing.
"""

import itertools
import statistics
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.adapters.rate_limit import MemoryCounterStore, RateLimiter
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import API
from tests.helpers.factories import PASSWORD, unique_email

_ip_counter = itertools.count(1)


# A multiple of every rule's window (60, 600, 900 and 3600 s): a boundary of each of them.
WINDOW_BOUNDARY = 500_000 * 3600
JUST_BEFORE_BOUNDARY = WINDOW_BOUNDARY - 0.05


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
async def limited_app_server(migrated_database_url, data_dir) -> AsyncIterator[FastAPI]:
    settings = make_settings(migrated_database_url, data_dir, rate_limit_enabled=True)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def clock(limited_app_server: FastAPI) -> FakeClock:
    """A fresh limiter on a fake clock set 50 ms before a window boundary, for each test."""
    fake = FakeClock(JUST_BEFORE_BOUNDARY)
    limiter = RateLimiter(MemoryCounterStore(clock=fake), enabled=True, clock=fake)
    limited_app_server.state.context.rate_limiter = limiter
    return fake


@pytest.fixture
def limited_app(limited_app_server: FastAPI, clock: FakeClock) -> FastAPI:
    return limited_app_server


def client_from_new_ip(app: FastAPI) -> httpx.AsyncClient:
    ip = f"203.0.113.{next(_ip_counter)}"
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def assert_429(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["detail"]


async def _register(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post(
        f"{API}/auth/register/adult",
        json={"email": email, "password": PASSWORD, "display_name": "R"},
    )
    assert response.status_code == 201, response.text


async def test_login_is_limited_per_ip(limited_app):
    async with client_from_new_ip(limited_app) as client:
        codes = []
        for _ in range(31):
            response = await client.post(
                f"{API}/auth/login", json={"email": unique_email(), "password": "whatever-123"}
            )
            codes.append(response.status_code)
        assert codes[:30] == [401] * 30
        assert_429(response)
    async with client_from_new_ip(limited_app) as other:
        fresh = await other.post(
            f"{API}/auth/login", json={"email": unique_email(), "password": "whatever-123"}
        )
        assert fresh.status_code == 401  # another IP is not affected


async def test_a_new_window_starts_at_the_boundary_and_not_before(limited_app, clock):
    async with client_from_new_ip(limited_app) as client:

        async def login() -> httpx.Response:
            return await client.post(
                f"{API}/auth/login", json={"email": unique_email(), "password": "whatever-123"}
            )

        for _ in range(30):
            assert (await login()).status_code == 401
        clock.advance(0.049)  # 1 ms before the boundary: still the spent window
        refused = await login()
        assert_429(refused)
        assert refused.headers["retry-after"] == "1"
        clock.advance(0.002)  # 1 ms past it: a fresh allowance
        for _ in range(30):
            assert (await login()).status_code == 401
        assert_429(await login())


async def test_failed_logins_hold_the_account_whoever_asks(limited_app):
    email = unique_email()
    async with client_from_new_ip(limited_app) as client:
        await _register(client, email)
    for attempt in range(10):
        async with client_from_new_ip(limited_app) as client:  # an attacker rotating IPs
            response = await client.post(
                f"{API}/auth/login", json={"email": email, "password": f"wrong-{attempt:04d}"}
            )
            assert response.status_code == 401
    async with client_from_new_ip(limited_app) as client:
        right = await client.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})
        assert_429(right)


async def test_unknown_accounts_are_held_the_same_way(limited_app):
    email = unique_email()  # never registered: the answers must not differ
    for attempt in range(10):
        async with client_from_new_ip(limited_app) as client:
            response = await client.post(
                f"{API}/auth/login", json={"email": email, "password": f"wrong-{attempt:04d}"}
            )
            assert response.status_code == 401
    async with client_from_new_ip(limited_app) as client:
        assert_429(
            await client.post(f"{API}/auth/login", json={"email": email, "password": PASSWORD})
        )


async def test_registration_is_limited_per_ip(limited_app):
    async with client_from_new_ip(limited_app) as client:
        for _ in range(10):
            await _register(client, unique_email())
        response = await client.post(
            f"{API}/auth/register/adult",
            json={"email": unique_email(), "password": PASSWORD, "display_name": "R"},
        )
        assert_429(response)


async def test_refresh_is_limited_per_ip(limited_app):
    async with client_from_new_ip(limited_app) as client:
        for _ in range(60):
            response = await client.post(f"{API}/auth/refresh", json={"refresh_token": "x" * 40})
            assert response.status_code == 401
        assert_429(await client.post(f"{API}/auth/refresh", json={"refresh_token": "x" * 40}))


async def test_invite_lookup_is_limited_per_ip(limited_app):
    async with client_from_new_ip(limited_app) as client:
        for _ in range(30):
            response = await client.get(f"{API}/invites/{'y' * 43}")
            assert response.status_code == 404
        assert_429(await client.get(f"{API}/invites/{'y' * 43}"))


async def test_invite_accept_is_limited_per_token(limited_app):
    token = "z" * 43
    for _ in range(5):
        async with client_from_new_ip(limited_app) as client:
            response = await client.post(
                f"{API}/invites/{token}/accept",
                json={"email": unique_email(), "password": PASSWORD, "display_name": "A"},
            )
            assert response.status_code == 404
    async with client_from_new_ip(limited_app) as client:
        assert_429(
            await client.post(
                f"{API}/invites/{token}/accept",
                json={"email": unique_email(), "password": PASSWORD, "display_name": "A"},
            )
        )


async def test_unknown_user_costs_the_same_time_as_a_wrong_password(
    migrated_database_url, data_dir
):
    # Production-like argon2 cost, so the hash dominates and timing would show a shortcut.
    settings = make_settings(
        migrated_database_url, data_dir, password_hash_time_cost=2, password_hash_memory_kib=32768
    )
    application = create_app(settings)
    async with (
        application.router.lifespan_context(application),
        client_from_new_ip(application) as client,
    ):
        email = unique_email()
        await _register(client, email)

        async def timed(login: str) -> float:
            started = time.perf_counter()
            response = await client.post(
                f"{API}/auth/login", json={"email": login, "password": "wrong-password-1"}
            )
            assert response.status_code == 401
            return time.perf_counter() - started

        await timed(email)  # warm-up (the dummy hash is made lazily)
        await timed(unique_email())
        known = statistics.median([await timed(email) for _ in range(5)])
        unknown = statistics.median([await timed(unique_email()) for _ in range(5)])
    # A shortcut for unknown accounts (no hash at all) would show a ratio near 0.02; the wide
    # band keeps the test steady on a busy 2-core machine.
    assert 0.25 < unknown / known < 4.0, (known, unknown)


async def _adult(app: FastAPI) -> dict[str, str]:
    async with client_from_new_ip(app) as client:
        response = await client.post(
            f"{API}/auth/register/adult",
            json={"email": unique_email(), "password": PASSWORD, "display_name": "A"},
        )
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['tokens']['access_token']}"}


async def test_provisioning_a_child_is_limited_like_registration(limited_app):
    # A taken email answers 409: without a limit, an adult could test addresses for
    # accounts as fast as they liked.
    taken = unique_email()
    async with client_from_new_ip(limited_app) as client:
        await _register(client, taken)
    headers = await _adult(limited_app)
    async with client_from_new_ip(limited_app) as client:
        for _ in range(10):
            response = await client.post(
                f"{API}/auth/provision/child",
                json={"display_name": "Kid", "email": taken},
                headers=headers,
            )
            assert response.status_code == 409, response.text
        assert_429(
            await client.post(
                f"{API}/auth/provision/child",
                json={"display_name": "Kid", "email": taken},
                headers=headers,
            )
        )


async def test_provisioning_is_limited_per_adult_whatever_the_ip(limited_app):
    headers = await _adult(limited_app)
    for _ in range(10):
        async with client_from_new_ip(limited_app) as client:
            response = await client.post(
                f"{API}/auth/provision/child",
                json={"display_name": "Kid", "email": unique_email()},
                headers=headers,
            )
            assert response.status_code == 201, response.text
    async with client_from_new_ip(limited_app) as client:
        assert_429(
            await client.post(
                f"{API}/auth/provision/child", json={"display_name": "Kid"}, headers=headers
            )
        )
