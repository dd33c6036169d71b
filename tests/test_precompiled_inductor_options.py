"""A precompiled module's Inductor options: checked when it is wrapped, part of its artifacts'
name, and handed to Inductor by every path that compiles (in the block, in the switchover, in a
worker's job).

No Dynamo and no Inductor compile here: the capture is an FX trace of the same arithmetic (it
stands for Dynamo's graph, ``graph_compile._capture``), and ``torch._inductor.standalone_compile``
is a recorder that returns the graph itself, so what is checked is what torch's function is
handed. The real compile with these options: tests/test_precompiled_processes.py (CPU) and
tests/test_precompiled_max_autotune_gpu.py (a GPU host).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from precompiled_metas import linear_artifact_meta  # noqa: E402

from minifal.compiled.call_signature import flatten_call  # noqa: E402
from minifal.compiled.precompiled import MAX_AUTOTUNE, graph_compile  # noqa: E402
from minifal.compiled.precompiled.artifact_store import ArtifactStore  # noqa: E402
from minifal.compiled.precompiled.compile_pool import CompilePool  # noqa: E402
from minifal.compiled.precompiled.compile_workers import (  # noqa: E402
    _save_job,
    compile_job,
    job_inputs,
)
from minifal.compiled.precompiled.module import PrecompiledModule  # noqa: E402
from minifal.compiled.precompiled.session import PrecompiledModules  # noqa: E402
from minifal.compiled.precompiled.structure import module_digest  # noqa: E402
from minifal.compiled.precompiled.switchover import Switchover  # noqa: E402
from minifal.compiled.precompiled.warm_loader import LoadedArtifact, WarmLoader  # noqa: E402
from minifal.host import envs  # noqa: E402

pytestmark = pytest.mark.unit

KEY = "tests/inductor-options"
JOIN_S = 10.0
# what torch's standalone_compile is handed for MAX_AUTOTUNE: Inductor settings are compile_fx's
# config_patches (its options= are compile_fx's keyword arguments)
MAX_AUTOTUNE_KWARGS = {
    "dynamic_shapes": "from_example_inputs",
    "options": {"config_patches": {"coordinate_descent_tuning": True, "max_autotune": True}},
}


class InductorRecorder:
    """Stands for ``torch._inductor.standalone_compile``: records its keyword arguments and
    returns the graph itself as the artifact."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return lambda *inputs: gm(*inputs)


@pytest.fixture
def inductor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> InductorRecorder:
    """The recorder in Inductor's place, an FX trace in Dynamo's, events in ``tmp_path``."""
    import torch._inductor

    recorder = InductorRecorder()
    monkeypatch.setattr(torch._inductor, "standalone_compile", recorder)
    monkeypatch.setattr(graph_compile, "_capture", traced_linear)
    monkeypatch.setattr(graph_compile, "prepare_inductor", lambda: None)
    monkeypatch.setenv(envs.EVENTS_FILE.name, str(tmp_path / "events.jsonl"))
    return recorder


def traced_linear(forward: torch.nn.Module, call) -> tuple[torch.fx.GraphModule, list]:
    """A Linear's call as Dynamo hands it over: weights lifted as inputs, the call's tensor."""

    def graph(weight, bias, x):
        return (torch.nn.functional.linear(x, weight, bias),)

    return torch.fx.symbolic_trace(graph), [forward.weight, forward.bias, call.tensors[0]]


def ready_loader(loaded: dict | None = None) -> WarmLoader:
    """A loader whose store load is over, holding ``loaded``."""
    loader = WarmLoader(ArtifactStore(KEY), "store")
    loader._loaded.update(loaded or {})
    loader._ready.set()
    return loader


def test_max_autotune_is_torchs_max_autotune_without_its_cuda_graphs() -> None:
    from torch._inductor import list_mode_options

    assert dict(MAX_AUTOTUNE) == list_mode_options("max-autotune-no-cudagraphs")


def test_options_name_their_own_artifacts_and_no_options_keep_the_old_name() -> None:
    linear = torch.nn.Linear(3, 2)
    plain = module_digest(linear)
    assert module_digest(linear, None) == module_digest(linear, {}) == plain
    tuned = module_digest(linear, MAX_AUTOTUNE)
    assert tuned != plain
    assert module_digest(linear, dict(reversed(MAX_AUTOTUNE.items()))) == tuned  # order: none
    assert module_digest(linear, {**MAX_AUTOTUNE, "max_autotune": False}) != tuned
    assert module_digest(torch.nn.Linear(3, 2), MAX_AUTOTUNE) == tuned  # weights: no part

    compiles = CompilePool(0)
    wrapped = [
        PrecompiledModule(
            linear, loader=ready_loader(), compiles=compiles, store=ArtifactStore(KEY), **options
        )
        for options in ({}, {"inductor_options": MAX_AUTOTUNE})
    ]
    assert [w.module_digest for w in wrapped] == [plain, tuned]


@pytest.mark.parametrize("tuned_artifact", [False, True])
def test_a_module_never_loads_an_artifact_made_with_other_options(tuned_artifact: bool) -> None:
    """The store holds one artifact for this Linear and signature, made with or without
    MAX_AUTOTUNE: only the module wrapped the same way loads it, the other runs eagerly."""
    linear = torch.nn.Linear(3, 2).eval()
    x = torch.randn(4, 3)
    meta = linear_artifact_meta(linear, x)
    digest = module_digest(linear, MAX_AUTOTUNE if tuned_artifact else None)

    def artifact(weight, bias, tensor):  # stands for a CompiledArtifact: eager, plus 100
        return (tensor @ weight.t() + bias + 100,)

    loaded = {(digest, meta.signature_digest): LoadedArtifact(meta, artifact)}
    for options in (None, MAX_AUTOTUNE):
        wrapped = PrecompiledModule(
            linear,
            loader=ready_loader(loaded),
            compiles=CompilePool(0),
            store=ArtifactStore(KEY),
            inductor_options=options,
        )
        with torch.no_grad():
            out = wrapped(x)
        same = (options is not None) == tuned_artifact
        assert torch.equal(out, linear(x) + 100 if same else linear(x))
        assert list(wrapped.resolutions.values()) == ["loaded" if same else "eager"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"max_autotune": torch.float16}, "is not a JSON value"),
        ({"max_autotune": float("nan")}, "is not a JSON value"),
        ({"max_autotune_gemm_backends": {1: "TRITON"}}, "is not a JSON value"),
        ({"max_autotune_gemm_backends": object()}, "is not a JSON value"),
        ({"max_autotunee": True}, "Inductor has no setting max_autotunee"),
        ({"triton.cudagraphs": True}, "cuda_graphs=True"),
    ],
)
def test_options_that_cannot_name_an_artifact_are_refused_when_wrapping(
    options: dict, says: str
) -> None:
    precompiled = PrecompiledModules(KEY, serve_while_compiling=False)
    with pytest.raises(ValueError, match=says):
        precompiled.module(torch.nn.Linear(3, 2), inductor_options=options)


def test_the_block_says_which_modules_compile_with_which_options(
    caplog: pytest.LogCaptureFixture,
) -> None:
    precompiled = PrecompiledModules(KEY, serve_while_compiling=False)
    options = {"triton.cudagraphs": False, **MAX_AUTOTUNE}  # off is allowed
    with caplog.at_level(logging.INFO, logger="minifal.precompiled"):
        wrapped = precompiled.module(torch.nn.Linear(3, 2), inductor_options=options)
        precompiled.module(torch.nn.Linear(2, 2))
    assert list(wrapped.inductor_options) == sorted(options)  # sorted by name
    (line,) = [r.getMessage() for r in caplog.records if "Inductor options" in r.getMessage()]
    assert line == (
        "precompiled 'tests/inductor-options': Linear compiles with Inductor options "
        '{"coordinate_descent_tuning":true,"max_autotune":true,"triton.cudagraphs":false}'
    )


@pytest.mark.parametrize("options", [None, MAX_AUTOTUNE])
def test_a_compile_in_the_block_hands_inductor_the_modules_options(
    inductor: InductorRecorder, options
) -> None:
    linear = torch.nn.Linear(3, 2).eval()
    x = torch.randn(4, 3)
    compiles = CompilePool(0)  # compiles inline, in the call
    compiles.start()
    wrapped = PrecompiledModule(
        linear,
        loader=ready_loader(),
        compiles=compiles,
        store=ArtifactStore(KEY),
        inductor_options=options,
    )
    with torch.no_grad():
        assert torch.allclose(wrapped(x), linear(x))
    assert list(wrapped.resolutions.values()) == ["compiled"]
    expected = MAX_AUTOTUNE_KWARGS if options else {**MAX_AUTOTUNE_KWARGS, "options": None}
    assert inductor.calls == [expected]


def test_the_switchover_hands_inductor_the_modules_options(inductor: InductorRecorder) -> None:
    """Serving while compiling: the call is answered eagerly, the switchover compiles it."""
    linear = torch.nn.Linear(3, 2).eval()
    x = torch.randn(4, 3)
    loader = ready_loader()
    compiles = CompilePool(0, defer=True)
    compiles.start()
    wrapped = PrecompiledModule(
        linear,
        loader=loader,
        compiles=compiles,
        store=ArtifactStore(KEY),
        inductor_options=MAX_AUTOTUNE,
    )
    done: list[bool] = []
    with torch.no_grad():
        assert torch.equal(wrapped(x), linear(x))
        assert inductor.calls == []  # nothing compiled in the call
        compiles.close()
        background = Switchover(KEY, compiles.take_deferred(), loader, compiles, done.append)
        background.start()
        assert background.join(JOIN_S)
        assert torch.allclose(wrapped(x), linear(x))
    assert done == [True]
    assert list(wrapped.resolutions.values()) == ["compiled"]
    assert inductor.calls == [MAX_AUTOTUNE_KWARGS]


def test_a_workers_job_carries_the_options_to_its_compile(
    inductor: InductorRecorder, tmp_path: Path
) -> None:
    """The job file a worker reads, written and read back; the worker's compile of it."""
    linear = torch.nn.Linear(3, 2).eval()
    call = flatten_call((torch.randn(4, 3),), {})
    with torch.no_grad():
        captured, _ = graph_compile.capture_call(linear, call, dict(MAX_AUTOTUNE))
    _save_job(captured, tmp_path / "one.job")
    job = torch.load(tmp_path / "one.job", weights_only=False)
    assert job["inductor_options"] == MAX_AUTOTUNE
    inputs = job_inputs(job)
    assert [tuple(t.shape) for t in inputs] == [(2, 3), (2,), (4, 3)]
    artifact = compile_job(job, inputs)
    assert inductor.calls == [MAX_AUTOTUNE_KWARGS]
    weights_and_call = [linear.weight, linear.bias, call.tensors[0]]
    with torch.no_grad():
        (out,) = artifact(*weights_and_call)
        assert torch.allclose(out, linear(call.tensors[0]))


def test_the_precompiled_event_lists_the_modules_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv(envs.EVENTS_FILE.name, str(events))
    precompiled = PrecompiledModules(KEY, serve_while_compiling=False)
    precompiled.module(torch.nn.Linear(3, 2), inductor_options=MAX_AUTOTUNE)
    precompiled.module(torch.nn.Conv2d(3, 2, 1))
    monkeypatch.setattr(precompiled._store, "publish", lambda: None)  # no store here
    precompiled._publish()  # the block's end
    (summary,) = [
        e["details"]
        for e in map(json.loads, events.read_text().splitlines())
        if e["phase"] == "precompiled"
    ]
    assert summary["inductor_options"] == {"Linear": dict(MAX_AUTOTUNE)}
