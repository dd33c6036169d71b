"""How many runners the fleet should have, and which idle ones to stop: fal's scaling rules as
a pure function of a snapshot (no processes, no clocks: ``now`` is an input).

Three small steps, each testable with plain numbers:
1. demand: requests in flight, plus queued requests that waited at least ``scaling_delay``,
   in runners (``max_multiplexing`` requests each);
2. buffer: ``concurrency_buffer`` warm runners, or ``concurrency_buffer_perc`` % of demand,
   whichever is larger;
3. bounds: at least ``min_concurrency``, at most ``max_concurrency`` (and the hard cap).
Scaling down only stops runners that are idle for ``keep_alive`` seconds, most idle first.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Phase(enum.Enum):
    """What the scaler needs to know of a runner's state."""

    STARTING = "starting"  # PENDING, SETUP, FAILURE_DELAY: capacity on its way
    READY = "ready"  # IDLE, RUNNING
    LEAVING = "leaving"  # DRAINING, TERMINATING, TERMINATED: not counted


@dataclass(frozen=True)
class RunnerView:
    runner_id: str
    phase: Phase
    in_flight: int = 0
    idle_since: float | None = None
    """When its last request ended (or it became ready); None while it serves requests."""


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
    live = [runner for runner in snapshot.runners if runner.phase is not Phase.LEAVING]
    if desired > len(live):
        return ScalingDecision(desired, desired - len(live), (), "demand above runners")
    if desired == len(live):
        return ScalingDecision(desired, 0, (), "steady")
    expired = [
        runner
        for runner in live
        if runner.phase is Phase.READY
        and runner.in_flight == 0
        and runner.idle_since is not None
        and snapshot.now - runner.idle_since >= settings.keep_alive
    ]
    expired.sort(key=lambda runner: runner.idle_since or 0.0)
    stop = tuple(runner.runner_id for runner in expired[: len(live) - desired])
    return ScalingDecision(desired, 0, stop, "keep_alive expired" if stop else "waiting keep_alive")


def expires_in(
    runner: RunnerView, live: int, now: float, settings: ScalingSettings
) -> float | None:
    """Seconds until keep_alive would stop this runner (fal's "Expires In"), None if it won't."""
    if runner.phase is not Phase.READY or runner.idle_since is None or runner.in_flight:
        return None
    if live <= settings.min_concurrency:
        return None
    return max(0.0, settings.keep_alive - (now - runner.idle_since))
