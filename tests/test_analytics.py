"""Analytics: each action emits exactly its event; analytics trouble never touches requests;
the summary equals counts taken straight from the base tables."""

import asyncio
import time
import uuid
from datetime import UTC, date, datetime, timedelta

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


# Boundary cases of the summary's window, pinned: "the last N days" is N calendar days in UTC,
# today included. Each memory gets one reaction and one comment at the same instant.
# (day offset from today UTC, time since that day's UTC midnight, author index)
FIRST_INSTANT = timedelta(0)
LAST_INSTANT = timedelta(days=1, microseconds=-1)
SEEDED = [
    (0, FIRST_INSTANT, 0),  # the first instant of today
    (-1, LAST_INSTANT, 1),  # the last instant of yesterday
    (-6, FIRST_INSTANT, 2),  # the first instant of the 7th day back
    (-7, LAST_INSTANT, 0),  # the last instant of the 8th
    (-29, FIRST_INSTANT, 1),
    (-30, LAST_INSTANT, 2),
    (-365, FIRST_INSTANT, 0),
    (-366, LAST_INSTANT, 1),  # outside every window the API allows
]
# days → memories (= reactions = comments) the summary must count, written out by hand.
EXPECTED_TOTALS = {1: 1, 2: 2, 7: 3, 8: 4, 30: 5, 31: 6, 365: 6, 366: 7}
# days → memories per author index in top_contributors.
EXPECTED_BY_AUTHOR = {1: (1, 0, 0), 7: (1, 1, 1), 8: (2, 1, 1), 31: (2, 2, 2), 366: (3, 2, 2)}


async def _utc_today(pg) -> date:
    today: date = await pg.fetchval("select (now() at time zone 'UTC')::date")
    return today


async def _seed_boundaries(pg, family_id: str, members: list[str], today: date) -> None:
    """SEEDED straight into the tables, plus rows that must never count."""
    fid = uuid.UUID(family_id)
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
    for offset, since_midnight, author_index in SEEDED:
        created = midnight + timedelta(days=offset) + since_midnight
        author = uuid.UUID(members[author_index])
        reactor = uuid.UUID(members[(author_index + 1) % len(members)])
        memory_id = await pg.fetchval(
            "insert into public.memories (family_unit_id, user_id, title, status, created_at)"
            " values ($1, $2, 'm', 'published', $3) returning id",
            fid,
            author,
            created,
        )
        await pg.execute(
            "insert into public.memory_reactions (memory_id, family_unit_id, user_id, emoji,"
            " created_at) values ($1, $2, $3, '❤️', $4)",
            memory_id,
            fid,
            reactor,
            created,
        )
        await pg.execute(
            "insert into public.memory_comments (memory_id, family_unit_id, user_id, content,"
            " created_at) values ($1, $2, $3, 'nice', $4)",
            memory_id,
            fid,
            author,
            created,
        )
        # A comment deleted later no longer counts.
        await pg.execute(
            "insert into public.memory_comments (memory_id, family_unit_id, user_id, content,"
            " created_at, deleted_at) values ($1, $2, $3, '[deleted]', $4, $4)",
            memory_id,
            fid,
            reactor,
            created,
        )
    # A memory deleted today takes its reaction and comment out of every window.
    gone = await pg.fetchval(
        "insert into public.memories (family_unit_id, user_id, title, status, created_at)"
        " values ($1, $2, 'gone', 'published', $3) returning id",
        fid,
        uuid.UUID(members[0]),
        midnight,
    )
    await pg.execute(
        "insert into public.memory_reactions (memory_id, family_unit_id, user_id, emoji,"
        " created_at) values ($1, $2, $3, '👍', $4)",
        gone,
        fid,
        uuid.UUID(members[1]),
        midnight,
    )
    await pg.execute(
        "insert into public.memory_comments (memory_id, family_unit_id, user_id, content,"
        " created_at) values ($1, $2, $3, 'x', $4)",
        gone,
        fid,
        uuid.UUID(members[1]),
        midnight,
    )
    await pg.execute("delete from public.memories where id = $1", gone)
    # A draft of today, with a reaction and a comment by its author: only its author may see
    # it, so none of it is the family's to count.
    draft = await pg.fetchval(
        "insert into public.memories (family_unit_id, user_id, title, status, created_at)"
        " values ($1, $2, 'draft', 'draft', $3) returning id",
        fid,
        uuid.UUID(members[2]),
        midnight,
    )
    for statement in (
        "insert into public.memory_reactions (memory_id, family_unit_id, user_id, emoji,"
        " created_at) values ($1, $2, $3, '🔥', $4)",
        "insert into public.memory_comments (memory_id, family_unit_id, user_id, content,"
        " created_at) values ($1, $2, $3, 'note to self', $4)",
    ):
        await pg.execute(statement, draft, fid, uuid.UUID(members[2]), midnight)


async def test_summary_counts_the_pinned_boundary_cases(app, client, factory, pg):
    # If the UTC date changes while the test runs, every expectation shifts by a day: try
    # again with a fresh family (at most once more; a test takes well under a day).
    for _ in range(2):
        family = await factory.family(["adult", "teen", "grandparent"])
        members = [member.id for member in family.members]
        today = await _utc_today(pg)
        await _seed_boundaries(pg, family.id, members, today)
        await app.state.context.analytics.flush()
        summaries = {}
        for days in EXPECTED_TOTALS:
            response = await client.get(
                f"{API}/analytics/summary?days={days}", headers=family.adult.headers
            )
            assert response.status_code == 200, response.text
            summaries[days] = response.json()
        if await _utc_today(pg) == today:
            break
    for days, expected in EXPECTED_TOTALS.items():
        summary = summaries[days]
        assert summary["days"] == days
        counted = (summary["memories_posted"], summary["reactions"], summary["comments"])
        assert counted == (expected, expected, expected), days
        daily = summary["daily"]
        assert len(daily) == days
        assert daily[-1]["date"] == today.isoformat()
        assert daily[0]["date"] == (today - timedelta(days=days - 1)).isoformat()
        assert sum(day["memories"] for day in daily) == expected
        assert sum(day["reactions"] for day in daily) == expected
        assert sum(day["comments"] for day in daily) == expected
    assert summaries[1]["daily"][-1]["memories"] == 1
    for days, per_author in EXPECTED_BY_AUTHOR.items():
        contributed = {c["user_id"]: c["memories"] for c in summaries[days]["top_contributors"]}
        assert tuple(contributed.get(member, 0) for member in members) == per_author, days


async def test_the_summary_counts_only_what_the_caller_could_see(client, factory):
    # Another member's draft does not exist for the caller (GET is 404), so it is not in the
    # family's numbers either, nor the reactions and comments on it; publishing brings it in.
    family = await factory.family(["adult", "teen"])
    adult, teen = family.adult, family.by_role("teen")

    async def summary() -> dict:
        response = await client.get(f"{API}/analytics/summary?days=7", headers=adult.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def post(path: str, body: dict, member=teen) -> dict:
        response = await client.post(f"{API}{path}", json=body, headers=member.headers)
        assert response.status_code == 201, response.text
        return dict(response.json())

    published = await post("/memories", {"title": "Out", "status": "published"}, adult)
    await post(f"/feed/memories/{published['id']}/reactions", {"emoji": "👍"})
    before = await summary()
    assert (before["memories_posted"], before["reactions"]) == (1, 1)

    draft = await post("/memories", {"title": "Not yet"})
    await post(f"/feed/memories/{draft['id']}/reactions", {"emoji": "🔥"})
    await post(f"/feed/memories/{draft['id']}/comments", {"content": "note to self"})
    hidden = await client.get(f"{API}/memories/{draft['id']}", headers=adult.headers)

    assert hidden.status_code == 404
    assert await summary() == before

    await client.put(
        f"{API}/memories/{draft['id']}", json={"status": "published"}, headers=teen.headers
    )
    shown = await summary()
    assert (shown["memories_posted"], shown["reactions"], shown["comments"]) == (2, 2, 1)
    mine = next(c for c in shown["top_contributors"] if c["user_id"] == teen.id)
    assert (mine["memories"], mine["reactions"], mine["comments"]) == (1, 2, 1)
    assert sum(day["memories"] for day in shown["daily"]) == 2

    # A draft deleted with its reactions takes nothing away; a published one takes its own.
    other = await post("/memories", {"title": "Scrapped"})
    await post(f"/feed/memories/{other['id']}/reactions", {"emoji": "😂"})
    deleted = await client.delete(f"{API}/memories/{other['id']}", headers=teen.headers)
    assert deleted.status_code == 204
    assert await summary() == shown
    gone = await client.delete(f"{API}/memories/{draft['id']}", headers=adult.headers)
    assert gone.status_code == 204
    after = await summary()
    assert (after["memories_posted"], after["reactions"], after["comments"]) == (1, 1, 0)


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


async def test_events_roll_up_per_member_and_day_whatever_the_batch(app, pg, factory):
    # The rollup counts a member's events per UTC day (the summary's active members), the
    # same whether the events came one per statement or many in one batch.
    family = await factory.family(["adult", "teen"])
    fid = uuid.UUID(family.id)
    adult, teen = uuid.UUID(family.adult.id), uuid.UUID(family.members[1].id)
    insert = (
        'insert into public.analytics_events (event_type, "timestamp", user_id, family_unit_id)'
        " select 'feed_viewed', t, u, $1 from unnest($2::timestamptz[], $3::uuid[]) as x(t, u)"
    )
    noon = datetime(2026, 3, 1, 12, tzinfo=UTC)
    day_before = noon - timedelta(days=1)
    # One batch: three events of the adult on one day, one on the day before, one of the
    # teen, and one without a member (it marks no one active).
    times = [noon, noon, noon + timedelta(hours=1), day_before, noon, noon]
    users = [adult, adult, adult, adult, teen, None]
    await pg.execute(insert, fid, times, users)
    # Then one more event of the teen, in a statement of its own.
    await pg.execute(insert, fid, [noon], [teen])
    rows = await pg.fetch(
        "select day, user_id, events from public.analytics_metrics"
        " where family_unit_id = $1 and events > 0 order by day, events",
        fid,
    )
    assert [(row["day"], row["user_id"], row["events"]) for row in rows] == [
        (day_before.date(), adult, 1),
        (noon.date(), teen, 2),
        (noon.date(), adult, 3),
    ]
