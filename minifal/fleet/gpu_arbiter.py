"""Which app gets which GPUs when several apps share one pool: a pure policy over a snapshot
(no processes, no clocks: ``now`` is an input), applied by ``shared_gpu_pool.py``.

Each app's scaler (``scaler.py``) says how many more runners it wants; the arbiter grants GPUs
for them and, when the pool is full, takes GPUs back from idle runners of other apps:

1. Asks, oldest waiting demand first: every runner an app wants is one ask; asks of apps with
   requests waiting come first, an app's first runner before anyone's second, and between apps
   the one whose oldest request has waited longest. Asks without waiting requests (the
   scaler's ``min_concurrency`` or buffer) come last and only take free GPUs.
2. A free GPU is one no runner holds (starting, ready, suspending, resuming or stopping).
   A suspended runner holds no GPU memory but stays parked on its GPUs: the CUDA checkpoint
   restores a process onto the GPU it left (``backends/cuda_checkpoint.py``) and its
   ``CUDA_VISIBLE_DEVICES`` is fixed, so it resumes only there, once they are free. An ask
   takes, in order: a suspended runner of its app whose GPUs are free (resumed), free GPUs (a
   new runner), GPUs being freed already (it waits for them; nothing new is taken), and last,
   when its app has requests waiting, GPUs taken back from other apps (reclaims).
3. Reclaims, in tiers: (0) runners in a crash back-off (stopped: nothing runs there);
   (1) idle runners past their keep-alive; (2) idle runners within it (keep_alive keeps a
   runner only while no other app waits for its GPU); (3) once the ask's oldest request has
   waited ``protected_wait`` seconds, idle runners that keep their app at ``min_concurrency``;
   (4) once it has waited ``starvation_wait`` seconds and its app has no runner at all, busy
   runners, drained (no new requests, stopped once those they hold end), so that an app whose
   runners never idle cannot starve the others. Within a tier, a runner whose GPUs the asking
   app has a suspended runner parked on goes first (a resume is faster than a start), then the
   least recently used. A runner that is starting, resuming or suspending, or has a request in
   flight, is never suspended or stopped. A reclaimed runner is suspended where its app can
   be, else stopped; the GPUs it frees are granted on a later plan, once it has let go of them.
4. Host memory: suspended runners of every app count against one budget; while they hold more,
   the oldest suspended ones are stopped. (Suspending to a file in the data dir is not built.)
5. A runner in a crash back-off on GPUs another runner holds (its process died while it was
   suspended) is stopped rather than restarted there.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field


class Hold(enum.Enum):
    """What a runner does with its GPUs, as the arbiter sees it."""

    STARTING = "starting"  # PENDING, SETUP: never taken
    BACKING_OFF = "backing_off"  # FAILURE_DELAY: crashed, waits to start again; stopped first
    READY = "ready"  # IDLE, RUNNING: taken when idle
    SUSPENDING = "suspending"  # letting go of its GPUs' memory
    SUSPENDED = "suspended"  # no GPU memory; parked on its GPUs
    RESUMING = "resuming"  # coming back onto its GPUs: never taken
    STOPPING = "stopping"  # DRAINING, TERMINATING: letting go of its GPUs


RESIDENT = frozenset(Hold) - {Hold.SUSPENDED}
"""States in which a runner holds its GPUs (their memory, or soon)."""
FREEING = frozenset({Hold.SUSPENDING, Hold.STOPPING})
LIVE = frozenset({Hold.STARTING, Hold.READY, Hold.RESUMING})
"""States that keep an app at its ``min_concurrency`` (a crashed runner does not)."""


@dataclass(frozen=True)
class PooledRunner:
    runner_id: str
    gpus: tuple[str, ...]
    hold: Hold
    in_flight: int = 0
    idle_since: float | None = None
    """When its last request ended (or it became ready); None while it serves requests."""
    keep_alive_until: float | None = None
    """When its app's keep_alive stops keeping it idle; None: never (or not idle)."""
    suspended_since: float | None = None
    host_memory: int = 0
    """Bytes of host memory it holds while suspended."""


@dataclass(frozen=True)
class PooledApp:
    app: str
    runners: tuple[PooledRunner, ...] = ()
    wants: int = 0
    """How many more runners its scaler wants (starts and resumes)."""
    waiting: int = 0
    """Requests waiting for a runner."""
    oldest_wait: float = 0.0
    """Seconds the oldest of them has waited."""
    gpus_per_runner: int = 1
    min_concurrency: int = 0
    can_suspend: bool = False


@dataclass(frozen=True)
class PoolSnapshot:
    now: float
    gpus: tuple[str, ...]
    apps: tuple[PooledApp, ...]
    host_memory_budget: int | None = None
    """Bytes all suspended runners together may hold; None: no limit."""


@dataclass(frozen=True)
class ArbiterSettings:
    protected_wait: float = 5.0
    """Seconds a waiting request waits before an idle runner kept by its app's
    ``min_concurrency`` is taken for it."""
    starvation_wait: float = 30.0
    """Seconds a request of an app without runners waits before busy runners of others are
    drained for it."""


class Action(enum.Enum):
    SUSPEND = "suspend"  # its GPU state moves to host memory; it resumes later, same GPUs
    STOP = "stop"  # its app cannot suspend, or the host memory budget is full
    DRAIN = "drain"  # no new requests; stopped once those in flight end


@dataclass(frozen=True)
class Grant:
    """``app`` gets ``gpus``: resume its suspended runner ``resume`` there, or (None) start a
    new runner on them."""

    app: str
    gpus: tuple[str, ...]
    resume: str | None = None


@dataclass(frozen=True)
class Reclaim:
    """Take ``runner_id`` of ``app`` off its GPUs, for ``for_app`` (None: host memory)."""

    app: str
    runner_id: str
    action: Action
    for_app: str | None
    reason: str


@dataclass(frozen=True)
class PoolPlan:
    grants: tuple[Grant, ...] = ()
    reclaims: tuple[Reclaim, ...] = ()
    waiting_for_gpus: tuple[str, ...] = ()
    """Apps with asks that got nothing this time (each named once, oldest demand first)."""


@dataclass(frozen=True)
class _Ask:
    app: PooledApp
    number: int  # 0: the app's first runner of this plan

    @property
    def has_waiting(self) -> bool:
        # Each waiting request justifies one runner taken from another app, no more.
        return self.number < self.app.waiting

    def order(self) -> tuple[int, int, float, str]:
        return (0 if self.has_waiting else 1, self.number, -self.app.oldest_wait, self.app.app)


@dataclass
class _Pool:
    """What is left to hand out while one plan is made."""

    free: list[str]
    freeing: list[str]
    parked: dict[str, set[str]] = field(default_factory=dict)
    """GPU -> apps with a suspended runner parked on it."""
    taken: set[tuple[str, str]] = field(default_factory=set)
    """Runners (app, runner id) reclaimed or resumed in this plan."""


def arbitrate(snapshot: PoolSnapshot, settings: ArbiterSettings | None = None) -> PoolPlan:
    settings = settings or ArbiterSettings()
    pool = _pool_of(snapshot)
    grants: list[Grant] = []
    reclaims = over_memory_budget(snapshot) + crashed_on_a_held_gpu(snapshot)
    pool.taken.update((reclaim.app, reclaim.runner_id) for reclaim in reclaims)
    unserved: list[str] = []
    asks = [_Ask(app, number) for app in snapshot.apps for number in range(app.wants)]
    for ask in sorted(asks, key=_Ask.order):
        grant = _grant(ask.app, pool)
        if grant is not None:
            grants.append(grant)
            continue
        needed = ask.app.gpus_per_runner
        if len(pool.freeing) + len(pool.free) >= needed:  # on their way: wait for them
            del pool.freeing[: needed - len(pool.free)]
            pool.free.clear()  # kept for this ask, which comes first
            continue
        taken = _reclaim(ask, snapshot, pool, settings) if ask.has_waiting else []
        reclaims.extend(taken)
        if not taken and ask.app.app not in unserved:
            unserved.append(ask.app.app)
    return PoolPlan(tuple(grants), tuple(reclaims), tuple(unserved))


def _pool_of(snapshot: PoolSnapshot) -> _Pool:
    runners = [runner for app in snapshot.apps for runner in app.runners]
    held = {gpu for r in runners if r.hold in RESIDENT for gpu in r.gpus}
    freeing = [gpu for r in runners if r.hold in FREEING for gpu in r.gpus]
    pool = _Pool([gpu for gpu in snapshot.gpus if gpu not in held], freeing)
    for app in snapshot.apps:
        for runner in app.runners:
            if runner.hold is Hold.SUSPENDED:
                for gpu in runner.gpus:
                    pool.parked.setdefault(gpu, set()).add(app.app)
    # A new runner goes where fewest suspended runners wait to come back.
    pool.free.sort(key=lambda gpu: len(pool.parked.get(gpu, ())))
    return pool


def _grant(app: PooledApp, pool: _Pool) -> Grant | None:
    """Resume a suspended runner of ``app`` whose GPUs are free (the most recent first), else
    a new runner on free GPUs; None when neither fits."""
    suspended = [
        r
        for r in app.runners
        if r.hold is Hold.SUSPENDED
        and (app.app, r.runner_id) not in pool.taken
        and all(gpu in pool.free for gpu in r.gpus)
    ]
    if suspended:
        runner = max(suspended, key=lambda r: r.suspended_since or 0.0)
        pool.taken.add((app.app, runner.runner_id))
        _take(pool.free, runner.gpus)
        return Grant(app.app, runner.gpus, resume=runner.runner_id)
    if len(pool.free) < app.gpus_per_runner:
        return None
    gpus = tuple(pool.free[: app.gpus_per_runner])
    _take(pool.free, gpus)
    return Grant(app.app, gpus)


def _take(gpus: list[str], these: Iterable[str]) -> None:
    for gpu in these:
        gpus.remove(gpu)


def _reclaim(
    ask: _Ask, snapshot: PoolSnapshot, pool: _Pool, settings: ArbiterSettings
) -> list[Reclaim]:
    """Victims whose GPUs, with the free ones, make room for one runner of ``ask``'s app;
    none unless they do."""
    candidates = sorted(
        (
            (tier, app, runner)
            for app in snapshot.apps
            if app.app != ask.app.app
            for runner, tier in _takeable(app, ask, snapshot.now, settings)
            if (app.app, runner.runner_id) not in pool.taken
        ),
        key=lambda c: (c[0], not _parks(ask.app, c[2], pool), _last_used(c[2])),
    )
    needed = ask.app.gpus_per_runner - len(pool.free) - len(pool.freeing)
    chosen: list[Reclaim] = []
    for tier, app, runner in candidates:
        if needed <= 0:
            break
        action = TIER_ACTIONS.get(tier) or _leave_action(app)
        chosen.append(Reclaim(app.app, runner.runner_id, action, ask.app.app, TIER_REASONS[tier]))
        needed -= len(runner.gpus)
    if needed > 0:
        return []
    for reclaim in chosen:
        pool.taken.add((reclaim.app, reclaim.runner_id))
    pool.free.clear()  # what was free or on its way is promised to this ask now
    pool.freeing.clear()
    return chosen


TIER_REASONS = (
    "crashed, waiting to restart",
    "idle past keep_alive",
    "idle (keep_alive yields to waiting requests)",
    "idle (min_concurrency yields after protected_wait)",
    "busy: drained for an app starved past starvation_wait",
)
DRAIN_TIER = 4
TIER_ACTIONS = {0: Action.STOP, DRAIN_TIER: Action.DRAIN}
"""Tiers whose runners leave one way whether their app can suspend or not."""


def _takeable(
    app: PooledApp, ask: _Ask, now: float, settings: ArbiterSettings
) -> list[tuple[PooledRunner, int]]:
    """The runners of ``app`` that ``ask`` may take, each with its tier (see the docstring)."""
    takeable = [(r, 0) for r in app.runners if r.hold is Hold.BACKING_OFF]
    ready = [r for r in app.runners if r.hold is Hold.READY]
    live = sum(1 for r in app.runners if r.hold in LIVE)
    protected_ok = ask.app.oldest_wait >= settings.protected_wait
    starving = (
        ask.app.oldest_wait >= settings.starvation_wait
        and not any(r.hold in RESIDENT for r in ask.app.runners)
        and ask.app.oldest_wait > app.oldest_wait  # never for an app waiting longer itself
    )
    idle = sorted((r for r in ready if r.in_flight == 0), key=_last_used)
    spare = live - app.min_concurrency  # idle ones beyond min_concurrency, LRU first
    for index, runner in enumerate(idle):
        if index >= spare:
            if protected_ok:
                takeable.append((runner, 3))
            continue
        expired = runner.keep_alive_until is not None and now >= runner.keep_alive_until
        takeable.append((runner, 1 if expired else 2))
    if starving:
        takeable.extend((r, DRAIN_TIER) for r in ready if r.in_flight > 0)
    return takeable


def _last_used(runner: PooledRunner) -> float:
    return math.inf if runner.idle_since is None else runner.idle_since


def _parks(app: PooledApp, runner: PooledRunner, pool: _Pool) -> bool:
    """Whether ``app`` has a suspended runner parked on ``runner``'s GPUs."""
    return any(app.app in pool.parked.get(gpu, ()) for gpu in runner.gpus)


def _leave_action(app: PooledApp) -> Action:
    return Action.SUSPEND if app.can_suspend else Action.STOP


def over_memory_budget(snapshot: PoolSnapshot) -> list[Reclaim]:
    """The oldest suspended runners to stop while all of them hold more than the budget."""
    if snapshot.host_memory_budget is None:
        return []
    suspended = sorted(
        (
            (runner, app)
            for app in snapshot.apps
            for runner in app.runners
            if runner.hold is Hold.SUSPENDED
        ),
        key=lambda pair: pair[0].suspended_since or 0.0,
    )
    held = sum(runner.host_memory for runner, _ in suspended)
    stops: list[Reclaim] = []
    for runner, app in suspended:
        if held <= snapshot.host_memory_budget:
            break
        held -= runner.host_memory
        stops.append(Reclaim(app.app, runner.runner_id, Action.STOP, None, "host memory budget"))
    return stops


def crashed_on_a_held_gpu(snapshot: PoolSnapshot) -> list[Reclaim]:
    """Runners in a crash back-off on GPUs another runner holds (a suspended runner whose
    process died while its GPU served another app): stopped before they restart there."""
    held = {
        gpu
        for app in snapshot.apps
        for runner in app.runners
        if runner.hold in RESIDENT - {Hold.BACKING_OFF}
        for gpu in runner.gpus
    }
    return [
        Reclaim(app.app, runner.runner_id, Action.STOP, None, "crashed on a GPU held by another")
        for app in snapshot.apps
        for runner in app.runners
        if runner.hold is Hold.BACKING_OFF and any(gpu in held for gpu in runner.gpus)
    ]
