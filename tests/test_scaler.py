"""The scaling policy with plain numbers, in the style of Ray Serve's autoscaling-policy tests:
no processes, no clocks (``now`` is passed in), each case a snapshot and the settings."""

from __future__ import annotations

import dataclasses

import pytest

from minifal.fleet.scaler import (
    FleetSnapshot,
    Phase,
    RunnerView,
    ScalingDecision,
    ScalingSettings,
    bounded,
    decide,
    demand_runners,
    desired_runners,
    expires_in,
    with_buffer,
)

pytestmark = pytest.mark.unit

NOW = 1000.0


def ready(runner_id: str, idle_for: float = 0.0, now: float = NOW) -> RunnerView:
    """An idle ready runner whose last request ended ``idle_for`` seconds before ``now``."""
    return RunnerView(runner_id, Phase.READY, in_flight=0, idle_since=now - idle_for)


def busy(runner_id: str, in_flight: int = 1) -> RunnerView:
    return RunnerView(runner_id, Phase.READY, in_flight=in_flight, idle_since=None)


def starting(runner_id: str) -> RunnerView:
    return RunnerView(runner_id, Phase.STARTING)


def leaving(runner_id: str, in_flight: int = 0) -> RunnerView:
    return RunnerView(runner_id, Phase.LEAVING, in_flight=in_flight)


def snap(*runners: RunnerView, queued: tuple[float, ...] = (), now: float = NOW) -> FleetSnapshot:
    return FleetSnapshot(now=now, runners=runners, queued_waits=queued)


# -- step 1: demand --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queued", "scaling_delay", "expected"),
    [
        ((), 0.0, 0),
        ((0.0,), 0.0, 1),  # no delay: a request counts the moment it is queued
        ((0.0, 0.0, 0.0), 0.0, 3),
        ((4.9,), 5.0, 0),  # waited less than scaling_delay: not yet
        ((5.0,), 5.0, 1),  # exactly scaling_delay: counts
        ((7.0, 5.0, 4.9, 0.1), 5.0, 2),  # only the ones that waited long enough
    ],
)
def test_queued_requests_count_once_they_waited_scaling_delay(
    queued: tuple[float, ...], scaling_delay: float, expected: int
) -> None:
    settings = ScalingSettings(scaling_delay=scaling_delay)
    assert demand_runners(snap(queued=queued), settings) == expected


def test_in_flight_requests_count_immediately_whatever_scaling_delay() -> None:
    settings = ScalingSettings(scaling_delay=30.0)
    assert demand_runners(snap(busy("a", 1), busy("b", 1), ready("c")), settings) == 2


@pytest.mark.parametrize(
    ("requests", "multiplexing", "expected"),
    [(0, 2, 0), (1, 2, 1), (2, 2, 1), (4, 2, 2), (5, 2, 3), (5, 1, 5), (9, 10, 1)],
)
def test_max_multiplexing_packs_requests_per_runner_rounding_up(
    requests: int, multiplexing: int, expected: int
) -> None:
    settings = ScalingSettings(max_multiplexing=multiplexing)
    assert demand_runners(snap(queued=(0.0,) * requests), settings) == expected


def test_multiplexing_adds_in_flight_and_queued_before_rounding() -> None:
    settings = ScalingSettings(max_multiplexing=2)
    # 3 in flight on two runners + 2 queued = 5 requests -> 3 runners
    snapshot = snap(busy("a", 2), busy("b", 1), queued=(0.0, 0.0))
    assert demand_runners(snapshot, settings) == 3


# -- step 2: buffer --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("demand", "buffer", "perc", "expected"),
    [
        (0, 0, 0, 0),
        (4, 0, 0, 4),
        (0, 2, 0, 2),  # warm runners even with no demand
        (4, 2, 0, 6),
        (10, 0, 20, 12),
        (3, 0, 10, 4),  # 0.3 runner rounds up to 1
        (1, 0, 1, 2),  # any positive percentage of demand is at least one runner
        (0, 0, 50, 0),  # a percentage of nothing is nothing
        (10, 1, 50, 15),  # perc (5) beats buffer (1)
        (10, 3, 10, 13),  # buffer (3) beats perc (1)
        (10, 2, 20, 12),  # equal: added once, not summed
    ],
)
def test_buffer_is_the_larger_of_count_and_percent(
    demand: int, buffer: int, perc: int, expected: int
) -> None:
    settings = ScalingSettings(concurrency_buffer=buffer, concurrency_buffer_perc=perc)
    assert with_buffer(demand, settings) == expected


# -- step 3: bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "settings", "expected"),
    [
        (7, ScalingSettings(), 7),  # unbounded by default
        (7, ScalingSettings(max_concurrency=2), 2),
        (7, ScalingSettings(hard_cap=3), 3),
        (7, ScalingSettings(max_concurrency=5, hard_cap=3), 3),  # the smaller cap wins
        (7, ScalingSettings(max_concurrency=3, hard_cap=5), 3),
        (0, ScalingSettings(min_concurrency=2), 2),
        (1, ScalingSettings(min_concurrency=2, max_concurrency=4), 2),
        (3, ScalingSettings(min_concurrency=2, max_concurrency=4), 3),
        (0, ScalingSettings(min_concurrency=4, hard_cap=2), 2),  # the machine can't hold more
    ],
)
def test_bounds(count: int, settings: ScalingSettings, expected: int) -> None:
    assert bounded(count, settings) == expected


def test_max_concurrency_caps_demand_plus_buffer() -> None:
    settings = ScalingSettings(max_concurrency=2, concurrency_buffer=1)
    snapshot = snap(busy("a"), queued=(0.0,) * 10)
    assert desired_runners(snapshot, settings) == 2
    decision = decide(snapshot, settings)
    assert (decision.desired, decision.start, decision.stop) == (2, 1, ())


def test_hard_cap_limits_an_unbounded_app() -> None:
    settings = ScalingSettings(hard_cap=2)
    decision = decide(snap(queued=(0.0,) * 8), settings)
    assert (decision.desired, decision.start) == (2, 2)


def test_hard_cap_beats_min_concurrency_even_for_fixed_workers() -> None:
    settings = dataclasses.replace(ScalingSettings.fixed(4), hard_cap=2)
    decision = decide(snap(), settings)
    assert (decision.desired, decision.start) == (2, 2)  # not 4 runners a 2-GPU machine can't hold
    assert decide(snap(ready("a"), ready("b")), settings).reason == "steady"


def test_min_concurrency_holds_when_idle() -> None:
    settings = ScalingSettings(min_concurrency=2, keep_alive=10.0)
    runners = (ready("a", idle_for=3600), ready("b", idle_for=3600))
    assert decide(snap(*runners), settings) == ScalingDecision(2, 0, (), "steady")


def test_min_concurrency_starts_runners_with_no_demand() -> None:
    decision = decide(snap(), ScalingSettings(min_concurrency=2))
    assert (decision.desired, decision.start, decision.stop) == (2, 2, ())


# -- scaling up ------------------------------------------------------------------------------------


def test_scale_from_zero_on_one_queued_request() -> None:
    decision = decide(snap(queued=(0.0,)), ScalingSettings())
    assert (decision.desired, decision.start, decision.stop) == (1, 1, ())
    assert "demand" in decision.reason


def test_scale_from_zero_waits_for_scaling_delay() -> None:
    settings = ScalingSettings(scaling_delay=5.0)
    for waited in (0.0, 2.5, 4.99):
        decision = decide(snap(queued=(waited,)), settings)
        assert (decision.desired, decision.start) == (0, 0), waited
    decision = decide(snap(queued=(5.0,)), settings)
    assert (decision.desired, decision.start) == (1, 1)


def test_scale_up_on_queue_behind_a_busy_runner() -> None:
    settings = ScalingSettings(scaling_delay=2.0)
    # one runner busy, three waiting: only the two that waited 2 s ask for runners yet
    snapshot = snap(busy("a"), queued=(3.0, 2.0, 0.5))
    decision = decide(snapshot, settings)
    assert (decision.desired, decision.start) == (3, 2)
    # 1.5 s later the third one has waited long enough too
    later = snap(busy("a"), queued=(4.5, 3.5, 2.0), now=NOW + 1.5)
    assert decide(later, settings).start == 3


def test_starting_runners_count_as_capacity() -> None:
    settings = ScalingSettings()
    snapshot = snap(starting("a"), queued=(1.0,))
    assert decide(snapshot, settings) == ScalingDecision(1, 0, (), "steady")
    snapshot = snap(starting("a"), queued=(1.0, 1.0, 1.0))
    assert decide(snapshot, settings).start == 2  # two more, not three


def test_leaving_runners_are_not_counted() -> None:
    settings = ScalingSettings(min_concurrency=1)
    decision = decide(snap(leaving("old")), settings)
    assert (decision.desired, decision.start, decision.stop) == (1, 1, ())
    # and a leaving runner is never asked to stop again
    decision = decide(snap(leaving("old"), ready("a", idle_for=3600)), ScalingSettings())
    assert decision.stop == ("a",)


@pytest.mark.parametrize("runners", [1, 2, 4])
def test_fixed_keeps_n_runners(runners: int) -> None:
    settings = ScalingSettings.fixed(runners)
    fleet = tuple(ready(f"r{i}", idle_for=3600) for i in range(runners))
    assert decide(snap(*fleet), settings) == ScalingDecision(runners, 0, (), "steady")
    # no more under load: requests queue instead
    assert decide(snap(*fleet, queued=(60.0,) * 10), settings).start == 0


def test_fixed_replaces_a_leaving_runner() -> None:
    settings = ScalingSettings.fixed(2)
    decision = decide(snap(ready("a"), leaving("b")), settings)
    assert (decision.desired, decision.start, decision.stop) == (2, 1, ())


def test_fixed_settings() -> None:
    settings = ScalingSettings.fixed(3)
    assert (settings.min_concurrency, settings.max_concurrency) == (3, 3)


# -- scaling down: keep_alive ----------------------------------------------------------------------


def test_idle_runner_above_desired_stops_only_after_keep_alive() -> None:
    settings = ScalingSettings(keep_alive=5.0)
    waiting = decide(snap(ready("a", idle_for=4.9)), settings)
    assert waiting == ScalingDecision(0, 0, (), "waiting keep_alive")
    expired = decide(snap(ready("a", idle_for=5.0)), settings)
    assert expired == ScalingDecision(0, 0, ("a",), "keep_alive expired")


def test_scale_down_to_zero_when_min_is_zero() -> None:
    settings = ScalingSettings(keep_alive=5.0)
    snapshot = snap(ready("a", idle_for=6), ready("b", idle_for=10))
    decision = decide(snapshot, settings)
    assert (decision.desired, decision.start) == (0, 0)
    assert sorted(decision.stop) == ["a", "b"]


def test_scale_down_stops_the_most_idle_first() -> None:
    settings = ScalingSettings(keep_alive=5.0)
    snapshot = snap(
        ready("recent", idle_for=6), ready("oldest", idle_for=60), ready("middle", idle_for=30)
    )
    assert decide(snapshot, settings).stop == ("oldest", "middle", "recent")
    one_needed = snap(busy("x"), *snapshot.runners, queued=(0.0,))  # demand 2 -> stop 2 of 4
    assert decide(one_needed, settings).stop == ("oldest", "middle")


def test_scale_down_never_below_min_concurrency() -> None:
    settings = ScalingSettings(min_concurrency=1, keep_alive=5.0)
    snapshot = snap(ready("a", idle_for=100), ready("b", idle_for=50), ready("c", idle_for=1))
    decision = decide(snapshot, settings)
    assert (decision.desired, decision.stop) == (1, ("a", "b"))  # c stays: the one min keeps
    # all three expired: still one stays, the least idle
    snapshot = snap(ready("a", idle_for=100), ready("b", idle_for=50), ready("c", idle_for=9))
    assert decide(snapshot, settings).stop == ("a", "b")
    last = snap(ready("c", idle_for=3600))
    assert decide(last, settings) == ScalingDecision(1, 0, (), "steady")


def test_scale_down_never_stops_busy_or_starting_runners() -> None:
    settings = ScalingSettings(keep_alive=5.0)
    # desired 1 (one in flight) of three live; only the idle ready one may go
    snapshot = snap(busy("busy"), starting("new"), ready("idle", idle_for=60))
    decision = decide(snapshot, settings)
    assert (decision.desired, decision.stop) == (1, ("idle",))
    # nothing expired: the fleet waits, even though it is above desired
    snapshot = snap(busy("busy"), starting("new"), ready("idle", idle_for=1))
    assert decide(snapshot, settings) == ScalingDecision(1, 0, (), "waiting keep_alive")


def test_buffer_keeps_warm_runners_past_keep_alive() -> None:
    settings = ScalingSettings(concurrency_buffer=1, keep_alive=5.0)
    snapshot = snap(busy("a"), ready("warm", idle_for=3600))
    assert decide(snapshot, settings) == ScalingDecision(2, 0, (), "steady")


def test_keep_alive_starts_over_when_idle_since_moves() -> None:
    """A runner that served a request is idle again from its end: keep_alive counts from there."""
    settings = ScalingSettings(keep_alive=5.0)
    assert decide(snap(ready("a", idle_for=6)), settings).stop == ("a",)
    assert decide(snap(ready("a", idle_for=1)), settings).stop == ()


# -- expires_in (fal's "Expires In" column) --------------------------------------------------------


def test_expires_in_counts_down_and_floors_at_zero() -> None:
    settings = ScalingSettings(keep_alive=60.0)
    runner = RunnerView("a", Phase.READY, idle_since=NOW)
    assert expires_in(runner, live=1, now=NOW, settings=settings) == 60.0
    assert expires_in(runner, live=1, now=NOW + 15, settings=settings) == 45.0
    assert expires_in(runner, live=1, now=NOW + 60, settings=settings) == 0.0
    assert expires_in(runner, live=1, now=NOW + 600, settings=settings) == 0.0


@pytest.mark.parametrize(
    "runner",
    [busy("busy"), busy("busy-many", 3), starting("new"), leaving("old")],
    ids=["busy", "busy-multiplexed", "starting", "leaving"],
)
def test_expires_in_is_none_for_runners_keep_alive_does_not_stop(runner: RunnerView) -> None:
    assert expires_in(runner, live=3, now=NOW, settings=ScalingSettings()) is None


@pytest.mark.parametrize(("live", "expected"), [(1, None), (2, None), (3, 50.0)])
def test_expires_in_is_none_at_min_concurrency(live: int, expected: float | None) -> None:
    settings = ScalingSettings(min_concurrency=2, keep_alive=60.0)
    assert expires_in(ready("a", idle_for=10), live, NOW, settings) == expected


def test_expires_in_agrees_with_decide() -> None:
    settings = ScalingSettings(keep_alive=5.0)
    for idle_for in (0.0, 2.0, 4.9, 5.0, 9.0):
        runner = ready("a", idle_for=idle_for)
        stopped = decide(snap(runner), settings).stop == ("a",)
        assert (expires_in(runner, 1, NOW, settings) == 0.0) == stopped, idle_for


# -- reasons ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snapshot", "settings", "reason"),
    [
        (snap(queued=(0.0,)), ScalingSettings(), "demand above runners"),
        (snap(busy("a")), ScalingSettings(), "steady"),
        (snap(), ScalingSettings(), "steady"),
        (snap(ready("a", idle_for=1)), ScalingSettings(keep_alive=5), "waiting keep_alive"),
        (snap(ready("a", idle_for=9)), ScalingSettings(keep_alive=5), "keep_alive expired"),
    ],
    ids=["up", "steady-busy", "steady-empty", "waiting", "expired"],
)
def test_reasons(snapshot: FleetSnapshot, settings: ScalingSettings, reason: str) -> None:
    assert decide(snapshot, settings).reason == reason
