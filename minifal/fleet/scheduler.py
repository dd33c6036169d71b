"""Admission: requests wait in the queue until a ready runner has a free slot.

Synchronous and queued requests go through the same line. ``pump()`` hands queued jobs to
runners; it runs whenever a job arrives, a runner frees a slot or a runner becomes ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from minifal.fleet.dispatch import choose_runner
from minifal.fleet.jobs import Job
from minifal.fleet.request_queue import RequestQueue
from minifal.fleet.runner import Runner


class StartTimeout(Exception):
    """The job waited longer than its ``X-Fal-Request-Timeout`` before any runner took it."""


class Withdrawn(Exception):
    """The job left the queue before a runner took it (cancelled, or its caller went away)."""


class ShuttingDown(Withdrawn):
    """The gateway is stopping and its grace period ends before a runner could take the job."""


class Scheduler:
    def __init__(
        self,
        runners: Callable[[], Sequence[Runner]],
        max_multiplexing: int,
        max_queue: int | None = None,
    ) -> None:
        self.runners = runners
        self.max_multiplexing = max_multiplexing
        self.queue: RequestQueue[Job] = RequestQueue(max_queue)
        self.closed = False
        self.parked: Callable[[Job], bool] | None = None
        self.on_first_waiting: Callable[[], None] | None = None
        """Called when a job is left alone in line with no runner to take it (none ready, or
        all full): the scaler should look now rather than at its next tick (a scale from zero,
        a resume)."""

    def submit(self, job: Job, over_limit: bool = False) -> None:
        """Put the job in line (raises ``QueueFull`` unless ``over_limit``) and hand out what
        can be handed out."""
        self.queue.push(job, job.priority, over_limit)
        self.pump()
        self._shut_out_late_jobs()

    def requeue(self, job: Job) -> None:
        """A retry goes to the front of its priority line: it was accepted before the others."""
        self.queue.push_front(job, job.priority)
        self.pump()
        self._shut_out_late_jobs()

    def close(self) -> None:
        """The gateway's grace period is ending: every job still waiting for a runner (and any
        that comes after) leaves the line with ``ShuttingDown``; jobs on runners go on."""
        self.closed = True
        self._shut_out(lambda job: True)

    def park(self, which: Callable[[Job], bool]) -> None:
        """The gateway is stopping and keeps these jobs elsewhere (the job store): those
        waiting, and those that come after, leave the line with ``ShuttingDown`` at once."""
        self.parked = which
        self._shut_out(which)

    def _shut_out_late_jobs(self) -> None:
        if self.closed:
            self.close()
        elif self.parked is not None:
            self._shut_out(self.parked)

    def _shut_out(self, which: Callable[[Job], bool]) -> None:
        for job in [job for job in self.queue if which(job)]:
            if not job.assigned.done():
                job.assigned.set_exception(ShuttingDown(job.id))
            self.queue.remove(job)

    def pump(self) -> None:
        now = time.time()
        while len(self.queue):
            runner = choose_runner(self.runners(), self.max_multiplexing)
            if runner is None:
                if len(self.queue) == 1 and self.on_first_waiting is not None:
                    self.on_first_waiting()
                return
            job = self.queue.pop()
            assert job is not None
            if job.assigned.done():  # cancelled or expired while queued
                continue
            runner.took_request(now)
            job.assigned.set_result(runner)

    async def wait_for_runner(self, job: Job) -> Runner:
        """The runner that takes this job, once it is its turn; bounded by the start timeout."""
        timeout = None if job.start_deadline is None else max(0.0, job.start_deadline - time.time())
        try:
            return await asyncio.wait_for(asyncio.shield(job.assigned), timeout)
        except TimeoutError:
            if job.assigned.done() and not job.assigned.cancelled():
                return job.assigned.result()  # a runner took it at the last moment
            self.withdraw(job)
            raise StartTimeout(job.id) from None

    def withdraw(self, job: Job) -> bool:
        """Take a job that no runner has started out of line (cancel, timeout, client gone)."""
        if job.assigned.done():
            return False
        job.assigned.set_exception(Withdrawn(job.id))
        job.assigned.exception()  # marks it retrieved: nobody may be waiting any more
        return self.queue.remove(job)

    def release(self, runner: Runner) -> None:
        runner.finished_request(time.time())
        self.pump()

    def position(self, job: Job) -> int | None:
        return self.queue.position(job)
