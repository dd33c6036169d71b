"""An artifact saved in torch's unpacked form loads and computes what eager computes (real
Inductor compile, CPU; and on a GPU host, loaded by a fresh process with an empty cache dir).

On a GPU host the precompiled path keeps CUDA artifacts in this form (``artifact_files``);
there is no GPU here, so a CPU graph stands in: the load goes through the same torch code
(the entries read from the dir, then the compiled graph rebuilt from them). Its C++ kernel
library is built again by that load, which is why CPU artifacts are kept binary in the product.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from child_path import repo_pythonpath  # noqa: E402
from precompiled_support.child import ConvBlock  # noqa: E402

from minifal.compiled.precompiled.artifact_files import (  # noqa: E402
    load_artifact,
    save_unpacked,
)


def graph(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor]:
    return (torch.tanh(x @ w) * 0.5 + x.sum(dim=-1, keepdim=True),)


@pytest.mark.compile
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


LOAD_IN_FRESH_PROCESS = """
import sys, torch
from pathlib import Path
from minifal.compiled.precompiled.artifact_files import load_artifact
saved = torch.load(sys.argv[2])
with torch.no_grad():
    (out,) = load_artifact(Path(sys.argv[1]))(*saved["inputs"])
torch.testing.assert_close(out, saved["expected"], atol=2e-2, rtol=2e-2)
print("max abs diff", (out.float() - saved["expected"].float()).abs().max().item())
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (GPU host)")
def test_a_cuda_artifact_loaded_unpacked_in_a_fresh_process_equals_eager(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "compiling"))
    from torch._inductor import standalone_compile

    torch.manual_seed(0)
    block = ConvBlock().to("cuda", torch.float16).eval()
    x = torch.randn(1, 4, 64, 64, device="cuda", dtype=torch.float16)
    captured = []

    def record(gm: torch.fx.GraphModule, example_inputs: list) -> torch.fx.GraphModule:
        captured.append((gm, example_inputs))
        return gm

    with torch.no_grad():
        (expected,) = block(x)
        torch.compile(block, backend=record, fullgraph=True, dynamic=False)(x)
        gm, example_inputs = captured[0]
        artifact = standalone_compile(gm, example_inputs, dynamic_shapes="from_example_inputs")
    target = tmp_path / "sig.unpacked"
    assert save_unpacked(artifact, target)
    torch.save({"inputs": example_inputs, "expected": expected}, tmp_path / "io.pt")

    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "fresh"), "PYTHONPATH": repo_pythonpath()}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_IN_FRESH_PROCESS, str(target), str(tmp_path / "io.pt")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "max abs diff" in done.stdout
    print(done.stdout)  # the difference, for the GPU host's log (pytest -rA)


@pytest.mark.unit
def test_an_unpacked_save_that_fails_leaves_nothing(tmp_path: Path) -> None:
    class _Unsaveable:
        def save(self, *, path: str, format: str) -> None:
            Path(path).mkdir()
            (Path(path) / "partial").write_bytes(b"x")
            raise RuntimeError("CompiledArtifact.save failed: no aot_autograd artifacts")

    assert not save_unpacked(_Unsaveable(), tmp_path / "sig.unpacked")
    assert list(tmp_path.iterdir()) == []
