"""Starts, watches, replaces and stops the runners of one fleet, through a runner backend.

Each runner has one lifecycle task: start -> SETUP -> ready (IDLE/RUNNING) -> ... -> exit.
- A runner not ready within ``startup_timeout`` is killed; that, a ``setup()`` that raises and a
  crash are failures: the runner restarts after fal's back-off (+30 s per consecutive failure, at
  most 10 minutes), in FAILURE_DELAY meanwhile, with the reason in ``last_exit_reason``.
- ``replace()`` (failed health checks, a request over ``request_timeout``) restarts it at once.
- ``connection_lost()``: a runner the gateway lost touch with gets no more requests; if it is
  still alive a moment later it is hung and replaced, else its lifecycle sees the crash.
- ``retire()`` (keep_alive expired, fleet shutdown) drains it and lets it go.
- ``drain()`` (a new revision took its place) sends it no new request, waits for those it
  holds, then stops it.
- A runner started on trial (a new revision's, ``fleet/revisions.py``) whose first start fails
  ends there, with the reason in ``trial_failure``: its revision fails, it is not retried.
- ``suspend()`` moves an idle runner's GPU state into its host memory (SUSPENDING ->
  SUSPENDED) through a ``Suspender`` (``cuda_checkpoint.py``); ``resume()`` moves it back and
  health-checks it (RESUMING -> IDLE). A step that fails is a crash: the instance is killed and
  its lifecycle restarts it after the back-off. A suspended runner that is stopped is killed:
  its ``teardown()`` cannot run without its GPU state. With an ``Offloader``
  (``runner_offload.py``) the runner first moves its App's tensors to host memory itself, so
  the checkpoint carries only the rest, and brings them back after the restore; with
  ``sleep_seconds`` it sleeps on its GPU that long first (``runner_suspension.py``).
The supervisor is the only one to change a runner's lifecycle state (``Runner``'s methods).
It is long because each of those transitions, with its failure path, is here in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from minifal.fleet.backends.base import RunnerBackend, RunnerRevision
from minifal.fleet.gpu_pool import GpuSource
from minifal.fleet.runner import Runner, RunnerState
from minifal.fleet.runner_suspension import (
    Offloader,
    RunnerSuspension,
    Suspender,
    SuspensionFailed,
)
from minifal.host import envs
from minifal.startup.events import record_for, runner_events_file

logger = logging.getLogger("minifal.fleet")

DEFAULT_STARTUP_TIMEOUT = 600.0  # fal's platform default when the App sets none
BACKOFF_STEP_SECONDS = envs.FAILURE_BACKOFF_SECONDS.default
BACKOFF_MAX_SECONDS = 600.0
REPLACE_GRACE_SECONDS = 5.0
LOST_RUNNER_GRACE_SECONDS = 2.0
"""How long a runner whose connection broke may take to show it died (else it is hung)."""
TERMINATED_KEPT = 20  # finished runners still listed in /runners, with their exit reason
RESUME_PROBE_TIMEOUT_SECONDS = 10.0
DRAIN_POLL_SECONDS = 0.05
BACK_OFF_POLL_SECONDS = 0.25
"""How often a runner in FAILURE_DELAY looks whether it was retired meanwhile."""


SUSPENSION_STATES = (RunnerState.SUSPENDING, RunnerState.SUSPENDED, RunnerState.RESUMING)
GPUS_FREED = frozenset({RunnerState.SUSPENDED, RunnerState.TERMINATED})
"""States in which a runner has let go of its GPUs' memory."""


def failure_backoff(consecutive_failures: int, step: float = BACKOFF_STEP_SECONDS) -> float:
    return min(step * consecutive_failures, BACKOFF_MAX_SECONDS)


class Supervisor:
    def __init__(
        self,
        backend: RunnerBackend,
        gpu_pool: GpuSource,
        run_dir: Path,
        startup_timeout: float | None,
        grace_seconds: float,
        on_ready: Callable[[], None],
        backoff_step: float | None = None,
        lost_runner_grace: float = LOST_RUNNER_GRACE_SECONDS,
        suspender: Suspender | None = None,
        offloader: Offloader | None = None,
        runner_prefix: str = "runner",
        sleep_seconds: float = 0.0,
    ) -> None:
        """``runner_prefix``: runner ids are ``<prefix>-<n>`` (an app's name first where a
        gateway serves several apps, so that ids are unique across them). ``sleep_seconds``:
        how long a suspended runner that offloaded its weights stays asleep before the
        driver's checkpoint (``runner_suspension.py``; 0: the checkpoint at once)."""
        self.backend = backend
        self.gpu_pool = gpu_pool
        self.run_dir = run_dir
        self.startup_timeout = startup_timeout or DEFAULT_STARTUP_TIMEOUT
        self.grace_seconds = grace_seconds
        if backoff_step is None:
            backoff_step = envs.FAILURE_BACKOFF_SECONDS.get()
        self.backoff_step = backoff_step
        self.lost_runner_grace = lost_runner_grace
        self.on_ready = on_ready
        self.suspension = (
            None
            if suspender is None
            else RunnerSuspension(
                suspender, offloader, sleep_seconds, self._spawn, self._suspension_failed
            )
        )
        self.runners: list[Runner] = []
        self.gpus_freed_listeners: list[Callable[[], None]] = []
        """Called when a runner lets go of its GPUs (suspended, or ended): a pool that waits
        for them looks at once instead of at its next tick."""
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_index = 0
        self.runner_prefix = runner_prefix

    @property
    def live_runners(self) -> list[Runner]:
        return [runner for runner in self.runners if runner.state != RunnerState.TERMINATED]

    @property
    def ready_count(self) -> int:
        return sum(1 for runner in self.runners if runner.accepts_requests)

    def find(self, runner_id: str | None) -> Runner | None:
        return next((r for r in self.runners if r.runner_id == runner_id), None)

    def _state_changed(self, state: RunnerState) -> None:
        if state in GPUS_FREED:
            for listener in self.gpus_freed_listeners:
                listener()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what the gateway asks for ---------------------------------------------------------------

    def add_runner(
        self,
        revision: RunnerRevision | None = None,
        trial: bool = False,
        gpus: list[str] | None = None,
    ) -> Runner:
        """A new runner serving ``revision``; on ``trial``, a first start that fails ends it.
        ``gpus``: those a shared GPU pool granted it (else the fleet's own pool chooses)."""
        gpus, shared = self.gpu_pool.acquire(gpus)
        runner_id = f"{self.runner_prefix}-{self._next_index}"
        self._next_index += 1
        if shared:
            logger.warning(
                "[%s] shares GPU %s with another runner (more runners than GPUs)",
                runner_id,
                ",".join(gpus),
            )
        events_file = runner_events_file(self.run_dir, runner_id)
        runner = Runner(runner_id, gpus, events_file, revision, trial, self._state_changed)
        self.runners.append(runner)
        self._spawn(self._lifecycle(runner), f"{runner_id}-lifecycle")
        return runner

    def retire(self, runner: Runner, reason: str) -> None:
        """Stop a runner for good: it drains its requests and runs ``teardown()``."""
        if runner.retiring:
            return
        runner.retire()
        logger.info("[%s] stopping: %s", runner.runner_id, reason)
        self._spawn(self._stop(runner, self.grace_seconds, reason), f"{runner.runner_id}-retire")

    def drain(self, runner: Runner, reason: str) -> None:
        """Stop a runner for good once the requests it holds are done (at most the grace
        period): from now on it gets none."""
        if runner.retiring:
            return
        if runner.state in SUSPENSION_STATES:  # it holds no request; its GPU state is off
            self.retire(runner, reason)
            return
        runner.draining(reason)
        logger.info("[%s] draining: %s", runner.runner_id, reason)
        self._spawn(self._drain(runner, reason), f"{runner.runner_id}-drain")

    def end_trial(self, revision_id: str) -> None:
        """The revision serves: its runners' failures are crashes like any (back-off, restart)."""
        for runner in self.runners:
            if runner.revision_id == revision_id:
                runner.trusted()

    async def _drain(self, runner: Runner, reason: str) -> None:
        deadline = time.time() + self.grace_seconds
        while runner.in_flight and not runner.exited and time.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        await self._stop(runner, self.grace_seconds, reason)

    def replace(self, runner: Runner, reason: str) -> None:
        """Stop an unhealthy runner now and start it afresh, without the crash back-off.

        A process that has already exited is left to its lifecycle, which sees a crash."""
        if runner.retiring or runner.replace_reason is not None or runner.exited:
            return
        runner.replacing(reason)
        logger.warning("[%s] replacing it: %s", runner.runner_id, reason)
        self._spawn(
            self._stop(runner, REPLACE_GRACE_SECONDS, reason), f"{runner.runner_id}-replace"
        )

    def connection_lost(self, runner: Runner, error: Exception) -> None:
        """The connection to a runner broke: send it nothing more. A process that died is a
        crash for its lifecycle (back-off, restart); one still alive a moment later is hung
        and gets replaced. Waiting that moment makes a crash look the same however the
        gateway learnt of it first."""
        if runner.withheld:
            return
        runner.withhold()
        reason = f"lost connection ({type(error).__name__})"
        self._spawn(self._replace_if_alive(runner, reason), f"{runner.runner_id}-lost")

    async def _replace_if_alive(self, runner: Runner, reason: str) -> None:
        await asyncio.sleep(self.lost_runner_grace)
        if runner.withheld and not runner.exited:
            self.replace(runner, reason)

    def suspend(self, runner: Runner) -> bool:
        """Suspend an idle runner (no request in flight; it gets none from now on)."""
        if (
            self.suspension is None
            or runner.state != RunnerState.IDLE
            or runner.in_flight
            or runner.withheld
            or runner.retiring
            or runner.exited
            or runner.pid is None
        ):
            return False
        runner.suspending()
        self._spawn(self._suspend(runner, runner.pid), f"{runner.runner_id}-suspend")
        return True

    def resume(self, runner: Runner) -> bool:
        """Bring a suspended runner back: requests waiting for a runner get it once healthy."""
        if self.suspension is None or runner.state != RunnerState.SUSPENDED or runner.pid is None:
            return False
        runner.resuming()
        self._spawn(self._resume(runner, runner.pid), f"{runner.runner_id}-resume")
        return True

    async def _suspend(self, runner: Runner, pid: int) -> None:
        assert self.suspension is not None
        try:
            await self.suspension.suspend(runner, pid)
        except SuspensionFailed as exc:
            await self._suspension_failed(runner, str(exc))

    async def _resume(self, runner: Runner, pid: int) -> None:
        assert self.suspension is not None and runner.instance is not None
        start = time.time()
        try:
            restored = await self.suspension.resume(runner, pid)
            healthy = await runner.instance.answers(RESUME_PROBE_TIMEOUT_SECONDS)
        except SuspensionFailed as exc:
            await self._suspension_failed(runner, str(exc))
            return
        except Exception as exc:
            await self._suspension_failed(runner, f"resume failed: {exc}")
            return
        if not healthy:
            await self._suspension_failed(runner, "resume failed: no answer after the restore")
            return
        end = time.time()
        runner.resumed(end, end - start)
        record_for(runner.events_file, runner.runner_id, pid, "resume", start, end, **restored)
        logger.info("[%s] resumed in %.2f s", runner.runner_id, end - start)
        self.on_ready()

    async def _suspension_failed(self, runner: Runner, reason: str) -> None:
        """A crash: kill the instance; its lifecycle restarts it after the back-off."""
        logger.error("[%s] %s: killing it", runner.runner_id, reason)
        instance = runner.instance
        if instance is None or instance.exited:
            return
        runner.stopping(reason)
        instance.kill()
        await instance.wait_exit()

    async def stop(self) -> None:
        """Stop every runner (each drains and runs ``teardown()``), then their lifecycle tasks."""
        self.stopping = True
        await asyncio.gather(
            *(self._stop(runner, self.grace_seconds, "fleet shutdown") for runner in self.runners),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.backend.close()

    # -- one runner's life ----------------------------------------------------------------------

    async def _lifecycle(self, runner: Runner) -> None:
        failures = 0
        try:
            while not self.stopping and not runner.retiring:
                started_at = time.time()
                instance = await self.backend.start(runner.runner_id, runner.gpus, runner.revision)
                why = runner.stop_reason or "stopped while starting"
                runner.started(instance, started_at)
                if runner.retiring or self.stopping:  # stopped while its instance started
                    await self._stop(runner, REPLACE_GRACE_SECONDS, why)
                elif await self._wait_ready(runner):
                    failures = 0
                code = await instance.wait_exit()
                if self.stopping or runner.retiring:
                    break
                runner.exited_with(code)
                if runner.replace_reason is not None:
                    runner.restart_now()
                    continue
                if runner.on_trial:
                    runner.failed_trial()
                    logger.error(
                        "[%s] revision %s failed to start (%s): not retried",
                        runner.runner_id,
                        runner.revision_id,
                        runner.trial_failure,
                    )
                    break
                failures += 1
                await self._back_off(runner, failures)
        finally:
            self.gpu_pool.release(runner.gpus)
            runner.terminated()
            self._forget_old_runners()

    async def _wait_ready(self, runner: Runner) -> bool:
        """Ready within ``startup_timeout``; a runner still setting up after it is stopped."""
        assert runner.instance is not None
        if await runner.instance.wait_ready(self.startup_timeout):
            runner.became_ready(time.time())
            self.on_ready()
            return True
        if not runner.instance.exited and not runner.retiring:
            reason = f"startup_timeout ({self.startup_timeout:.0f} s) exceeded"
            logger.error("[%s] %s: killing it", runner.runner_id, reason)
            await self._stop(runner, REPLACE_GRACE_SECONDS, reason)
        return False

    async def _back_off(self, runner: Runner, failures: int) -> None:
        delay = failure_backoff(failures, self.backoff_step)
        logger.error(
            "[%s] failed (%s); restarting in %.0f s",
            runner.runner_id,
            runner.last_exit_reason,
            delay,
        )
        loop = asyncio.get_running_loop()
        restart_at = loop.time() + delay
        runner.backing_off(restart_at)
        while not runner.retiring and not self.stopping and loop.time() < restart_at:
            await asyncio.sleep(min(BACK_OFF_POLL_SECONDS, restart_at - loop.time()))
        runner.back_off_over()

    async def _stop(self, runner: Runner, grace: float, reason: str) -> None:
        """Ask its instance to stop (it drains and runs ``teardown()``), kill it after ``grace``."""
        instance = runner.instance
        if instance is None or instance.exited:
            return  # its lifecycle saw the exit and decides what comes next (restart, delay, end)
        if runner.state in SUSPENSION_STATES:  # its GPU state is off the GPU: teardown() would hang
            runner.stopping(reason)
            instance.kill()
            await instance.wait_exit()
            runner.stopped()
            return
        runner.stopping(reason)
        instance.terminate()
        try:
            await asyncio.wait_for(instance.wait_exit(), timeout=grace)
        except TimeoutError:
            logger.warning("[%s] did not stop within %.0f s: killing it", runner.runner_id, grace)
            instance.kill()
            await instance.wait_exit()
        runner.stopped()

    def _forget_old_runners(self) -> None:
        finished = [r for r in self.runners if r.state == RunnerState.TERMINATED]
        for runner in finished[:-TERMINATED_KEPT]:
            self.runners.remove(runner)
