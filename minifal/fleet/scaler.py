"""How many runners the fleet should have, and which idle ones to stop: fal's scaling rules as
a pure function of a snapshot (no processes, no clocks: ``now`` is an input).

Three small steps, each testable with plain numbers:
1. demand: requests in flight, plus queued requests that waited at least ``scaling_delay``,
   in runners (``max_multiplexing`` requests each);
2. buffer: ``concurrency_buffer`` warm runners, or ``concurrency_buffer_perc`` % of demand,
   whichever is larger;
3. bounds: at least ``min_concurrency``, at most ``max_concurrency`` (and the hard cap).
Scaling down only stops runners that are idle for ``keep_alive`` seconds, most idle first.

With ``suspend`` on, scaling down suspends those runners instead (their GPU state moves to host
memory, see ``cuda_checkpoint.py``), scaling up resumes suspended runners before it starts new
ones, and a suspended runner is stopped after ``suspended_keep_alive`` seconds, or, oldest
first, while the suspended runners hold more host memory than ``suspended_memory_budget``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Phase(enum.Enum):
    """What the scaler needs to know of a runner's state."""

    STARTING = "starting"  # PENDING, SETUP, FAILURE_DELAY: capacity on its way
    READY = "ready"  # IDLE, RUNNING
    LEAVING = "leaving"  # DRAINING, TERMINATING, TERMINATED, SUSPENDING: not counted
    SUSPENDED = "suspended"  # capacity that a resume brings back


@dataclass(frozen=True)
class RunnerView:
    runner_id: str
    phase: Phase
    in_flight: int = 0
    idle_since: float | None = None
    """When its last request ended (or it became ready); None while it serves requests."""
    suspended_since: float | None = None
    host_memory: int = 0
    """Bytes of host memory it holds while suspended."""


DEFAULT_SUSPENDED_KEEP_ALIVE = 3600.0
"""Seconds a suspended runner is kept before it is stopped (``--suspend-keep-alive``)."""


@dataclass(frozen=True)
class ScalingSettings:
    min_concurrency: int = 0
    max_concurrency: int | None = None
    concurrency_buffer: int = 0
    concurrency_buffer_perc: int = 0
    scaling_delay: float = 0.0
    keep_alive: float = 60.0
    max_multiplexing: int = 1
    hard_cap: int | None = None
    """What this machine can hold (GPU groups, CPU cores), on top of ``max_concurrency``."""
    suspend: bool = False
    suspended_keep_alive: float = DEFAULT_SUSPENDED_KEEP_ALIVE
    suspended_memory_budget: int | None = None

    @classmethod
    def fixed(cls, runners: int) -> ScalingSettings:
        """``--workers N``: always N runners, replaced when they fail."""
        return cls(min_concurrency=runners, max_concurrency=runners)


@dataclass(frozen=True)
class FleetSnapshot:
    now: float
    runners: tuple[RunnerView, ...]
    queued_waits: tuple[float, ...] = ()
    """Seconds each queued request has waited so far."""


@dataclass(frozen=True)
class ScalingDecision:
    desired: int
    start: int
    stop: tuple[str, ...]
    reason: str
    suspend: tuple[str, ...] = ()
    resume: tuple[str, ...] = ()


def demand_runners(snapshot: FleetSnapshot, settings: ScalingSettings) -> int:
    in_flight = sum(runner.in_flight for runner in snapshot.runners)
    waited = sum(1 for wait in snapshot.queued_waits if wait >= settings.scaling_delay)
    return math.ceil((in_flight + waited) / settings.max_multiplexing)


def with_buffer(demand: int, settings: ScalingSettings) -> int:
    percent = math.ceil(demand * settings.concurrency_buffer_perc / 100)
    return demand + max(settings.concurrency_buffer, percent)


def bounded(count: int, settings: ScalingSettings) -> int:
    if settings.max_concurrency is not None:
        count = min(count, settings.max_concurrency)
    count = max(settings.min_concurrency, count)
    if settings.hard_cap is not None:  # what the machine can hold beats even min_concurrency
        count = min(count, settings.hard_cap)
    return count


def desired_runners(snapshot: FleetSnapshot, settings: ScalingSettings) -> int:
    return bounded(with_buffer(demand_runners(snapshot, settings), settings), settings)


def decide(snapshot: FleetSnapshot, settings: ScalingSettings) -> ScalingDecision:
    desired = desired_runners(snapshot, settings)
    live = [r for r in snapshot.runners if r.phase in (Phase.STARTING, Phase.READY)]
    let_go = suspended_to_stop(snapshot, settings)
    resumable = [
        r for r in snapshot.runners if r.phase is Phase.SUSPENDED and r.runner_id not in let_go
    ]
    resumable.sort(key=lambda runner: -(runner.suspended_since or 0.0))  # most recent first
    if desired > len(live):
        resume = tuple(runner.runner_id for runner in resumable[: desired - len(live)])
        start = desired - len(live) - len(resume)
        return ScalingDecision(desired, start, let_go, "demand above runners", resume=resume)
    if desired == len(live):
        return ScalingDecision(desired, 0, let_go, "steady")
    expired = [
        runner
        for runner in live
        if runner.phase is Phase.READY
        and runner.in_flight == 0
        and runner.idle_since is not None
        and snapshot.now - runner.idle_since >= settings.keep_alive
    ]
    expired.sort(key=lambda runner: runner.idle_since or 0.0)
    going = tuple(runner.runner_id for runner in expired[: len(live) - desired])
    reason = "keep_alive expired" if going else "waiting keep_alive"
    if settings.suspend:
        return ScalingDecision(desired, 0, let_go, reason, suspend=going)
    return ScalingDecision(desired, 0, going + let_go, reason)


def suspended_to_stop(snapshot: FleetSnapshot, settings: ScalingSettings) -> tuple[str, ...]:
    """Suspended runners past ``suspended_keep_alive``, then the oldest of the others while
    the rest hold more host memory than the budget."""
    suspended = [r for r in snapshot.runners if r.phase is Phase.SUSPENDED]
    suspended.sort(key=lambda runner: runner.suspended_since or 0.0)  # oldest first
    stop = [
        r
        for r in suspended
        if snapshot.now - (r.suspended_since or snapshot.now) >= settings.suspended_keep_alive
    ]
    kept = [r for r in suspended if r not in stop]
    if settings.suspended_memory_budget is not None:
        while kept and sum(r.host_memory for r in kept) > settings.suspended_memory_budget:
            stop.append(kept.pop(0))
    return tuple(runner.runner_id for runner in stop)


def expires_in(
    runner: RunnerView, live: int, now: float, settings: ScalingSettings
) -> float | None:
    """Seconds until keep_alive would stop (or suspend) this runner (fal's "Expires In"), or a
    suspended one would be stopped; None if it won't."""
    if runner.phase is Phase.SUSPENDED and runner.suspended_since is not None:
        return max(0.0, settings.suspended_keep_alive - (now - runner.suspended_since))
    if runner.phase is not Phase.READY or runner.idle_since is None or runner.in_flight:
        return None
    if live <= settings.min_concurrency:
        return None
    return max(0.0, settings.keep_alive - (now - runner.idle_since))
