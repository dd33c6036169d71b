"""Serving while compiling, in process: eager answers during the block, the switchover after it.

No Inductor here: the artifacts a switchover installs are "loaded" ones, plain functions that
stand for another runner's published artifact (eager's arithmetic, or a wrong one). The real
compiles, in this process and in workers, are in tests/test_precompiled_processes.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from precompiled_metas import linear_artifact_meta  # noqa: E402

from minifal.compiled import background_work  # noqa: E402
from minifal.compiled.call_signature import call_signature, flatten_call  # noqa: E402
from minifal.compiled.precompiled import switchover as switchover_module  # noqa: E402
from minifal.compiled.precompiled.artifact_store import ArtifactStore  # noqa: E402
from minifal.compiled.precompiled.compile_pool import CompilePool  # noqa: E402
from minifal.compiled.precompiled.module import PrecompiledModule  # noqa: E402
from minifal.compiled.precompiled.switchover import STOPPED, Switchover  # noqa: E402
from minifal.compiled.precompiled.warm_loader import LoadedArtifact, WarmLoader  # noqa: E402
from minifal.host import envs  # noqa: E402

pytestmark = pytest.mark.unit

JOIN_S = 10.0
NUDGE = 1e-3  # within the float32 tolerance of the check against eager


@pytest.fixture
def events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv(envs.EVENTS_FILE.name, str(path))
    return path


def read_events(path: Path, phase: str) -> list[dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [e["details"] for e in map(json.loads, lines) if e["phase"] == phase]


def waiting_runner(linear: torch.nn.Module) -> tuple[PrecompiledModule, WarmLoader, CompilePool]:
    """A module in an open block, serving while compiling, whose store load waits for another
    runner's compile (as the lease wait tells the loader at its first poll)."""
    store = ArtifactStore("tests/switchover")
    loader = WarmLoader(store, "artifacts", serve_while_waiting=True)
    loader._thread = threading.Thread(target=lambda: None)  # stands for the loader thread
    assert loader._keep_waiting()  # the lease wait's first poll
    compiles = CompilePool(0, defer=True)
    compiles.start()
    wrapped = PrecompiledModule(linear, loader=loader, compiles=compiles, store=store)
    return wrapped, loader, compiles


def publish(loader: WarmLoader, linear: torch.nn.Module, x: torch.Tensor, artifact) -> None:
    """Another runner's artifact for ``x``'s signature arrives: the store load ends."""
    meta = linear_artifact_meta(linear, x)
    with loader._progress:
        loader._loaded[(meta.module_digest, meta.signature_digest)] = LoadedArtifact(meta, artifact)
        loader._ready.set()
        loader._progress.notify_all()


def switchover(loader: WarmLoader, compiles: CompilePool, done: list[bool]) -> Switchover:
    compiles.close()  # the block ends: the runner is ready
    return Switchover("tests/switchover", compiles.take_deferred(), loader, compiles, done.append)


def ready_after_an_eager_call(
    x: torch.Tensor,
) -> tuple[PrecompiledModule, WarmLoader, CompilePool, Switchover, list[bool]]:
    """A waiting runner's Linear that answered ``x`` eagerly, then became ready: its switchover
    (not started) and the list its end is reported to."""
    wrapped, loader, compiles = waiting_runner(torch.nn.Linear(3, 2).eval())
    with torch.no_grad():
        wrapped(x)
    done: list[bool] = []
    return wrapped, loader, compiles, switchover(loader, compiles, done), done


def test_a_waiting_runner_answers_eagerly_then_switches_to_the_published_artifact(
    events: Path,
) -> None:
    linear = torch.nn.Linear(3, 2).eval()
    x = torch.randn(4, 3)
    wrapped, loader, compiles = waiting_runner(linear)
    calls = []

    def artifact(weight, bias, tensor):  # eager's arithmetic, as a compiled graph would be
        calls.append(1)
        return (tensor @ weight.t() + bias,)

    with torch.no_grad():
        assert torch.equal(wrapped(x), linear(x))  # did not wait for the other runner
        assert wrapped.resolutions == {_label(x): "eager, switching"}
        done: list[bool] = []
        background = switchover(loader, compiles, done)
        background.start()
        assert torch.equal(wrapped(x), linear(x))  # still eager: nothing published yet
        publish(loader, linear, x, artifact)
        assert background.join(JOIN_S)
        before = len(calls)  # the check against eager and the first call ran in the background
        assert before >= 2
        assert torch.allclose(wrapped(x), linear(x))
        assert len(calls) == before + 1  # this call ran the artifact
    assert done == [True]
    assert wrapped.resolutions == {_label(x): "loaded"}
    (switch,) = read_events(events, "precompiled.switch")
    assert switch["switched"] and switch["source"] == "loaded"
    assert switch["max_abs_diff"] < 1e-5


def test_an_artifact_that_differs_from_eager_is_not_installed(events: Path) -> None:
    linear = torch.nn.Linear(3, 2).eval()
    x = torch.randn(4, 3)
    wrapped, loader, compiles = waiting_runner(linear)

    def wrong(weight, bias, tensor):  # a stale graph: off by far more than the tolerance
        return (tensor @ weight.t() + bias + 100,)

    with torch.no_grad():
        wrapped(x)
        background = switchover(loader, compiles, [])
        background.start()
        publish(loader, linear, x, wrong)
        assert background.join(JOIN_S)
        assert torch.equal(wrapped(x), linear(x))  # eager goes on serving
    (switch,) = read_events(events, "precompiled.switch")
    assert not switch["switched"]
    assert "differs from eager" in switch["reason"]


def test_calls_during_the_switch_get_eager_or_artifact_results_never_an_error() -> None:
    """Callers in a loop while the artifact is installed: each call runs one of the two whole,
    the artifact only once it ran its first call in the background."""
    linear = torch.nn.Linear(3, 2).eval()
    x = torch.randn(4, 3)
    wrapped, loader, compiles = waiting_runner(linear)

    def artifact(weight, bias, tensor):  # eager's result, nudged within the tolerance
        return (tensor @ weight.t() + bias + NUDGE,)

    results: list[torch.Tensor] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def caller() -> None:
        with torch.no_grad():
            while not stop.is_set():
                try:
                    results.append(wrapped(x))
                except BaseException as exc:
                    errors.append(exc)

    with torch.no_grad():
        wrapped(x)
    background = switchover(loader, compiles, [])
    callers = [threading.Thread(target=caller) for _ in range(3)]
    for thread in callers:
        thread.start()
    background.start()
    publish(loader, linear, x, artifact)
    assert background.join(JOIN_S)
    with torch.no_grad():
        after = wrapped(x)  # (a caller's call that began before the switch may end after it)
    stop.set()
    for thread in callers:
        thread.join(JOIN_S)
    assert not errors
    expected = linear(x).detach()

    def nudged(result: torch.Tensor) -> bool:
        return bool((result - expected - NUDGE).abs().max() < NUDGE / 100)

    eager = [r for r in results if torch.equal(r, expected)]
    compiled = [r for r in results if nudged(r)]
    assert len(eager) + len(compiled) == len(results)
    assert nudged(after)


def test_stopping_ends_the_wait_for_another_runners_compile(events: Path) -> None:
    """The runner shuts down while the other runner still compiles: the switchover ends at
    once, the store load is told to stop waiting, and the signature stays eager."""
    x = torch.randn(4, 3)
    wrapped, loader, _compiles, background, done = ready_after_an_eager_call(x)
    number = background_work.register(background.stop)
    background.start()
    background_work.stop_all(timeout=JOIN_S)
    assert background.join(0)
    assert done == [False]
    assert not loader._keep_waiting()  # the lease wait's next poll gives up
    (switch,) = read_events(events, "precompiled.switch")
    assert not switch["switched"] and switch["reason"] == "stopped: the runner shuts down"
    background_work.done(number)
    assert wrapped.resolutions == {_label(x): "eager, switching"}


def test_stopping_while_a_signature_is_captured_compiles_nothing_here(
    events: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner shuts down while its switchover captures a graph for the workers: the pool
    it would hand the graph to is closed, and the graph is not compiled in the runner instead
    (which would hold its shutdown for the whole compile)."""
    x = torch.randn(4, 3)
    _wrapped, loader, compiles, background, done = ready_after_an_eager_call(x)
    with loader._progress:  # the store load ended with nothing for this signature
        loader._ready.set()
        loader._progress.notify_all()

    real_submit = compiles.submit

    def submit_as_the_runner_stops(*args: object) -> None:
        threading.Thread(target=background.stop, args=(JOIN_S,)).start()
        assert background._stop.wait(JOIN_S)
        compiles.abort(STOPPED)
        real_submit(*args)  # the pool's own answer, once stop() aborted it

    compiled_here: list[object] = []
    monkeypatch.setattr(compiles, "workers", 1)
    monkeypatch.setattr(compiles, "submit", submit_as_the_runner_stops)
    monkeypatch.setattr(switchover_module, "compile_captured", compiled_here.append)
    background.start()
    assert background.join(JOIN_S)
    assert compiled_here == []
    assert done == [True]  # the store had loaded: what was published is published
    (switch,) = read_events(events, "precompiled.switch")
    assert not switch["switched"] and switch["reason"] == STOPPED


def test_a_runner_that_waits_for_compiled_code_still_waits() -> None:
    """``serve_while_compiling=False``: a call waits for the store load, as before."""
    store = ArtifactStore("tests/switchover")
    loader = WarmLoader(store, "artifacts", serve_while_waiting=False)
    loader._thread = threading.Thread(target=lambda: None)
    loader._keep_waiting()
    answers: list[object] = []
    asking = threading.Thread(target=lambda: answers.append(loader.loaded_artifact("m", "s")))
    asking.start()
    asking.join(0.2)
    assert asking.is_alive()  # still waiting for the other runner's publish
    with loader._progress:
        loader._ready.set()
        loader._progress.notify_all()
    asking.join(JOIN_S)
    assert answers == [None]


def test_a_deferring_pool_notes_each_signature_with_its_grad_mode() -> None:
    compiles = CompilePool(0, defer=True)
    assert not compiles.deferring  # not open yet
    compiles.start()
    assert compiles.deferring
    x = torch.randn(2)
    call = flatten_call((x,), {})
    with torch.inference_mode():
        compiles.defer(object(), "M", call, call_signature(call, False, False))  # type: ignore[arg-type]
    compiles.close()
    assert not compiles.deferring
    (deferred,) = compiles.take_deferred()
    assert deferred.inference and not deferred.grad_enabled
    assert compiles.take_deferred() == []


def _label(x: torch.Tensor) -> str:
    return call_signature(flatten_call((x,), {}), False, False).label
