"""The media job sandbox: each job in a child process with a memory ceiling and time limits.

The misbehaving jobs are real: a SIGSEGV, allocations up to the ceiling, a CPU spin, a hang,
and a real decoder (Pillow) asked to decode a picture bigger than the ceiling.
"""

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from app.adapters.media import MediaLimits, MediaRejected, process_file
from app.adapters.media.sandbox import (
    CRASHED_REASON,
    MEMORY_REASON,
    TIMEOUT_REASON,
    JobError,
    JobKilled,
    JobLimits,
    Sandbox,
    SandboxClosed,
)
from app.services.media_processor import heif_threads_per_job, job_limits
from tests.helpers import decoder_double as double
from tests.helpers import media_samples as samples

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]


def sandbox(**limits: float) -> Sandbox:
    values: dict[str, float] = {"memory_bytes": 256 * MiB, "cpu_seconds": 30, "wall_seconds": 60}
    values.update(limits)
    return Sandbox(JobLimits(**values))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("jobs_at_once", "cpus", "threads"),
    [(2, 2, 1), (1, 2, 2), (3, 2, 1), (2, 8, 4), (2, 6, 3), (1, 32, 4)],
)
def test_heic_decoding_threads_are_the_cpus_shared_among_the_jobs_at_once(
    jobs_at_once: int, cpus: int, threads: int
):
    assert heif_threads_per_job(jobs_at_once, cpus) == threads


def test_a_configured_heic_thread_count_is_kept(settings):
    chosen = settings.model_copy(update={"media_heif_decode_threads": 3})
    automatic = settings.model_copy(update={"media_heif_decode_threads": 0})

    assert job_limits(chosen).heif_decode_threads == 3
    assert job_limits(automatic).heif_decode_threads == heif_threads_per_job(
        settings.media_processing_workers, len(os.sched_getaffinity(0))
    )


def test_a_job_returns_its_result_from_the_child(tmp_path: Path):
    source = tmp_path / "photo.jpg"
    source.write_bytes(samples.jpeg((600, 400)))
    job = functools.partial(process_file, source, "image/jpeg", tmp_path)

    result = sandbox().run(job)

    assert (result.mime_type, result.info.width, result.info.height) == ("image/jpeg", 400, 600)
    assert {variant.name for variant in result.variants} >= {"thumbnail"}
    assert all((tmp_path / variant.file).stat().st_size > 0 for variant in result.variants)


def test_the_job_runs_in_another_process():
    assert sandbox().run(os.getpid) != os.getpid()


def test_a_rejected_file_keeps_its_reason():
    with pytest.raises(MediaRejected) as caught:
        sandbox().run(functools.partial(double.refuse, "the file is empty"))
    assert caught.value.reason == "the file is empty"
    assert not isinstance(caught.value, JobKilled)


def test_a_segfault_is_a_crash_and_the_next_job_runs():
    box = sandbox()
    with pytest.raises(JobKilled) as caught:
        box.run(double.segfault)
    assert caught.value.cause == "crashed"
    assert caught.value.reason == CRASHED_REASON
    assert box.run(functools.partial(double.answer, 42)) == 42


def test_allocating_past_the_ceiling_fails_cleanly():
    box = sandbox(memory_bytes=128 * MiB)
    with pytest.raises(JobKilled) as caught:
        box.run(double.allocate_forever)
    assert caught.value.cause == "memory"
    assert caught.value.reason == MEMORY_REASON
    assert box.last_peak_rss_bytes < 400 * MiB
    assert box.run(functools.partial(double.answer, "next")) == "next"


def test_a_real_decoder_past_the_ceiling_fails_as_out_of_memory(tmp_path: Path):
    # 9000 x 9000 RGB: 243 MB decoded, a few hundred KB on disk. Allowed by the pixel limit,
    # stopped by the memory ceiling — and not reported as "corrupt".
    source = tmp_path / "big.png"
    source.write_bytes(samples.blank_png(9000, 9000))
    # Past the processing's own check of the decoded size, as a decoder's runaway would be.
    limits = MediaLimits(max_pixels=200_000_000, max_decoded_bytes=2**40)
    job = functools.partial(process_file, source, "image/png", tmp_path, limits)
    with pytest.raises(JobKilled) as caught:
        sandbox(memory_bytes=160 * MiB).run(job)
    assert caught.value.cause == "memory"


def test_the_same_picture_within_the_ceiling_is_processed(tmp_path: Path):
    source = tmp_path / "big.png"
    source.write_bytes(samples.blank_png(3000, 3000))
    job = functools.partial(process_file, source, "image/png", tmp_path)
    result = sandbox(memory_bytes=160 * MiB).run(job)
    assert (result.info.width, result.info.height) == (3000, 3000)


def test_cpu_time_is_limited():
    with pytest.raises(JobKilled) as caught:
        sandbox(cpu_seconds=1).run(double.spin)
    assert caught.value.cause == "timeout"
    assert caught.value.reason == TIMEOUT_REASON


def test_wall_time_is_limited_and_the_child_is_killed(tmp_path: Path):
    pid_file = tmp_path / "pid"
    with pytest.raises(JobKilled) as caught:
        sandbox(wall_seconds=2).run(functools.partial(double.getpid_and_sleep, str(pid_file), 3600))
    assert caught.value.cause == "timeout"
    assert not psutil.pid_exists(int(pid_file.read_text()))


def test_any_other_error_is_a_job_error_not_a_verdict_on_the_file():
    with pytest.raises(JobError) as caught:
        sandbox().run(double.break_down)
    assert "RuntimeError: a bug in the decoder glue" in str(caught.value)


def test_close_kills_running_jobs(tmp_path: Path):
    import threading

    box = sandbox()
    pid_file = tmp_path / "pid"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.run(functools.partial(double.getpid_and_sleep, str(pid_file), 3600))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    _wait_for(pid_file.exists)
    box.close()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], SandboxClosed)
    with pytest.raises(SandboxClosed):
        box.run(functools.partial(double.answer, 1))


# Reused children (jobs_per_child > 1) -----------------------------------------------------------


def test_a_child_takes_several_jobs_then_a_new_one_starts():
    box = Sandbox(
        JobLimits(memory_bytes=256 * MiB, cpu_seconds=30, wall_seconds=60), jobs_per_child=3
    )
    pids = [box.run(os.getpid) for _ in range(4)]
    assert pids[0] == pids[1] == pids[2] != pids[3]
    box.close()


def test_a_reused_child_after_a_crash_is_a_new_one():
    box = Sandbox(
        JobLimits(memory_bytes=256 * MiB, cpu_seconds=30, wall_seconds=60), jobs_per_child=10
    )
    first = box.run(os.getpid)
    with pytest.raises(JobKilled):
        box.run(double.segfault)
    assert box.run(os.getpid) != first
    box.close()


def test_the_cpu_limit_is_per_job_in_a_reused_child():
    box = Sandbox(
        JobLimits(memory_bytes=256 * MiB, cpu_seconds=2, wall_seconds=60), jobs_per_child=10
    )
    # 1.2 s each: over the limit together, within it one by one.
    first = box.run(functools.partial(double.burn, 1.2))
    assert box.run(functools.partial(double.burn, 1.2)) == first
    with pytest.raises(JobKilled) as caught:
        box.run(double.spin)
    assert caught.value.cause == "timeout"
    box.close()


def test_a_child_whose_memory_grew_takes_no_more_jobs():
    box = Sandbox(
        JobLimits(memory_bytes=256 * MiB, cpu_seconds=30, wall_seconds=60), jobs_per_child=10
    )
    small = box.run(functools.partial(double.hoard, 1))
    assert box.run(functools.partial(double.hoard, 1)) == small
    big = box.run(functools.partial(double.hoard, 96))  # over a quarter of the allowance
    assert big == small
    assert box.run(os.getpid) != small
    box.close()


def test_close_ends_idle_children():
    box = Sandbox(
        JobLimits(memory_bytes=256 * MiB, cpu_seconds=30, wall_seconds=60), jobs_per_child=10
    )
    pid = box.run(os.getpid)
    box.close()
    _wait_for(lambda: not _alive(pid))


_ORPHAN_SCRIPT = """
import functools, sys
from app.adapters.media.sandbox import JobLimits, Sandbox
from tests.helpers import decoder_double as double
box = Sandbox(JobLimits(memory_bytes=256 << 20, cpu_seconds=600, wall_seconds=600))
box.run(functools.partial(double.getpid_and_sleep, sys.argv[1], 600))
"""


def test_a_job_dies_with_the_process_that_started_it(tmp_path: Path):
    # kill -9 of a worker must not leave its decoder running on, unsupervised.
    pid_file = tmp_path / "pid"
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, str(pid_file)], cwd=ROOT)
    try:
        _wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", within=60)
        child = int(pid_file.read_text())
        assert psutil.pid_exists(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        _wait_for(lambda: not _alive(child), within=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for(condition, within: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)
