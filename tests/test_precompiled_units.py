"""The precompiled-module path's pure parts and its refusals, in process (no Inductor compile)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from precompiled_metas import linear_artifact_meta  # noqa: E402

from minifal.compiled.call_signature import call_signature, flatten_call  # noqa: E402
from minifal.compiled.precompiled.artifact_files import (  # noqa: E402
    ArtifactDir,
    ArtifactMeta,
    belongs_to_artifacts,
)
from minifal.compiled.precompiled.artifact_store import ArtifactStore  # noqa: E402
from minifal.compiled.precompiled.compile_pool import CompilePool  # noqa: E402
from minifal.compiled.precompiled.graph_compile import NotPrecompilable, compile_call  # noqa: E402
from minifal.compiled.precompiled.module import InputBinder, PrecompiledModule  # noqa: E402
from minifal.compiled.precompiled.structure import module_digest  # noqa: E402
from minifal.compiled.precompiled.warm_loader import LoadedArtifact, WarmLoader  # noqa: E402


def digest(*args, grad: bool = False, training: bool = False, **kwargs) -> str:
    return call_signature(flatten_call(args, kwargs), grad, training).digest


@pytest.mark.unit
def test_same_shapes_and_constants_give_the_same_signature() -> None:
    assert digest(torch.zeros(2, 3), scale=0.5) == digest(torch.ones(2, 3), scale=0.5)


@pytest.mark.unit
@pytest.mark.parametrize(
    "other",
    [
        lambda: digest(torch.zeros(2, 4), scale=0.5),  # shape
        lambda: digest(torch.zeros(2, 3, dtype=torch.float16), scale=0.5),  # dtype
        lambda: digest(torch.zeros(3, 2).t(), scale=0.5),  # strides
        lambda: digest(torch.zeros(2, 3), scale=0.25),  # a constant baked into the graph
        lambda: digest(torch.zeros(2, 3), size=0.5),  # a keyword's name
        lambda: digest(torch.zeros(2, 3), 0.5),  # positional instead of keyword
        lambda: digest(torch.zeros(2, 3), scale=0.5, grad=True),  # grad mode
        lambda: digest(torch.zeros(2, 3), scale=0.5, training=True),  # train mode
    ],
)
def test_anything_baked_into_a_graph_changes_the_signature(other) -> None:
    assert other() != digest(torch.zeros(2, 3), scale=0.5)


@pytest.mark.unit
def test_the_label_names_each_input() -> None:
    call = flatten_call((torch.zeros(1, 4, 8, 8, dtype=torch.float16),), {"context": None, "k": 3})
    assert call_signature(call, False).label == "args[0]=f16[1,4,8,8] k=3 grad=off"


@pytest.mark.unit
def test_the_module_digest_follows_structure_not_weights() -> None:
    torch.manual_seed(0)
    first = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    second = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    wider = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU())
    other_activation = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU())
    assert module_digest(first) == module_digest(second)
    assert module_digest(first) != module_digest(wider)
    assert module_digest(first) != module_digest(other_activation)
    assert module_digest(first) != module_digest(first.half())


@pytest.mark.unit
def test_the_binder_reads_the_live_weights_at_every_call() -> None:
    module = torch.nn.Linear(2, 2)
    binder = InputBinder(module, ["p:weight", "@0", "p:bias"])
    x = torch.ones(1, 2)
    first = binder.bind([x])
    assert first[0] is module.weight and first[1] is x and first[2] is module.bias
    module.weight = torch.nn.Parameter(
        torch.zeros(2, 2)
    )  # replaced, as load_state_dict(assign=True)
    assert binder.bind([x])[0] is module.weight


@pytest.mark.unit
def test_a_plan_naming_a_missing_weight_is_not_usable() -> None:
    with pytest.raises(NotPrecompilable, match=r"no parameter 'missing\.weight'"):
        InputBinder(torch.nn.Linear(2, 2), ["p:missing.weight"])


class _Breaks(torch.nn.Module):
    def forward(self, x):
        if x.sum().item() > 0:  # data-dependent control flow: no single graph
            return x * 2
        return x


class _Counts(torch.nn.Module):
    def forward(self, x):
        return x, x.shape[0]


class _Fails(torch.nn.Module):
    def forward(self, x):
        raise ValueError("the app's own bug")


@pytest.mark.compile
def test_a_call_that_is_not_one_static_graph_is_refused() -> None:
    module, call = _Breaks(), flatten_call((torch.ones(3),), {})
    with torch.no_grad(), pytest.raises(NotPrecompilable, match="Dynamo could not capture"):
        compile_call(module, call)


@pytest.mark.unit
def test_an_output_with_non_tensor_values_is_refused() -> None:
    module, call = _Counts(), flatten_call((torch.ones(3),), {})
    with pytest.raises(NotPrecompilable, match="non-tensor"):
        compile_call(module, call)


@pytest.mark.unit
def test_the_apps_own_exception_propagates_unchanged() -> None:
    module, call = _Fails(), flatten_call((torch.ones(3),), {})
    with pytest.raises(ValueError, match="the app's own bug"):
        compile_call(module, call)


@pytest.mark.unit
def test_only_artifacts_and_native_kernels_are_published() -> None:
    assert belongs_to_artifacts("precompiled/abc/def.bin")
    assert belongs_to_artifacts("inductor/x4/cx4abc.so")  # a CPU kernel library
    assert not belongs_to_artifacts("inductor/fxgraph/ab/entry")  # duplicated in the artifact
    assert not belongs_to_artifacts("triton/0/abc/kernel.cubin")
    assert belongs_to_artifacts("triton/ABC/cuda_utils.cpython-312-x86_64-linux-gnu.so")


@pytest.mark.unit
def test_artifacts_without_their_meta_are_ignored(tmp_path: Path) -> None:
    artifacts = ArtifactDir(tmp_path)
    meta = ArtifactMeta("m.M", "mod", "sig", "x=f32[1]", ["@0"], "[]", 1.0, 2.0)

    class _Saveable:
        def save(self, *, path: str, format: str) -> None:
            Path(path).write_bytes(b"artifact")

    saved = artifacts.save(meta, _Saveable())
    assert [(m, p) for m, p in artifacts.listed()] == [(meta, saved)]
    (saved.parent / "half.bin").write_bytes(b"no meta yet")
    (saved.parent / "bad.json").write_text(json.dumps({"format_version": 999}))
    assert [m.signature_digest for m, _ in artifacts.listed()] == ["sig"]


class _SaveableBothForms:
    """A stand-in for a CompiledArtifact's ``save``: a file, or a dir of entries (unpacked)."""

    def __init__(self, unpacked_fails: bool = False) -> None:
        self.unpacked_fails = unpacked_fails

    def save(self, *, path: str, format: str) -> None:
        if format == "binary":
            Path(path).write_bytes(b"artifact")
            return
        Path(path, "aotautograd").mkdir(parents=True)
        if self.unpacked_fails:
            raise OSError("no space left on device")
        Path(path, "aotautograd", "entry").write_bytes(b"entry")


CUDA_LAYOUT = [[1, 4], [4, 1], "float16", "cuda:0"]


@pytest.mark.unit
@pytest.mark.parametrize("in_worker", [False, True])
def test_a_cuda_artifact_is_kept_unpacked_and_listed_so(tmp_path: Path, in_worker: bool) -> None:
    """Its entries are published as files: a warm runner reads them without deserializing and
    writing them out first. The binary form, the same entries packed, is removed."""
    artifacts = ArtifactDir(tmp_path / "cache")
    meta = ArtifactMeta(
        "m.M", "mod", "sig", "x", ["@0"], "[]", 1.0, 2.0, input_layouts=[CUDA_LAYOUT]
    )
    saved_at = None
    if in_worker:  # a worker saved both forms next to each other (compile_workers.main)
        saved_at = tmp_path / "job.bin"
        _SaveableBothForms().save(path=str(saved_at), format="binary")
        _SaveableBothForms().save(path=str(saved_at.with_suffix(".unpacked")), format="unpacked")
    saved = artifacts.save(meta, _SaveableBothForms(), saved_at)
    assert saved.is_dir() and saved.name == "sig.unpacked"
    assert (saved / "aotautograd" / "entry").read_bytes() == b"entry"
    assert not saved.with_suffix(".bin").exists()
    assert artifacts.listed() == [(meta, saved)]
    assert belongs_to_artifacts("precompiled/mod/sig.unpacked/fxgraph/ab/fabc/entry")
    assert sorted(p.name for p in saved.parent.iterdir()) == ["sig.json", "sig.unpacked"]


@pytest.mark.unit
def test_an_unpacked_form_that_cannot_be_saved_leaves_the_binary(tmp_path: Path) -> None:
    artifacts = ArtifactDir(tmp_path)
    meta = ArtifactMeta(
        "m.M", "mod", "sig", "x", ["@0"], "[]", 1.0, 2.0, input_layouts=[CUDA_LAYOUT]
    )
    saved = artifacts.save(meta, _SaveableBothForms(unpacked_fails=True))
    assert saved.name == "sig.bin" and saved.read_bytes() == b"artifact"
    assert sorted(p.name for p in saved.parent.iterdir()) == ["sig.bin", "sig.json"]
    assert artifacts.listed() == [(meta, saved)]


@pytest.mark.unit
def test_a_cpu_artifact_stays_binary(tmp_path: Path) -> None:
    """Its C++ libraries are not in its entries: loaded from another dir they would be rebuilt."""
    cpu_layout = [[1, 4], [4, 1], "float32", "cpu"]
    meta = ArtifactMeta(
        "m.M", "mod", "sig", "x", ["@0"], "[]", 1.0, 2.0, input_layouts=[cpu_layout]
    )
    saved = ArtifactDir(tmp_path).save(meta, _SaveableBothForms())
    assert saved.name == "sig.bin"
    assert not saved.with_suffix(".unpacked").exists()


@pytest.mark.unit
def test_artifacts_are_listed_in_the_order_they_were_first_called(tmp_path: Path) -> None:
    """A warm runner loads them in that order and its first warmup call waits for its own."""
    artifacts = ArtifactDir(tmp_path)

    class _Saveable:
        def save(self, *, path: str, format: str) -> None:
            Path(path).write_bytes(b"artifact")

    for signature, called_at in (("b", 30.0), ("a", 20.0), ("c", 10.0)):
        meta = ArtifactMeta(
            "m.M", "mod", signature, "x", ["@0"], "[]", 1.0, 2.0, first_called_at=called_at
        )
        artifacts.save(meta, _Saveable())
    assert [m.signature_digest for m, _ in artifacts.listed()] == ["c", "a", "b"]


@pytest.mark.unit
def test_a_meta_saved_before_the_load_order_existed_still_reads() -> None:
    old = ArtifactMeta("m.M", "mod", "sig", "x", ["@0"], "[]", 1.0, 2.0)
    data = {k: v for k, v in dataclasses.asdict(old).items() if k != "first_called_at"}
    assert ArtifactMeta.from_json(json.dumps(data)) == old


@pytest.mark.unit
def test_a_call_waits_for_its_own_artifact_not_for_the_whole_preload() -> None:
    """The background loader (simulated: it only fills the loaded table) has loaded this call's
    artifact and is still loading others: the call gets it at once. A call with no artifact
    learns so when the loader is done."""
    loader = WarmLoader(ArtifactStore("tests/load-order"), "artifacts")
    loader._thread = threading.Thread(target=lambda: None)  # stands for the loader thread
    answers: dict[str, object] = {}

    def ask(name: str, signature: str) -> None:
        answers[name] = loader.loaded_artifact("mod", signature)

    own = threading.Thread(target=ask, args=("own", "first"))
    missing = threading.Thread(target=ask, args=("missing", "absent"))
    own.start()
    missing.start()
    loaded = object()
    with loader._progress:
        loader._loaded[("mod", "first")] = loaded
        loader._progress.notify_all()
    own.join(timeout=5)
    assert answers.get("own") is loaded  # before the loader finished
    assert missing.is_alive()  # no artifact yet: it waits for the loader to finish
    with loader._progress:
        loader._ready.set()
        loader._progress.notify_all()
    missing.join(timeout=5)
    assert "missing" in answers and answers["missing"] is None


@pytest.mark.unit
def test_the_loader_thread_imports_the_compiler_before_its_first_artifact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An artifact's load enters torch's compiler by Inductor; the app's libraries, maybe being
    imported by ``setup()`` at that moment, enter by Dynamo. Opposite orders deadlock (seen on
    an H100), so the loader imports the compiler (Dynamo first) before it reads an artifact."""
    from minifal.compiled import torch_internals
    from minifal.compiled.precompiled import warm_loader

    order: list[str] = []
    monkeypatch.setattr(torch_internals, "import_compiler", lambda: order.append("import"))

    def load_artifact(path: Path) -> None:
        order.append(f"read {path.name}")
        raise OSError("not an artifact")  # the loader logs it and goes on

    monkeypatch.setattr(warm_loader, "load_artifact", load_artifact)
    meta = ArtifactMeta("m.M", "mod", "sig", "x", ["@0"], "[]", 1.0, 2.0)

    class Listing:
        def __init__(self, listed: list) -> None:
            self._listed = listed

        def listed(self) -> list:
            return self._listed

    loader = WarmLoader(ArtifactStore("tests/import-first"), "artifacts")
    loader._load_artifacts(Listing([]))  # nothing to load: nothing imported
    assert order == []
    loader._load_artifacts(Listing([(meta, Path("a.bin")), (meta, Path("b.bin"))]))
    assert order == ["import", "read a.bin", "read b.bin"]


@pytest.mark.unit
def test_placeholder_parameters_share_one_zero_buffer_and_keep_their_layouts() -> None:
    from minifal.compiled.precompiled.first_call import input_layouts, placeholder_inputs

    weight = torch.nn.Parameter(torch.randn(6, 4).t())  # a transposed (strided) parameter
    bias = torch.nn.Parameter(torch.randn(6))
    mask = torch.ones(3, dtype=torch.bool)
    x = torch.randn(2, 5, 4)[:, 1:]  # a view: not contiguous
    layouts = input_layouts([weight, bias, mask, x])
    made = placeholder_inputs(layouts, ["p:w", "p:b", "b:mask", "@0"])
    for original, placeholder in zip([weight, bias, mask, x], made, strict=True):
        assert placeholder.shape == original.shape
        assert placeholder.stride() == original.stride()
        assert placeholder.dtype == original.dtype
        assert not placeholder.any()
    assert made[0].untyped_storage().data_ptr() == made[1].untyped_storage().data_ptr()
    assert made[2].untyped_storage().data_ptr() != made[3].untyped_storage().data_ptr()


@pytest.mark.unit
def test_captures_run_in_the_thread_that_made_the_placeholder_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run_warmed`` hands work to the background thread (with the caller's grad mode) while
    it serves, and runs it inline once the block has ended."""
    loader = WarmLoader(ArtifactStore("tests/warmed-thread"), "first-calls")
    meta = ArtifactMeta("m.M", "mod", "sig", "x", ["@0"], "[]", 1.0, 2.0)

    def load() -> None:  # stands for the store load and the placeholder calls
        loader._start_serving()
        loader._loaded[("mod", "sig")] = LoadedArtifact(meta, object(), first_called=True)
        loader._ready.set()

    monkeypatch.setattr(loader, "_load", load)
    seen: list[tuple[str, bool]] = []

    def record() -> None:
        seen.append((threading.current_thread().name, torch.is_inference_mode_enabled()))

    loader.start()
    deadline = time.monotonic() + 5
    while not loader._serving and time.monotonic() < deadline:
        time.sleep(0.01)
    with torch.inference_mode():
        loader.run_warmed(record)
    loader.stop_serving()
    loader._thread.join(timeout=5)
    assert not loader._thread.is_alive()
    loader.run_warmed(record)
    assert seen == [("minifal-precompiled-load", True), (threading.current_thread().name, False)]


def _dispatching(loaded: dict[tuple[str, str], LoadedArtifact], linear: torch.nn.Module):
    """A PrecompiledModule over ``linear`` whose loader is done and holds ``loaded``, with a
    closed compile pool (as after the block): nothing here compiles."""
    store = ArtifactStore("tests/dispatch")
    loader = WarmLoader(store, "store")
    loader._loaded.update(loaded)
    loader._ready.set()
    return PrecompiledModule(linear, loader=loader, compiles=CompilePool(0), store=store)


@pytest.mark.unit
def test_a_loaded_artifact_serves_its_own_signature_with_the_live_weights() -> None:
    linear = torch.nn.Linear(3, 2).eval()
    x = torch.randn(4, 3)
    meta = linear_artifact_meta(linear, x)

    def artifact(weight, bias, tensor):  # stands for a CompiledArtifact: eager, plus 100
        return (tensor @ weight.t() + bias + 100,)

    key = (meta.module_digest, meta.signature_digest)
    wrapped = _dispatching({key: LoadedArtifact(meta, artifact)}, linear)
    with torch.no_grad():
        assert torch.equal(wrapped(x), linear(x) + 100)
        other = torch.randn(5, 3)  # another signature, with no artifact: the fallback
        assert torch.equal(wrapped(other), linear(other))
    assert wrapped.resolutions == {meta.signature_label: "loaded", _label(other): "eager"}


@pytest.mark.unit
def test_a_signature_with_no_artifact_after_the_block_runs_the_fallback() -> None:
    linear = torch.nn.Linear(3, 2).eval()
    x = torch.randn(4, 3)
    wrapped = _dispatching({}, linear)
    with torch.no_grad():
        assert torch.equal(wrapped(x), linear(x))
    assert wrapped.resolutions == {_label(x): "eager"}


def _label(x: torch.Tensor) -> str:
    return call_signature(flatten_call((x,), {}), False, False).label
