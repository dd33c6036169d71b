"""The short forms of the reliability figures (``benchmarks/reliability.py``; RELIABILITY.md
has the long ones): fuzzing, shutdown under load, a queue flood, a soak. Counts, not timings."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.process

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "reliability.py"


@pytest.fixture(scope="module")
def reliability() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reliability_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_fuzzing_finds_no_server_error_and_no_schema_violation(
    reliability: ModuleType, tmp_path: Path
) -> None:
    if shutil.which("schemathesis", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    figures = reliability.fuzz(5, tmp_path, apps=("json_app.py", "stream_app.py"))
    for target, summary in figures["targets"].items():
        assert summary["server_alive"], target
        assert summary["test_cases"] > 0, target
        assert summary["server_errors"] == 0, (target, summary["failures"])
        assert summary["schema_violations"] == 0, (target, summary["failures"])


def test_sigterm_during_a_burst_answers_every_accepted_request(
    reliability: ModuleType, tmp_path: Path
) -> None:
    figures = reliability.shutdown(16, 40, tmp_path)
    outcomes = figures["sync_outcomes"]
    assert figures["sync_accepted_but_dropped"] == 0, outcomes
    # Accepted sync calls got their answer, or 503 (not started when the grace period ended);
    # calls made after the listener closed were refused, never accepted.
    assert set(outcomes) <= {"200", "503", "refused"}, outcomes
    assert figures["queued_unanswered_at_exit"] == 0, figures
    assert figures["exit_code"] == 0


def test_a_queue_flood_gets_429_with_retry_after_and_a_cancel_storm(
    reliability: ModuleType, tmp_path: Path
) -> None:
    figures = reliability.flood(600, 50, tmp_path)
    statuses = figures["submit_statuses"]
    assert set(statuses) <= {"200", "429"}, statuses
    assert statuses["429"] > 0 and figures["429_without_retry_after"] == 0
    assert set(figures["cancel_statuses"]) <= {"202", "400"}, figures["cancel_statuses"]
    assert figures["gateway_alive"] and figures["health_after"] == 200


def test_a_short_soak_has_no_errors(reliability: ModuleType, tmp_path: Path) -> None:
    figures = reliability.soak(8.0, 32, tmp_path)
    assert figures["requests"] > 0
    assert figures["errors"] == 0, figures["statuses"]
