"""Wake-ups: a NOTIFY after a registration or a queued mail wakes the matching job at once."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.db.wakeups import MAIL_CHANNEL, MEDIA_CHANNEL, JobWakeups
from app.services import mail_outbox
from app.services.mail_templates import RenderedMail
from tests.helpers import media_samples as samples

WAIT = 30.0  # a bound for a hang, not a latency expectation
ADDRESS = "wake-up-test@example.com"


@pytest.fixture
async def woken(migrated_database_url: str) -> AsyncIterator[dict[str, asyncio.Event]]:
    events = {MEDIA_CHANNEL: asyncio.Event(), MAIL_CHANNEL: asyncio.Event()}
    wakeups = JobWakeups(
        migrated_database_url, {channel: event.set for channel, event in events.items()}
    )
    wakeups.start()
    try:
        assert await wakeups.wait_listening(WAIT)
        # Every job is woken once on (re)connection, for what was missed meanwhile.
        for event in events.values():
            await asyncio.wait_for(event.wait(), WAIT)
            event.clear()
        yield events
    finally:
        await wakeups.stop()


async def test_registering_media_wakes_the_media_job(woken, client, factory):
    family = await factory.family(["adult"])
    memory = await samples.create_memory(client, family.adult)
    assert not woken[MEDIA_CHANNEL].is_set()

    await samples.upload(client, family.adult, memory["id"], samples.webp(), "image/webp")

    await asyncio.wait_for(woken[MEDIA_CHANNEL].wait(), WAIT)
    assert not woken[MAIL_CHANNEL].is_set()


async def test_queueing_mail_wakes_the_mail_sender(woken, app, settings):
    async with app.state.context.database.system_session() as db:
        await mail_outbox.queue(
            db,
            settings,
            kind="invite",
            to=ADDRESS,
            mail=RenderedMail(subject="Hello", text="Hi", html="<p>Hi</p>"),
            send_before=None,
        )
        await asyncio.sleep(0.2)
        assert not woken[MAIL_CHANNEL].is_set(), "notified before the commit"

    await asyncio.wait_for(woken[MAIL_CHANNEL].wait(), WAIT)
    # Not for the other tests' senders to find.
    async with app.state.context.database.system_session() as db:
        await db.execute("delete from app.mail_outbox where to_address = $1", ADDRESS)
