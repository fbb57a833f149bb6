"""The `timeless` command: serve, worker, migrate, seed-demo, import, backup, restore, export.

Every command that needs the database and finds no DATABASE_URL starts the built-in
PostgreSQL for its own duration and stops it when it ends (normally, by an exception, on
SIGINT or SIGTERM), unless another live process still uses it.
"""

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO
from uuid import UUID

if TYPE_CHECKING:
    import uuid

    from app.services import archive_writer

from app.config import WILDCARD_HOSTS, get_settings
from app.log import configure_logging

logger = logging.getLogger("timeless.cli")


@contextmanager
def _database() -> Iterator[str]:
    """DATABASE_URL if set; otherwise the built-in PostgreSQL in DATA_DIR/pg, for the block."""
    settings = get_settings()
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    from app.db import embedded

    pgdata = settings.data_dir / "pg"
    dsn = embedded.start(pgdata, log_to_stderr=settings.builtin_postgres_log == "stderr")
    logger.info("built-in PostgreSQL running", extra={"pgdata": str(pgdata)})
    try:
        yield dsn
    finally:
        # A second signal must not cut the stop short: the server would be left running.
        with _signals_ignored():
            embedded.release(pgdata)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_with(code: int) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(code)

    return handler


def _migrate(dsn: str) -> None:
    from app.db.migrate import migrate

    applied = asyncio.run(migrate(dsn))
    logger.info("migrations up to date", extra={"applied_now": applied})


def cmd_serve(args: argparse.Namespace) -> None:
    # SIGTERM is how servers are stopped (Docker, Kubernetes, systemd): a clean exit (0).
    # uvicorn takes the signal while it serves, shuts down within SHUTDOWN_GRACE_SECONDS,
    # puts this handler back and raises the signal again; the built-in PostgreSQL is then
    # stopped on the way out of `_database()`.
    signal.signal(signal.SIGTERM, _exit_with(0))
    with _database() as dsn:
        _serve(args, dsn)


def _serve(args: argparse.Namespace, dsn: str) -> None:
    import uvicorn

    settings = get_settings()
    _migrate(dsn)
    if settings.database_url is None:
        from app.db import embedded

        # What the migrations wrote is on disk before serving: a stop soon after stays quick.
        asyncio.run(embedded.checkpoint(dsn))
    # Workers (and their reloads) read the same database from the environment.
    os.environ["DATABASE_URL"] = dsn
    if args.no_worker:
        # Read by every uvicorn worker process: serve requests only; `timeless worker` runs
        # the background jobs.
        os.environ["BACKGROUND_JOBS"] = "false"
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers
    if not settings.public_base_url and host.strip() in WILDCARD_HOSTS:
        # Signed URLs then follow each request's Host (a trusted proxy's, see app.proxy);
        # never http://0.0.0.0:..., which no client can reach.
        logger.warning(
            f"PUBLIC_BASE_URL is not set and the server listens on {host}: signed storage "
            "URLs will use the address each request was sent to (its Host header, or a "
            "TRUSTED_PROXIES proxy's X-Forwarded-Host/-Proto). Set PUBLIC_BASE_URL to the "
            "address clients use, e.g. https://api.example.com."
        )
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
        # Forwarded headers are judged by app.proxy against TRUSTED_PROXIES; uvicorn's own
        # handling (trusting 127.0.0.1 by default) would rewrite the client before that.
        proxy_headers=False,
        # Then open requests are cancelled (the middleware answers 503 to those that had
        # not been answered yet) and the lifespan's shutdown runs.
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )


def cmd_worker(args: argparse.Namespace) -> None:
    # SIGTERM and SIGINT end the worker normally (exit 0): the jobs in progress are handed
    # back to the queue, then the built-in PostgreSQL (if this process started it) stops.
    with _database() as dsn:
        _migrate(dsn)
        os.environ["DATABASE_URL"] = dsn
        get_settings.cache_clear()
        asyncio.run(_work())


async def _work() -> None:
    """Run the background jobs, and nothing else, until SIGTERM or SIGINT."""
    from app.context import build_context

    settings = get_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    context = await build_context(settings)
    try:
        context.start(background_jobs=True)
        logger.info(
            "worker running",
            extra={
                "media_jobs_at_once": settings.media_processing_workers,
                "job_memory_bytes": settings.media_job_memory_bytes,
                "job_timeout_seconds": settings.media_job_timeout_seconds,
                "wakeups": context.wakeups is not None,
            },
        )
        await stop.wait()
        logger.info("worker stopping")
    finally:
        await context.aclose()


def _prepare_multiprocess_metrics(directory: Path) -> None:
    """Workers write metric values here; /metrics adds them up. Emptied at each start."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory.resolve())


def cmd_migrate(args: argparse.Namespace) -> None:
    with _database() as dsn:
        _migrate(dsn)


def cmd_seed_demo(args: argparse.Namespace) -> None:
    from app.seed import seed_demo

    with _database() as dsn:
        _migrate(dsn)
        asyncio.run(seed_demo(dsn, base_url=args.base_url))


def cmd_import(args: argparse.Namespace) -> None:
    """Import a Takeout, a folder of photos or a Timeless export into a family, as a member."""
    source = Path(args.path)
    if not source.exists():
        sys.exit(f"timeless import: {source} does not exist")
    with _database() as dsn:
        _migrate(dsn)
        report = asyncio.run(_import(dsn, source, UUID(args.family), UUID(args.as_user)))
    print(json.dumps(report, indent=2))


async def _import(dsn: str, source: Path, family_id: UUID, user_id: UUID) -> dict[str, object]:
    from pydantic import SecretStr

    from app.adapters.archive.sources import SourceError
    from app.context import build_context
    from app.errors import DomainError
    from app.progress_bar import ProgressBar
    from app.services import import_service

    settings = get_settings().model_copy(update={"database_url": SecretStr(dsn)})
    context = await build_context(settings)
    bar = ProgressBar(f"importing {source.name}")
    try:
        report = await import_service.import_local(
            context.database,
            context.storage,
            settings,
            path=source,
            family_unit_id=family_id,
            user_id=user_id,
            on_progress=lambda p: bar.update(p.files_done, p.files_total, p.bytes_done),
        )
    except (SourceError, DomainError) as exc:
        sys.exit(f"timeless import: {exc}")
    finally:
        bar.close()
        await context.aclose()
    # The photos are stored and registered; any running server's media sweep processes them.
    return report.as_json()


def cmd_backup(args: argparse.Namespace) -> None:
    from app.db.backup import BackupError, backup

    target = Path(args.file)
    with _database() as dsn:
        try:
            size = backup(dsn, target)
        except BackupError as exc:
            sys.exit(f"timeless backup: {exc}")
    logger.info("backup written", extra={"file": str(target.resolve()), "bytes": size})


def cmd_restore(args: argparse.Namespace) -> None:
    from app.db.backup import BackupError, restore

    source = Path(args.file)
    if not source.is_file():
        sys.exit(f"timeless restore: {source} is not a file")
    with _database() as dsn:
        try:
            asyncio.run(restore(dsn, source))
        except BackupError as exc:
            sys.exit(f"timeless restore: {exc}")
        logger.info("backup restored", extra={"file": str(source.resolve())})
        # A backup older than this code: bring it up to date now, not at the next start.
        _migrate(dsn)


def cmd_export(args: argparse.Namespace) -> None:
    import uuid

    try:
        family = uuid.UUID(args.family)
    except ValueError:
        sys.exit(f"timeless export: --family {args.family!r} is not a family id (a UUID)")
    include = [part.strip() for part in args.include.split(",") if part.strip()]
    if not include or not set(include) <= {"originals", "previews"}:
        sys.exit("timeless export: --include takes originals, previews or both")
    out = Path(args.out)
    if out.is_dir():
        sys.exit(f"timeless export: {out} is a folder; name the zip file to write")
    with _database() as dsn:
        _migrate(dsn)
        summary = asyncio.run(_export(dsn, family, out, include))
    logger.info(
        "archive written",
        extra={
            "file": str(out.resolve()),
            "bytes": out.stat().st_size,
            "memories": summary.memories,
            "files": summary.totals.payload_files,
        },
    )


async def _export(
    dsn: str, family: "uuid.UUID", out: Path, include: list[str]
) -> "archive_writer.ArchiveSummary":
    from app.adapters.supabase.client import Supabase
    from app.context import media_storage
    from app.db.postgres import Database
    from app.errors import NotFound
    from app.services import archive_writer

    settings = get_settings()
    database = await Database.connect(dsn, min_size=1, max_size=2)
    supabase = Supabase.from_settings(settings) if settings.supabase_enabled else None
    storage = media_storage(settings, database, supabase)
    # Written beside the target and renamed when complete: never a half zip under its name.
    partial = out.with_name(f"{out.name}.part")
    bar = ProgressBar(sys.stderr)
    try:
        async with archive_writer.family_snapshot(database, family) as snapshot:
            with partial.open("wb") as file:
                summary = await archive_writer.write_archive(
                    snapshot, storage, file, include=include, report=bar.report
                )
        partial.replace(out)
    except NotFound:
        sys.exit(f"timeless export: there is no family {family}")
    finally:
        bar.done()
        partial.unlink(missing_ok=True)
        await database.close()
        if supabase is not None:
            await supabase.aclose()
    return summary


class ProgressBar:
    """`[#####.....]  52 %  1,040/2,000 files  1.1 GB` on a terminal, redrawn in place.

    Written by hand (a carriage return on standard error, at most ten times a second) rather
    than with tqdm: one line of output does not justify a dependency. Nothing is drawn when
    standard error is not a terminal (a log file, CI): the final log line says it all.
    """

    WIDTH = 30

    def __init__(self, stream: "TextIO") -> None:
        self._stream = stream
        self._active = stream.isatty()
        self._drawn_at = 0.0

    async def report(self, progress: "archive_writer.Progress") -> None:
        import time

        from app.adapters.bag_zip import human_size

        now = time.monotonic()
        last = progress.files_done >= progress.files_total
        if not self._active or (now - self._drawn_at < 0.1 and not last):
            return
        self._drawn_at = now
        share = progress.files_done / progress.files_total if progress.files_total else 1.0
        filled = round(share * self.WIDTH)
        self._stream.write(
            f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {share:4.0%}  "
            f"{progress.files_done:,}/{progress.files_total:,} files  "
            f"{human_size(progress.bytes_done)}   "
        )
        self._stream.flush()

    def done(self) -> None:
        if self._active and self._drawn_at:
            self._stream.write("\n")
            self._stream.flush()


def main(argv: list[str] | None = None) -> None:
    configure_logging(get_settings().log_level)
    parser = argparse.ArgumentParser(prog="timeless", description="Timeless Love backend")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the API (and the built-in PostgreSQL if needed)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="serve requests only: media processing and the other background jobs are left "
        "to `timeless worker`",
    )
    serve.set_defaults(func=cmd_serve)
    sub.add_parser(
        "worker",
        help="run the media pipeline and the other background jobs, no HTTP (any number, "
        "on any machine with the same DATABASE_URL and storage)",
    ).set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="apply migrations to DATABASE_URL").set_defaults(
        func=cmd_migrate
    )
    seed = sub.add_parser("seed-demo", help="create a demo family with memories")
    seed.add_argument(
        "--base-url", help="where the running server is reached (default: from the settings)"
    )
    seed.set_defaults(func=cmd_seed_demo)
    imports = sub.add_parser(
        "import", help="import a Google Takeout, a folder of photos or a Timeless export"
    )
    imports.add_argument("path", help="a zip file or a folder")
    imports.add_argument("--family", required=True, help="the family's id")
    imports.add_argument(
        "--as", dest="as_user", required=True, help="the adult or grandparent it is imported as"
    )
    imports.set_defaults(func=cmd_import)
    backup = sub.add_parser(
        "backup", help="write the database to FILE (pg_dump's custom format; safe while serving)"
    )
    backup.add_argument("file", metavar="FILE")
    backup.set_defaults(func=cmd_backup)
    restore = sub.add_parser(
        "restore", help="restore FILE from `timeless backup` into an empty database, then migrate"
    )
    restore.add_argument("file", metavar="FILE")
    restore.set_defaults(func=cmd_restore)
    export = sub.add_parser(
        "export", help="write a family's archive (a BagIt zip, docs/archive.md) to FILE"
    )
    export.add_argument("--family", required=True, metavar="ID", help="the family's id")
    export.add_argument("--out", required=True, metavar="FILE", help="the zip file to write")
    export.add_argument(
        "--include",
        default="originals",
        metavar="PARTS",
        help="originals, previews, or originals,previews (default: originals)",
    )
    export.set_defaults(func=cmd_export)
    args = parser.parse_args(argv)
    # Interrupted by SIGTERM: exit the usual way (128 + 15), through every `finally`, so a
    # built-in PostgreSQL started here is stopped. `serve` treats SIGTERM as its normal end.
    signal.signal(signal.SIGTERM, _exit_with(128 + signal.SIGTERM))
    try:
        args.func(args)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
