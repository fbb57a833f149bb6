"""Build families through the real API: `await factory.family(["adult", "teen"])`."""

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

PASSWORD = "correct horse battery"
_counter = itertools.count()


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


@dataclass
class Member:
    id: str
    role: str
    family_id: str
    access_token: str
    refresh_token: str
    email: str | None = None
    username: str | None = None
    password: str = PASSWORD

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class Family:
    id: str
    members: list[Member] = field(default_factory=list)

    def by_role(self, role: str) -> Member:
        return next(m for m in self.members if m.role == role)

    @property
    def adult(self) -> Member:
        return self.by_role("adult")


def _member(registered: dict[str, Any], password: str) -> Member:
    """A Member from a 201 registration response (register, accept invite)."""
    return Member(
        id=registered["user_id"],
        role=registered["role"],
        family_id=registered["family_unit_id"],
        access_token=registered["tokens"]["access_token"],
        refresh_token=registered["tokens"]["refresh_token"],
        email=registered["email"],
        password=password,
    )


class Factory:
    def __init__(self, client: httpx.AsyncClient):
        self.client = client

    async def register(self, role: str = "adult", **body: Any) -> Member:
        body.setdefault("email", unique_email(role))
        body.setdefault("password", PASSWORD)
        body.setdefault("display_name", f"{role.title()} {next(_counter)}")
        response = await self.client.post(f"/api/v1/auth/register/{role}", json=body)
        assert response.status_code == 201, response.text
        return _member(response.json(), body["password"])

    async def invite(self, inviter: Member, role: str, email: str | None = None) -> dict[str, Any]:
        response = await self.client.post(
            "/api/v1/invites",
            json={"email": email or unique_email(role), "role": role},
            headers=inviter.headers,
        )
        assert response.status_code == 201, response.text
        invite: dict[str, Any] = response.json()
        return invite

    async def join(self, inviter: Member, role: str) -> Member:
        """A new member joins the inviter's family (children are provisioned)."""
        if role == "child":
            return await self.provision_child(inviter)
        invite = await self.invite(inviter, role)
        response = await self.client.post(
            f"/api/v1/invites/{invite['token']}/accept",
            json={
                "email": invite["email"],
                "password": PASSWORD,
                "display_name": f"{role.title()} {next(_counter)}",
            },
        )
        assert response.status_code == 201, response.text
        return _member(response.json(), PASSWORD)

    async def provision_child(self, adult: Member) -> Member:
        response = await self.client.post(
            "/api/v1/auth/provision/child",
            json={"display_name": f"Child {next(_counter)}"},
            headers=adult.headers,
        )
        assert response.status_code == 201, response.text
        child = response.json()
        tokens = await self.login(child["username"], child["password"])
        return Member(
            id=child["user_id"],
            role="child",
            family_id=child["family_unit_id"],
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            username=child["username"],
            password=child["password"],
        )

    async def login(self, login: str, password: str = PASSWORD) -> dict[str, Any]:
        response = await self.client.post(
            "/api/v1/auth/login", json={"email": login, "password": password}
        )
        assert response.status_code == 200, response.text
        tokens: dict[str, Any] = response.json()
        return tokens

    async def family(self, roles: list[str] | None = None) -> Family:
        """A family founded by an adult, with one more member per extra role given."""
        roles = roles if roles is not None else ["adult", "teen", "child", "grandparent"]
        founder = await self.register("adult")
        family = Family(id=founder.family_id, members=[founder])
        extra = list(roles)
        if "adult" in extra:
            extra.remove("adult")
        for role in extra:
            family.members.append(await self.join(founder, role))
        return family
