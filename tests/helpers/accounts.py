"""What the account tests share: logins, the check that a set of logins is dead, and a founder
and invites made through the API alone (for tests that run their own app)."""

from dataclasses import dataclass
from typing import Any

import httpx

from tests.helpers import API
from tests.helpers.factories import PASSWORD, unique_email


@dataclass(frozen=True)
class Login:
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    @classmethod
    def of(cls, tokens: dict[str, Any]) -> "Login":
        return cls(tokens["access_token"], tokens["refresh_token"])


async def sign_in(
    client: httpx.AsyncClient, login: str, password: str, user_agent: str | None = None
) -> Login:
    headers = {"User-Agent": user_agent} if user_agent else {}
    response = await client.post(
        f"{API}/auth/login", json={"email": login, "password": password}, headers=headers
    )
    assert response.status_code == 200, response.text
    return Login.of(response.json())


async def assert_dead(client: httpx.AsyncClient, *logins: Login) -> None:
    """Each login's access token is refused at once, and its refresh token buys nothing."""
    for login in logins:
        me = await client.get(f"{API}/auth/me", headers=login.headers)
        assert me.status_code == 401, me.text
        refreshed = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": login.refresh_token}
        )
        assert refreshed.status_code == 401, refreshed.text


async def assert_alive(client: httpx.AsyncClient, login: Login) -> None:
    me = await client.get(f"{API}/auth/me", headers=login.headers)
    assert me.status_code == 200, me.text


async def register_founder(client: httpx.AsyncClient, name: str = "Founder") -> dict[str, Any]:
    """A new adult with a family of their own: the registration's answer (tokens in it)."""
    body = {"email": unique_email(), "password": PASSWORD, "display_name": name}
    response = await client.post(f"{API}/auth/register/adult", json=body)
    assert response.status_code == 201, response.text
    registered: dict[str, Any] = response.json()
    return registered


async def create_invite(
    client: httpx.AsyncClient, founder: dict[str, Any], role: str
) -> dict[str, Any]:
    """An invite by `founder` (a `register_founder` answer) for `role`, to a new address."""
    response = await client.post(
        f"{API}/invites",
        json={"email": unique_email(), "role": role},
        headers={"Authorization": f"Bearer {founder['tokens']['access_token']}"},
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
