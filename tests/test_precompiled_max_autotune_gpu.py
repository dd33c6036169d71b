"""Inductor's max-autotune through a precompiled block on a GPU: a compile worker (which has the
runner's GPU) times Triton's convolution templates against cuDNN, the artifact matches eager,
and a warm runner loads it. Needs a CUDA device (a GPU host); the same on CPU, with the switchover
compiling inline: tests/test_precompiled_processes.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_precompiled_processes import run  # noqa: E402

from minifal.startup.events import read_events  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (GPU host)"),
]

# fp16 outputs of order 1-10: the block's own check allows 2e-2 of the output's magnitude
MAX_DIFF = 0.1


def test_a_max_autotune_conv_artifact_compiled_by_a_worker_equals_eager_and_loads_warm(
    tmp_path: Path,
) -> None:
    worker = {"MINIFAL_PRECOMPILED_WORKERS": "1"}
    cold = run(tmp_path, "conv-cuda", 0, "2x64", after="2x64", env_extra=worker, max_autotune=True)
    assert cold["at_ready"] == ["eager, switching"]
    assert cold["resolutions"] == ["compiled"]  # it matched eager, or it would have stayed eager
    assert cold["standalone_compile_options"] == []  # compiled in the worker, not here
    events = read_events(tmp_path / "events-conv-cuda-0-2x64.jsonl")
    (compiled,) = [e["details"] for e in events if e["phase"] == "precompiled.compile"]
    assert compiled["in_worker"] and compiled["saved"], compiled
    (summary,) = [e["details"] for e in events if e["phase"] == "precompiled"]
    tuned = {"coordinate_descent_tuning": True, "max_autotune": True}
    assert summary["inductor_options"] == {"ConvBlock": tuned}
    assert all(call["max_abs_diff"] <= MAX_DIFF for call in cold["served"]), cold["served"]

    warm = run(tmp_path, "conv-cuda", 0, "2x64", after="2x64", max_autotune=True)
    assert warm["resolutions"] == ["loaded"]
    assert warm["dynamo_graphs"] == 0
    assert all(call["max_abs_diff"] <= MAX_DIFF for call in warm["served"]), warm["served"]
    print(  # for the GPU host's log (pytest -rA)
        f"Inductor {compiled['inductor_s']} s in the worker; largest difference from eager: "
        f"{max(call['max_abs_diff'] for call in cold['served'] + warm['served']):.4g}"
    )
