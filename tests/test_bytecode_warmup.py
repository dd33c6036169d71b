"""A cold bytecode cache filled by a pool beside the first runner (minifal/compiled/
bytecode_warmup.py, minifal/fleet/backends/bytecode_warmer.py), with this interpreter's own
installed packages: nothing is faked."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

import minifal
from minifal.compiled.bytecode_warmup import (
    default_workers,
    requirement_closure,
    source_files,
    warm,
)
from minifal.fleet.backends.bytecode_warmer import BytecodeWarmer, cache_is_cold


def names(requirements: list[str]) -> list[str]:
    distributions, _ = requirement_closure(requirements)
    return [canonicalize_name(d.metadata["Name"]) for d in distributions]


@pytest.mark.unit
def test_the_closure_starts_with_what_the_app_names_and_follows_its_dependencies() -> None:
    found = names(["httpx", "pydantic"])
    assert found[:2] == ["httpx", "pydantic"]
    assert {"httpcore", "anyio", "pydantic-core"} <= set(found)
    assert len(found) == len(set(found))


@pytest.mark.unit
def test_extras_are_followed_markers_evaluated_and_non_names_skipped() -> None:
    plain, extra = set(names(["uvicorn"])), set(names(["uvicorn[standard]"]))
    assert "httptools" in extra - plain  # an extra's dependency, installed here
    _, missing = requirement_closure(["a-package-that-is-not-here", "git+https://x/y.git"])
    assert missing == ["a-package-that-is-not-here"]


@pytest.mark.unit
def test_minifal_comes_first_then_each_distribution_shallow_first() -> None:
    distributions, _ = requirement_closure(["httpx"])
    files = source_files(distributions)
    ours = Path(minifal.__file__).parent
    assert files[0] == ours / "__init__.py"
    httpx_files = [f for f in files if "httpx" in f.parts and ours not in f.parents]
    assert httpx_files and httpx_files[0].name == "__init__.py"
    depths = [len(f.parts) for f in httpx_files]
    assert depths == sorted(depths)
    assert len(files) == len(set(files))


@pytest.mark.unit
def test_warm_compiles_into_the_cache_once_and_counts_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = tmp_path / "src"
    sources.mkdir()
    good = [sources / f"module_{n}.py" for n in range(3)]
    for path in good:
        path.write_text("VALUE = 1\n")
    broken = sources / "broken.py"
    broken.write_text("def (:\n")
    cache = tmp_path / "cache"
    monkeypatch.setattr(sys, "pycache_prefix", str(cache))
    first = warm([*good, broken], workers=1)
    assert (first["compiled"], first["failed"], first["skipped"]) == (3, 1, 0)
    for path in good:
        assert Path(importlib.util.cache_from_source(str(path))).is_file()
        assert str(cache) in importlib.util.cache_from_source(str(path))
    again = warm([*good, broken], workers=1)
    assert (again["compiled"], again["skipped"]) == (0, 3)
    assert not (sources / "__pycache__").exists()


@pytest.mark.unit
def test_a_cache_is_cold_only_where_it_is_used_and_empty(tmp_path: Path) -> None:
    assert cache_is_cold(None) is False
    assert cache_is_cold(tmp_path / "missing") is False
    assert cache_is_cold(tmp_path) is True
    (tmp_path / "x.pyc").write_bytes(b"")
    assert cache_is_cold(tmp_path) is False
    assert default_workers(16) == 14 and default_workers(2) == 1 and default_workers(1) == 1


def cold_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "pycache"
    cache.mkdir()
    return cache


def warmup_environment() -> dict[str, str]:
    """This process's environment, with its import path (the warmup imports minifal)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.process
def test_a_cold_cache_is_filled_once_and_the_gateway_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = cold_cache(tmp_path)
    env = warmup_environment()

    async def scenario() -> None:
        warmer = BytecodeWarmer(("packaging",), tmp_path / "run" / "bytecode-warmup.log")
        assert await warmer.maybe_start(cache, env)
        assert not await warmer.maybe_start(cache, env)  # once per backend
        assert warmer.process is not None
        await asyncio.wait_for(warmer.process.wait(), 60)
        await warmer.close()
        assert warmer.process.returncode == 0

    with caplog.at_level(logging.INFO, logger="minifal.fleet"):
        asyncio.run(scenario())
    assert any(cache.rglob("packaging/version.*.pyc"))
    assert any(cache.rglob("minifal/app.*.pyc"))
    assert "bytecode warmup:" in caplog.text and "0 failed" in caplog.text


@pytest.mark.process
def test_closing_stops_a_warmup_and_its_pool(tmp_path: Path) -> None:
    cache = cold_cache(tmp_path)
    env = warmup_environment()

    async def scenario() -> int:
        warmer = BytecodeWarmer(("torch", "fastapi"), tmp_path / "bytecode-warmup.log")
        assert await warmer.maybe_start(cache, env)
        assert warmer.process is not None
        await asyncio.sleep(1.0)  # its pool started compiling
        await warmer.close()
        assert warmer.process.returncode is not None
        return warmer.process.pid

    group = asyncio.run(scenario())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # its workers, now init's children, are reaped
        try:
            os.killpg(group, 0)  # signal 0: is anybody of its session left?
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail("a process of the warmup's session outlived close()")


@pytest.mark.unit
def test_a_warm_or_unused_cache_or_an_app_without_requirements_starts_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "x.pyc").write_bytes(b"")

    async def scenario() -> None:
        assert not await BytecodeWarmer(("packaging",), tmp_path / "l").maybe_start(tmp_path, {})
        assert not await BytecodeWarmer(("packaging",), tmp_path / "l").maybe_start(None, {})
        empty = tmp_path / "empty"
        empty.mkdir()
        assert not await BytecodeWarmer((), tmp_path / "l").maybe_start(empty, {})

    asyncio.run(scenario())


FLEET_APP = """import fal


class WarmupProbe(fal.App):
    requirements = ["pluggy"]

    @fal.endpoint("/")
    def hello(self) -> dict:
        return {"ok": True}
"""


@pytest.mark.process
def test_a_fleet_on_a_cold_cache_fills_it_with_its_apps_requirements(tmp_path: Path) -> None:
    """Through the fleet's own backend: the first runner's start finds the data dir's bytecode
    cache empty and starts the warmup beside it. pluggy is a requirement the runner itself never
    imports, so its bytecode in the cache is the warmup's."""
    from minifal.fleet.backends.base import RunnerLaunch
    from minifal.fleet.backends.local import LocalRunnerBackend

    app = tmp_path / "warmup_probe_app.py"
    app.write_text(FLEET_APP)
    data_dir = tmp_path / "data"
    launch = RunnerLaunch(
        app_reference=str(app),
        data_dir=data_dir,
        run_id="run-1",
        run_dir=data_dir / "runs" / "run-1",
        public_url="http://127.0.0.1:1/",
        use_gpus=False,
        echo_output=False,
        extra_env={"MINIFAL_BYTECODE_CACHE": "on"},
        requirements=("pluggy",),
    )
    cache = data_dir / "pycache"

    async def scenario() -> None:
        backend = LocalRunnerBackend(launch)
        runner = await backend.start("runner-0", [])
        try:
            deadline = time.monotonic() + 60
            while not any(cache.rglob("pluggy/__init__.*.pyc")):
                assert time.monotonic() < deadline, "no pluggy bytecode in the cache"
                await asyncio.sleep(0.1)
            assert await runner.wait_ready(60.0)
        finally:
            runner.terminate()
            await asyncio.wait_for(runner.wait_exit(), 30)
            await asyncio.wait_for(backend.close(), 30)

    asyncio.run(scenario())
    assert any(cache.rglob("pluggy/_hooks.*.pyc"))


@pytest.mark.unit
def test_the_gateway_gives_its_runners_backend_the_apps_requirements(tmp_path: Path) -> None:
    from in_process import manifest_of

    import minifal as fal
    from minifal.fleet.gateway import Gateway, GatewayOptions
    from minifal.fleet.scaler import ScalingSettings

    class Required(fal.App):
        requirements = ["pluggy", "packaging>=23"]

    gateway = Gateway(
        manifest_of(Required),
        GatewayOptions(
            app_reference="Required",
            data_dir=tmp_path,
            run_id="r",
            public_url="http://testserver/",
            scaling=ScalingSettings(min_concurrency=0),
            gpus=[],
            echo_output=False,
            suspend="off",
        ),
    )
    assert gateway.supervisor.backend.launch.requirements == ("pluggy", "packaging>=23")
