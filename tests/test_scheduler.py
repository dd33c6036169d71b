"""The scheduler and its pure parts (``request_queue``, ``dispatch``), over fake runners:
queue order, which runner takes a job, waiting for one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from minifal.fleet.dispatch import choose_runner
from minifal.fleet.jobs import Job
from minifal.fleet.request_queue import QueueFull, RequestQueue
from minifal.fleet.scheduler import Scheduler, ShuttingDown, StartTimeout, Withdrawn

pytestmark = pytest.mark.unit

# -- RequestQueue ----------------------------------------------------------------------------------


def test_queue_is_fifo_within_a_priority_and_normal_before_low() -> None:
    queue: RequestQueue[str] = RequestQueue()
    queue.push("low-1", "low")
    queue.push("normal-1")
    queue.push("low-2", "low")
    queue.push("normal-2", "normal")
    assert len(queue) == 4
    assert list(queue) == ["normal-1", "normal-2", "low-1", "low-2"]
    assert [queue.pop() for _ in range(4)] == ["normal-1", "normal-2", "low-1", "low-2"]
    assert queue.pop() is None
    assert len(queue) == 0


def test_queue_position_is_zero_based_and_follows_serving_order() -> None:
    queue: RequestQueue[str] = RequestQueue()
    queue.push("low", "low")
    queue.push("a")
    queue.push("b")
    assert [queue.position(item) for item in ("a", "b", "low")] == [0, 1, 2]
    assert queue.position("absent") is None
    queue.pop()
    assert queue.position("b") == 0 and queue.position("low") == 1


def test_queue_position_and_remove_go_by_identity() -> None:
    first, second = [1], [1]  # equal, not the same request
    queue: RequestQueue[list[int]] = RequestQueue()
    queue.push(first)
    queue.push(second)
    assert queue.position(second) == 1
    assert queue.remove(second) is True
    assert list(queue) == [first] and next(iter(queue)) is first
    assert queue.remove(second) is False


def test_queue_remove_from_either_line() -> None:
    queue: RequestQueue[str] = RequestQueue()
    for item, priority in (("a", "normal"), ("b", "low"), ("c", "normal")):
        queue.push(item, priority)  # type: ignore[arg-type]
    assert queue.remove("b") and queue.remove("a")
    assert list(queue) == ["c"]
    assert queue.remove("zzz") is False


def test_queue_full_raises_and_keeps_what_it_has() -> None:
    queue: RequestQueue[str] = RequestQueue(max_size=2)
    queue.push("a")
    queue.push("b", "low")
    with pytest.raises(QueueFull, match="2"):
        queue.push("c")
    assert list(queue) == ["a", "b"]
    queue.push_front("retry")  # a retry goes first, even past the limit
    assert list(queue) == ["retry", "a", "b"]
    queue.pop()
    queue.pop()
    queue.push("d", "low")
    assert list(queue) == ["b", "d"]


def test_unbounded_queue_never_full() -> None:
    queue: RequestQueue[int] = RequestQueue()
    for index in range(1000):
        queue.push(index)
    assert len(queue) == 1000


# -- choose_runner ---------------------------------------------------------------------------------


@dataclass
class FakeRunner:
    name: str
    in_flight: int = 0
    last_dispatch: float = 0.0
    accepts_requests: bool = True

    def took_request(self, now: float) -> None:
        self.in_flight += 1
        self.last_dispatch = now

    def finished_request(self, now: float) -> None:
        self.in_flight = max(0, self.in_flight - 1)


def test_choose_runner_least_in_flight() -> None:
    runners = [FakeRunner("a", 2), FakeRunner("b", 0), FakeRunner("c", 1)]
    assert choose_runner(runners, 4) is runners[1]


def test_choose_runner_never_above_max_multiplexing() -> None:
    runners = [FakeRunner("a", 1), FakeRunner("b", 1)]
    assert choose_runner(runners, 1) is None
    runners[1].in_flight = 0
    assert choose_runner(runners, 1) is runners[1]
    assert choose_runner([FakeRunner("c", 3)], 3) is None


def test_choose_runner_skips_runners_not_ready() -> None:
    runners = [FakeRunner("setup", accepts_requests=False), FakeRunner("busy", 1)]
    assert choose_runner(runners, 2) is runners[1]
    assert choose_runner(runners[:1], 2) is None
    assert choose_runner([], 1) is None


def test_choose_runner_ties_go_to_least_recently_dispatched() -> None:
    runners = [FakeRunner("a", 0, 30.0), FakeRunner("b", 0, 10.0), FakeRunner("c", 0, 20.0)]
    assert choose_runner(runners, 1) is runners[1]
    # Fewer in flight wins over an older dispatch.
    runners[1].in_flight = 1
    assert choose_runner(runners, 2) is runners[2]


def test_choose_runner_spreads_load_evenly() -> None:
    runners = [FakeRunner("a"), FakeRunner("b"), FakeRunner("c")]
    served = []
    for now in range(6):
        runner = choose_runner(runners, 1)
        assert runner is not None
        runner.took_request(float(now + 1))
        served.append(runner.name)
        runner.finished_request(float(now + 1))
    assert served == ["a", "b", "c", "a", "b", "c"]


# -- Scheduler over fake runners -------------------------------------------------------------------


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_scheduler_hands_jobs_to_free_runners_in_queue_order() -> None:
    async def scenario() -> None:
        runners = [FakeRunner("a"), FakeRunner("b")]
        scheduler = Scheduler(lambda: runners, max_multiplexing=1)  # type: ignore[arg-type,return-value]
        jobs = [Job("/", b"", {}, priority) for priority in ("normal", "normal", "low", "normal")]
        for job in jobs:
            scheduler.submit(job)
        assert await scheduler.wait_for_runner(jobs[0]) is runners[0]
        assert await scheduler.wait_for_runner(jobs[1]) is runners[1]
        assert [scheduler.position(job) for job in jobs[2:]] == [1, 0]
        scheduler.release(runners[0])
        assert await scheduler.wait_for_runner(jobs[3]) is runners[0]
        assert not jobs[2].assigned.done()
        scheduler.release(runners[1])
        assert await scheduler.wait_for_runner(jobs[2]) is runners[1]
        assert len(scheduler.queue) == 0

    run(scenario())


def test_scheduler_withdraw_and_start_timeout() -> None:
    async def scenario() -> None:
        runners = [FakeRunner("a", in_flight=1)]
        scheduler = Scheduler(lambda: runners, max_multiplexing=1)  # type: ignore[arg-type,return-value]
        cancelled = Job("/", b"", {})
        expiring = Job("/", b"", {}, start_timeout=0.05)
        waiting = Job("/", b"", {})
        for job in (cancelled, expiring, waiting):
            scheduler.submit(job)
        assert scheduler.withdraw(cancelled) is True
        with pytest.raises(Withdrawn):
            await scheduler.wait_for_runner(cancelled)
        with pytest.raises(StartTimeout):
            await scheduler.wait_for_runner(expiring)
        assert list(scheduler.queue) == [waiting]
        assert scheduler.position(waiting) == 0
        scheduler.release(runners[0])
        assert await scheduler.wait_for_runner(waiting) is runners[0]
        assert scheduler.withdraw(waiting) is False  # already taken by a runner

    run(scenario())


def test_scheduler_waits_for_a_runner_to_become_ready() -> None:
    async def scenario() -> None:
        runners = [FakeRunner("starting", accepts_requests=False)]
        scheduler = Scheduler(lambda: runners, max_multiplexing=2)  # type: ignore[arg-type,return-value]
        first, second = Job("/", b"", {}), Job("/", b"", {})
        scheduler.submit(first)
        scheduler.submit(second)
        assert len(scheduler.queue) == 2
        runners[0].accepts_requests = True
        scheduler.pump()  # what the supervisor's on_ready does
        assert await scheduler.wait_for_runner(first) is runners[0]
        assert await scheduler.wait_for_runner(second) is runners[0]
        assert runners[0].in_flight == 2

    run(scenario())


def test_a_job_left_alone_with_no_runner_tells_the_scaler_at_once() -> None:
    """A scale from zero (or a resume) starts when the first request waits, not at a tick."""

    async def scenario() -> None:
        runners: list[FakeRunner] = []
        scheduler = Scheduler(lambda: runners, max_multiplexing=1)  # type: ignore[arg-type,return-value]
        told: list[int] = []
        scheduler.on_first_waiting = lambda: told.append(len(scheduler.queue))
        scheduler.submit(Job("/", b"", {}))
        assert told == [1]
        scheduler.submit(Job("/", b"", {}))  # the scaler knows already: said once
        assert told == [1]
        runners.append(FakeRunner("ready"))
        scheduler.pump()  # one job taken, one left alone while the runner is full
        assert told == [1, 1]
        runners[0].in_flight = 0
        scheduler.pump()  # the runner takes it: nothing waits
        assert len(scheduler.queue) == 0 and told == [1, 1]

    run(scenario())


def test_closing_answers_every_waiting_job_and_leaves_started_ones_alone() -> None:
    """What the gateway does just before its grace period ends: jobs still waiting for a
    runner leave with ``ShuttingDown`` (the forwarder answers 503); jobs on runners go on."""

    async def scenario() -> None:
        runners = [FakeRunner("a")]
        scheduler = Scheduler(lambda: runners, max_multiplexing=1)  # type: ignore[arg-type,return-value]
        started, waiting = Job("/", b"", {}), Job("/", b"", {}, "low")
        scheduler.submit(started)
        scheduler.submit(waiting)
        assert await scheduler.wait_for_runner(started) is runners[0]
        scheduler.close()
        with pytest.raises(ShuttingDown):
            await scheduler.wait_for_runner(waiting)
        assert len(scheduler.queue) == 0
        late = Job("/", b"", {})
        scheduler.submit(late)  # a retry of a job lost mid-request, say
        with pytest.raises(ShuttingDown):
            await scheduler.wait_for_runner(late)
        assert isinstance(ShuttingDown("x"), Withdrawn)

    run(scenario())


def test_parking_takes_queue_jobs_out_of_line_and_leaves_sync_ones() -> None:
    """A gateway with a durable job store, stopping: queue requests not started leave the line
    at once (they stay queued in the store); sync calls wait on until the grace period ends."""

    async def scenario() -> None:
        runners = [FakeRunner("a")]
        scheduler = Scheduler(lambda: runners, max_multiplexing=1)  # type: ignore[arg-type,return-value]
        running, queued, sync = Job("/", b"", {}), Job("/", b"", {}), Job("/", b"", {})
        queued.queued = running.queued = True
        for job in (running, queued, sync):
            scheduler.submit(job)
        assert await scheduler.wait_for_runner(running) is runners[0]
        scheduler.park(lambda job: job.queued)
        with pytest.raises(ShuttingDown):
            await scheduler.wait_for_runner(queued)
        assert list(scheduler.queue) == [sync]
        retry = Job("/", b"", {})
        retry.queued = True
        scheduler.requeue(retry)
        with pytest.raises(ShuttingDown):
            await scheduler.wait_for_runner(retry)
        scheduler.release(runners[0])
        assert await scheduler.wait_for_runner(sync) is runners[0]

    run(scenario())


def test_a_full_queue_still_takes_requests_accepted_already() -> None:
    queue: RequestQueue[str] = RequestQueue(max_size=1)
    queue.push("first")
    assert queue.full
    with pytest.raises(QueueFull):
        queue.push("refused")
    queue.push("resumed", over_limit=True)
    assert list(queue) == ["first", "resumed"]
