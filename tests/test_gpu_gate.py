"""The gate between a runner's background GPU work (compiled modules' checks and captures,
serving while compiling) and a suspension that takes the App's weights off the GPU."""

from __future__ import annotations

import threading

import pytest

from minifal.compiled.background_work import GpuGate

pytestmark = pytest.mark.unit


def test_a_step_waits_while_the_gate_is_closed() -> None:
    gate = GpuGate()
    assert gate.close(timeout=1.0)
    ran = threading.Event()

    def background_step() -> None:
        with gate.step():
            ran.set()

    worker = threading.Thread(target=background_step)
    worker.start()
    assert not ran.wait(0.1)  # suspended: the step does not touch the GPU
    gate.open()
    assert ran.wait(5.0)
    worker.join(5.0)


def step_in_progress(gate: GpuGate) -> tuple[threading.Thread, threading.Event]:
    """A background step that has begun; it ends when the returned event is set."""
    inside, leave = threading.Event(), threading.Event()

    def background_step() -> None:
        with gate.step():
            inside.set()
            leave.wait(5.0)

    worker = threading.Thread(target=background_step)
    worker.start()
    assert inside.wait(5.0)
    return worker, leave


def test_closing_waits_for_the_step_in_progress() -> None:
    gate = GpuGate()
    worker, leave = step_in_progress(gate)
    threading.Timer(0.1, leave.set).start()
    assert gate.close(timeout=5.0)  # returned once the step ended
    assert leave.is_set()
    worker.join(5.0)
    gate.open()


def test_a_step_that_outlasts_the_bound_leaves_the_gate_open() -> None:
    gate = GpuGate()
    worker, leave = step_in_progress(gate)
    assert not gate.close(timeout=0.05)  # the suspension falls back to the driver's lock
    with gate.step():  # open again: other steps go on
        pass
    leave.set()
    worker.join(5.0)
    assert gate.close(timeout=1.0)
