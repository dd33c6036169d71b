"""Each precompiled compile is a startup phase: its start line says which module and signature
compile, and where; every way it ends writes its end line, so no runner shows "compiling"
forever.

No Dynamo, no Inductor and no worker processes here: the capture, the compile and the worker
are stand-ins (real ones: tests/test_precompiled_processes.py); what is tested is which lines
the block, the switchover and the compile pool write on each path.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from minifal.compiled import torch_internals  # noqa: E402
from minifal.compiled.call_signature import call_signature, flatten_call  # noqa: E402
from minifal.compiled.precompiled import compile_pool, module, switchover  # noqa: E402
from minifal.compiled.precompiled.artifact_store import ArtifactStore  # noqa: E402
from minifal.compiled.precompiled.compile_pool import NO_TIME_LEFT, CompilePool  # noqa: E402
from minifal.compiled.precompiled.graph_compile import (  # noqa: E402
    CapturedCall,
    CompiledCall,
    NotPrecompilable,
)
from minifal.compiled.precompiled.module import PrecompiledModule  # noqa: E402
from minifal.compiled.precompiled.switchover import STOPPED, Switchover  # noqa: E402
from minifal.compiled.precompiled.warm_loader import WarmLoader  # noqa: E402
from minifal.host import envs  # noqa: E402
from minifal.startup.runs import read_run  # noqa: E402

pytestmark = pytest.mark.unit

KEY = "tests/compile-phase"
PLAN = ["p:weight", "p:bias", "@0"]
JOIN_S = 10.0


@pytest.fixture
def events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "run" / "runner-0.jsonl"
    monkeypatch.setenv(envs.EVENTS_FILE.name, str(path))
    monkeypatch.setenv(envs.RUNNER_ID.name, "runner-0")
    monkeypatch.setattr(compile_pool, "private_cache_root", lambda _root: tmp_path)
    monkeypatch.setattr(compile_pool, "StandbyWorkers", FakeStandby)
    return path


@pytest.fixture
def linear() -> torch.nn.Module:
    return torch.nn.Linear(3, 2).eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 3)


def compile_lines(path: Path) -> tuple[list[dict], list[dict]]:
    """The ``precompiled.compile`` start lines and end lines; each start has its end."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines = [line for line in lines if line["phase"] == "precompiled.compile"]
    starts = [line for line in lines if line.get("kind") == "start"]
    ends = [line for line in lines if line.get("kind") != "start"]
    assert sorted(line["span"] for line in starts) == sorted(line["span"] for line in ends)
    (runner,) = read_run(path.parent).starts
    assert runner.unfinished == ()  # runs.py pairs them too: nothing shows as running
    return starts, ends


def label(x: torch.Tensor) -> str:
    return call_signature(flatten_call((x,), {}), False, False).label


def compiled_call(x: torch.Tensor, artifact: Any = None) -> CompiledCall:
    """A compile's result; its artifact is eager's arithmetic unless given."""
    _, out_spec = torch_internals.tree_flatten(x)

    def eager(weight, bias, tensor):
        return (tensor @ weight.t() + bias,)

    return CompiledCall(
        artifact or eager, PLAN, torch_internals.treespec_dumps(out_spec), 0.5, 1.0, 0.0
    )


def stand_ins(
    monkeypatch: pytest.MonkeyPatch,
    linear: torch.nn.Module,
    x: torch.Tensor,
    capture: BaseException | None = None,
    compile: BaseException | CompiledCall | None = None,
) -> None:
    """Dynamo's capture and Inductor's compile, each raising what is given."""
    captured = CapturedCall(None, [], PLAN, "", [], 0.5, False)  # type: ignore[arg-type]

    def capture_call(_module, _call, _inductor_options=None):
        if capture is not None:
            raise capture
        return captured, linear(x)

    def compile_captured(_captured):
        if isinstance(compile, BaseException):
            raise compile
        return compile or compiled_call(x)

    monkeypatch.setattr(module, "capture_call", capture_call)
    monkeypatch.setattr(module, "compile_captured", compile_captured)
    monkeypatch.setattr(switchover, "compile_captured", compile_captured)


class FakeStandby:
    """Stands for the standby worker processes: ``take()`` hands out where a job's files go."""

    def __init__(self, _count: int, job_dir: Path, _threads: int) -> None:
        self.job_dir = job_dir

    def start(self) -> None:
        pass

    def take(self, _deadline: float) -> SimpleNamespace:
        return SimpleNamespace(artifact_path=self.job_dir / "artifact.bin")

    def retire(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeWorker:
    """Stands for a compile worker process: ``outcome`` is what its result is."""

    outcome: BaseException | None = None  # None: an artifact
    made: list[FakeWorker] = []

    def __init__(self, _captured: Any, worker: SimpleNamespace) -> None:
        self.running = True
        self.killed = False
        self.artifact_path = worker.artifact_path
        FakeWorker.made.append(self)

    def wait(self, _deadline: float) -> None:
        self.running = False

    def result(self, _deadline: float) -> tuple[Any, float]:
        self.running = False
        if self.outcome is not None:
            raise self.outcome
        return object(), 1.0

    def kill(self) -> None:
        self.running, self.killed = False, True

    def discard(self) -> None:
        pass


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> type[FakeWorker]:
    monkeypatch.setattr(compile_pool, "WorkerCompile", FakeWorker)
    monkeypatch.setattr(FakeWorker, "made", [])
    return FakeWorker


def in_block(linear: torch.nn.Module, workers: int) -> tuple[PrecompiledModule, CompilePool]:
    """A module in an open block that compiles in it (not serving while compiling), with a
    loaded store that has no artifact."""
    store = ArtifactStore(KEY)
    loader = WarmLoader(store, "store")
    loader._ready.set()
    compiles = CompilePool(workers)
    compiles.start()
    return PrecompiledModule(linear, loader=loader, compiles=compiles, store=store), compiles


# --- in the block --------------------------------------------------------------------------------


def test_a_compile_starts_its_phase_and_the_save_ends_it(
    events: Path, monkeypatch: pytest.MonkeyPatch, linear: torch.nn.Module, x: torch.Tensor
) -> None:
    stand_ins(monkeypatch, linear, x)
    wrapped, _ = in_block(linear, workers=0)
    with torch.no_grad():
        wrapped(x)
    (start,), (end,) = compile_lines(events)
    assert start["details"] == {
        "key": KEY,
        "module": "Linear",
        "signature": label(x),
        "in_worker": False,
    }
    assert (end["start"], end["span"]) == (start["start"], start["span"])
    assert end["details"]["dynamo_s"] == 0.5 and "error" not in end["details"]
    assert wrapped.resolutions == {label(x): "compiled"}


@pytest.mark.parametrize(
    ("capture", "compile", "error"),
    [
        (NotPrecompilable("Dynamo could not capture"), None, "Dynamo could not capture"),
        (None, NotPrecompilable("compiling failed: boom"), "compiling failed: boom"),
        (None, NotPrecompilable("differs from eager by 3"), "differs from eager by 3"),
    ],
    ids=["refused", "inductor-fails", "differs-from-eager"],
)
def test_a_compile_that_fails_in_the_block_ends_its_phase(
    events: Path,
    monkeypatch: pytest.MonkeyPatch,
    linear: torch.nn.Module,
    x: torch.Tensor,
    capture: BaseException | None,
    compile: BaseException | None,
    error: str,
) -> None:
    stand_ins(monkeypatch, linear, x, capture, compile)
    wrapped, _ = in_block(linear, workers=0)
    with torch.no_grad():
        assert torch.equal(wrapped(x), linear(x))  # the fallback
    _, (end,) = compile_lines(events)
    assert end["details"]["error"] == f"NotPrecompilable: {error}"


def test_the_apps_own_exception_ends_the_phase_and_propagates(
    events: Path, monkeypatch: pytest.MonkeyPatch, linear: torch.nn.Module, x: torch.Tensor
) -> None:
    stand_ins(monkeypatch, linear, x, capture=ValueError("the app's own bug"))
    wrapped, _ = in_block(linear, workers=0)
    with pytest.raises(ValueError, match="the app's own bug"):
        wrapped(x)
    _, (end,) = compile_lines(events)
    assert end["details"]["error"] == "ValueError: the app's own bug"


def test_a_worker_compile_says_so_and_ends_when_collected(
    events: Path,
    monkeypatch: pytest.MonkeyPatch,
    linear: torch.nn.Module,
    x: torch.Tensor,
    workers: type[FakeWorker],
) -> None:
    stand_ins(monkeypatch, linear, x)
    monkeypatch.setattr(compile_pool, "checked_call", lambda *_: compiled_call(x))
    wrapped, compiles = in_block(linear, workers=1)
    with torch.no_grad():
        wrapped(x)
        (start,) = [
            line for line in map(json.loads, events.read_text().splitlines()) if "kind" in line
        ]
        assert start["details"]["in_worker"] is True  # and it has not ended yet
        compiles.finish()
    _, (end,) = compile_lines(events)
    assert end["span"] == start["span"] and "error" not in end["details"]
    assert wrapped.resolutions == {label(x): "compiled"}


@pytest.mark.parametrize(
    ("outcome", "checked", "error"),
    [
        (NotPrecompilable("the compile worker exited with -9: Killed"), None, "exited with -9"),
        (None, NotPrecompilable("differs from eager by 3"), "differs from eager by 3"),
    ],
    ids=["worker-crash", "differs-from-eager"],
)
def test_a_worker_compile_that_fails_ends_its_phase(
    events: Path,
    monkeypatch: pytest.MonkeyPatch,
    linear: torch.nn.Module,
    x: torch.Tensor,
    workers: type[FakeWorker],
    outcome: BaseException | None,
    checked: BaseException | None,
    error: str,
) -> None:
    stand_ins(monkeypatch, linear, x)
    monkeypatch.setattr(workers, "outcome", outcome)

    def checked_call(*_args: Any) -> CompiledCall:
        if checked is not None:
            raise checked
        return compiled_call(x)

    monkeypatch.setattr(compile_pool, "checked_call", checked_call)
    wrapped, compiles = in_block(linear, workers=1)
    with torch.no_grad():
        wrapped(x)
        compiles.finish()
    _, (end,) = compile_lines(events)
    assert error in end["details"]["error"] and end["details"]["in_worker"] is True
    assert wrapped.resolutions == {label(x): "eager"}


def test_an_abort_ends_the_workers_phases(
    events: Path,
    monkeypatch: pytest.MonkeyPatch,
    linear: torch.nn.Module,
    x: torch.Tensor,
    workers: type[FakeWorker],
) -> None:
    stand_ins(monkeypatch, linear, x)
    wrapped, compiles = in_block(linear, workers=1)
    with torch.no_grad():
        wrapped(x)
    compiles.abort(STOPPED)
    (worker,) = workers.made
    assert worker.killed
    _, (end,) = compile_lines(events)
    assert end["details"]["error"] == STOPPED


def test_the_deadline_ends_the_compiles_left(
    events: Path,
    monkeypatch: pytest.MonkeyPatch,
    linear: torch.nn.Module,
    x: torch.Tensor,
    workers: type[FakeWorker],
) -> None:
    stand_ins(monkeypatch, linear, x)
    monkeypatch.setattr(workers, "outcome", NotPrecompilable("the worker did not finish"))
    wrapped, compiles = in_block(linear, workers=2)
    with torch.no_grad():
        wrapped(x)
        wrapped(torch.randn(5, 3))  # a second signature, in the second worker
    past = SimpleNamespace(deadline=0.0)  # the startup deadline passed meanwhile
    monkeypatch.setattr(compile_pool, "current_settings", lambda: past)
    compiles.finish()
    _, ends = compile_lines(events)
    assert [end["details"]["error"] for end in ends] == [
        "NotPrecompilable: the worker did not finish",
        NO_TIME_LEFT,
    ]


def test_a_compile_no_worker_takes_ends_and_compiles_inline(
    events: Path, monkeypatch: pytest.MonkeyPatch, linear: torch.nn.Module, x: torch.Tensor
) -> None:
    stand_ins(monkeypatch, linear, x)

    def unsaveable(*_args: Any) -> None:
        raise NotPrecompilable("the graph cannot be saved for a worker")

    monkeypatch.setattr(compile_pool, "WorkerCompile", unsaveable)
    wrapped, _ = in_block(linear, workers=1)
    with torch.no_grad():
        wrapped(x)
    starts, (handed, inline) = compile_lines(events)
    assert [start["details"]["in_worker"] for start in starts] == [True, False]
    assert handed["details"]["error"].startswith("not handed to a worker: the graph cannot")
    assert inline["details"]["in_worker"] is False and "error" not in inline["details"]
    assert wrapped.resolutions == {label(x): "compiled"}


# --- after ready: the switchover -----------------------------------------------------------------


def switching(
    linear: torch.nn.Module, x: torch.Tensor, workers: int = 0
) -> tuple[PrecompiledModule, Switchover, CompilePool]:
    """A module whose block deferred ``x``'s signature, and its switchover, with the store
    loaded and no artifact for it: the switchover compiles it."""
    store = ArtifactStore(KEY)
    loader = WarmLoader(store, "store", serve_while_waiting=True)
    loader._thread = threading.Thread(target=lambda: None)  # stands for the loader thread
    loader._ready.set()
    compiles = CompilePool(workers, defer=True)
    compiles.start()
    wrapped = PrecompiledModule(linear, loader=loader, compiles=compiles, store=store)
    with torch.no_grad():
        wrapped(x)
    compiles.close()
    return wrapped, Switchover(KEY, compiles.take_deferred(), loader, compiles, [].append), compiles


def test_the_switchover_starts_each_compiles_phase(
    events: Path, monkeypatch: pytest.MonkeyPatch, linear: torch.nn.Module, x: torch.Tensor
) -> None:
    stand_ins(monkeypatch, linear, x)
    wrapped, background, _ = switching(linear, x)
    background.start()
    assert background.join(JOIN_S)
    (start,), (end,) = compile_lines(events)
    assert start["details"] == {
        "key": KEY,
        "module": "Linear",
        "signature": label(x),
        "in_worker": False,
    }
    assert "error" not in end["details"]
    assert wrapped.resolutions == {label(x): "compiled"}


@pytest.mark.parametrize(
    ("capture", "compile", "error"),
    [
        (NotPrecompilable("Dynamo could not capture"), None, "Dynamo could not capture"),
        (None, NotPrecompilable("differs from eager by 3"), "differs from eager by 3"),
        (None, "first-call-fails", "its first call failed: RuntimeError: no kernel"),
        (RuntimeError("a bug of ours"), None, "RuntimeError: a bug of ours"),
    ],
    ids=["refused", "differs-from-eager", "first-call-fails", "unexpected"],
)
def test_a_switchover_compile_that_fails_ends_its_phase(
    events: Path,
    monkeypatch: pytest.MonkeyPatch,
    linear: torch.nn.Module,
    x: torch.Tensor,
    capture: BaseException | None,
    compile: BaseException | str | None,
    error: str,
) -> None:
    if compile == "first-call-fails":

        def fails(*_tensors: torch.Tensor) -> None:
            raise RuntimeError("no kernel")

        compile = compiled_call(x, fails)
    stand_ins(monkeypatch, linear, x, capture, compile)  # type: ignore[arg-type]
    _, background, _ = switching(linear, x)
    background.start()
    assert background.join(JOIN_S)
    _, (end,) = compile_lines(events)
    assert error in end["details"]["error"]


def test_stopping_ends_the_switchovers_worker_compiles(
    events: Path,
    monkeypatch: pytest.MonkeyPatch,
    linear: torch.nn.Module,
    x: torch.Tensor,
    workers: type[FakeWorker],
) -> None:
    """The runner shuts down while a worker compiles: the abort ends its phase."""
    stand_ins(monkeypatch, linear, x)
    _, background, compiles = switching(linear, x, workers=1)
    monkeypatch.setattr(compiles, "finish", lambda _on_done: None)  # still compiling at stop
    background.start()
    assert background.join(JOIN_S)
    assert background.stop(JOIN_S)
    _, (end,) = compile_lines(events)
    assert end["details"]["error"] == STOPPED and end["details"]["in_worker"] is True
