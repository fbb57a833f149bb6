"""Every credential a member can hold, and a sweep showing each one is dead.

A membership that ends (removal by an adult; leaving the family or deleting the account once
those exist) must end every way the person could still act for the family, not only the
access token in hand. `collect` gathers one of each, checking each works while it is live;
after the membership ends, `assert_all_dead` tries every one and fails with the list of those
that still work:

- the access token and refresh token of the member's first login, and of a second login;
- the login itself (email or username and password);
- the pending invites they issued (adults and grandparents), looked up and accepted;
- signed links they were given: a download URL of a photo and an upload URL not used yet;
- with `live` (a client of the app over real HTTP, `tests.helpers.sse.serve`): an open
  event stream, which must end, and an event ticket not used yet, which must open nothing.

Close what `collect` opened with `held.close()` (`assert_all_dead` does it).
"""

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.factories import Member, unique_email
from tests.helpers.sse import EventReader, open_events, stream_status

INVITING_ROLES = ("adult", "grandparent")


@dataclass
class HeldCredentials:
    member: Member
    login: str
    access_tokens: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)
    invites: list[dict[str, Any]] = field(default_factory=list)
    download_urls: list[str] = field(default_factory=list)
    upload_tickets: list[dict[str, Any]] = field(default_factory=list)
    upload_bytes: bytes = b""  # what the upload tickets were declared for
    live: httpx.AsyncClient | None = None
    streams: list[EventReader] = field(default_factory=list)
    event_tickets: list[str] = field(default_factory=list)
    opened: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def close(self) -> None:
        await self.opened.aclose()


async def collect(
    client: httpx.AsyncClient, member: Member, *, live: httpx.AsyncClient | None = None
) -> HeldCredentials:
    """One of every credential `member` can hold, each checked to work now."""
    login = member.email or member.username
    assert login, "the member needs an email or a username to log in with"
    held = HeldCredentials(member=member, login=login, live=live)
    held.access_tokens.append(member.access_token)
    held.refresh_tokens.append(member.refresh_token)

    second = await client.post(
        f"{API}/auth/login", json={"email": login, "password": member.password}
    )
    assert second.status_code == 200, second.text
    held.access_tokens.append(second.json()["access_token"])
    held.refresh_tokens.append(second.json()["refresh_token"])

    if member.role in INVITING_ROLES:
        invite = await client.post(
            f"{API}/invites",
            json={"email": unique_email("invitee"), "role": "teen"},
            headers=member.headers,
        )
        assert invite.status_code == 201, invite.text
        held.invites.append(invite.json())

    memory = await samples.create_memory(client, member, title="Still mine?", status="published")
    photo = samples.jpeg((32, 24), gps=False)
    media = await samples.upload(client, member, memory["id"], photo, "image/jpeg", "p.jpg")
    link = await client.get(f"{API}/storage/media/{media['id']}/url", headers=member.headers)
    assert link.status_code == 200, link.text
    held.download_urls.append(link.json()["access_url"])
    ticket = await samples.upload_url(
        client, member, memory["id"], "image/jpeg", file_size=len(photo)
    )
    assert ticket.status_code == 200, ticket.text
    held.upload_tickets.append(ticket.json())
    held.upload_bytes = photo

    for url in held.download_urls:
        assert (await client.get(url)).status_code == 200, url
    for token in held.access_tokens:
        me = await client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
    for invite in held.invites:
        looked_up = await client.get(f"{API}/invites/{invite['token']}")
        assert looked_up.json()["valid"] is True, looked_up.text

    if live is not None:
        ticket = await client.post(f"{API}/events/ticket", headers=member.headers)
        assert ticket.status_code == 201, ticket.text
        held.event_tickets.append(ticket.json()["ticket"])
        stream = await held.opened.enter_async_context(open_events(live, headers=member.headers))
        held.streams.append(stream)
    return held


async def assert_all_dead(client: httpx.AsyncClient, held: HeldCredentials) -> None:
    """Try every credential; fail listing each one that still works."""
    alive: list[str] = []

    for index, token in enumerate(held.access_tokens):
        me = await client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {token}"})
        if me.status_code != 401:
            alive.append(f"access token {index}: GET /auth/me → {me.status_code}")

    for index, token in enumerate(held.refresh_tokens):
        refreshed = await client.post(f"{API}/auth/refresh", json={"refresh_token": token})
        if refreshed.status_code != 401:
            alive.append(f"refresh token {index}: POST /auth/refresh → {refreshed.status_code}")

    login = await client.post(
        f"{API}/auth/login", json={"email": held.login, "password": held.member.password}
    )
    if login.status_code != 401:
        alive.append(f"login: POST /auth/login → {login.status_code}")

    for invite in held.invites:
        looked_up = await client.get(f"{API}/invites/{invite['token']}")
        if looked_up.status_code != 404 and looked_up.json().get("valid") is not False:
            alive.append(f"invite {invite['id']}: lookup says valid")
        accepted = await client.post(
            f"{API}/invites/{invite['token']}/accept",
            json={"email": invite["email"], "password": "a new passphrase", "display_name": "X"},
        )
        if accepted.status_code not in (400, 404):
            alive.append(f"invite {invite['id']}: accept → {accepted.status_code}")

    for url in held.download_urls:
        downloaded = await client.get(url)
        if downloaded.status_code != 403:
            alive.append(f"signed download URL → {downloaded.status_code}")

    for ticket in held.upload_tickets:
        sent = await samples.send_bytes(client, ticket, held.upload_bytes)
        if sent.status_code != 403:
            alive.append(f"signed upload URL → {sent.status_code}")

    try:
        for stream in held.streams:
            try:
                rest = await stream.wait_ended()
            except TimeoutError:
                alive.append("event stream: still open")
                continue
            if any(block.event is not None for block in rest):
                alive.append("event stream: sent events after the membership ended")
        for event_ticket in held.event_tickets:
            assert held.live is not None
            try:
                refused = await stream_status(held.live, params={"ticket": event_ticket})
            except AssertionError:
                alive.append("event ticket: opened a stream")
                continue
            if refused.status_code != 401:
                alive.append(f"event ticket → {refused.status_code}")
    finally:
        await held.close()

    assert not alive, "still working after the membership ended:\n" + "\n".join(alive)
