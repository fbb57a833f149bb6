"""The `timeless` command: serve, migrate, seed-demo."""

import argparse
import asyncio
import logging
import os
import shutil
import sys
from pathlib import Path

from app.config import get_settings
from app.log import configure_logging

logger = logging.getLogger("timeless.cli")


def _database_url() -> str:
    """DATABASE_URL if set; otherwise start the built-in PostgreSQL in ./.data/pg."""
    settings = get_settings()
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    from app.db import embedded

    dsn = embedded.start(settings.data_dir / "pg")
    logger.info("built-in PostgreSQL running", extra={"pgdata": str(settings.data_dir / "pg")})
    return dsn


def _migrate(dsn: str) -> None:
    from app.db.migrate import migrate

    applied = asyncio.run(migrate(dsn))
    logger.info("migrations up to date", extra={"applied_now": applied})


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    settings = get_settings()
    dsn = _database_url()
    _migrate(dsn)
    # Workers (and their reloads) read the same database from the environment.
    os.environ["DATABASE_URL"] = dsn
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
    if not settings.public_base_url:
        os.environ["PUBLIC_BASE_URL"] = f"http://{host}:{port}"
    if workers > 1:
        _prepare_multiprocess_metrics(settings.data_dir / "prometheus")
    get_settings.cache_clear()
    logger.info("serving", extra={"url": f"http://{host}:{port}", "docs": "/docs"})
    uvicorn.run(
        "app.main:configure_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=30,
    )


def _prepare_multiprocess_metrics(directory: Path) -> None:
    """Workers write metric values here; /metrics adds them up. Emptied at each start."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory.resolve())


def cmd_migrate(args: argparse.Namespace) -> None:
    _migrate(_database_url())


def cmd_seed_demo(args: argparse.Namespace) -> None:
    from app.seed import seed_demo

    dsn = _database_url()
    _migrate(dsn)
    asyncio.run(seed_demo(dsn))


def main(argv: list[str] | None = None) -> None:
    configure_logging(get_settings().log_level)
    parser = argparse.ArgumentParser(prog="timeless", description="Timeless Love backend")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the API (and the built-in PostgreSQL if needed)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply migrations to DATABASE_URL").set_defaults(
        func=cmd_migrate
    )
    sub.add_parser("seed-demo", help="create a demo family with memories").set_defaults(
        func=cmd_seed_demo
    )
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
