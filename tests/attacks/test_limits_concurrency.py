"""Rate limits hold under concurrency: N requests at once get what N in a row would.

The review sent 25 wrong passwords for one account at once: all 25 had their password
checked (the failure was counted after the ~150 ms hash), so the "10 failed logins per 15
minutes" limit did not hold. Each attempt is now counted before it runs, atomically, and
given back only when it did not fail; at most the limit's number of password checks run per
window, whatever the concurrency.

Then every limited endpoint gets a burst of concurrent requests a few over its allowance:
exactly the allowance gets through. `test_every_limited_endpoint_is_covered` enumerates the
limited routes from the app itself, so a new one fails until it has a burst here.
"""

import asyncio
import inspect
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.adapters import rate_limit
from app.adapters.auth.provider import AuthProvider
from app.api import deps
from app.api.openapi import api_routes
from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import API
from tests.helpers.accounts import create_invite, register_founder
from tests.helpers.factories import PASSWORD, unique_email

_addresses = itertools.count(1)


@pytest.fixture(scope="module")
async def limited_app(migrated_database_url, data_dir) -> AsyncIterator[FastAPI]:
    # The default pool: bursts larger than it wait their turn (tests/attacks/
    # test_pool_exhaustion.py shows account creations need one connection each).
    settings = make_settings(migrated_database_url, data_dir, rate_limit_enabled=True)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def from_new_ip(app: FastAPI) -> httpx.AsyncClient:
    """A client at an address no other test used (an attacker has as many as they like)."""
    n = next(_addresses)
    transport = httpx.ASGITransport(app=app, client=(f"10.77.{n // 250}.{n % 250 + 1}", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


class CountingProvider:
    """The real auth provider, counting the password checks that actually run."""

    def __init__(self, inner: AuthProvider):
        self.inner = inner
        self.checks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # every other method, as it is

    async def check_password(self, **kwargs: Any) -> bool:
        self.checks += 1
        return await self.inner.check_password(**kwargs)


@pytest.fixture
def counting(limited_app: FastAPI) -> Any:
    context = limited_app.state.context
    real = context.auth_provider
    context.auth_provider = counter = CountingProvider(real)
    yield counter
    context.auth_provider = real


Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def at_once(count: int, send: Send, app: FastAPI, *, same_ip: bool) -> Counter[int]:
    """`count` requests in flight together; the status codes they got."""
    clients = [from_new_ip(app)] if same_ip else [from_new_ip(app) for _ in range(count)]
    try:
        responses = await asyncio.gather(
            *(send(clients[0 if same_ip else i], i) for i in range(count))
        )
    finally:
        for client in clients:
            await client.aclose()
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["code"] == "rate_limited"
    return Counter(response.status_code for response in responses)


async def register(app: FastAPI) -> dict[str, Any]:
    async with from_new_ip(app) as client:
        return await register_founder(client, "Victim")


async def invite(app: FastAPI, adult: dict[str, Any], role: str) -> dict[str, Any]:
    async with from_new_ip(app) as client:
        return await create_invite(client, adult, role)


# Failed attempts per account and per invite ---------------------------------------------------


async def test_25_parallel_wrong_passwords_run_at_most_10_password_checks(limited_app, counting):
    victim = await register(limited_app)
    limit = rate_limit.FAILED_LOGINS_PER_ACCOUNT.requests

    async def wrong(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(
            f"{API}/auth/login", json={"email": victim["email"], "password": f"wrong-{i:06d}"}
        )

    codes = await at_once(25, wrong, limited_app, same_ip=False)

    assert counting.checks == limit
    assert codes == {401: limit, 429: 25 - limit}
    async with from_new_ip(limited_app) as client:
        held = await client.post(
            f"{API}/auth/login", json={"email": victim["email"], "password": PASSWORD}
        )
    assert held.status_code == 429  # the account is held for the rest of the window
    assert counting.checks == limit


async def test_right_passwords_at_once_all_get_in(limited_app, counting):
    # Counting before checking must not lock out the account's owner: a success gives its
    # attempt back.
    victim = await register(limited_app)

    async def right(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(
            f"{API}/auth/login", json={"email": victim["email"], "password": PASSWORD}
        )

    for _ in range(3):
        assert await at_once(8, right, limited_app, same_ip=False) == {200: 8}


@pytest.mark.parametrize("route", ["invite_accept", "register_child"])
async def test_parallel_attempts_on_one_invite_are_held_at_the_limit(limited_app, route):
    adult = await register(limited_app)
    target = await invite(limited_app, adult, "child")
    limit = rate_limit.ACCEPTS_PER_INVITE.requests

    async def wrong_email(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {"email": unique_email(), "password": PASSWORD, "display_name": "Guess"}
        if route == "invite_accept":
            return await client.post(f"{API}/invites/{target['token']}/accept", json=body)
        body["invite_token"] = target["token"]
        return await client.post(f"{API}/auth/register/child", json=body)

    codes = await at_once(15, wrong_email, limited_app, same_ip=False)

    assert codes == {400: limit, 429: 15 - limit}


# Every per-IP and per-member allowance, in one burst -------------------------------------------


def _body(route: str) -> Send:
    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        if route == "login":
            body = {"email": unique_email(), "password": "wrong-password"}
            return await client.post(f"{API}/auth/login", json=body)
        if route == "register":
            body = {"email": unique_email(), "password": PASSWORD, "display_name": "R"}
            return await client.post(f"{API}/auth/register/adult", json=body)
        if route == "refresh":
            return await client.post(f"{API}/auth/refresh", json={"refresh_token": "x" * 43})
        if route == "invite_lookup":
            return await client.get(f"{API}/invites/{'y' * 43}")
        if route == "invite_accept":
            body = {"email": unique_email(), "password": PASSWORD, "display_name": "A"}
            return await client.post(f"{API}/invites/{'z' * 42}{i % 10}/accept", json=body)
        if route == "register_child":
            body = {
                "invite_token": f"{'w' * 42}{i % 10}",
                "password": PASSWORD,
                "display_name": "C",
            }
            return await client.post(f"{API}/auth/register/child", json=body)
        if route == "password_reset":  # addresses with no account: nothing is mailed
            return await client.post(f"{API}/auth/password-reset", json={"email": unique_email()})
        if route == "password_reset_confirm":
            body = {"token": f"{'v' * 42}{i % 10}", "new_password": "a new passphrase"}
            return await client.post(f"{API}/auth/password-reset/confirm", json=body)
        raise AssertionError(route)

    return send


# Route name → (rule, the answer each allowed request gets).
PER_IP_BURSTS = {
    "login": ("login", 401),
    "register_adult": ("register", 201),
    "refresh": ("refresh", 401),
    "lookup_invite": ("invite_lookup", 404),
    "accept_invite": ("invite_accept", 404),
    "register_child": ("invite_accept", 404),
    "provision_child": ("provision_child", 201),
    "request_password_reset": ("password_reset", 202),
    "confirm_password_reset": ("password_reset_confirm", 400),
}
_SENDERS = {
    "login": "login",
    "register_adult": "register",
    "refresh": "refresh",
    "lookup_invite": "invite_lookup",
    "accept_invite": "invite_accept",
    "register_child": "register_child",
    "request_password_reset": "password_reset",
    "confirm_password_reset": "password_reset_confirm",
}


@pytest.mark.parametrize("route", sorted(PER_IP_BURSTS))
async def test_a_burst_from_one_ip_gets_exactly_the_allowance(limited_app, route):
    rule, allowed_status = PER_IP_BURSTS[route]
    allowance = rate_limit.PER_IP[rule].requests
    if route == "provision_child":
        # One adult per request, so only the per-IP allowance is in play.
        adults = [await register(limited_app) for _ in range(allowance + 5)]

        async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
            token = adults[i]["tokens"]["access_token"]
            return await client.post(
                f"{API}/auth/provision/child",
                json={"display_name": "Kid"},
                headers={"Authorization": f"Bearer {token}"},
            )
    else:
        send = _body(_SENDERS[route])

    codes = await at_once(allowance + 5, send, limited_app, same_ip=True)

    assert codes == {allowed_status: allowance, 429: 5}


async def test_a_burst_from_one_adult_gets_exactly_the_allowance(limited_app):
    adult = await register(limited_app)
    headers = {"Authorization": f"Bearer {adult['tokens']['access_token']}"}
    allowance = rate_limit.PER_MEMBER["provision_child"].requests

    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(
            f"{API}/auth/provision/child", json={"display_name": "Kid"}, headers=headers
        )

    codes = await at_once(allowance + 5, send, limited_app, same_ip=False)

    assert codes == {201: allowance, 429: 5}


async def test_a_burst_of_resets_for_one_address_gets_exactly_its_allowance(limited_app):
    email = unique_email("nobody")  # counted alike whether or not it has an account
    allowance = rate_limit.RESETS_PER_EMAIL.requests

    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(f"{API}/auth/password-reset", json={"email": email})

    codes = await at_once(allowance + 5, send, limited_app, same_ip=False)

    assert codes == {202: allowance, 429: 5}


async def test_25_parallel_wrong_current_passwords_run_at_most_10_checks(limited_app, counting):
    # A stolen access token guessing the password through POST /auth/password is held like
    # failed logins, concurrency or not.
    victim = await register(limited_app)
    headers = {"Authorization": f"Bearer {victim['tokens']['access_token']}"}
    limit = rate_limit.FAILED_PASSWORD_CHANGES_PER_ACCOUNT.requests

    async def wrong(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {"current_password": f"wrong-{i:06d}", "new_password": "a new passphrase"}
        return await client.post(f"{API}/auth/password", json=body, headers=headers)

    codes = await at_once(25, wrong, limited_app, same_ip=False)

    assert counting.checks == limit
    assert codes == {400: limit, 429: 25 - limit}


# Coverage: every limited route is in a burst above ----------------------------------------------

# Limits counted inside a handler rather than by a dependency, each with its test above:
# failed attempts per account or invite token; per address; registration counted once valid.
FAILED_ATTEMPT_ROUTES = {"login", "accept_invite", "register_child", "change_password"}
IN_HANDLER_HITS = {"request_password_reset"}  # ...per_address (RESETS_PER_EMAIL)
COUNTED_WHEN_VALID = {"register_adult", "register_teen", "register_grandparent"}


def _dependency_limits(route: APIRoute) -> set[str]:
    """The route's limit dependencies, as `ip:<rule>` and `member:<rule>`."""
    rules = set()
    for depends in route.dependencies:
        call = depends.dependency
        if isinstance(call, deps.PerIpLimit):
            rules.add(f"ip:{call.rule}")
        if isinstance(call, deps.PerMemberLimit):
            rules.add(f"member:{call.rule}")
    return rules


def _handler_limits(route: APIRoute) -> set[str]:
    source = inspect.getsource(route.endpoint)
    kinds = {
        "failed_attempts": "failed_attempts_limited(",
        "hit": "rate_limiter.",
        "count_per_ip": "count_per_ip(",
    }
    return {kind for kind, needle in kinds.items() if needle in source}


def test_every_limited_endpoint_is_covered(limited_app):
    routes = [route.original_route for route in api_routes(limited_app)]
    by_dependency = {r.name: _dependency_limits(r) for r in routes if _dependency_limits(r)}
    in_handler = {r.name: _handler_limits(r) for r in routes if _handler_limits(r)}

    # The founding registrations share one handler and one rule: register_adult's burst
    # covers register_teen and register_grandparent.
    covered = set(PER_IP_BURSTS) | COUNTED_WHEN_VALID
    limited = set(by_dependency) | set(in_handler)
    assert limited <= covered | FAILED_ATTEMPT_ROUTES, f"never burst: {limited - covered}"
    for name, (rule, _) in PER_IP_BURSTS.items():
        if name not in COUNTED_WHEN_VALID:
            assert f"ip:{rule}" in by_dependency.get(name, set()), (name, by_dependency.get(name))
    member_limited = {n for n, rules in by_dependency.items() if any("member:" in r for r in rules)}
    assert member_limited == {"provision_child"}  # test_a_burst_from_one_adult_...
    assert {n for n, k in in_handler.items() if "failed_attempts" in k} == FAILED_ATTEMPT_ROUTES
    assert {n for n, k in in_handler.items() if "hit" in k} == IN_HANDLER_HITS
    assert {n for n, k in in_handler.items() if "count_per_ip" in k} == COUNTED_WHEN_VALID
