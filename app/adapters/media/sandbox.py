"""Media work in child processes, with a memory ceiling and time limits per job.

Decoders are big C libraries (libjpeg, libpng, libheif/libde265, FFmpeg) fed with files from
the internet. Whatever one of them does with a file — crash, allocate without end, loop for
ever — must cost that file only, never the process that serves the API or the worker that
runs the next file. So every job runs in a **child process**:

- **Memory**: `RLIMIT_AS` = the child's size when it starts + `memory_bytes`. An allocation
  past it fails (`MemoryError`, or a decoder error caused by one) and the job ends as
  `JobKilled("memory")`. glibc is told to keep at most two malloc arenas first: each thread
  of a decoder would otherwise reserve 64 MiB of address space for its own arena.
- **Time**: `RLIMIT_CPU` (`cpu_seconds` for each job: SIGXCPU) bounds CPU, the parent's
  `wall_seconds` bounds waiting (sleeping or blocked in I/O): past it the parent kills the
  child. Both end as `JobKilled("timeout")`.
- **Crashes**: a child that dies by a signal (SIGSEGV, SIGABRT, SIGBUS, ...) without an answer
  ends as `JobKilled("crashed")`. Core dumps are off (`RLIMIT_CORE` = 0).
- **Orphans**: a child dies with the process that asked for it, so killing the worker with
  SIGKILL leaves no decoder running. Each child watches a "lifeline" pipe whose writing end
  only that process holds (end of file: it is gone), and dies with the forkserver
  (`PR_SET_PDEATHSIG`). The lifeline is needed because the forkserver waits for its
  children before it exits, so its own death cannot be what tells them.

The children come from a `forkserver`: a small server process, started once by exec (never
forked from the asyncio process, whose threads — thread pool, asyncpg, libraries — could hold
a lock at the moment of a fork), that imports the decoders and decodes one tiny file of each
kind up front (`warm_up.py`), then forks the children; the decoders' pages are shared
copy-on-write.

**Reused children.** A child takes up to `jobs_per_child` jobs, one at a time, then exits and
a fresh one replaces it; it ends at once after a crash, a timeout, a memory failure, an
unexpected error, or when its address space has grown by more than a quarter of
`memory_bytes` (fragmentation or a leak: the next job must find the memory it was promised).
With `jobs_per_child` = 1 every job gets a fresh child. Measured (docs/storage.md): a fresh
child costs ~25 ms of CPU and 50-80 ms of wall time per job on the 2-CPU machine, a reused
one ~1 ms; a crash costs only its own job either way (unlike `concurrent.futures`' pool,
which breaks for every job in flight).

This is a boundary against accidents, not against an attacker: the child runs as the same
user, with the same environment and files as the process that started it.

`JobKilled` is a `MediaRejected`: the media becomes `failed` with a reason a person can read.
Anything else the job raises comes back as `JobError` (server-side trouble: retried).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import resource
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final, Literal, TypeVar, cast

from app.adapters.media.common import MediaRejected

logger = logging.getLogger(__name__)

T = TypeVar("T")
Cause = Literal["crashed", "memory", "timeout"]

# What the forkserver imports once, so that each child starts with the decoders loaded.
DEFAULT_PRELOAD: Final = ("app.adapters.media", "app.adapters.media.warm_up")

CRASHED_REASON: Final = "the file could not be processed: the decoder crashed on it"
MEMORY_REASON: Final = "processing this file needs more memory than the server allows"
TIMEOUT_REASON: Final = "processing this file took longer than the server allows"

# glibc's mallopt(M_ARENA_MAX, ...) and prctl(PR_SET_PDEATHSIG, ...).
_M_ARENA_MAX: Final = -8
_PR_SET_PDEATHSIG: Final = 1
# How long a child that has answered may take to exit before it is killed.
_EXIT_GRACE_SECONDS: Final = 5.0


@dataclass(frozen=True)
class JobLimits:
    # Address space one job may use beyond what the child had when the job started.
    memory_bytes: int
    # CPU time of the whole child (all its threads), enforced by the kernel.
    cpu_seconds: int
    # Time from start to answer, enforced by the parent.
    wall_seconds: float
    # libheif's decoding threads per job (pillow_heif.options.DECODE_THREADS); 0 keeps its own.
    heif_decode_threads: int = 0
    # glibc malloc arenas the child may create (M_ARENA_MAX); 0 keeps glibc's default.
    malloc_arenas: int = 2


class JobKilled(MediaRejected):
    """The job's child crashed, ran out of its memory or out of its time."""

    def __init__(self, cause: Cause, reason: str) -> None:
        super().__init__(reason)
        self.cause = cause


class JobError(Exception):
    """The job failed for a reason that is not the file's (a bug, storage, a full disk)."""


class SandboxClosed(JobError):
    """The sandbox was closed (the process is stopping) while the job ran."""


@dataclass(frozen=True)
class _Outcome:
    kind: Literal["ok", "rejected", "memory", "error"]
    value: Any = None
    # The child's peak resident memory (VmHWM), for metrics.
    peak_rss_bytes: int = 0
    # The child exits after this answer (its last job, or it should not be trusted with more).
    retiring: bool = True


@dataclass
class _Child:
    process: BaseProcess
    conn: Connection
    # The child's end of the pipe, closed here once the child has started.
    their_end: Connection | None = None


class Sandbox:
    """Runs picklable jobs (a module-level function, or a `functools.partial` of one).

    With `jobs_per_child` = 1 every job gets a fresh child; above that, a child that finished a
    job normally takes the next one, up to that many (a crash, a timeout or a memory failure
    always ends it). At most as many children live as jobs run at once.
    """

    def __init__(
        self,
        limits: JobLimits,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        *,
        jobs_per_child: int = 1,
    ) -> None:
        self.limits = limits
        self.jobs_per_child = max(1, jobs_per_child)
        self._context = multiprocessing.get_context("forkserver")
        # Process-wide (there is one forkserver per process); every sandbox asks for the same.
        self._context.set_forkserver_preload(list(preload))
        # The children read from this pipe; only this process holds its writing end.
        self._lifeline, self._lifeline_writer = self._context.Pipe(duplex=False)
        self._idle: list[_Child] = []
        self._busy: list[_Child] = []
        self._lock = threading.Lock()
        self._closed = False
        self.last_peak_rss_bytes = 0

    def run(self, job: Callable[[], T]) -> T:
        """Run `job()` in a child; blocks, so call it from a worker thread.

        Returns what the job returned, or raises what it raised if that was `MediaRejected`,
        or `JobKilled` (crash, memory, time), or `JobError` (anything else).
        """
        child = self._take()
        outcome: _Outcome | Cause | int = "timeout"
        try:
            try:
                child.conn.send(job)
            except (BrokenPipeError, ConnectionError, EOFError):
                pass  # the child is gone already: _wait() reads why
            except Exception as exc:  # an unpicklable job is a bug
                outcome = _Outcome("error", f"the job could not be sent: {exc}", retiring=False)
            else:
                outcome = self._wait(child)
        finally:
            self._give_back(child, outcome)
        return cast(T, self._result(outcome))

    def _take(self) -> _Child:
        with self._lock:
            if self._closed:
                raise SandboxClosed("the media sandbox is closed")
            child = self._idle.pop() if self._idle else None
            if child is None:
                ours, theirs = self._context.Pipe(duplex=True)
                process = self._context.Process(
                    target=_child_main,
                    args=(theirs, self._lifeline, self.limits, self.jobs_per_child),
                    name="timeless-media-job",
                )
                child = _Child(process, ours, theirs)
            self._busy.append(child)
        if child.their_end is not None:
            try:
                with _main_module_hidden():
                    child.process.start()
            except BaseException:
                with self._lock:
                    self._busy.remove(child)
                raise
            # Only the child holds its end now: its death reads as end of file.
            child.their_end.close()
            child.their_end = None
        return child

    def _give_back(self, child: _Child, outcome: _Outcome | Cause | int) -> None:
        keep = isinstance(outcome, _Outcome) and not outcome.retiring
        with self._lock:
            self._busy.remove(child)
            if keep and not self._closed:
                self._idle.append(child)
                return
        _end(child)

    def _wait(self, child: _Child) -> _Outcome | Cause | int:
        """The child's answer, or why there is none (a cause, or its exit code)."""
        process = child.process
        # poll() is true on data and on end of file (the child died without answering).
        if not child.conn.poll(self.limits.wall_seconds):
            process.kill()
            return "timeout"
        try:
            outcome = child.conn.recv()
        except (EOFError, OSError):
            process.join()
            code = process.exitcode
            assert code is not None
            # SIGXCPU: the soft CPU limit (its default action ends the process).
            return "timeout" if code == -signal.SIGXCPU else code
        return cast(_Outcome, outcome)

    def _result(self, outcome: _Outcome | Cause | int) -> Any:
        if isinstance(outcome, _Outcome):
            self.last_peak_rss_bytes = outcome.peak_rss_bytes
            if outcome.kind == "ok":
                return outcome.value
            if outcome.kind == "rejected":
                raise MediaRejected(outcome.value)
            if outcome.kind == "memory":
                raise JobKilled("memory", MEMORY_REASON)
            raise JobError(outcome.value)
        if self._closed:
            raise SandboxClosed("the media sandbox was closed while the job ran")
        if outcome == "timeout":
            raise JobKilled("timeout", TIMEOUT_REASON)
        if isinstance(outcome, int) and outcome < 0:
            # Killed by a signal: SIGSEGV, SIGABRT, SIGBUS, SIGFPE, the OOM killer's SIGKILL...
            logger.warning("media job crashed", extra={"signal": signal.Signals(-outcome).name})
            raise JobKilled("crashed", CRASHED_REASON)
        # Exited without answering: the child could not even start the job (a bug).
        raise JobError(f"the media job exited with code {outcome} without an answer")

    def warm_up(self) -> None:
        """Start the forkserver now (about a second: it imports the decoders), not at job one."""
        self.run(_nothing)

    def close(self) -> None:
        """Kill every child; the jobs still running raise `SandboxClosed`. Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for child in busy:
            with contextlib.suppress(Exception):
                child.process.kill()
        for child in idle:
            _end(child)


def _end(child: _Child) -> None:
    """Stop a child that is done (it exits by itself after its last answer) and reap it."""
    process = child.process
    with contextlib.suppress(Exception):
        child.conn.close()  # a child waiting for a job reads end of file and exits
    if process.pid is not None:
        process.join(_EXIT_GRACE_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
    with contextlib.suppress(Exception):
        process.close()


def _nothing() -> None:
    return None


_MAIN_MODULE_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start children without the parent's main module.

    multiprocessing makes each child import the parent's main module (the `timeless` script,
    `python -m app.cli`, uvicorn, pytest) before anything else, in case the job was defined
    there: measured at 50-200 ms of CPU per child for a main module that imports the app.
    Jobs are functions of importable modules, so the main module is hidden while a child
    starts (for the milliseconds it takes to hand the request to the forkserver).
    """
    with _MAIN_MODULE_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


# In the child -----------------------------------------------------------------------------------


def _child_main(
    conn: Connection, lifeline: Connection, limits: JobLimits, jobs_per_child: int
) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the parent decides what happens
    # to the job (it hands it back when it stops), not the interrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(lifeline)
    _apply_limits(limits)
    start_size = _address_space_bytes()
    for done in range(1, jobs_per_child + 1):
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break  # the sandbox closed this idle child
        except Exception as exc:  # a job this process cannot unpickle: a bug
            conn.send(_Outcome("error", f"the job could not be received: {exc!r}"))
            break
        _limit_cpu_for_one_job(limits.cpu_seconds)
        outcome = _run_job(job)
        # A child that ran out of memory, or whose heap has grown (fragmentation, a leak),
        # is not given another job: each job should find the memory it was promised.
        retiring = (
            done == jobs_per_child
            or outcome.kind in ("memory", "error")
            or _address_space_bytes() - start_size > limits.memory_bytes // 4
        )
        outcome = _Outcome(outcome.kind, outcome.value, _peak_rss_bytes(), retiring)
        try:
            conn.send(outcome)
        except MemoryError:
            conn.send(_Outcome("memory"))
        except Exception as exc:  # an unpicklable result is a bug
            conn.send(_Outcome("error", f"the result could not be sent back: {exc}"))
        if retiring:
            break
    conn.close()
    # Nothing to clean up, and no finaliser of a decoder gets a chance to crash after the answer.
    os._exit(0)


def _run_job(job: Callable[[], Any]) -> _Outcome:
    try:
        return _Outcome("ok", job())
    except MediaRejected as exc:
        # Decoders report a failed allocation as their own error, which the media adapters
        # turn into "corrupt"; the MemoryError underneath says what really happened.
        memory = _caused_by_memory(exc)
        return _Outcome("memory") if memory else _Outcome("rejected", exc.reason)
    except MemoryError:
        return _Outcome("memory")
    except BaseException as exc:  # anything else: the parent logs it and retries later
        return _Outcome("error", f"{type(exc).__name__}: {exc}")


def _caused_by_memory(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _die_with_parent(lifeline: Connection) -> None:
    threading.Thread(target=_watch_lifeline, args=(lifeline,), daemon=True).start()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The forkserver may have died before prctl: then nobody waits for us.
    if os.getppid() == 1:
        os._exit(1)


def _watch_lifeline(lifeline: Connection) -> None:
    # Nothing is ever sent: this returns when the sandbox's process is gone.
    with contextlib.suppress(BaseException):
        lifeline.recv_bytes()
    os._exit(1)


def _apply_limits(limits: JobLimits) -> None:
    if limits.malloc_arenas > 0:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).mallopt(_M_ARENA_MAX, limits.malloc_arenas)
    if limits.heif_decode_threads > 0:
        import pillow_heif

        pillow_heif.options.DECODE_THREADS = limits.heif_decode_threads
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ceiling = _address_space_bytes() + limits.memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))


def _limit_cpu_for_one_job(cpu_seconds: int) -> None:
    # The kernel counts the child's whole life: the limit is what it has used + the job's.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = int(used) + max(1, int(cpu_seconds)) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
