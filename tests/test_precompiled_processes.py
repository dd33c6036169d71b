"""Precompiled modules with real Dynamo, real Inductor and real processes (CPU).

Each child (tests/precompiled_support/child.py) is a runner-like process sharing one data dir. What
it reports about Dynamo comes from torch's own counters, and every output is compared with eager.
Children serve while compiling (the default): their warmup is answered eagerly, and they wait for
the switchover before their "after" calls. They compile inline (no worker processes, which cost a
torch import each) unless a test asks for workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from child_path import repo_pythonpath

from minifal.startup.events import read_events

pytest.importorskip("torch")

pytestmark = pytest.mark.compile

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).parent / "precompiled_support" / "child.py"
KEY = "tests/precompiled"
TIMEOUT_S = 400


def start(
    data_dir: Path,
    model: str,
    seed: int,
    warmup: str,
    after: str = "",
    env_extra: dict[str, str] | None = None,
    break_workers: bool = False,
    max_autotune: bool = False,
) -> subprocess.Popen:
    """``break_workers``: the child's compile workers exit with 3 at once; ``max_autotune``:
    the child's module compiles with ``inductor_options=MAX_AUTOTUNE``."""
    env = {
        **os.environ,
        "MINIFAL_PRECOMPILED_WORKERS": "0",
        **(env_extra or {}),
        "MINIFAL_DATA_DIR": str(data_dir),
        "MINIFAL_EVENTS_FILE": str(data_dir / f"events-{model}-{seed}-{warmup}.jsonl"),
        "PYTHONPATH": repo_pythonpath(),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, str(CHILD), KEY, model, str(seed), warmup, after]
    if break_workers:
        command.append("--break-workers")
    if max_autotune:
        command.append("--max-autotune")
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def result(process: subprocess.Popen) -> dict[str, Any]:
    stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return {**json.loads(line[len("RESULT ") :]), "log": stderr}
    raise AssertionError(f"child failed ({process.returncode}):\n{stderr[-4000:]}")


def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """``start`` (same arguments), then its result."""
    return result(start(*args, **kwargs))


def assert_equals_eager(outcome: dict[str, Any]) -> None:
    for call in outcome["served"]:
        assert call["max_abs_diff"] <= 1e-4, call
        assert call["type"] == "tuple", call  # the output keeps its structure


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A data dir where a first runner compiled two shapes of the block and published them."""
    data_dir = tmp_path_factory.mktemp("precompiled-data")
    return data_dir, run(data_dir, "block", 0, "2x8,4x8")


def test_the_first_runner_serves_eagerly_then_switches_each_signature_to_compiled(
    published,
) -> None:
    data_dir, cold = published
    assert cold["at_ready"] == ["eager, switching", "eager, switching"]  # ready before compiling
    assert cold["resolutions"] == ["compiled", "compiled"]
    assert cold["dynamo_graphs"] >= 2
    assert_equals_eager(cold)
    events = [
        json.loads(line)
        for line in (data_dir / "events-block-0-2x8,4x8.jsonl").read_text().splitlines()
    ]
    switches = [e["details"] for e in events if e["phase"] == "precompiled.switch"]
    assert [(s["source"], s["switched"]) for s in switches] == [("compiled", True)] * 2
    assert all(s["max_abs_diff"] <= 1e-4 for s in switches)
    compiles = [e for e in events if e["phase"] == "precompiled.compile"]
    starts = [e for e in compiles if e.get("kind") == "start"]  # each compile's, as it began
    assert sorted(e["span"] for e in starts) == sorted(e["span"] for e in compiles if "end" in e)
    assert [(e["details"]["signature"], e["details"]["in_worker"]) for e in starts] == [
        (s["signature"], False) for s in switches
    ]
    (summary,) = [e for e in events if e["phase"] == "precompiled"]
    assert summary["details"]["served_while_compiling"]
    assert summary["end"] >= max(e["end"] for e in events if e["phase"] == "precompiled.switch")


def test_a_warm_runner_runs_no_dynamo_and_matches_eager(published) -> None:
    data_dir, _ = published
    warm = run(data_dir, "block", 0, "2x8,4x8")
    assert warm["at_ready"] == ["loaded", "loaded"]  # a warm runner does not serve eagerly
    assert warm["resolutions"] == ["loaded", "loaded"]
    assert warm["dynamo_graphs"] == 0
    assert warm["frames"] == 0
    assert warm["dynamo_s"] == 0
    assert_equals_eager(warm)


def test_a_warm_runner_can_make_each_first_call_with_placeholders(published) -> None:
    """``first-calls`` (the default on a GPU): the background thread calls each artifact once
    with zeros of its recorded input layouts before the app's call; the app's calls are right."""
    data_dir, _ = published
    preload = {"MINIFAL_PRECOMPILED_PRELOAD": "first-calls"}
    warm = run(data_dir, "block", 0, "4x8,2x8", env_extra=preload)  # its own events file
    assert warm["resolutions"] == ["loaded", "loaded"]
    assert warm["dynamo_graphs"] == 0
    assert "placeholder call" not in warm["log"]  # no failed first call
    assert_equals_eager(warm)
    events = read_events(data_dir / "events-block-0-4x8,2x8.jsonl")
    loads = [e["details"] for e in events if e["phase"] == "precompiled.load"]
    assert len(loads) == 2
    assert all(load["first_call_s"] is not None for load in loads)
    # each load's start line came first (the console and dashboard show it running), and
    # says which artifact it loads
    lines = read_events(data_dir / "events-block-0-4x8,2x8.jsonl", starts=True)
    phases = [(e.get("kind"), e["span"]) for e in lines if e["phase"] == "precompiled.load"]
    spans = {span for _, span in phases}
    assert len(spans) == 2 and all(
        phases.index(("start", span)) < phases.index((None, span)) for span in spans
    )
    assert all(e["details"]["signature"] for e in lines if e["phase"] == "precompiled.load")
    (sync,) = [e["details"] for e in events if e["phase"] == "compile_cache.sync"]
    assert sync["reason"] == "nothing compiled"  # no scan of the private dir


def test_new_weights_reuse_the_artifacts_and_an_uncovered_call_runs_eagerly(published) -> None:
    """One warm runner for both (one process fewer): its weights are not the compiler's, and
    its last call has a shape no warmup covered."""
    data_dir, _ = published
    outcome = run(data_dir, "block", 7, "2x8", after="3x5")
    assert outcome["resolutions"] == ["eager", "loaded"]
    assert outcome["dynamo_graphs"] == 0
    assert "was not covered by warmup: runs eager" in outcome["log"]
    assert_equals_eager(outcome)  # computed with its own weights, not the compiler's


def test_another_structure_never_loads_these_artifacts_and_can_wait_for_its_compile(
    published,
) -> None:
    """With ``MINIFAL_SERVE_WHILE_COMPILING=0`` (as before serving while compiling), the block
    ends with its signature compiled."""
    data_dir, _ = published
    waits = {"MINIFAL_SERVE_WHILE_COMPILING": "0"}
    wide = run(data_dir, "block-wide", 0, "2x8", env_extra=waits)
    assert wide["at_ready"] == ["compiled"]
    assert wide["resolutions"] == ["compiled"]
    assert_equals_eager(wide)


def test_two_runners_started_together_compile_once(tmp_path: Path) -> None:
    """Both serve eagerly while one compiles; the other picks the artifacts up when they are
    published, checked against its own eager outputs."""
    first = start(tmp_path, "block", 0, "2x8,4x8", after="2x8")
    second = start(tmp_path, "block", 0, "2x8,4x8", after="2x8")
    outcomes = [result(first), result(second)]
    assert [o["at_ready"] for o in outcomes] == [["eager, switching"] * 2] * 2
    assert sorted(o["resolutions"] for o in outcomes) == [
        ["compiled", "compiled"],
        ["loaded", "loaded"],
    ]
    for outcome in outcomes:
        assert_equals_eager(outcome)


def test_the_sd_turbo_unet_warm_start_skips_dynamo(tmp_path: Path) -> None:
    """The real app's module class (a one-level UNet of the tiny one's block types): diffusers'
    decorated forward, keyword inputs, None arguments."""
    cold = run(tmp_path, "unet", 0, "16")
    assert cold["resolutions"] == ["compiled"]
    warm = run(tmp_path, "unet", 0, "16")
    assert warm["resolutions"] == ["loaded"]
    assert warm["dynamo_graphs"] == 0 and warm["frames"] == 0
    assert_equals_eager(warm)


def test_workers_compile_the_signatures_at_once_and_publish_them(tmp_path: Path) -> None:
    """``MINIFAL_PRECOMPILED_WORKERS``: each captured graph is compiled by a worker process;
    the block's calls are answered eagerly meanwhile, and its end installs the artifacts."""
    workers = {"MINIFAL_PRECOMPILED_WORKERS": "2"}
    cold = run(tmp_path, "block", 0, "2x8,4x8", after="2x8", env_extra=workers)
    assert cold["resolutions"] == ["compiled", "compiled"]
    events = read_events(tmp_path / "events-block-0-2x8,4x8.jsonl")
    compiles = [e["details"] for e in events if e["phase"] == "precompiled.compile"]
    assert [(c["in_worker"], c["saved"]) for c in compiles] == [(True, True), (True, True)]
    # each worker's last line, through the runner's log: its seconds and its collector's
    assert cold["log"].count("(garbage collection ") == 2, cold["log"][-3000:]
    assert_equals_eager(cold)  # the calls in the block (eager) and the one after (compiled)
    (sync,) = [e["details"] for e in events if e["phase"] == "compile_cache.sync"]
    assert sync["reason"] == "published"


def test_a_failed_worker_leaves_its_signature_to_the_fallback(tmp_path: Path) -> None:
    """The worker is replaced by one that exits with 3 (child.py ``--break-workers``)."""
    env = {"MINIFAL_PRECOMPILED_WORKERS": "1"}
    outcome = run(tmp_path, "block", 0, "2x8", after="2x8", env_extra=env, break_workers=True)
    assert outcome["at_ready"] == ["eager, switching"]
    assert outcome["resolutions"] == ["eager"]
    assert "was not compiled (the compile worker exited with 3" in outcome["log"]
    (compiled,) = [
        e
        for e in read_events(tmp_path / "events-block-0-2x8.jsonl")
        if e["phase"] == "precompiled.compile"
    ]
    assert "exited with 3" in compiled["details"]["error"]  # its phase ended, as failed
    assert_equals_eager(outcome)
    assert not list(tmp_path.glob("**/precompiled/*/*.bin"))  # nothing published


def test_max_autotune_reaches_inductor_and_its_artifact_equals_eager(tmp_path: Path) -> None:
    """Serving while compiling (the switchover compiles it, here): Inductor's real compile is
    handed the options, the artifact matches eager, and the block's summary names them."""
    outcome = run(tmp_path, "block", 0, "2x8", after="2x8", max_autotune=True)
    assert outcome["at_ready"] == ["eager, switching"]
    assert outcome["resolutions"] == ["compiled"]
    tuned = {"coordinate_descent_tuning": True, "max_autotune": True}
    assert outcome["standalone_compile_options"] == [{"config_patches": tuned}]
    assert_equals_eager(outcome)
    events = read_events(tmp_path / "events-block-0-2x8.jsonl")
    (summary,) = [e["details"] for e in events if e["phase"] == "precompiled"]
    assert summary["inductor_options"] == {"AttentionBlock": tuned}
