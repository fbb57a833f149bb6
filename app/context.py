"""What the running service holds for its lifetime, built once in the lifespan.

Every field is typed: a route or job reads `context.storage`, `context.media`, ... and mypy
knows what it gets. Which implementation sits behind each seam (built-in or Supabase) is
decided once, here, in `build_context`; nothing else in the code knows.
"""

import logging
from dataclasses import dataclass
from functools import partial

from app.adapters.auth.local import LocalAuthProvider
from app.adapters.auth.provider import AuthProvider
from app.adapters.auth.supabase import (
    SupabaseAccessTokens,
    SupabaseAuthProvider,
    SupabaseRecovery,
)
from app.adapters.cursors import CursorCodec
from app.adapters.mail import LogMailer, Mailer, SmtpConfig, SmtpMailer
from app.adapters.passwords import Passwords
from app.adapters.rate_limit import MemoryCounterStore, RateLimiter, RedisCounterStore
from app.adapters.storage.base import StorageBackend
from app.adapters.storage.local import LocalStorageBackend
from app.adapters.storage.supabase import SupabaseStorageBackend
from app.adapters.supabase.client import Supabase
from app.adapters.supabase.tokens import SupabaseTokenVerifier
from app.config import Environment, Settings
from app.db.postgres import Database
from app.db.wakeups import MAIL_CHANNEL, MEDIA_CHANNEL, JobWakeups
from app.errors import ServiceUnavailable
from app.proxy import public_base_url
from app.services import storage_service
from app.services.analytics_service import AnalyticsRecorder
from app.services.archive_exporter import ArchiveExporter
from app.services.events_service import EventBroker
from app.services.import_service import ImportRunner
from app.services.mail_outbox import MailOutbox
from app.services.media_processor import MediaProcessor
from app.services.scroll_history import ScrollHistory

logger = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: Settings
    database: Database
    auth_provider: AuthProvider
    analytics: AnalyticsRecorder
    # Built-in files or Supabase Storage.
    storage: StorageBackend
    media: MediaProcessor
    rate_limiter: RateLimiter
    # Mail queued by actions, sent in the background (SMTP, or the log in development).
    outbox: MailOutbox
    # Seals and opens pagination cursors (its clock is replaceable in tests), and keeps the
    # history feed scrolls read back no longer than cursors live.
    cursors: CursorCodec
    scroll_history: ScrollHistory
    # Live updates: this process's open GET /events streams and its LISTEN connection.
    events: EventBroker
    # Imports queued by members (Takeouts, folders, exports), run in the background.
    imports: ImportRunner
    # The family archive: finished exports in their own bucket, made by a background job.
    archives: StorageBackend
    exporter: ArchiveExporter
    # The built-in store when it runs: its own signed-URL routes serve it (else None).
    local_storage: LocalStorageBackend | None = None
    local_archives: LocalStorageBackend | None = None
    # Supabase mode: one HTTP client for Auth, tokens and Storage (closed at shutdown), and
    # Supabase Auth's access tokens accepted as bearer tokens beside ours.
    supabase: Supabase | None = None
    external_tokens: SupabaseAccessTokens | None = None
    # Supabase mode: password reset is Supabase Auth's.
    recovery: SupabaseRecovery | None = None
    # Started with the background jobs: LISTEN for media registered and mail queued by any
    # process (None: JOB_WAKEUPS=false, or a transaction pooler, which cannot LISTEN).
    wakeups: JobWakeups | None = None

    def start(self, *, background_jobs: bool, serves_http: bool = True) -> None:
        """Start what runs beside the requests.

        Every process writes the analytics events it records (its own buffer). A process
        that serves HTTP runs the live-events broker (its streams, its LISTEN). The shared
        jobs — media processing and its sweeps, the orphan sweep, imports, archive exports,
        sending mail and purging it, purging expired analytics and scroll history — run where
        `background_jobs` is true: `timeless serve` (unless --no-worker) and `timeless
        worker`. Each claims its work in the database (`FOR UPDATE SKIP LOCKED`) or deletes
        in bounded batches, so any number of processes may run them.
        """
        self.analytics.start(purge=background_jobs)
        if serves_http:
            self.events.start()
        if not background_jobs:
            return
        self.media.start()
        self.outbox.start()
        self.scroll_history.start()
        self.imports.start()
        self.exporter.start()
        if self.wakeups is not None:
            self.wakeups.start()

    async def storage_problem(self) -> str | None:
        """What keeps files from being stored until an operator acts (a missing bucket).

        None while the store merely cannot be reached: that outage is the storage backend's
        503 on the requests that need files, and is logged there.
        """
        try:
            return await self.storage.configuration_problem()
        except ServiceUnavailable:
            return None

    async def aclose(self) -> None:
        if self.wakeups is not None:
            await self.wakeups.stop()
        await self.imports.stop()
        await self.exporter.stop()
        await self.outbox.stop()
        await self.scroll_history.stop()
        await self.events.stop()
        await self.media.stop()
        await self.analytics.stop()
        if self.supabase is not None:
            await self.supabase.aclose()
        await self.database.close()


async def build_context(settings: Settings) -> AppContext:
    if settings.database_url is None:
        raise RuntimeError("DATABASE_URL is not set (timeless serve starts the built-in one)")
    database = await Database.connect(
        settings.database_url.get_secret_value(),
        pooler_mode=settings.database_pooler_mode,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        command_timeout=settings.database_command_timeout,
        acquire_timeout=settings.database_acquire_timeout,
    )
    analytics = AnalyticsRecorder(
        database,
        batch_size=settings.analytics_batch_size,
        flush_interval=settings.analytics_flush_interval_seconds,
        retention_days=settings.analytics_retention_days,
    )
    events = EventBroker(
        database,
        (settings.events_listen_database_url or settings.database_url).get_secret_value(),
        queue_size=settings.events_queue_size,
        keepalive_seconds=settings.events_keepalive_seconds,
        retry_ms=settings.events_retry_ms,
        retention_seconds=settings.events_retention_seconds,
        purge_interval_seconds=settings.events_purge_interval_seconds,
    )
    counters = RedisCounterStore(settings.redis_url) if settings.redis_url else MemoryCounterStore()
    rate_limiter = RateLimiter(counters, enabled=settings.rate_limit_enabled)

    supabase: Supabase | None = None
    external_tokens: SupabaseAccessTokens | None = None
    recovery: SupabaseRecovery | None = None
    local_storage: LocalStorageBackend | None = None
    local_archives: LocalStorageBackend | None = None
    auth_provider: AuthProvider
    storage: StorageBackend
    archives: StorageBackend
    if settings.supabase_enabled:
        # Accounts in Supabase Auth (its access tokens accepted too), files in Supabase Storage.
        supabase = Supabase.from_settings(settings)
        auth_provider = SupabaseAuthProvider(supabase)
        verifier = SupabaseTokenVerifier(
            supabase.config.url, jwt_secret=supabase.config.jwt_secret, http=supabase.http
        )
        external_tokens = SupabaseAccessTokens(verifier, supabase.config.url)
        recovery = SupabaseRecovery(supabase)
        storage = SupabaseStorageBackend(supabase)
        archives = supabase_archives(settings, supabase)
    else:
        passwords = Passwords(
            time_cost=settings.password_hash_time_cost,
            memory_kib=settings.password_hash_memory_kib,
        )
        auth_provider = LocalAuthProvider(database, passwords)
        local_storage = storage = local_storage_backend(settings, database)
        local_archives = archives = local_storage_backend(
            settings, database, settings.archive_storage_bucket
        )
    media = MediaProcessor(database, storage, analytics, settings)
    outbox = MailOutbox(database, build_mailer(settings), settings)
    wakeups: JobWakeups | None = None
    listen_url = settings.events_listen_database_url
    if settings.job_wakeups and (listen_url is not None or not settings.database_pooler_mode):
        wakeups = JobWakeups(
            (listen_url or settings.database_url).get_secret_value(),
            {MEDIA_CHANNEL: media.wake, MAIL_CHANNEL: outbox.wake},
        )
    context = AppContext(
        settings=settings,
        database=database,
        auth_provider=auth_provider,
        analytics=analytics,
        storage=storage,
        media=media,
        imports=ImportRunner(database, storage, settings, on_media=media.process),
        rate_limiter=rate_limiter,
        outbox=outbox,
        cursors=CursorCodec(settings.jwt_secret),
        scroll_history=ScrollHistory(database),
        events=events,
        archives=archives,
        exporter=ArchiveExporter(database, storage, archives, settings),
        local_storage=local_storage,
        local_archives=local_archives,
        supabase=supabase,
        external_tokens=external_tokens,
        recovery=recovery,
        wakeups=wakeups,
    )
    # Said once at start-up, clearly; /health/ready keeps failing until it is fixed.
    problem = await context.storage_problem()
    if problem is not None:
        logger.error(problem)
    return context


def build_mailer(settings: Settings) -> Mailer | None:
    """SMTP when SMTP_URL is set; else the log in development and test; else none at all."""
    if settings.smtp_url is not None and settings.smtp_url.get_secret_value():
        config = SmtpConfig.from_url(
            settings.smtp_url.get_secret_value(),
            starttls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
        )
        return SmtpMailer(config, settings.mail_from)
    if settings.environment is Environment.PRODUCTION:
        return None  # mail is refused where it is required (503 mail_unavailable)
    return LogMailer(settings.data_dir / "mail", settings.mail_from)


def local_storage_backend(
    settings: Settings, database: Database, bucket: str | None = None
) -> LocalStorageBackend:
    """Files under settings.storage_root, served through URLs signed by this server with each
    family's signing epoch mixed in (so a removal voids that family's earlier links).

    The URLs point at PUBLIC_BASE_URL, else at the address each request was sent to.
    `bucket`: the media bucket unless another is named (the archives).
    """
    objects = f"{settings.api_prefix}/storage/objects"
    return LocalStorageBackend(
        settings.storage_root,
        bucket=bucket or settings.supabase_storage_bucket,
        public_url=lambda: f"{public_base_url(settings)}{objects}",
        secret=settings.jwt_secret,
        key_epochs=partial(storage_service.signing_epochs, database),
    )


def supabase_archives(settings: Settings, supabase: Supabase) -> SupabaseStorageBackend:
    """The archives bucket of Supabase Storage; zips wait in DATA_DIR/tmp before upload."""
    return SupabaseStorageBackend(
        supabase, bucket=settings.archive_storage_bucket, scratch_dir=settings.data_dir / "tmp"
    )


def media_storage(
    settings: Settings, database: Database, supabase: Supabase | None
) -> StorageBackend:
    """The media store, for a command run outside the server (`timeless export`)."""
    if supabase is not None:
        return SupabaseStorageBackend(supabase)
    return local_storage_backend(settings, database)
