"""Live updates, GET /events (docs/api.md, "Live updates"; docs/events.md).

The session's app is served over real HTTP by an in-process uvicorn (an ASGI transport
would buffer the endless stream), and changes are made through the API as usual. "Nothing
arrives" is never asserted by waiting: a visible change made afterwards (a marker) must
be the next event, because a family's events arrive in commit order.

Several processes and servers: tests/test_events_servers.py. A database restart under an
open stream: tests/faults/test_events_restart.py.
"""

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from jose import jwt

from app.db.listener import APPLICATION_NAME
from app.errors import ServiceUnavailable, Unauthorized
from app.main import create_app
from app.models.identity import Actor, Role
from app.models.rbac import Permission
from app.services import events_service
from app.services.events_service import CloseReason, EventBroker, EventType
from tests.conftest import make_settings
from tests.helpers import API
from tests.helpers import media_samples as samples
from tests.helpers.factories import Factory, Member
from tests.helpers.sse import (
    EVENT_TIMEOUT,
    EventReader,
    ServerEvent,
    open_events,
    serve,
    stream_status,
)


@pytest.fixture(scope="module")
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


async def new_memory(client: httpx.AsyncClient, member: Member, **body: Any) -> dict[str, Any]:
    body.setdefault("title", f"Memory {uuid.uuid4().hex[:6]}")
    body.setdefault("status", "published")
    response = await client.post(f"{API}/memories", json=body, headers=member.headers)
    assert response.status_code == 201, response.text
    memory: dict[str, Any] = response.json()
    return memory


async def marker(client: httpx.AsyncClient, member: Member) -> str:
    """A change everyone in `member`'s family sees; returns the memory id to wait for."""
    return str((await new_memory(client, member, title="marker"))["id"])


def is_published(memory_id: str) -> Any:
    return lambda e: e.event == "memory.published" and e.json()["memory_id"] == memory_id


async def events_until_marker(reader: EventReader, memory_id: str) -> list[ServerEvent]:
    """Everything the stream got up to the marker, the marker excluded."""
    return (await reader.until(is_published(memory_id)))[:-1]


async def ticket_for(client: httpx.AsyncClient, member: Member) -> str:
    response = await client.post(f"{API}/events/ticket", headers=member.headers)
    assert response.status_code == 201, response.text
    ticket: str = response.json()["ticket"]
    return ticket


# Authentication ---------------------------------------------------------------------------


async def test_ticket_is_single_use_and_opens_the_stream(http, factory: Factory):
    member = (await factory.family(["adult"])).adult
    response = await http.post(f"{API}/events/ticket", headers=member.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"ticket", "expires_in"}
    assert body["expires_in"] == 60
    assert response.headers["cache-control"] == "no-store"

    async with open_events(http, params={"ticket": body["ticket"]}) as reader:
        memory_id = await marker(http, member)
        assert (await reader.until(is_published(memory_id)))[-1].json()["user_id"] == member.id

    again = await stream_status(http, params={"ticket": body["ticket"]})
    assert again.status_code == 401
    assert again.json()["code"] == "not_authenticated"


async def test_a_ticket_is_stored_hashed_and_dies_when_expired(http, factory: Factory, pg):
    member = (await factory.family(["adult"])).adult
    ticket = await ticket_for(http, member)
    stored = await pg.fetchval(
        "select count(*) from app.event_tickets where ticket_hash = $1", ticket
    )
    assert stored == 0, "the ticket itself must never be stored"
    await pg.execute(
        "update app.event_tickets set expires_at = now() - interval '1 second' where user_id = $1",
        uuid.UUID(member.id),
    )
    assert (await stream_status(http, params={"ticket": ticket})).status_code == 401


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({}, None),
        ({"Authorization": "Bearer not-a-token"}, None),
        ({}, {"ticket": "made-up-ticket"}),
    ],
)
async def test_the_stream_needs_a_member(http, headers, params):
    response = await stream_status(http, headers=headers, params=params)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_malformed_last_event_id_is_refused(http, factory: Factory):
    member = (await factory.family(["adult"])).adult
    response = await stream_status(http, headers={**member.headers, "Last-Event-ID": "yesterday"})
    assert response.status_code == 422


async def test_the_ticket_endpoint_needs_a_member(http):
    response = await http.post(f"{API}/events/ticket")
    assert response.status_code == 401


# What arrives ------------------------------------------------------------------------------


async def test_a_family_sees_memories_reactions_and_comments_as_they_happen(http, factory: Factory):
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    async with open_events(http, headers=teen.headers) as reader:
        memory = await new_memory(http, adult, title="Beach")
        memory_id = memory["id"]
        published = await reader.next_event()
        assert published.event == "memory.published"
        assert published.json() == {"memory_id": memory_id, "user_id": adult.id}

        reaction = await http.post(
            f"{API}/feed/memories/{memory_id}/reactions",
            json={"emoji": "❤️"},
            headers=adult.headers,
        )
        assert reaction.status_code == 201, reaction.text
        created = await reader.next_event()
        assert created.event == "reaction.created"
        assert created.json() == {
            "memory_id": memory_id,
            "reaction_id": reaction.json()["id"],
            "user_id": adult.id,
            "emoji": "❤️",
            "reaction_count": 1,
        }

        comment = await http.post(
            f"{API}/feed/memories/{memory_id}/comments",
            json={"content": "So nice"},
            headers=adult.headers,
        )
        assert comment.status_code == 201, comment.text
        comment_id = comment.json()["id"]
        reply = await http.post(
            f"{API}/feed/memories/{memory_id}/comments",
            json={"content": "Yes!", "parent_comment_id": comment_id},
            headers=teen.headers,
        )
        assert reply.status_code == 201, reply.text
        first, second = await reader.next_event(), await reader.next_event()
        assert (first.event, first.json()) == (
            "comment.created",
            {
                "memory_id": memory_id,
                "comment_id": comment_id,
                "parent_comment_id": None,
                "user_id": adult.id,
                "comment_count": 1,
            },
        )
        assert second.json()["parent_comment_id"] == comment_id
        assert second.json()["comment_count"] == 2

        edited = await http.put(
            f"{API}/feed/memories/{memory_id}/comments/{comment_id}",
            json={"content": "So very nice"},
            headers=adult.headers,
        )
        assert edited.status_code == 200, edited.text
        deleted = await http.delete(
            f"{API}/feed/memories/{memory_id}/comments/{comment_id}", headers=adult.headers
        )
        assert deleted.status_code == 204, deleted.text
        updated, removed = await reader.next_event(), await reader.next_event()
        assert (updated.event, updated.json()) == (
            "comment.updated",
            {"memory_id": memory_id, "comment_id": comment_id},
        )
        assert (removed.event, removed.json()) == (
            "comment.deleted",
            {"memory_id": memory_id, "comment_id": comment_id, "comment_count": 1},
        )

        unreacted = await http.delete(
            f"{API}/feed/memories/{memory_id}/reactions/{reaction.json()['id']}",
            headers=adult.headers,
        )
        assert unreacted.status_code == 204, unreacted.text
        gone = await reader.next_event()
        assert gone.event == "reaction.deleted"
        assert gone.json()["reaction_count"] == 0

        patched = await http.put(
            f"{API}/memories/{memory_id}",
            json={"title": "Beach day", "tags": ["sea"]},
            headers=adult.headers,
        )
        assert patched.status_code == 200, patched.text
        changed = await reader.next_event()
        assert changed.event == "memory.updated"
        assert changed.json() == {"memory_id": memory_id, "fields": ["title", "tags"]}

        archived = await http.put(
            f"{API}/memories/{memory_id}", json={"status": "archived"}, headers=adult.headers
        )
        assert archived.status_code == 200, archived.text
        assert (await reader.next_event()).json()["fields"] == ["status"]

        dropped = await http.delete(f"{API}/memories/{memory_id}", headers=adult.headers)
        assert dropped.status_code == 204, dropped.text
        # The memory's comments and reactions go with it; only the memory is announced.
        last = await reader.next_event()
        assert (last.event, last.json()) == ("memory.deleted", {"memory_id": memory_id})
        marker_id = await marker(http, adult)
        assert await events_until_marker(reader, marker_id) == []

        ids = [int(e.id) for e in (published, created, first, second, updated, removed, last)]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)


async def test_media_added_and_processed_are_announced(http, client, factory: Factory):
    family = await factory.family(["adult", "grandparent"])
    adult, grandparent = family.adult, family.by_role("grandparent")
    memory = await new_memory(http, adult)
    async with open_events(http, headers=grandparent.headers) as reader:
        media = await samples.upload(
            client, adult, memory["id"], samples.jpeg((64, 48)), "image/jpeg", "lake.jpg"
        )
        added = await reader.next_event()
        assert (added.event, added.json()) == (
            "memory.updated",
            {"memory_id": memory["id"], "fields": ["media"]},
        )
        processed = await reader.until(lambda e: e.event == "media.processed")
        assert processed[-1].json() == {
            "memory_id": memory["id"],
            "media_id": media["id"],
            "processing_status": "completed",
        }


async def test_members_joining_and_leaving_are_announced(http, factory: Factory):
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    async with open_events(http, headers=adult.headers) as reader:
        invite = await factory.invite(adult, "grandparent")
        accepted = await http.post(
            f"{API}/invites/{invite['token']}/accept",
            json={
                "email": invite["email"],
                "password": "correct horse battery",
                "display_name": "Granny",
            },
        )
        assert accepted.status_code == 201, accepted.text
        joined = await reader.next_event()
        assert (joined.event, joined.json()) == (
            "member.joined",
            {
                "user_id": accepted.json()["user_id"],
                "display_name": "Granny",
                "role": "grandparent",
            },
        )

        pet = await http.post(
            f"{API}/auth/register/pet", json={"display_name": "Rex"}, headers=adult.headers
        )
        assert pet.status_code == 201, pet.text
        pet_joined = await reader.next_event()
        assert pet_joined.json() == {
            "user_id": pet.json()["pet_id"],
            "display_name": "Rex",
            "role": "pet",
        }

        removed = await http.delete(f"{API}/families/me/members/{teen.id}", headers=adult.headers)
        assert removed.status_code == 204, removed.text
        left = await reader.next_event()
        assert (left.event, left.json()) == ("member.removed", {"user_id": teen.id})


# Who sees what -------------------------------------------------------------------------------


async def test_a_draft_is_announced_only_to_its_author_until_published(http, factory: Factory):
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    async with (
        open_events(http, headers=adult.headers) as author_stream,
        open_events(http, headers=teen.headers) as other_stream,
    ):
        draft = await new_memory(http, adult, title="Secret", status="draft")
        draft_id = draft["id"]
        edited = await http.put(
            f"{API}/memories/{draft_id}", json={"title": "Still secret"}, headers=adult.headers
        )
        assert edited.status_code == 200, edited.text
        reacted = await http.post(
            f"{API}/feed/memories/{draft_id}/reactions",
            json={"emoji": "🎉"},
            headers=adult.headers,
        )
        assert reacted.status_code == 201, reacted.text
        commented = await http.post(
            f"{API}/feed/memories/{draft_id}/comments",
            json={"content": "note to self"},
            headers=adult.headers,
        )
        assert commented.status_code == 201, commented.text
        marker_id = await marker(http, adult)

        assert await events_until_marker(other_stream, marker_id) == []
        own = await events_until_marker(author_stream, marker_id)
        assert [e.event for e in own] == ["memory.updated", "reaction.created", "comment.created"]
        assert all(e.json()["memory_id"] == draft_id for e in own)

        published = await http.put(
            f"{API}/memories/{draft_id}", json={"status": "published"}, headers=adult.headers
        )
        assert published.status_code == 200, published.text
        for stream in (author_stream, other_stream):
            event = await stream.next_event()
            assert (event.event, event.json()) == (
                "memory.published",
                {"memory_id": draft_id, "user_id": adult.id},
            )

        # A draft deleted: only its author hears of it.
        other_draft = await new_memory(http, adult, status="draft")
        dropped = await http.delete(f"{API}/memories/{other_draft['id']}", headers=adult.headers)
        assert dropped.status_code == 204, dropped.text
        marker_id = await marker(http, adult)
        assert await events_until_marker(other_stream, marker_id) == []
        own = await events_until_marker(author_stream, marker_id)
        assert [(e.event, e.json()) for e in own] == [
            ("memory.deleted", {"memory_id": other_draft["id"]})
        ]


async def test_another_familys_events_never_arrive(http, factory: Factory):
    ours = (await factory.family(["adult"])).adult
    theirs_family = await factory.family(["adult", "teen"])
    theirs = theirs_family.adult
    async with open_events(http, headers=ours.headers) as reader:
        memory = await new_memory(http, theirs)
        await http.post(
            f"{API}/feed/memories/{memory['id']}/comments",
            json={"content": "hi"},
            headers=theirs.headers,
        )
        await http.delete(
            f"{API}/families/me/members/{theirs_family.by_role('teen').id}",
            headers=theirs.headers,
        )
        marker_id = await marker(http, ours)
        assert await events_until_marker(reader, marker_id) == []


async def test_events_for_some_roles_reach_only_them(http, factory: Factory, pg):
    """`publish(permission=...)`: the export events of the archive work use it."""
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    async with (
        open_events(http, headers=adult.headers) as adult_stream,
        open_events(http, headers=teen.headers) as teen_stream,
    ):
        async with pg.acquire() as conn, conn.transaction():
            await events_service.publish(
                conn,
                uuid.UUID(family.id),
                EventType.EXPORT_PROGRESS,
                {
                    "export_id": uuid.uuid4(),
                    "status": "running",
                    "progress": {"files_done": 1, "files_total": 4, "bytes_done": 10},
                },
                permission=Permission.INVITE_MEMBERS,
            )
        marker_id = await marker(http, adult)
        assert await events_until_marker(teen_stream, marker_id) == []
        seen = await events_until_marker(adult_stream, marker_id)
        assert [e.event for e in seen] == ["export.progress"]
        assert seen[0].json()["progress"]["files_total"] == 4


async def test_a_change_that_rolls_back_announces_nothing(http, factory: Factory, pg):
    member = (await factory.family(["adult"])).adult
    async with open_events(http, headers=member.headers) as reader:
        with contextlib.suppress(RuntimeError):
            async with pg.acquire() as conn, conn.transaction():
                await conn.execute(
                    "insert into public.memories (family_unit_id, user_id, title, status)"
                    " values ($1, $2, 'never', 'published')",
                    uuid.UUID(member.family_id),
                    uuid.UUID(member.id),
                )
                raise RuntimeError("roll back")
        marker_id = await marker(http, member)
        assert await events_until_marker(reader, marker_id) == []


# Resuming ------------------------------------------------------------------------------------


async def test_last_event_id_replays_what_was_missed_and_then_goes_on_live(http, factory: Factory):
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    async with open_events(http, headers=teen.headers) as reader:
        first = await new_memory(http, adult)
        seen = await reader.until(is_published(first["id"]))
    last_id = seen[-1].id
    assert last_id is not None

    # Missed while away: two visible changes, and one about a draft the teen may not see.
    missed = [await new_memory(http, adult) for _ in range(2)]
    draft = await new_memory(http, adult, status="draft")
    await http.put(f"{API}/memories/{draft['id']}", json={"title": "x"}, headers=adult.headers)
    await http.post(
        f"{API}/feed/memories/{missed[0]['id']}/reactions",
        json={"emoji": "👍"},
        headers=adult.headers,
    )

    async with open_events(http, headers=teen.headers, last_event_id=last_id) as reader:
        replayed = [await reader.next_event() for _ in range(3)]
        assert [(e.event, e.json()["memory_id"]) for e in replayed] == [
            ("memory.published", missed[0]["id"]),
            ("memory.published", missed[1]["id"]),
            ("reaction.created", missed[0]["id"]),
        ]
        ids = [int(last_id)] + [int(e.id) for e in replayed]
        assert ids == sorted(ids)
        live = await new_memory(http, adult)
        assert (await reader.next_event()).json()["memory_id"] == live["id"]


async def test_a_stream_that_saw_nothing_still_resumes_where_it_began(http, factory: Factory):
    """The server sends an id-only block first, so even a quiet stream has a Last-Event-ID."""
    family = await factory.family(["adult", "child"])
    adult, child = family.adult, family.by_role("child")
    async with open_events(http, headers=child.headers) as reader:
        blocks = [await reader.next(), await reader.next()]
    assert blocks[0].retry is not None
    resume_from = blocks[1].id
    assert resume_from is not None and blocks[1].event is None

    memory = await new_memory(http, adult)
    async with open_events(http, headers=child.headers, last_event_id=resume_from) as reader:
        assert (await reader.next_event()).json()["memory_id"] == memory["id"]


# Streams that must end -----------------------------------------------------------------------


async def test_a_removed_members_stream_ends_at_once_and_their_ticket_dies(http, factory: Factory):
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    spare_ticket = await ticket_for(http, teen)
    async with (
        open_events(http, headers=teen.headers) as bearer_stream,
        open_events(http, params={"ticket": await ticket_for(http, teen)}) as ticket_stream,
        open_events(http, headers=adult.headers) as adult_stream,
    ):
        removed = await http.delete(f"{API}/families/me/members/{teen.id}", headers=adult.headers)
        assert removed.status_code == 204, removed.text
        for stream in (bearer_stream, ticket_stream):
            rest = await stream.wait_ended()
            assert [e for e in rest if e.event is not None] == [], "nothing after the removal"
        assert (await adult_stream.next_event()).event == "member.removed"
    refused = await stream_status(http, params={"ticket": spare_ticket})
    assert refused.status_code == 401


async def test_logging_out_ends_the_stream_of_that_login_only(http, factory: Factory):
    member = (await factory.family(["adult"])).adult
    other_login = await factory.login(member.email)
    other = Member(**{**member.__dict__, "access_token": other_login["access_token"]})
    async with (
        open_events(http, headers=member.headers) as ending,
        open_events(http, headers=other.headers) as staying,
    ):
        out = await http.post(f"{API}/auth/logout", headers=member.headers)
        assert out.status_code == 204
        await ending.wait_ended()
        memory_id = await marker(http, other)
        assert await events_until_marker(staying, memory_id) == []


async def test_a_stream_cannot_start_for_a_login_that_just_ended(app, factory: Factory):
    """Registering re-checks the login: a logout between the token check and the stream's
    registration (no notification can reach a stream not yet registered) is caught."""
    member = (await factory.family(["adult"])).adult
    claims = jwt.get_unverified_claims(member.access_token)
    actor = Actor(
        id=uuid.UUID(member.id),
        family_unit_id=uuid.UUID(member.family_id),
        role=Role.ADULT,
        display_name="Ann",
        session_id=uuid.UUID(claims["sid"]),
    )
    out = await factory.client.post(f"{API}/auth/logout", headers=member.headers)
    assert out.status_code == 204
    broker = app.state.context.events
    with pytest.raises(Unauthorized) as refused:
        await events_service.open_stream(broker, actor, last_event_id=None)
    assert refused.value.code == "token_revoked"
    assert broker.subscribers_of(actor.id) == []


# A slow reader ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def small_queue_http(migrated_database_url, data_dir) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(migrated_database_url, data_dir, events_queue_size=3)
    application = create_app(settings)
    async with (
        application.router.lifespan_context(application),
        serve(application) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield client


async def test_a_stream_that_falls_behind_is_dropped_with_a_retry_hint_and_catches_up(
    small_queue_http, factory: Factory, pg
):
    member = (await factory.family(["adult"])).adult
    family_id = uuid.UUID(member.family_id)
    async with open_events(small_queue_http, headers=member.headers) as reader:
        start = [await reader.next(), await reader.next()]
        resume_from = start[1].id
        # Ten events committed at once reach the stream as one batch: more than its queue.
        async with pg.acquire() as conn, conn.transaction():
            for n in range(10):
                await events_service.publish(
                    conn,
                    family_id,
                    EventType.EXPORT_PROGRESS,
                    {"export_id": str(n), "status": "running", "progress": {}},
                )
        rest = await reader.wait_ended()
    assert [e for e in rest if e.event is not None] == []
    assert rest[-1].retry is not None, "a dropped stream says when to come back"

    async with open_events(
        small_queue_http, headers=member.headers, last_event_id=resume_from
    ) as reader:
        replayed = [await reader.next_event() for _ in range(10)]
    assert [e.json()["export_id"] for e in replayed] == [str(n) for n in range(10)]


# Housekeeping --------------------------------------------------------------------------------


async def test_old_events_and_spent_tickets_are_purged(app, factory: Factory, pg):
    member = (await factory.family(["adult"])).adult
    family_id = uuid.UUID(member.family_id)
    await pg.execute(
        "select app.publish_live_event($1, 'export.ready', '{\"n\": \"old\"}'::jsonb)", family_id
    )
    await pg.execute(
        "select app.publish_live_event($1, 'export.ready', '{\"n\": \"new\"}'::jsonb)", family_id
    )
    await pg.execute(
        "update app.live_events set created_at = now() - interval '2 hours'"
        " where family_unit_id = $1 and data ->> 'n' = 'old'",
        family_id,
    )
    deleted = await app.state.context.events.purge()
    assert deleted >= 1
    left = await pg.fetch(
        "select data ->> 'n' as n from app.live_events where family_unit_id = $1 and type ="
        " 'export.ready'",
        family_id,
    )
    assert [row["n"] for row in left] == ["new"]


# The listener ----------------------------------------------------------------------------------


async def test_what_happens_while_the_listener_reconnects_is_not_lost(
    app, http, factory: Factory, pg
):
    """Notifications sent while the LISTEN connection is down are lost; the broker catches up
    from the table once it is back, and ends streams whose login ended meanwhile."""
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    second_login = await factory.login(teen.email)
    second = Member(**{**teen.__dict__, "access_token": second_login["access_token"]})
    listener = app.state.context.events.listener
    connections = listener.connections
    async with (
        open_events(http, headers=teen.headers) as staying,
        open_events(http, headers=second.headers) as ending,
    ):
        killed = await pg.fetchval(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity"
            " where application_name = $1",
            f"{APPLICATION_NAME}:{os.getpid()}",
        )
        assert killed >= 1  # this app's listener (and any other app this process runs)
        # Made at once, before the listener can be back: their notifications are lost.
        memory = await new_memory(http, adult)
        assert (await http.post(f"{API}/auth/logout", headers=second.headers)).status_code == 204

        assert (await staying.until(is_published(memory["id"])))[-1].event
        await ending.wait_ended()
    assert listener.connections > connections


async def test_a_removed_members_stream_without_a_login_session_ends_too(
    app, http, factory: Factory
):
    """Supabase Auth tokens name no login session: the member.removed event ends the stream."""
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")
    actor = Actor(
        id=uuid.UUID(teen.id),
        family_unit_id=uuid.UUID(family.id),
        role=Role.TEEN,
        display_name="Teen",
        session_id=None,
    )
    stream = await events_service.open_stream(app.state.context.events, actor, last_event_id=None)
    try:
        removed = await http.delete(f"{API}/families/me/members/{teen.id}", headers=adult.headers)
        assert removed.status_code == 204, removed.text
        async with asyncio.timeout(EVENT_TIMEOUT):
            chunks = [chunk async for chunk in stream.chunks()]
        assert not any(b"event:" in chunk for chunk in chunks)
        assert stream.subscriber.closed is CloseReason.REMOVED
    finally:
        stream.close()


async def test_a_stopping_broker_ends_its_streams_and_takes_no_new_ones(app, factory: Factory):
    member = (await factory.family(["adult"])).adult
    claims = jwt.get_unverified_claims(member.access_token)
    actor = Actor(
        id=uuid.UUID(member.id),
        family_unit_id=uuid.UUID(member.family_id),
        role=Role.ADULT,
        display_name="Ann",
        session_id=uuid.UUID(claims["sid"]),
    )
    context = app.state.context
    broker = EventBroker(context.database, context.settings.database_url.get_secret_value())
    broker.start()
    try:
        stream = await events_service.open_stream(broker, actor, last_event_id=None)
        broker.close_streams()
        async with asyncio.timeout(EVENT_TIMEOUT):
            chunks = [chunk async for chunk in stream.chunks()]
        assert chunks[-1].startswith(b"retry: ")
        assert stream.subscriber.closed is CloseReason.SHUTDOWN
        with pytest.raises(ServiceUnavailable):
            await events_service.open_stream(broker, actor, last_event_id=None)
        assert broker.stream_count == 0
    finally:
        await broker.stop()


async def test_a_member_cannot_publish_events_or_write_tickets_with_sql(factory: Factory, pg):
    """As Supabase's Data API would let a member's token: no forged events, no own tickets."""
    member = (await factory.family(["adult"])).adult
    claims = json.dumps({"sub": member.id, "role": "authenticated"})
    statements = [
        "select app.publish_live_event($1, 'member.removed', '{}'::jsonb)",
        "insert into app.event_tickets (ticket_hash, user_id, expires_at)"
        " values ('x', $1, now() + interval '1 year')",
        "select count(*) from app.live_events where family_unit_id = $1",
    ]
    for statement in statements:
        async with pg.acquire() as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(
                        "select set_config('role', 'authenticated', true),"
                        " set_config('request.jwt.claims', $1, true)",
                        claims,
                    )
                    arg = uuid.UUID(member.family_id if "family" in statement else member.id)
                    await conn.execute(statement, arg)
