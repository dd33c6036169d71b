"""Revisions: ids, whether a manifest can replace the serving one, and a rollout's steps
(``plan_rollout``) with plain values, in milliseconds."""

from __future__ import annotations

import pytest

from minifal.fleet.revisions import (
    RolloutStep,
    RolloutView,
    RunnerSide,
    Standing,
    Strategy,
    compare_manifests,
    content_hash,
    plan_rollout,
    revision_id,
)
from minifal.runner.app_manifest import AppManifest, ManifestEndpoint
from minifal.settings import AppSettings

pytestmark = pytest.mark.unit

OLD, NEW = "r1-aaaaaaaa", "r2-bbbbbbbb"
S, R, L, F = Standing.STARTING, Standing.READY, Standing.LEAVING, Standing.FAILED


def side(runner_id: str, revision: str, standing: Standing, in_flight: int = 0) -> RunnerSide:
    failure = "setup() failed" if standing is Standing.FAILED else None
    return RunnerSide(runner_id, revision, standing, in_flight, 0.0, failure)


def plan(
    strategy: Strategy,
    runners: list[RunnerSide],
    wanted: int,
    capacity: int | None = None,
    surge: bool = True,
) -> RolloutStep:
    return plan_rollout(RolloutView(NEW, strategy, tuple(runners), wanted, capacity, surge))


# -- ids -------------------------------------------------------------------------------------------


def test_a_revision_id_is_a_counter_and_a_short_hash_of_the_file_and_class() -> None:
    first = content_hash(b"class A(fal.App): ...", None)
    assert len(first) == 8 and revision_id(3, first) == f"r3-{first}"
    assert content_hash(b"class A(fal.App): ...", None) == first
    assert content_hash(b"class A(fal.App): ...", "A") != first
    assert content_hash(b"class A(fal.App): pass", None) != first


# -- compatibility ---------------------------------------------------------------------------------


def manifest(name: str = "echo", endpoints: dict[str, str] | None = None, **settings: object):
    routes = endpoints if endpoints is not None else {"/": "http", "/ws": "websocket"}
    return AppManifest(
        name,
        "Echo",
        AppSettings(**settings),
        tuple(ManifestEndpoint(path, kind) for path, kind in routes.items()),  # type: ignore[arg-type]
        {},
    )


def test_a_revision_with_the_same_name_and_endpoints_replaces_the_serving_one() -> None:
    check = compare_manifests(manifest(), manifest(endpoints={"/": "http", "/ws": "websocket"}))
    assert check.problems == () and check.kept == ()


def test_new_endpoints_are_fine_removed_or_changed_ones_and_a_new_name_are_not() -> None:
    added = compare_manifests(
        manifest(), manifest(endpoints={"/": "http", "/ws": "websocket", "/x": "http"})
    )
    assert added.problems == ()
    check = compare_manifests(manifest(), manifest("other", endpoints={"/ws": "http"}))
    assert check.problems == (
        "app name changed: 'echo' -> 'other'",
        "endpoint / removed",
        "endpoint /ws changed from websocket to http",
    )


def test_settings_the_fleet_is_built_on_must_stay_others_wait_for_a_restart() -> None:
    check = compare_manifests(manifest(), manifest(max_multiplexing=4, keep_alive=5))
    assert check.problems == ("max_multiplexing changed (1 -> 4): restart the gateway",)
    assert check.kept == ("keep_alive (60 -> 5)",)


# -- rolling ---------------------------------------------------------------------------------------


def test_rolling_starts_the_new_runners_first_and_drains_nothing_yet() -> None:
    old = [side(f"runner-{i}", OLD, R, in_flight=1) for i in range(3)]
    assert plan(Strategy.ROLLING, old, wanted=3) == RolloutStep(start=3, reason="rolling")


def test_rolling_drains_one_old_runner_per_new_one_ready_the_least_busy_first() -> None:
    runners = [
        side("runner-0", OLD, R, in_flight=2),
        side("runner-1", OLD, R, in_flight=0),
        side("runner-2", OLD, R, in_flight=1),
        side("runner-3", NEW, R),
        side("runner-4", NEW, S),
        side("runner-5", NEW, S),
    ]
    step = plan(Strategy.ROLLING, runners, wanted=3)
    assert step.drain == ("runner-1",) and step.start == 0 and not step.promote


def test_rolling_promotes_once_wanted_new_runners_are_ready_and_drains_the_rest() -> None:
    runners = [
        side("runner-0", OLD, R, in_flight=1),
        side("runner-1", OLD, L),
        side("runner-3", NEW, R),
        side("runner-4", NEW, R),
    ]
    step = plan(Strategy.ROLLING, runners, wanted=2)
    assert step.promote and step.drain == ("runner-0",) and step.failed is None


def test_rolling_on_a_full_machine_goes_one_runner_beyond_it_at_a_time() -> None:
    old = [side("runner-0", OLD, R), side("runner-1", OLD, R)]
    assert plan(Strategy.ROLLING, old, wanted=2, capacity=2).start == 1
    one_starting = [*old, side("runner-2", NEW, S)]
    assert plan(Strategy.ROLLING, one_starting, wanted=2, capacity=2).start == 0
    one_ready = [side("runner-0", OLD, L), side("runner-1", OLD, R), side("runner-2", NEW, R)]
    step = plan(Strategy.ROLLING, one_ready, wanted=2, capacity=2)
    assert step.start == 1 and step.drain == ()


def test_rolling_gpu_runners_on_a_full_machine_replace_one_old_runner_at_a_time() -> None:
    def gpu_plan(runners: list[RunnerSide]) -> RolloutStep:
        return plan(Strategy.ROLLING, runners, wanted=2, capacity=2, surge=False)

    both_old = [side("runner-0", OLD, R, in_flight=1), side("runner-1", OLD, R)]
    assert gpu_plan(both_old) == RolloutStep(drain=("runner-1",), reason="rolling")
    one_leaving = [side("runner-0", OLD, R, in_flight=1), side("runner-1", OLD, L)]
    assert gpu_plan(one_leaving).start == 0 and gpu_plan(one_leaving).drain == ()
    one_gone = [side("runner-0", OLD, R, in_flight=1)]
    assert gpu_plan(one_gone).start == 1
    one_new_ready = [side("runner-0", OLD, R, in_flight=1), side("runner-2", NEW, R)]
    assert gpu_plan(one_new_ready) == RolloutStep(drain=("runner-0",), reason="rolling")
    last = [side("runner-0", OLD, L), side("runner-2", NEW, R)]
    assert gpu_plan(last).start == 0
    assert gpu_plan([side("runner-2", NEW, R)]).start == 1


def test_rolling_gpu_runners_already_sharing_gpus_keep_the_fleets_size() -> None:
    old = [side(f"runner-{i}", OLD, R) for i in range(4)]
    step = plan(Strategy.ROLLING, old, wanted=4, capacity=2, surge=False)
    assert step.start == 0 and step.drain == ("runner-0",)
    step = plan(Strategy.ROLLING, old[1:], wanted=4, capacity=2, surge=False)
    assert step.start == 1 and step.drain == ()


def test_rolling_a_fleet_scaled_to_zero_starts_one_runner_to_prove_the_revision() -> None:
    assert plan(Strategy.ROLLING, [], wanted=0).start == 1
    assert plan(Strategy.ROLLING, [side("runner-0", NEW, R)], wanted=0).promote


def test_old_runners_starting_or_suspended_drain_before_ready_ones() -> None:
    runners = [
        side("runner-0", OLD, R),
        side("runner-1", OLD, S),
        side("runner-2", NEW, R),
    ]
    assert plan(Strategy.ROLLING, runners, wanted=2).drain == ("runner-1",)


def test_a_new_runner_that_fails_its_start_fails_the_revision_and_its_runners_drain() -> None:
    runners = [
        side("runner-0", OLD, R, in_flight=1),
        side("runner-1", NEW, F),
        side("runner-2", NEW, S),
        side("runner-3", "r0-gone", Standing.GONE),
    ]
    step = plan(Strategy.ROLLING, runners, wanted=1)
    assert step.failed == "runner-1: setup() failed"
    assert step.drain == ("runner-2",) and step.start == 0 and not step.promote


# -- recreate --------------------------------------------------------------------------------------


def test_recreate_drains_every_old_runner_then_waits_for_them_to_stop() -> None:
    old = [side("runner-0", OLD, R, in_flight=1), side("runner-1", OLD, S)]
    step = plan(Strategy.RECREATE, old, wanted=2)
    assert step.drain == ("runner-1", "runner-0") and step.start == 0
    leaving = [side("runner-0", OLD, L), side("runner-1", OLD, L)]
    assert plan(Strategy.RECREATE, leaving, wanted=2) == RolloutStep(
        reason="recreate: waiting for old runners to stop"
    )


def test_recreate_starts_the_new_runners_once_the_old_are_gone_then_promotes() -> None:
    assert plan(Strategy.RECREATE, [], wanted=2).start == 2
    starting = [side("runner-2", NEW, R), side("runner-3", NEW, S)]
    assert plan(Strategy.RECREATE, starting, wanted=2) == RolloutStep(reason="recreate: starting")
    ready = [side("runner-2", NEW, R), side("runner-3", NEW, R)]
    assert plan(Strategy.RECREATE, ready, wanted=2).promote
