"""Every setting of the service, read from the environment and `.env`.

Nothing is required to run on a laptop: without `DATABASE_URL` the built-in
PostgreSQL is used, without `SUPABASE_URL` the built-in auth and storage are
used, and a development JWT secret is generated once into the data directory.
`.env.example` documents each setting.
"""

import ipaddress
import json
import secrets
from enum import StrEnum
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_PRODUCTION_SECRET_BYTES = 32
# 512 MiB: a 48-megapixel HEIC from a phone needs about 420 MiB to decode.
DEFAULT_MAX_DECODED_IMAGE_BYTES = 512 * 1024 * 1024


TrustedNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Addresses that mean "every interface": fine to listen on, never a URL a client can use.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})  # noqa: S104 (recognised, not bound)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # The address clients use to reach this server; signed storage URLs point here. Unset:
    # the origin each request was sent to (see app.proxy.public_base_url).
    public_base_url: str = ""
    # Proxies (addresses or CIDRs) whose X-Forwarded-For/-Proto/-Host are believed; from
    # anyone else those headers are dropped. Comma-separated in the environment.
    trusted_proxies: Annotated[list[TrustedNetwork], NoDecode] = Field(default_factory=list)
    frontend_url: str = "http://localhost:5173"
    cors_origins: list[str] = Field(default_factory=lambda: ["http://localhost:5173"])
    log_level: str = "INFO"
    # The API version this server serves, and so its prefix: /api/{api_version}. A new major
    # version can be mounted beside it during a migration (see app.main.mount_api_version).
    api_version: str = Field(default="v1", pattern=r"^v[1-9][0-9]*$")

    # Database. Empty means: start the built-in PostgreSQL in data_dir/pg.
    database_url: SecretStr | None = None
    # Supabase's transaction pooler (port 6543) cannot keep prepared statements.
    database_pooler_mode: bool = False
    database_pool_min: int = 2
    database_pool_max: int = 10
    database_command_timeout: float = 30.0
    # Seconds a request waits for a pooled connection before it is answered
    # `503 database_busy` (with Retry-After) rather than waiting for ever.
    database_acquire_timeout: float = Field(default=10.0, gt=0)

    # Tokens.
    jwt_secret_key: SecretStr | None = None
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 7 * 24 * 3600
    # A rotated refresh token presented again within this many seconds (several tabs
    # refreshing at once) gets a pair for the same login; later, it is taken for theft.
    refresh_reuse_interval_seconds: float = Field(default=10.0, ge=0)
    invite_ttl_days: int = 7
    # argon2id cost; tests lower it, production keeps the library's defaults.
    password_hash_time_cost: int = 3
    password_hash_memory_kib: int = 65536

    # Supabase. When url and service role key are set, auth and storage use Supabase.
    supabase_url: str | None = None
    supabase_anon_key: SecretStr | None = None
    supabase_service_role_key: SecretStr | None = None
    supabase_jwt_secret: SecretStr | None = None
    supabase_storage_bucket: str = "memories"

    # Storage limits.
    max_file_bytes: int = 50 * 1024 * 1024
    max_memory_bytes: int = 200 * 1024 * 1024
    max_json_body_bytes: int = 1024 * 1024
    upload_url_ttl_seconds: int = 300
    max_image_pixels: int = 100_000_000
    # Memory one picture may need once decoded (width × height × channels × bytes per sample
    # × frames, and what the decoder itself holds); bounds each media job's memory.
    max_decoded_image_bytes: int = DEFAULT_MAX_DECODED_IMAGE_BYTES
    # An archive uploaded to import (a Google Takeout part is 2–50 GB; ask for 10 GB parts).
    max_import_bytes: int = 10 * 1024 * 1024 * 1024
    # Each family's storage quota in bytes (registered files plus uploads in progress); 0 = none.
    family_storage_quota_bytes: int = Field(default=100 * 1024**3, ge=0)

    # Background work.
    media_sweep_interval_seconds: float = 30.0
    # Imports: how often a process looks for queued ones (<= 0: never, e.g. in tests), and
    # when a running import whose process stopped heartbeating is taken over.
    import_poll_interval_seconds: float = 5.0
    import_stale_seconds: float = 300.0
    media_stale_after_seconds: float = 300.0
    # Media jobs at once, per process (each in a child process of its own); and tries before
    # a media item fails.
    media_processing_workers: int = 2
    media_max_attempts: int = 3
    # CPU seconds one video's playback transcode may use; past it the media is `failed`.
    media_transcode_cpu_seconds: float = 300.0
    # Limits of one media job's child process (app.adapters.media.sandbox): the memory it may
    # take beyond its size at start (RLIMIT_AS), its CPU time (RLIMIT_CPU), the time the
    # parent waits for it before killing it. Past any of them the media is `failed`.
    media_job_memory_bytes: int = Field(default=1536 * 1024 * 1024, ge=64 * 1024 * 1024)
    # (Above MEDIA_TRANSCODE_CPU_SECONDS, whose own check fails a long transcode first.)
    media_job_cpu_seconds: int = Field(default=600, ge=1)
    media_job_timeout_seconds: float = Field(default=900.0, gt=0)
    # How many jobs one child process takes before a fresh one replaces it; 1: a fresh child
    # per job. A crash, a timeout, a memory failure or a grown heap always ends a child.
    media_jobs_per_child: int = Field(default=25, ge=1)
    # libheif's decoding threads per HEIC job; 0: the CPUs shared among the jobs run at once
    # (CPUs ÷ MEDIA_PROCESSING_WORKERS, from 1 to 4; docs/performance.md).
    media_heif_decode_threads: int = Field(default=0, ge=0)
    # Whether this API process also runs the background jobs (media processing, mail sending,
    # the sweeps and purges). `timeless serve --no-worker` turns it off: `timeless worker`
    # runs them instead, here or on another machine.
    background_jobs: bool = True
    # Background jobs start at once on a PostgreSQL NOTIFY (media registered, mail queued)
    # instead of waiting for their poll; false polls only. With a transaction pooler
    # (DATABASE_POOLER_MODE), which cannot LISTEN, only through EVENTS_LISTEN_DATABASE_URL.
    job_wakeups: bool = True
    orphan_object_grace_seconds: float = 24 * 3600.0
    orphan_sweep_interval_seconds: float = 3600.0
    analytics_retention_days: int = 365
    analytics_flush_interval_seconds: float = 1.0
    analytics_batch_size: int = 200

    # Mail. Without SMTP_URL: development and test write each message to the log (and to
    # data_dir/mail); production refuses what must send mail (503 mail_unavailable).
    smtp_url: SecretStr | None = None
    # STARTTLS after connecting to an smtp:// server (smtps:// is TLS from the start).
    smtp_starttls: bool = True
    smtp_timeout_seconds: float = 20.0
    mail_from: str = "Timeless Love <no-reply@timeless.invalid>"
    # The outbox sender: how often it looks for due mail (<= 0 turns it off), and the
    # exponential backoff between attempts at one message (base, doubled each time, capped).
    mail_poll_interval_seconds: float = 5.0
    mail_retry_base_seconds: float = 10.0
    mail_retry_max_seconds: float = 900.0
    mail_outbox_retention_days: int = 30

    # The family archive (docs/archive.md). Finished exports are zips in their own bucket
    # (Supabase Storage's memories bucket only takes photos and videos of at most 50 MiB).
    archive_storage_bucket: str = "archives"
    # A finished export (its zip and its job) is removed this many days after it completed.
    archive_export_ttl_days: int = Field(default=7, ge=1)
    # How often the exporter looks for queued exports and expired ones; a new export wakes
    # it at once. <= 0 turns it off in this process (exports wait for another process).
    archive_poll_interval_seconds: float = 10.0
    # A running export renews its claim as it goes; one silent this long (its process died)
    # is taken over by another, up to archive_max_attempts runs in all.
    archive_claim_seconds: float = Field(default=120.0, gt=0)
    archive_max_attempts: int = Field(default=3, ge=1)

    # Accounts.
    password_reset_ttl_seconds: int = 30 * 60
    # A login's last_used_at moves on refresh, and on access at most once per this interval.
    session_touch_interval_seconds: int = 300

    # Live updates (GET /events; docs/events.md).
    # The LISTEN connection needs a session: with Supabase's transaction pooler (port 6543)
    # point this at the session pooler (5432) or the direct connection. Empty: DATABASE_URL.
    events_listen_database_url: SecretStr | None = None
    # Events are kept this long for Last-Event-ID replay (the contract promises 15 minutes).
    events_retention_seconds: int = Field(default=3600, ge=900)
    events_purge_interval_seconds: float = 300.0
    # Events waiting for one slow stream; beyond it the stream is dropped with a retry hint.
    events_queue_size: int = Field(default=256, ge=1)
    events_keepalive_seconds: float = Field(default=15.0, gt=0)
    # The reconnect delay the stream suggests to clients (the SSE `retry:` field).
    events_retry_ms: int = Field(default=3000, ge=0)

    # Operations.
    # On SIGTERM, requests still open after this many seconds are cut (503 if nothing was sent
    # yet); then the built-in PostgreSQL stops. 7 s leaves room for that inside the 10 s that
    # Docker, podman and Kubernetes wait before SIGKILL; raise both together.
    shutdown_grace_seconds: int = Field(default=7, ge=0)
    # Where the built-in PostgreSQL writes its log: a file in its folder (data_dir/pg/log), or
    # this process's standard error (the image sets "stderr": `docker logs` shows it).
    builtin_postgres_log: Literal["file", "stderr"] = "file"
    metrics_token: SecretStr | None = None
    redis_url: str | None = None
    rate_limit_enabled: bool = True

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            items = json.loads(text) if text.startswith("[") else text.split(",")
            value = [item.strip() for item in items if str(item).strip()]
        if isinstance(value, list):
            try:
                # strict=False: "10.0.0.1/8" means the network it is in, as people write it.
                return [ipaddress.ip_network(item, strict=False) for item in value]
            except ValueError as exc:
                raise ValueError(f"TRUSTED_PROXIES: {exc}") from None
        return value

    @model_validator(mode="after")
    def _production_needs_a_real_secret(self) -> "Settings":
        if self.environment is Environment.PRODUCTION:
            secret = self.jwt_secret_key.get_secret_value() if self.jwt_secret_key else ""
            if len(secret.encode()) < MIN_PRODUCTION_SECRET_BYTES:
                raise ValueError(
                    "JWT_SECRET_KEY must be set to at least 32 bytes when ENVIRONMENT=production"
                )
        return self

    @property
    def supabase_enabled(self) -> bool:
        return bool(self.supabase_url and self.supabase_service_role_key)

    @property
    def storage_root(self) -> Path:
        return self.data_dir / "storage"

    @property
    def api_prefix(self) -> str:
        return f"/api/{self.api_version}"

    @property
    def base_url(self) -> str:
        """PUBLIC_BASE_URL, else HOST:PORT, with loopback standing in for a wildcard HOST.

        Outside a request only (the CLI, tests): the URLs a request gets follow the address
        it was sent to (app.proxy.public_base_url).
        """
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = self.host.strip()
        if host in WILDCARD_HOSTS:
            host = "[::1]" if ":" in host else "127.0.0.1"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @cached_property
    def jwt_secret(self) -> str:
        """The signing secret; in development one is generated once and kept."""
        if self.jwt_secret_key:
            return self.jwt_secret_key.get_secret_value()
        secret_file = self.data_dir / "jwt_secret"
        if not secret_file.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            secret_file.write_text(secrets.token_urlsafe(48))
            secret_file.chmod(0o600)
        return secret_file.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
