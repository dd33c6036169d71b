"""minifal.runner.batching: the rules (pure), and real threads and event loops batching calls.

No timing asserts: a batch function that holds its first batch on an event shows, by the batches'
contents, that the calls which arrived meanwhile ran together."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from minifal.runner.batching import (
    AsyncBatcher,
    BatchRules,
    Failed,
    NextBatch,
    ThreadBatcher,
    batched,
    close_batchers,
    next_batch,
    outcomes,
)

pytestmark = pytest.mark.unit

RULES = BatchRules(max_batch_size=4, batch_timeout_s=0.01)
BOUND_S = 10.0  # every wait in these tests


def wait_until(condition, bound_s: float = BOUND_S) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


# --- the rules ---------------------------------------------------------------------------


def test_a_full_batch_starts_at_once() -> None:
    assert next_batch(4, 0.0, previous_batch=4, rules=RULES) == NextBatch(4, 0.0)
    assert next_batch(9, 0.0, previous_batch=4, rules=RULES) == NextBatch(4, 0.0)


def test_after_a_batch_of_several_a_partial_batch_waits_out_the_window() -> None:
    decision = next_batch(2, 0.004, previous_batch=3, rules=RULES)
    assert decision.take == 0
    assert decision.wait_s == pytest.approx(0.006)
    assert next_batch(2, 0.01, previous_batch=3, rules=RULES) == NextBatch(2, 0.0)


def test_without_load_a_lone_call_pays_no_window() -> None:
    assert next_batch(1, 0.0, previous_batch=1, rules=RULES) == NextBatch(1, 0.0)
    assert next_batch(1, 0.0, previous_batch=0, rules=RULES) == NextBatch(1, 0.0)


def test_nothing_waiting_means_an_idle_look_later() -> None:
    decision = next_batch(0, 0.0, previous_batch=4, rules=RULES)
    assert decision.take == 0 and 0 < decision.wait_s <= 1.0


@pytest.mark.parametrize(("size", "timeout"), [(0, 0.01), (4, -1.0)])
def test_rules_are_checked(size: int, timeout: float) -> None:
    with pytest.raises(ValueError):
        BatchRules(size, timeout)


def test_outcomes_keep_exceptions_per_item_and_reject_a_wrong_length() -> None:
    error = ValueError("bad")
    got = outcomes(["a", error, "c"], 3)
    assert got[0] == "a" and got[2] == "c"
    assert isinstance(got[1], Failed) and got[1].error is error
    short = outcomes(["a"], 2)
    assert all(isinstance(o, Failed) and "returned 1" in str(o.error) for o in short)
    not_a_list = outcomes("ab", 2)
    assert all(isinstance(o, Failed) and "must return a list" in str(o.error) for o in not_a_list)


# --- a sync batch function in the batcher's thread -----------------------------------------


class Recorder:
    """A batch function: doubles numbers, fails on negatives by raising (the whole batch)
    or by returning the exception for that item (``"bad"``), and can hold its first batch."""

    def __init__(self) -> None:
        self.batches: list[list[object]] = []
        self.release_first = threading.Event()
        self.hold_first = False

    def __call__(self, items: list[object]) -> list[object]:
        self.batches.append(list(items))
        if self.hold_first and len(self.batches) == 1:
            assert self.release_first.wait(BOUND_S)
        if any(isinstance(i, int) and i < 0 for i in items):
            raise ValueError(f"negative in {items}")
        return [ValueError("bad item") if i == "bad" else i * 2 for i in items]


def test_calls_that_arrive_while_a_batch_runs_run_together_each_with_its_own_result() -> None:
    recorder = Recorder()
    recorder.hold_first = True
    batcher = ThreadBatcher(recorder, BatchRules(8, 0.5), "double")
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(batcher, 100)
        wait_until(lambda: len(recorder.batches) == 1)  # the first batch runs, held
        rest = [pool.submit(batcher, n) for n in range(5)]
        wait_until(lambda: batcher.waiting == 5)
        recorder.release_first.set()
        assert first.result(BOUND_S) == 200
        assert [f.result(BOUND_S) for f in rest] == [0, 2, 4, 6, 8]
    assert recorder.batches == [[100], [0, 1, 2, 3, 4]]
    batcher.close()
    assert not batcher.running


def test_a_batch_never_exceeds_max_batch_size() -> None:
    recorder = Recorder()
    recorder.hold_first = True
    batcher = ThreadBatcher(recorder, BatchRules(3, 0.5), "double")
    with ThreadPoolExecutor(8) as pool:
        pool.submit(batcher, 100)
        wait_until(lambda: len(recorder.batches) == 1)
        rest = [pool.submit(batcher, n) for n in range(7)]
        wait_until(lambda: batcher.waiting == 7)
        recorder.release_first.set()
        assert sorted(f.result(BOUND_S) for f in rest) == [0, 2, 4, 6, 8, 10, 12]
    assert [len(b) for b in recorder.batches] == [1, 3, 3, 1]
    batcher.close()


def test_a_batch_that_raises_runs_each_item_alone_so_only_the_bad_one_fails() -> None:
    recorder = Recorder()
    recorder.hold_first = True
    batcher = ThreadBatcher(recorder, BatchRules(8, 0.5), "double")
    with ThreadPoolExecutor(4) as pool:
        pool.submit(batcher, 100)
        wait_until(lambda: len(recorder.batches) == 1)
        good, bad, other = (pool.submit(batcher, n) for n in (1, -1, 3))
        wait_until(lambda: batcher.waiting == 3)
        recorder.release_first.set()
        assert good.result(BOUND_S) == 2 and other.result(BOUND_S) == 6
        with pytest.raises(ValueError, match="negative"):
            bad.result(BOUND_S)
    assert recorder.batches[1:] == [[1, -1, 3], [1], [-1], [3]]
    assert batcher.stats.retried_alone == 3
    batcher.close()


def test_an_exception_returned_for_one_item_goes_to_that_caller_only() -> None:
    recorder = Recorder()
    recorder.hold_first = True
    batcher = ThreadBatcher(recorder, BatchRules(8, 0.5), "double")
    with ThreadPoolExecutor(3) as pool:
        pool.submit(batcher, 100)
        wait_until(lambda: len(recorder.batches) == 1)
        good, bad = pool.submit(batcher, 5), pool.submit(batcher, "bad")
        wait_until(lambda: batcher.waiting == 2)
        recorder.release_first.set()
        assert good.result(BOUND_S) == 10
        with pytest.raises(ValueError, match="bad item"):
            bad.result(BOUND_S)
    assert recorder.batches[1:] == [[5, "bad"]]  # not run again: the error was the item's
    batcher.close()


def test_a_caller_waits_a_bounded_time_and_its_call_is_dropped() -> None:
    recorder = Recorder()
    recorder.hold_first = True
    batcher = ThreadBatcher(recorder, BatchRules(8, 0.5), "double", timeout_s=0.05)
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(batcher, 100)
        wait_until(lambda: len(recorder.batches) == 1)
        with pytest.raises(TimeoutError):
            batcher(7)  # waits behind the held batch past its bound
        recorder.release_first.set()
        with pytest.raises(TimeoutError):
            held.result(BOUND_S)  # it too waited past 0.05 s
    batcher.close()
    assert [7] not in recorder.batches  # cancelled while waiting: never run


def test_close_runs_what_waits_then_ends_the_thread_and_refuses_new_calls() -> None:
    recorder = Recorder()
    recorder.hold_first = True
    batcher = ThreadBatcher(recorder, BatchRules(8, 5.0), "double")
    with ThreadPoolExecutor(3) as pool:
        pool.submit(batcher, 100)
        wait_until(lambda: len(recorder.batches) == 1)
        late = [pool.submit(batcher, n) for n in (1, 2)]
        wait_until(lambda: batcher.waiting == 2)
        closing = pool.submit(batcher.close)
        recorder.release_first.set()
        closing.result(BOUND_S)
        assert [f.result(BOUND_S) for f in late] == [2, 4]
    assert not batcher.running
    with pytest.raises(RuntimeError, match="closed"):
        batcher(1)


# --- the decorator on an App-like class, sync and async ------------------------------------


class Doubler:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    @batched(max_batch_size=4, batch_timeout_ms=1)
    def double(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        return [i * 2 for i in items]

    @batched(max_batch_size=4, batch_timeout_ms=1)
    async def triple(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await asyncio.sleep(0)
        return [i * 3 for i in items]


def test_each_instance_has_its_own_batcher_and_close_batchers_stops_them() -> None:
    one, two = Doubler(), Doubler()
    assert one.double(2) == 4 and two.double(5) == 10
    assert isinstance(one.double, ThreadBatcher) and one.double is not two.double
    assert one.batches == [[2]] and two.batches == [[5]]
    asyncio.run(close_batchers(one))
    assert not one.double.running and two.double.running
    asyncio.run(close_batchers(two))


def test_an_async_batch_function_batches_concurrent_awaits() -> None:
    async def scenario() -> list[int]:
        doubler = Doubler()
        assert isinstance(doubler.triple, AsyncBatcher)
        # All submitted before the batcher's task first runs: one batch of 4, then the rest.
        results = await asyncio.gather(*(doubler.triple(n) for n in range(6)))
        assert doubler.batches == [[0, 1, 2, 3], [4, 5]]
        assert await doubler.triple.acall(7) == 21
        await close_batchers(doubler)
        assert not doubler.triple.running
        return list(results)

    assert asyncio.run(scenario()) == [0, 3, 6, 9, 12, 15]


def test_an_async_endpoint_can_await_a_sync_batcher_without_blocking_its_loop() -> None:
    async def scenario() -> int:
        doubler = Doubler()
        result = await doubler.double.acall(21)
        await close_batchers(doubler)
        return result

    assert asyncio.run(scenario()) == 42


def test_set_max_batch_size_applies_to_the_next_batches() -> None:
    doubler = Doubler()
    doubler.double.set_max_batch_size(1)
    assert doubler.double.rules.max_batch_size == 1
    assert doubler.double(3) == 6
    asyncio.run(close_batchers(doubler))
