"""Which background jobs a process runs: all of them, or (`--no-worker`) none but its own
analytics buffer."""

import uuid

from app.config import Settings
from app.context import build_context
from tests.conftest import make_settings
from tests.helpers import media_samples as samples


def _settings(settings: Settings, **overrides: object) -> Settings:
    return make_settings(
        settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        settings.data_dir,
        mail_poll_interval_seconds=60,
        **overrides,
    )


async def test_an_api_process_started_with_no_worker_runs_no_shared_job(
    settings, client, factory, pg
):
    context = await build_context(_settings(settings, background_jobs=False, job_wakeups=True))
    media_id = uuid.uuid4()
    try:
        context.start(background_jobs=context.settings.background_jobs)
        family = await factory.family(["adult"])
        memory = await samples.create_memory(client, family.adult)
        ticket = (await samples.upload_url(client, family.adult, memory["id"], "image/webp")).json()
        await samples.send_bytes(client, ticket, samples.webp())
        # Registered through this context's own database: the row exists, pending.
        media_id = uuid.UUID(ticket["media_id"])
        await pg.execute(
            "insert into public.memory_media (id, memory_id, family_unit_id, storage_path,"
            " file_name, mime_type, file_size) values ($1, $2, $3, $4, 'f', 'image/webp', 1)",
            media_id,
            uuid.UUID(memory["id"]),
            uuid.UUID(family.id),
            ticket["storage_path"],
        )

        await context.media.process([media_id])

        status = await pg.fetchval(
            "select processing_status from public.memory_media where id = $1", media_id
        )
        assert status == "pending"  # left for a worker
        assert context.wakeups is not None and context.wakeups.listener._task is None
        assert not context.outbox.running  # no mail sender
        assert not context.imports.running  # no imports
        assert not context.exporter.running  # no exports
        assert context.scroll_history._task is None  # no purge
        assert context.events.listener._task is not None  # its own streams' broker
        assert context.analytics._purges is False  # no purge; the writer runs
        assert context.analytics._task is not None
    finally:
        await context.aclose()
        # Not for another test's sweep to find.
        await pg.execute("delete from public.memory_media where id = $1", media_id)


async def test_a_worker_runs_every_shared_job(settings):
    context = await build_context(_settings(settings, job_wakeups=True))
    try:
        context.start(background_jobs=True)
        assert context.wakeups is not None
        assert await context.wakeups.wait_listening(30)
        assert context.outbox.running
        assert context.analytics._purges is True
        assert {task.get_name() for task in context.media._loops} >= {
            "media-sweep",
            "orphan-sweep",
        }
    finally:
        await context.aclose()
