"""Analytics: each action emits exactly its event; analytics trouble never touches requests;
the summary equals counts taken straight from the base tables."""

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.db.postgres import Database
from app.services.analytics_service import AnalyticsRecorder, EventType
from tests.helpers import API
from tests.helpers.factories import PASSWORD, unique_email


async def flushed_events(app, pg, family_id: str) -> list[tuple[str, str | None]]:
    await app.state.context.analytics.flush()
    rows = await pg.fetch(
        "select event_type, user_id::text from public.analytics_events"
        ' where family_unit_id = $1 order by "timestamp", event_id',
        uuid.UUID(family_id),
    )
    return [(row["event_type"], row["user_id"]) for row in rows]


async def test_account_actions_emit_their_events(app, client, factory, pg):
    adult = await factory.register("adult")
    await factory.login(adult.email)
    invite = await factory.invite(adult, "teen")
    joined = await client.post(
        f"{API}/invites/{invite['token']}/accept",
        json={"email": invite["email"], "password": PASSWORD, "display_name": "T"},
    )
    teen_id = joined.json()["user_id"]
    child = await client.post(
        f"{API}/auth/provision/child", json={"display_name": "Kid"}, headers=adult.headers
    )
    await client.post(
        f"{API}/auth/register/pet", json={"display_name": "Rex"}, headers=adult.headers
    )
    await client.post(f"{API}/auth/logout", headers=adult.headers)

    events = await flushed_events(app, pg, adult.family_id)
    assert events == [
        ("user_registered", adult.id),
        ("user_logged_in", adult.id),
        ("invite_created", adult.id),
        ("user_registered", teen_id),
        ("invite_accepted", teen_id),
        ("child_provisioned", adult.id),
        ("pet_created", adult.id),
        ("user_logged_out", adult.id),
    ]
    metadata = await pg.fetchval(
        "select metadata from public.analytics_events where family_unit_id = $1"
        " and event_type = 'child_provisioned'",
        uuid.UUID(adult.family_id),
    )
    assert metadata == {"child_id": child.json()["user_id"]}


async def test_event_metadata_never_holds_secrets(app, client, factory, pg):
    adult = await factory.register("adult")
    invite = await factory.invite(adult, "adult")
    await flushed_events(app, pg, adult.family_id)
    texts = await pg.fetch(
        "select metadata::text as m from public.analytics_events where family_unit_id = $1",
        uuid.UUID(adult.family_id),
    )
    for row in texts:
        for secret in (invite["token"], adult.access_token, adult.refresh_token, PASSWORD):
            assert secret not in row["m"]


async def test_a_family_never_reads_another_familys_events(app, client, factory, pg):
    a = await factory.family(["adult"])
    b = await factory.family(["adult"])
    await flushed_events(app, pg, a.id)
    async with pg.acquire() as conn, conn.transaction():
        await conn.execute(
            "select set_config('role','authenticated',true),"
            " set_config('request.jwt.claims', $1, true)",
            f'{{"sub": "{b.adult.id}", "role": "authenticated"}}',
        )
        seen = await conn.fetch("select distinct family_unit_id::text from public.analytics_events")
    assert [row["family_unit_id"] for row in seen] == [b.id]


@pytest.mark.parametrize("trouble", ["stalled", "raising"])
async def test_analytics_trouble_does_not_touch_requests(app, client, factory, pg, trouble):
    adult = await factory.register("adult")
    baseline = []
    for _ in range(3):
        started = time.perf_counter()
        await factory.login(adult.email)
        baseline.append(time.perf_counter() - started)

    blocker = await pg.acquire()
    tx = blocker.transaction()
    await tx.start()
    try:
        if trouble == "stalled":
            await blocker.execute("lock table public.analytics_events in access exclusive mode")
        else:
            await blocker.execute(
                "alter table public.analytics_events"
                " add constraint analytics_refuse_all check (false) not valid"
            )
            await tx.commit()
            tx = None
        slow = []
        for _ in range(3):
            started = time.perf_counter()
            response = await client.post(
                f"{API}/auth/login", json={"email": adult.email, "password": PASSWORD}
            )
            slow.append(time.perf_counter() - started)
            assert response.status_code == 200
        # A short-timeout recorder on its own pool shows a stuck write gives up, never hangs.
        database = await Database.connect(
            app.state.settings.database_url.get_secret_value(), min_size=1, max_size=1
        )
        recorder = AnalyticsRecorder(database, write_timeout=0.5)
        recorder.record(
            EventType.FEED_VIEWED,
            user_id=uuid.UUID(adult.id),
            family_unit_id=uuid.UUID(adult.family_id),
        )
        started = time.perf_counter()
        assert await recorder.flush() == 0
        assert time.perf_counter() - started < 3
        await database.close()
    finally:
        if tx is not None:
            await tx.rollback()
        else:
            await blocker.execute(
                "alter table public.analytics_events drop constraint analytics_refuse_all"
            )
        await pg.release(blocker)
    # Same order of magnitude as without trouble: nothing in the request waited on analytics.
    assert max(slow) < max(baseline) * 5 + 0.25, (baseline, slow)


async def _seed_activity(pg, family_id: str, members: list[str]) -> None:
    """Memories, reactions and comments over 40 days, with deletions, straight into the tables."""
    fid = uuid.UUID(family_id)
    now = datetime.now(UTC)
    memory_ids = []
    for index in range(12):
        author = uuid.UUID(members[index % len(members)])
        memory_ids.append(
            await pg.fetchval(
                "insert into public.memories (family_unit_id, user_id, title, status, created_at)"
                " values ($1, $2, $3, 'published', $4) returning id",
                fid,
                author,
                f"m{index}",
                now - timedelta(days=index * 3, hours=1),
            )
        )
    for index, memory_id in enumerate(memory_ids):
        for offset, member in enumerate(members):
            if (index + offset) % 2 == 0:
                await pg.execute(
                    "insert into public.memory_reactions (memory_id, family_unit_id, user_id,"
                    " emoji, created_at) values ($1, $2, $3, '❤️', $4)",
                    memory_id,
                    fid,
                    uuid.UUID(member),
                    now - timedelta(days=index * 3),
                )
            await pg.execute(
                "insert into public.memory_comments (memory_id, family_unit_id, user_id, content,"
                " created_at) values ($1, $2, $3, 'nice', $4)",
                memory_id,
                fid,
                uuid.UUID(member),
                now - timedelta(days=index * 3),
            )
    # Deletions: a memory (its reactions and comments go with it), a reaction, a comment.
    await pg.execute("delete from public.memories where id = $1", memory_ids[1])
    await pg.execute(
        "delete from public.memory_reactions where id ="
        " (select id from public.memory_reactions where memory_id = $1 limit 1)",
        memory_ids[2],
    )
    await pg.execute(
        "update public.memory_comments set deleted_at = now(), content = '[deleted]' where id ="
        " (select id from public.memory_comments where memory_id = $1 limit 1)",
        memory_ids[3],
    )


async def test_summary_equals_counts_from_the_base_tables(app, client, factory, pg):
    family = await factory.family(["adult", "teen", "grandparent"])
    members = [member.id for member in family.members]
    await _seed_activity(pg, family.id, members)
    await app.state.context.analytics.flush()
    fid = uuid.UUID(family.id)

    for days in (1, 7, 30, 60):
        response = await client.get(
            f"{API}/analytics/summary?days={days}", headers=family.adult.headers
        )
        assert response.status_code == 200, response.text
        summary = response.json()
        since = "(now() at time zone 'UTC')::date - $2::int"
        window = f"(created_at at time zone 'UTC')::date > {since}"
        expected_memories = await pg.fetchval(
            f"select count(*) from public.memories where family_unit_id = $1 and {window}",
            fid,
            days,
        )
        expected_reactions = await pg.fetchval(
            f"select count(*) from public.memory_reactions where family_unit_id = $1 and {window}",
            fid,
            days,
        )
        expected_comments = await pg.fetchval(
            "select count(*) from public.memory_comments where family_unit_id = $1"
            f" and deleted_at is null and {window}",
            fid,
            days,
        )
        assert summary["days"] == days
        assert summary["memories_posted"] == expected_memories
        assert summary["reactions"] == expected_reactions
        assert summary["comments"] == expected_comments
        assert len(summary["daily"]) == days
        assert sum(day["memories"] for day in summary["daily"]) == expected_memories
        assert sum(day["comments"] for day in summary["daily"]) == expected_comments
        per_member = {c["user_id"]: c for c in summary["top_contributors"]}
        for member in members:
            authored = await pg.fetchval(
                f"select count(*) from public.memories where user_id = $1 and {window}",
                uuid.UUID(member),
                days,
            )
            if member in per_member:
                assert per_member[member]["memories"] == authored
            else:
                assert authored == 0
    assert summary["active_members"] == len(members)


async def test_summary_days_bounds(client, factory):
    family = await factory.family(["adult"])
    for days, status in ((0, 422), (1, 200), (366, 200), (367, 422)):
        response = await client.get(
            f"{API}/analytics/summary?days={days}", headers=family.adult.headers
        )
        assert response.status_code == status


async def test_retention_purges_old_events_only(app, pg, factory):
    adult = await factory.register("adult", email=unique_email("old"))
    fid, uid = uuid.UUID(adult.family_id), uuid.UUID(adult.id)
    await pg.execute(
        'insert into public.analytics_events (event_type, "timestamp", user_id, family_unit_id)'
        " values ('feed_viewed', now() - interval '400 days', $1, $2),"
        " ('feed_viewed', now() - interval '10 days', $1, $2)",
        uid,
        fid,
    )
    recorder = AnalyticsRecorder(app.state.context.database, retention_days=365)
    assert await recorder.purge_expired() >= 1
    remaining = await pg.fetch(
        "select \"timestamp\" > now() - interval '365 days' as recent"
        " from public.analytics_events where family_unit_id = $1 and event_type = 'feed_viewed'",
        fid,
    )
    assert [row["recent"] for row in remaining] == [True]
    await asyncio.sleep(0)
