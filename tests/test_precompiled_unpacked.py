"""An artifact saved in torch's unpacked form loads and computes what eager computes (real
Inductor compile, CPU).

On a GPU host the precompiled path keeps CUDA artifacts in this form (``artifact_files``);
there is no GPU here, so a CPU graph stands in: the load goes through the same torch code
(the entries read from the dir, then the compiled graph rebuilt from them). Its C++ kernel
library is built again by that load, which is why CPU artifacts are kept binary in the product.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from minifal.toolkit.precompiled.artifact_files import (  # noqa: E402
    load_artifact,
    save_unpacked,
)


def graph(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor]:
    return (torch.tanh(x @ w) * 0.5 + x.sum(dim=-1, keepdim=True),)


def test_an_unpacked_artifact_loads_and_equals_eager(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    from torch._inductor import standalone_compile

    x, w = torch.randn(4, 8), torch.randn(8, 8)
    captured = []

    def record(gm: torch.fx.GraphModule, example_inputs: list) -> torch.fx.GraphModule:
        captured.append((gm, example_inputs))  # as graph_compile captures a call: by Dynamo
        return gm

    with torch.no_grad():
        torch.compile(graph, backend=record, fullgraph=True, dynamic=False)(x, w)
        gm, example_inputs = captured[0]
        artifact = standalone_compile(gm, example_inputs, dynamic_shapes="from_example_inputs")
    target = tmp_path / "sig.unpacked"
    assert save_unpacked(artifact, target)
    assert (target / "aotautograd").is_dir()
    assert not list(tmp_path.glob(".tmp-*"))

    loaded = load_artifact(target)
    with torch.no_grad():
        (out,) = loaded(x, w)
    torch.testing.assert_close(out, graph(x, w)[0])


def test_an_unpacked_save_that_fails_leaves_nothing(tmp_path: Path) -> None:
    class _Unsaveable:
        def save(self, *, path: str, format: str) -> None:
            Path(path).mkdir()
            (Path(path) / "partial").write_bytes(b"x")
            raise RuntimeError("CompiledArtifact.save failed: no aot_autograd artifacts")

    assert not save_unpacked(_Unsaveable(), tmp_path / "sig.unpacked")
    assert list(tmp_path.iterdir()) == []
