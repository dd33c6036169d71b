"""Revisions of the fleet's app, and the pure rules of a rollout (fal's ``fal deploy
--strategy rolling|recreate``): no processes, no clocks, testable with plain values.

A revision is one content of the app: its id is a counter and a short hash of the app file and
class (``r2-3fa9c1d2``). One revision serves; a deploy makes another the target of a rollout,
which ``plan_rollout`` steps through from a view of the runners:

- rolling: the target's runners start (all at once where the machine has room; on a full
  machine one at a time: CPU runners one beyond what it holds, GPU runners each after an old
  runner left), each takes requests once ready, and an old runner drains for each new one
  ready; once ``wanted`` new runners are ready the target is promoted and the old runners
  left drain.
- recreate: every old runner drains; once none is left the target's runners start; requests
  wait in the queue meanwhile.
- either way, a target runner that ends before it was ever ready (``setup()`` raised, startup
  timeout) fails the revision: its runners stop and the serving revision goes on serving.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from minifal.runner.app_manifest import AppManifest

HASH_CHARS = 8

FLEET_SETTINGS = ("max_multiplexing", "gpus_per_runner")
"""Settings the running gateway is built on: a revision must keep them."""
SETTINGS_KEPT_UNTIL_RESTART = (
    "min_concurrency",
    "max_concurrency",
    "concurrency_buffer",
    "concurrency_buffer_perc",
    "scaling_delay",
    "keep_alive",
    "request_timeout",
    "startup_timeout",
    "termination_grace_period_seconds",
)
"""Settings a revision may change but the gateway reads once, when it starts."""


class Strategy(enum.StrEnum):
    ROLLING = "rolling"
    RECREATE = "recreate"


class RevisionStatus(enum.StrEnum):
    DEPLOYING = "deploying"
    SERVING = "serving"
    FAILED = "failed"
    RETIRED = "retired"


def content_hash(source: bytes, class_name: str | None) -> str:
    """A short hash of an app file's bytes and the class it names."""
    digest = hashlib.sha256(source)
    digest.update(b"::" + (class_name or "").encode())
    return digest.hexdigest()[:HASH_CHARS]


def revision_id(number: int, source_hash: str) -> str:
    return f"r{number}-{source_hash}"


@dataclass
class Revision:
    """One revision of the app, as the deployer keeps it (``/runners``, ``/_minifal/revisions``)."""

    revision_id: str
    number: int
    source_hash: str
    app_reference: str
    created_at: float
    status: RevisionStatus
    strategy: Strategy | None = None
    """How it was rolled out; None for the revision the gateway started with."""
    source: str | None = None
    """Its copy of the app file, which its runners import (None: the file itself)."""
    reason: str | None = None
    """Why it failed."""
    promoted_at: float | None = None
    retired_at: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "revision": self.revision_id,
            "number": self.number,
            "source_hash": self.source_hash,
            "app": self.app_reference,
            "source": self.source,
            "status": self.status.value,
            "strategy": None if self.strategy is None else self.strategy.value,
            "reason": self.reason,
            "created_at": self.created_at,
            "promoted_at": self.promoted_at,
            "retired_at": self.retired_at,
        }


# -- whether a new manifest can replace the serving one -----------------------------------------


@dataclass(frozen=True)
class Compatibility:
    problems: tuple[str, ...]
    """Why the new revision cannot replace the serving one (empty: it can)."""
    kept: tuple[str, ...] = ()
    """Settings it changes that the gateway keeps until it restarts."""


def compare_manifests(serving: AppManifest, new: AppManifest) -> Compatibility:
    """Same app name, every serving endpoint still there with the same kind, the settings the
    fleet is built on unchanged. New endpoints are fine (the gateway routes them once the
    revision is promoted)."""
    problems = []
    if new.app_name != serving.app_name:
        problems.append(f"app name changed: {serving.app_name!r} -> {new.app_name!r}")
    new_kinds = {endpoint.path: endpoint.kind for endpoint in new.endpoints}
    for endpoint in serving.endpoints:
        kind = new_kinds.get(endpoint.path)
        if kind is None:
            problems.append(f"endpoint {endpoint.path} removed")
        elif kind != endpoint.kind:
            problems.append(f"endpoint {endpoint.path} changed from {endpoint.kind} to {kind}")
    old_settings, new_settings = serving.settings, new.settings
    for name in FLEET_SETTINGS:
        before, after = getattr(old_settings, name), getattr(new_settings, name)
        if before != after:
            problems.append(f"{name} changed ({before} -> {after}): restart the gateway")
    kept = [
        f"{name} ({_shown(getattr(old_settings, name))} -> {_shown(getattr(new_settings, name))})"
        for name in SETTINGS_KEPT_UNTIL_RESTART
        if getattr(old_settings, name) != getattr(new_settings, name)
    ]
    if serving.health_endpoint != new.health_endpoint:
        kept.append("the HealthCheck")
    return Compatibility(tuple(problems), tuple(kept))


def _shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


# -- a rollout, one step at a time ----------------------------------------------------------------


class Standing(enum.Enum):
    """What a rollout needs to know of a runner."""

    STARTING = "starting"  # on its way (or suspended): holds no request
    READY = "ready"  # takes requests
    LEAVING = "leaving"  # draining or stopping: still holds its slot on the machine
    FAILED = "failed"  # a target runner that ended before it was ever ready
    GONE = "gone"  # ended


@dataclass(frozen=True)
class RunnerSide:
    runner_id: str
    revision: str
    standing: Standing
    in_flight: int = 0
    idle_since: float = 0.0
    failure: str | None = None
    """Why a FAILED runner ended."""


@dataclass(frozen=True)
class RolloutView:
    target: str
    strategy: Strategy
    runners: tuple[RunnerSide, ...]
    wanted: int
    """How many runners the fleet should have now (the scaler's count; at least one)."""
    capacity: int | None = None
    """How many runners the machine holds at once (None: as many as wanted twice)."""
    surge: bool = True
    """Whether a rollout on a full machine may start one runner beyond it (CPU runners share
    cores); False for GPU runners, which would share a GPU's memory: an old runner leaves
    first."""


@dataclass(frozen=True)
class RolloutStep:
    start: int = 0
    """Target runners to start."""
    drain: tuple[str, ...] = ()
    """Runners to take out of dispatch, let finish what they hold, then stop."""
    promote: bool = False
    """The target serves from now on."""
    failed: str | None = None
    """The target failed (why); ``drain`` then lists its runners."""
    reason: str = ""


@dataclass
class _Sides:
    new: list[RunnerSide] = field(default_factory=list)
    new_ready: list[RunnerSide] = field(default_factory=list)
    old_active: list[RunnerSide] = field(default_factory=list)
    leaving: int = 0


def _sides(view: RolloutView) -> _Sides:
    sides = _Sides()
    for runner in view.runners:
        if runner.standing in (Standing.GONE, Standing.FAILED):
            continue
        if runner.standing is Standing.LEAVING:
            sides.leaving += 1
        elif runner.revision == view.target:
            sides.new.append(runner)
            if runner.standing is Standing.READY:
                sides.new_ready.append(runner)
        else:
            sides.old_active.append(runner)
    return sides


def drain_order(runners: Iterable[RunnerSide]) -> list[RunnerSide]:
    """Who drains first: runners that hold nothing (starting, suspended), then the least busy,
    then the longest idle."""
    return sorted(
        runners,
        key=lambda r: (r.standing is Standing.READY, r.in_flight, r.idle_since, r.runner_id),
    )


def plan_rollout(view: RolloutView) -> RolloutStep:
    failed = next(
        (r for r in view.runners if r.revision == view.target and r.standing is Standing.FAILED),
        None,
    )
    sides = _sides(view)
    if failed is not None:
        reason = f"{failed.runner_id}: {failed.failure or 'ended before it was ready'}"
        return RolloutStep(
            drain=tuple(r.runner_id for r in sides.new), failed=reason, reason="failed"
        )
    wanted = max(1, view.wanted)
    if view.strategy is Strategy.RECREATE:
        return _recreate(sides, wanted)
    return _rolling(sides, wanted, view.capacity, view.surge)


def _recreate(sides: _Sides, wanted: int) -> RolloutStep:
    if sides.old_active:
        drain = tuple(r.runner_id for r in drain_order(sides.old_active))
        return RolloutStep(drain=drain, reason="recreate: old runners drain first")
    if sides.leaving:
        return RolloutStep(reason="recreate: waiting for old runners to stop")
    if len(sides.new_ready) >= wanted:
        return RolloutStep(promote=True, reason="recreate: new runners ready")
    return RolloutStep(start=max(0, wanted - len(sides.new)), reason="recreate: starting")


def _runner_limit(wanted: int, capacity: int | None, surge: bool) -> int:
    """How many runners, old and new, a rolling rollout may have at once."""
    if capacity is None:
        return 2 * wanted
    # A GPU fleet already beyond what the machine holds (shared GPUs) keeps its size.
    return capacity if surge else max(capacity, wanted)


def _rolling(sides: _Sides, wanted: int, capacity: int | None, surge: bool) -> RolloutStep:
    ready = len(sides.new_ready)
    if ready >= wanted:
        drain = tuple(r.runner_id for r in drain_order(sides.old_active))
        return RolloutStep(drain=drain, promote=True, reason="rolling: new runners ready")
    # One old runner leaves for each new one ready.
    surplus = len(sides.old_active) - (wanted - ready)
    drain = tuple(r.runner_id for r in drain_order(sides.old_active)[: max(0, surplus)])
    missing = wanted - len(sides.new)
    if missing <= 0:
        return RolloutStep(drain=drain, reason="rolling: waiting for new runners")
    total = len(sides.old_active) + sides.leaving + len(sides.new)  # drained ones hold on too
    limit = _runner_limit(wanted, capacity, surge)
    starting = len(sides.new) - ready
    room = limit - total
    if room <= 0 and starting == 0:  # the machine is full: the rollout must make a move
        if surge:
            room = 1  # one runner beyond it
        elif not sides.leaving and not drain:
            drain = tuple(r.runner_id for r in drain_order(sides.old_active)[:1])
    return RolloutStep(start=max(0, min(missing, room)), drain=drain, reason="rolling")
