"""The loop shared by the mail outbox, archive exports and imports (app/services/polling_job.py)."""

import asyncio
from collections.abc import Callable

import pytest

from app.services.polling_job import PollingJob

# Long enough that a test only passes if a wake-up, not the poll, drives the job.
NEVER = 3600.0


class Recorder(PollingJob):
    name = "recorder"

    def __init__(self, poll_interval: float = NEVER) -> None:
        super().__init__(poll_interval)
        self.queue: list[str] = []
        self.done: list[str] = []
        self.housekeeping = 0
        self.fail_next = False
        self.progressed = asyncio.Event()

    async def run_pass(self) -> bool:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("a bug in one pass")
        if not self.queue:
            return False
        self.done.append(self.queue.pop(0))
        self.progressed.set()
        return True

    async def after_passes(self) -> None:
        self.housekeeping += 1
        self.progressed.set()


async def _until(job: "Recorder", condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while True:
            job.progressed.clear()  # cleared before the check: no change is missed
            if condition():
                return
            await job.progressed.wait()


async def test_first_pass_runs_at_once_and_drains_the_queue() -> None:
    job = Recorder()
    job.queue = ["left by a stopped process", "and another"]
    job.start()
    try:
        await _until(job, lambda: job.housekeeping == 1)
        assert job.done == ["left by a stopped process", "and another"]
    finally:
        await job.stop()


async def test_a_wake_up_runs_the_work_without_waiting_for_the_poll() -> None:
    job = Recorder()
    job.start()
    try:
        await _until(job, lambda: job.housekeeping == 1)
        job.queue.append("queued and committed")
        job.wake()
        await _until(job, lambda: job.done == ["queued and committed"])
    finally:
        await job.stop()


async def test_a_wake_up_during_a_pass_is_not_lost() -> None:
    job = Recorder()
    woken_during_pass = False
    original = job.run_pass

    async def pass_that_sees_new_work() -> bool:
        nonlocal woken_during_pass
        if not woken_during_pass:
            woken_during_pass = True
            # Queued and woken while this pass runs, after it read the (empty) queue.
            result = await original()
            job.queue.append("arrived mid-pass")
            job.wake()
            return result
        return await original()

    job.run_pass = pass_that_sees_new_work  # type: ignore[method-assign]
    job.start()
    try:
        await _until(job, lambda: job.done == ["arrived mid-pass"])
    finally:
        await job.stop()


async def test_a_failing_pass_is_logged_and_the_job_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = Recorder()
    job.fail_next = True
    job.start()
    try:
        await asyncio.sleep(0)
        job.queue.append("after the failure")
        job.wake()
        await _until(job, lambda: job.done == ["after the failure"])
        assert "recorder pass failed" in caplog.text
    finally:
        await job.stop()


async def test_a_poll_interval_of_zero_leaves_the_job_off() -> None:
    job = Recorder(poll_interval=0)
    job.start()
    assert not job.running
    await job.stop()


async def test_stop_ends_the_loop_and_start_can_run_it_again() -> None:
    job = Recorder()
    job.start()
    assert job.running
    await job.stop()
    assert not job.running
    job.queue.append("after a restart")
    job.start()
    try:
        await _until(job, lambda: job.done == ["after a restart"])
    finally:
        await job.stop()
