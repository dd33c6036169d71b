"""One runner of the fleet as the gateway sees it: fal's state, its load, the instance serving it.

A runner outlives its instances: a crash or a replacement starts a new instance (a new process)
under the same runner id. Every change of state is one named method below. The supervisor
calls those of the lifecycle; the scheduler calls the two of the load (``took_request``,
``finished_request``); everyone else only reads.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from minifal.fleet.backends.base import RunnerInstance, RunnerRevision
from minifal.fleet.runner_http import RunnerAddress
from minifal.runner_contract import exit_reason

logger = logging.getLogger("minifal.fleet")

STATE_HISTORY_KEPT = 50


class RunnerState(enum.StrEnum):
    """fal's runner states, and minifal's three of suspension (not in fal's list):
    SUSPENDING (its GPU state is moving to host memory), SUSPENDED (the process lives, its GPU
    memory is free, nothing is lost) and RESUMING (moving back, then a health check)."""

    PENDING = "PENDING"
    SETUP = "SETUP"
    IDLE = "IDLE"
    RUNNING = "RUNNING"
    DRAINING = "DRAINING"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    FAILURE_DELAY = "FAILURE_DELAY"
    SUSPENDING = "SUSPENDING"
    SUSPENDED = "SUSPENDED"
    RESUMING = "RESUMING"


@dataclass
class Suspensions:
    """What suspending a runner has cost so far (``/runners``, metrics)."""

    suspends: int = 0
    resumes: int = 0
    last_suspend_s: float | None = None
    last_resume_s: float | None = None
    suspended_since: float | None = None
    host_memory_bytes: int | None = None
    """Its resident host memory while SUSPENDED (its GPU state included)."""
    pinned_bytes: int | None = None
    """Of it, the pinned copies of the tensors the runner offloaded itself (None: none)."""
    checkpoint_bytes: int | None = None
    """Of it, what the driver's checkpoint added (the GPU state the runner left to it)."""
    asleep: bool = False
    """Suspended without the driver's checkpoint (yet): its CUDA context and graphs are still
    on its GPU, its weights in pinned host memory (``runner_suspension.py``)."""
    graphs_released: int | None = None
    """CUDA graphs it dropped right before its checkpoint (captured again at their next call);
    None: not checkpointed (yet), or it could not release."""
    released_bytes: int | None = None
    """GPU memory that release gave back (torch's count): what the checkpoint did not move."""


class Runner:
    def __init__(
        self,
        runner_id: str,
        gpus: list[str],
        events_file: Path,
        revision: RunnerRevision | None = None,
        trial: bool = False,
        on_state: Callable[[RunnerState], None] | None = None,
    ) -> None:
        """``on_state``: hears each new state (after it is recorded)."""
        self.runner_id = runner_id
        self.gpus = gpus
        self.events_file = events_file
        self.revision = revision
        """The revision of the app it serves (None: the fleet's app as launched)."""
        self.trial = trial
        """Its revision is on trial: a first start that fails ends it (no back-off, no retry)."""
        self.trial_failure: str | None = None
        """Why its first start failed, when it was on trial."""
        self.ever_ready = False
        self.instance: RunnerInstance | None = None
        self._address: tuple[RunnerInstance, RunnerAddress] | None = None
        self.state_history: list[tuple[float, RunnerState]] = []
        self._state = RunnerState.PENDING
        self._on_state = on_state
        self._record(RunnerState.PENDING)
        self.in_flight = 0
        self.last_dispatch = 0.0
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.idle_since: float = time.time()
        self.last_exit_reason: str | None = None
        self.withheld = False
        """A connection to it was lost, or it is being replaced: no new requests for it."""
        self.stop_reason: str | None = None
        """Why the gateway stopped the current instance, if it did (else it exited by itself)."""
        self.retiring = False
        """Stopped for good (keep_alive, shutdown): its lifecycle must not restart it."""
        self.replace_reason: str | None = None
        """Being replaced (health checks, request_timeout): restart at once, no back-off."""
        self.restart_at: float | None = None
        """While in FAILURE_DELAY: when (``loop.time()``) it starts again."""
        self.suspensions = Suspensions()

    # -- what the dispatcher, the scaler and the tables read ------------------------------------

    @property
    def state(self) -> RunnerState:
        return self._state

    @property
    def accepts_requests(self) -> bool:
        return self.state in (RunnerState.IDLE, RunnerState.RUNNING) and not self.withheld

    @property
    def on_trial(self) -> bool:
        """On trial and never ready yet: a failure now fails its revision."""
        return self.trial and not self.ever_ready

    @property
    def revision_id(self) -> str | None:
        return None if self.revision is None else self.revision.revision_id

    @property
    def exited(self) -> bool:
        """Its instance has ended (or none was started yet)."""
        return self.instance is None or self.instance.exited

    @property
    def url(self) -> str:
        assert self.instance is not None, f"{self.runner_id} was never started"
        return self.instance.url

    @property
    def address(self) -> RunnerAddress:
        """Where requests reach the current instance: its host and port, or its unix socket."""
        instance = self.instance
        assert instance is not None, f"{self.runner_id} was never started"
        if self._address is None or self._address[0] is not instance:
            where = urlsplit(instance.url)
            address = RunnerAddress(where.hostname or "", where.port or 80, instance.unix_path)
            self._address = (instance, address)
        return self._address[1]

    @property
    def pid(self) -> int | None:
        return None if self.instance is None else self.instance.pid

    @property
    def port(self) -> int | None:
        return None if self.instance is None else self.instance.port

    @property
    def node(self) -> str | None:
        return None if self.instance is None else self.instance.node

    @property
    def startup_seconds(self) -> float | None:
        if self.ready_at is None or self.started_at is None:
            return None
        return self.ready_at - self.started_at

    # -- state changes: the lifecycle (the supervisor's) ----------------------------------------

    def started(self, instance: RunnerInstance, at: float) -> None:
        """A new instance runs and sets up (PENDING or a restart -> SETUP)."""
        self.instance = instance
        self.started_at = at
        self.ready_at = None
        self.stop_reason = None
        self.withheld = False
        self.suspensions.suspended_since = None
        self.suspensions.host_memory_bytes = None
        self.suspensions.pinned_bytes = self.suspensions.checkpoint_bytes = None
        self.suspensions.graphs_released = self.suspensions.released_bytes = None
        self.suspensions.asleep = False
        self._record(RunnerState.SETUP)

    def became_ready(self, at: float) -> None:
        self.ready_at = at
        self.ever_ready = True
        self.idle_since = at
        self._record(RunnerState.IDLE)
        logger.info("[%s] ready after %.1f s", self.runner_id, self.startup_seconds or 0)

    def stopping(self, reason: str) -> None:
        """The supervisor asked its instance to stop: DRAINING while requests run."""
        self.stop_reason = reason
        self.last_exit_reason = reason
        self._record(RunnerState.DRAINING if self.in_flight else RunnerState.TERMINATING)

    def stopped(self) -> None:
        """The instance it stopped has exited: TERMINATED, unless its lifecycle moved on
        already (a restart, a back-off)."""
        if self.state in (RunnerState.DRAINING, RunnerState.TERMINATING):
            self._record(RunnerState.TERMINATED)

    def exited_with(self, code: int) -> None:
        """Its instance ended (by itself, or stopped for a replacement): its requests are gone."""
        self.in_flight = 0
        self.last_exit_reason = self.stop_reason or exit_reason(code)

    def failed_trial(self) -> None:
        """Its first start failed while its revision was on trial: it ends here."""
        self.trial_failure = self.last_exit_reason or "ended before it was ready"

    def trusted(self) -> None:
        """Its revision serves: no longer on trial."""
        self.trial = False

    def restart_now(self) -> None:
        """After a replacement: start again at once (PENDING)."""
        self.replace_reason = None
        self._record(RunnerState.PENDING)

    def backing_off(self, restart_at: float) -> None:
        """After a failure: wait (FAILURE_DELAY) until ``restart_at``."""
        self.restart_at = restart_at
        self._record(RunnerState.FAILURE_DELAY)

    def back_off_over(self) -> None:
        self.restart_at = None

    def suspending(self) -> None:
        """An idle runner's GPU state starts moving to host memory: no requests meanwhile."""
        self._record(RunnerState.SUSPENDING)

    def suspended(
        self,
        at: float,
        seconds: float,
        host_memory_bytes: int | None,
        pinned_bytes: int | None = None,
        checkpoint_bytes: int | None = None,
        asleep: bool = False,
        graphs_released: int | None = None,
        released_bytes: int | None = None,
    ) -> None:
        self.suspensions.suspends += 1
        self.suspensions.last_suspend_s = seconds
        self.suspensions.suspended_since = at
        self.suspensions.host_memory_bytes = host_memory_bytes
        self.suspensions.pinned_bytes = pinned_bytes
        self.suspensions.checkpoint_bytes = checkpoint_bytes
        self.suspensions.asleep = asleep
        self.suspensions.graphs_released = graphs_released
        self.suspensions.released_bytes = released_bytes
        self._record(RunnerState.SUSPENDED)

    def checkpointed(
        self,
        host_memory_bytes: int | None,
        checkpoint_bytes: int | None,
        graphs_released: int | None = None,
        released_bytes: int | None = None,
    ) -> None:
        """Asleep until now, its GPU state is in host memory too (still SUSPENDED)."""
        self.suspensions.host_memory_bytes = host_memory_bytes
        self.suspensions.checkpoint_bytes = checkpoint_bytes
        self.suspensions.graphs_released = graphs_released
        self.suspensions.released_bytes = released_bytes
        self.suspensions.asleep = False

    def resuming(self) -> None:
        self._record(RunnerState.RESUMING)

    def resumed(self, at: float, seconds: float) -> None:
        """Back on its GPU and healthy: IDLE, taking requests again."""
        self.suspensions.resumes += 1
        self.suspensions.last_resume_s = seconds
        self.suspensions.suspended_since = None
        self.suspensions.host_memory_bytes = None
        self.suspensions.pinned_bytes = self.suspensions.checkpoint_bytes = None
        self.suspensions.graphs_released = self.suspensions.released_bytes = None
        self.suspensions.asleep = False
        self.idle_since = at
        self._record(RunnerState.IDLE)

    def withhold(self) -> None:
        """No new request for it (a retry included) until its next instance runs."""
        self.withheld = True

    def replacing(self, reason: str) -> None:
        self.replace_reason = reason
        self.withheld = True

    def retire(self) -> None:
        self.retiring = True

    def draining(self, reason: str) -> None:
        """Stopped for good, after the requests it holds (a new revision took its place): no
        new requests from now on (DRAINING)."""
        self.retiring = True
        self.stop_reason = reason
        self.last_exit_reason = reason  # as stopping(): said even if its exit is not seen
        self._record(RunnerState.DRAINING)

    def terminated(self) -> None:
        """Its lifecycle is over: it holds no GPUs any more."""
        self._record(RunnerState.TERMINATED)
        self.gpus = []

    # -- state changes: its load (the scheduler's) ------------------------------------------------

    def took_request(self, now: float) -> None:
        self.in_flight += 1
        self.last_dispatch = now
        if self.state == RunnerState.IDLE:
            self._record(RunnerState.RUNNING)

    def finished_request(self, now: float) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        if self.in_flight == 0:
            self.idle_since = now
            if self.state == RunnerState.RUNNING:
                self._record(RunnerState.IDLE)

    def _record(self, new: RunnerState) -> None:
        """Every change is kept (``/runners`` shows the history) and logged; going busy and
        idle, which every request may do, only at debug level."""
        if self.state_history and new == self._state:
            return
        if self.state_history:
            busy_or_idle = {self._state, new} == {RunnerState.IDLE, RunnerState.RUNNING}
            level = logging.DEBUG if busy_or_idle else logging.INFO
            logger.log(level, "[%s] %s -> %s", self.runner_id, self._state.value, new.value)
        self._state = new
        self.state_history.append((time.time(), new))
        del self.state_history[:-STATE_HISTORY_KEPT]
        if self._on_state is not None:
            self._on_state(new)
