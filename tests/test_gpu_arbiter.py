"""The GPU arbiter (``fleet/gpu_arbiter.py``): which app gets which GPUs of a shared pool, with
plain numbers (no processes, no clocks)."""

from __future__ import annotations

from typing import Any

import pytest

from minifal.fleet.gpu_arbiter import (
    Action,
    ArbiterSettings,
    Grant,
    Hold,
    PooledApp,
    PooledRunner,
    PoolPlan,
    PoolSnapshot,
    Reclaim,
    arbitrate,
)

pytestmark = pytest.mark.unit

GIB = 2**30
NOW = 1000.0


def idle(
    runner_id: str, gpu: str, since: float = NOW - 1, keep_until: float | None = None
) -> PooledRunner:
    return PooledRunner(runner_id, (gpu,), Hold.READY, 0, since, keep_until or since + 60)


def busy(runner_id: str, gpu: str, in_flight: int = 1) -> PooledRunner:
    return PooledRunner(runner_id, (gpu,), Hold.READY, in_flight)


def asleep(runner_id: str, gpu: str, since: float = NOW - 10, memory: int = GIB) -> PooledRunner:
    return PooledRunner(
        runner_id, (gpu,), Hold.SUSPENDED, suspended_since=since, host_memory=memory
    )


def waiting(app: str, waited: float = 1.0, requests: int = 1, **fields: Any) -> PooledApp:
    """An app whose scaler wants one more runner per waiting request."""
    fields.setdefault("wants", requests)
    return PooledApp(app, waiting=requests, oldest_wait=waited, **fields)


def holding(app: str, *runners: PooledRunner, **fields: Any) -> PooledApp:
    fields.setdefault("can_suspend", True)
    return PooledApp(app, runners, **fields)


def plan_for(
    *apps: PooledApp, gpus: str = "0", budget: int | None = None, **settings: float
) -> PoolPlan:
    snapshot = PoolSnapshot(NOW, tuple(gpus.split(",")), apps, budget)
    return arbitrate(snapshot, ArbiterSettings(**settings))


# -- free GPUs ------------------------------------------------------------------------------------


def test_a_free_gpu_goes_to_the_app_that_wants_a_runner() -> None:
    plan = plan_for(waiting("b"), holding("a"))
    assert plan.grants == (Grant("b", ("0",)),) and plan.reclaims == ()


def test_a_suspended_runner_resumes_on_its_own_gpu_when_it_is_free() -> None:
    b = waiting("b", runners=(asleep("b-old", "1", since=5.0), asleep("b-new", "1", since=9.0)))
    plan = plan_for(b, holding("a", idle("a-0", "0")), gpus="0,1")
    assert plan.grants == (Grant("b", ("1",), resume="b-new"),)  # the most recent first
    # Its GPU held by another app's runner: a new runner starts on a free GPU instead.
    b_elsewhere = waiting("b", runners=(asleep("b-0", "0"),))
    plan = plan_for(b_elsewhere, holding("a", idle("a-0", "0")), gpus="0,1")
    assert plan.grants == (Grant("b", ("1",)),) and plan.reclaims == ()


def test_a_new_runner_goes_where_fewest_suspended_runners_are_parked() -> None:
    parked = holding("a", asleep("a-0", "0"))
    assert plan_for(waiting("b"), parked, gpus="0,1").grants == (Grant("b", ("1",)),)


def test_the_oldest_waiting_demand_first_and_first_runners_before_second_ones() -> None:
    plan = plan_for(waiting("young", 3.0), waiting("old", 5.0))
    assert plan.grants == (Grant("old", ("0",)),) and plan.waiting_for_gpus == ("young",)
    # "old" wants two runners, "young" one: each gets its first before "old" gets a second.
    plan = plan_for(waiting("old", 10.0, requests=2), waiting("young", 1.0), gpus="0,1")
    assert sorted(grant.app for grant in plan.grants) == ["old", "young"]


def test_demand_without_waiting_requests_takes_free_gpus_only_and_comes_last() -> None:
    kept_warm = PooledApp("warm", wants=1, min_concurrency=1)  # its scaler's min_concurrency
    plan = plan_for(kept_warm, waiting("b"))
    assert plan.grants == (Grant("b", ("0",)),) and plan.waiting_for_gpus == ("warm",)
    plan = plan_for(kept_warm, holding("a", idle("a-0", "0")))
    assert plan.reclaims == () and plan.waiting_for_gpus == ("warm",)


def test_cpu_apps_need_no_gpu() -> None:
    plan = plan_for(waiting("cpu", gpus_per_runner=0), gpus="")
    assert plan.grants == (Grant("cpu", ()),)


# -- taking a GPU back ----------------------------------------------------------------------------


def test_a_full_pool_suspends_an_idle_runner_of_another_app_for_a_waiting_request() -> None:
    plan = plan_for(holding("a", idle("a-0", "0")), waiting("b"))
    assert plan.grants == ()  # granted once a-0 has let go of the GPU
    assert plan.reclaims == (Reclaim("a", "a-0", Action.SUSPEND, "b", plan.reclaims[0].reason),)
    assert "keep_alive" in plan.reclaims[0].reason
    # While a-0 suspends, b waits for that GPU: nothing more is taken.
    suspending = PooledRunner("a-0", ("0",), Hold.SUSPENDING)
    plan = plan_for(holding("a", suspending, idle("a-1", "1")), waiting("b"), gpus="0,1")
    assert plan == arbitrate(PoolSnapshot(NOW, ("0", "1"), ()))  # empty
    # Once suspended, the GPU is free: b starts there, or resumes its runner parked there.
    plan = plan_for(holding("a", asleep("a-0", "0")), waiting("b"))
    assert plan.grants == (Grant("b", ("0",)),)
    plan = plan_for(holding("a", asleep("a-0", "0")), waiting("b", runners=(asleep("b-0", "0"),)))
    assert plan.grants == (Grant("b", ("0",), resume="b-0"),)


def test_the_reverse_the_same_way() -> None:
    a_back = waiting("a", runners=(asleep("a-0", "0", since=NOW - 5),))
    plan = plan_for(a_back, holding("b", idle("b-0", "0")))
    assert [(r.runner_id, r.action, r.for_app) for r in plan.reclaims] == [
        ("b-0", Action.SUSPEND, "a")
    ]
    a_back_b_asleep = plan_for(a_back, holding("b", asleep("b-0", "0")))
    assert a_back_b_asleep.grants == (Grant("a", ("0",), resume="a-0"),)


def test_an_app_that_cannot_suspend_has_its_runner_stopped() -> None:
    plan = plan_for(holding("a", idle("a-0", "0"), can_suspend=False), waiting("b"))
    assert [(r.runner_id, r.action) for r in plan.reclaims] == [("a-0", Action.STOP)]
    stopping = holding("a", PooledRunner("a-0", ("0",), Hold.STOPPING))
    assert plan_for(stopping, waiting("b")).reclaims == ()  # b waits for that GPU


def test_busy_starting_resuming_and_suspending_runners_are_never_taken() -> None:
    for runner in (
        busy("a-0", "0"),
        PooledRunner("a-0", ("0",), Hold.STARTING),
        PooledRunner("a-0", ("0",), Hold.RESUMING),
    ):
        plan = plan_for(holding("a", runner), waiting("b", 20.0))
        assert plan.reclaims == () and plan.grants == () and plan.waiting_for_gpus == ("b",)


def test_a_runner_in_its_crash_back_off_is_stopped_first() -> None:
    crashed = holding("a", PooledRunner("a-0", ("0",), Hold.BACKING_OFF))
    c = holding("c", idle("c-0", "1", since=NOW - 50, keep_until=NOW - 1))
    plan = plan_for(crashed, c, waiting("b"), gpus="0,1")
    assert [(r.runner_id, r.action) for r in plan.reclaims] == [("a-0", Action.STOP)]


def test_a_runner_whose_process_died_while_its_gpu_served_another_app_is_stopped() -> None:
    crashed = holding("a", PooledRunner("runner-0", ("0",), Hold.BACKING_OFF))
    plan = plan_for(crashed, holding("b", busy("runner-0", "0")))
    assert [(r.app, r.runner_id, r.action) for r in plan.reclaims] == [
        ("a", "runner-0", Action.STOP)
    ]
    assert plan_for(crashed).reclaims == ()  # on a GPU of its own, it restarts there


def test_runners_are_told_apart_by_app_and_id() -> None:
    a = holding("a", idle("runner-0", "0"))
    b = waiting("b", runners=(asleep("runner-0", "1"),))
    plan = plan_for(a, b, waiting("c", 0.5), gpus="0,1")
    assert plan.grants == (Grant("b", ("1",), resume="runner-0"),)
    assert [(r.app, r.runner_id, r.for_app) for r in plan.reclaims] == [("a", "runner-0", "c")]


def test_the_least_recently_used_idle_runner_is_taken() -> None:
    a = holding("a", idle("a-0", "0", since=NOW - 2))
    c = holding("c", idle("c-0", "1", since=NOW - 9))
    plan = plan_for(a, c, waiting("b"), gpus="0,1")
    assert [r.runner_id for r in plan.reclaims] == ["c-0"]


def test_a_runner_on_the_gpu_where_the_asking_app_is_parked_goes_first() -> None:
    a = holding("a", idle("a-0", "0", since=NOW - 9))  # less recently used...
    c = holding("c", idle("c-0", "1", since=NOW - 2))  # ...but b's runner waits on GPU 1
    b = waiting("b", runners=(asleep("b-0", "1"),))
    plan = plan_for(a, c, b, gpus="0,1")
    assert [r.runner_id for r in plan.reclaims] == ["c-0"]


def test_runners_past_keep_alive_go_before_those_within_it() -> None:
    within = holding("a", idle("a-0", "0", since=NOW - 50, keep_until=NOW + 10))
    past = holding("c", idle("c-0", "1", since=NOW - 5, keep_until=NOW - 1))
    plan = plan_for(within, past, waiting("b"), gpus="0,1")
    assert [r.runner_id for r in plan.reclaims] == ["c-0"]


def test_each_waiting_request_takes_at_most_one_gpu_from_another_app() -> None:
    a = holding("a", idle("a-0", "0"), idle("a-1", "1"))
    buffered = waiting("b", requests=1, wants=2)  # its scaler's buffer wants one more
    plan = plan_for(a, buffered, gpus="0,1")
    assert len(plan.reclaims) == 1


def test_one_reclaim_per_runner_even_when_several_apps_wait() -> None:
    plan = plan_for(holding("a", idle("a-0", "0")), waiting("b", 2.0), waiting("c", 1.0))
    assert [(r.runner_id, r.for_app) for r in plan.reclaims] == [("a-0", "b")]
    assert plan.waiting_for_gpus == ("c",)


def test_runners_of_several_gpus_take_several_gpus_or_nothing() -> None:
    a = holding("a", idle("a-0", "0"), idle("a-1", "1"))
    plan = plan_for(a, waiting("big", gpus_per_runner=2), gpus="0,1")
    assert {r.runner_id for r in plan.reclaims} == {"a-0", "a-1"}
    a_busy = holding("a", idle("a-0", "0"), busy("a-1", "1"))
    assert plan_for(a_busy, waiting("big", gpus_per_runner=2), gpus="0,1").reclaims == ()
    # One GPU free and one idle runner: only that one is taken.
    plan = plan_for(holding("a", idle("a-0", "0")), waiting("big", gpus_per_runner=2), gpus="0,1")
    assert [r.runner_id for r in plan.reclaims] == ["a-0"] and plan.grants == ()


# -- min_concurrency and starvation under contention ----------------------------------------------


def test_min_concurrency_yields_to_a_waiting_request_after_protected_wait() -> None:
    a = holding("a", idle("a-0", "0"), min_concurrency=1)
    assert plan_for(a, waiting("b", 4.0), protected_wait=5.0).reclaims == ()
    plan = plan_for(a, waiting("b", 5.0), protected_wait=5.0)
    assert [r.runner_id for r in plan.reclaims] == ["a-0"]
    assert "min_concurrency" in plan.reclaims[0].reason


def test_min_concurrency_protects_the_most_recently_used_runners() -> None:
    a = holding(
        "a", idle("a-new", "0", since=NOW - 1), idle("a-old", "1", since=NOW - 9), min_concurrency=1
    )
    plan = plan_for(a, waiting("b", 1.0, requests=2), gpus="0,1")
    assert [r.runner_id for r in plan.reclaims] == ["a-old"]


def test_an_app_without_runners_past_starvation_wait_gets_a_busy_runner_drained() -> None:
    a = holding("a", busy("a-0", "0"))
    assert plan_for(a, waiting("b", 29.0), starvation_wait=30.0).reclaims == ()
    plan = plan_for(a, waiting("b", 30.0), starvation_wait=30.0)
    assert [(r.runner_id, r.action) for r in plan.reclaims] == [("a-0", Action.DRAIN)]
    # Not for an app that waits less than the busy app's own oldest request.
    a_behind = holding("a", busy("a-0", "0"), waiting=3, oldest_wait=40.0)
    assert plan_for(a_behind, waiting("b", 35.0), starvation_wait=30.0).reclaims == ()
    # Not while the waiting app has a runner of its own.
    b_served = waiting("b", 35.0, runners=(busy("b-0", "1"),))
    assert plan_for(a, b_served, gpus="0,1", starvation_wait=30.0).reclaims == ()


# -- host memory ----------------------------------------------------------------------------------


def test_suspended_runners_of_every_app_share_one_host_memory_budget_oldest_stopped_first() -> None:
    a = holding("a", asleep("a-0", "0", since=1.0, memory=6 * GIB))
    b = holding("b", asleep("b-0", "0", since=2.0, memory=6 * GIB))
    c = holding("c", asleep("c-0", "0", since=3.0, memory=3 * GIB))
    plan = plan_for(a, b, c, budget=10 * GIB)
    assert [(r.runner_id, r.action, r.for_app) for r in plan.reclaims] == [
        ("a-0", Action.STOP, None)
    ]
    assert plan_for(a, b, c, budget=None).reclaims == ()


def test_a_runner_stopped_for_host_memory_is_not_resumed() -> None:
    a = PooledApp(
        "a",
        (asleep("a-0", "0", since=1.0, memory=8 * GIB), asleep("a-1", "1", since=2.0)),
        wants=1,
        waiting=1,
    )
    plan = plan_for(a, gpus="0,1", budget=8 * GIB)
    assert [r.runner_id for r in plan.reclaims] == ["a-0"]
    assert plan.grants == (Grant("a", ("1",), resume="a-1"),)
