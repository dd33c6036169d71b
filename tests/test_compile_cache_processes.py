"""The compiled cache with real torch.compile in real processes (CPU, a small MLP).

Each child (tests/compile_cache_support/child.py) reports torch's own FX graph cache counters, so
"one compiled, the others hit" is what torch did, not what our logs claim.

The children compile scalar C++ kernels (``TORCHINDUCTOR_VEC_ISA_OK=0``, set in conftest.py for
the whole suite: no vector-ISA probes, which were half of a cold child's seconds here) and fork
from one server that has imported torch (``tests/fork_support.py``), but for the two that need a
mount namespace of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from child_path import repo_pythonpath
from fork_support import ForkServer

pytest.importorskip("torch")

pytestmark = pytest.mark.compile

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).parent / "compile_cache_support" / "child.py"
FORK_SERVER = CHILD.with_name("fork_server.py")
KEY = "tests/mlp"
TIMEOUT_S = 240


def child_env(data_dir: Path, events: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "MINIFAL_DATA_DIR": str(data_dir),
        "MINIFAL_EVENTS_FILE": str(events),
        "PYTHONPATH": repo_pythonpath(),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class Child:
    """One runner-like process, forked from the module's fork server; ``result()`` waits for its
    RESULT line. ``args`` may hold more ``KEY SHAPES`` pairs after the first (KEY, ``shapes``),
    and the child's options."""

    server: ForkServer  # set by the module's ``fork_server`` fixture
    logs: Path  # where children's output files go (idem)

    def __init__(self, data_dir: Path, shapes: str, *args: str, **env: str) -> None:
        stamp = time.monotonic_ns()
        self.events = data_dir.parent / f"events-{stamp}.jsonl"
        self.process = self.server.fork(
            [str(CHILD), KEY, shapes, *args],
            child_env(data_dir, self.events, **env),
            self.logs / f"child-{stamp}.out",
            self.logs / f"child-{stamp}.err",
        )
        self.stderr = ""

    def wait_in_body(self) -> None:
        """Block until the child is inside the context (its load/claim is done)."""
        deadline = time.monotonic() + TIMEOUT_S
        while "IN-BODY" not in self.process.stdout():
            if not self.process.running() or time.monotonic() > deadline:
                raise AssertionError(f"child never entered the body: {self.process.stderr()}")
            time.sleep(0.05)  # the back-off of a bounded poll

    def result(self) -> dict[str, Any]:
        self.process.wait(TIMEOUT_S)
        self.stderr = self.process.stderr()
        for line in self.process.stdout().splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
        raise AssertionError(f"no result (exit {self.process.returncode}):\n{self.stderr}")


@pytest.fixture(scope="module", autouse=True)
def fork_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    """Children fork from one process that has imported torch, Dynamo and Inductor (each would
    spend about half its CPU seconds importing them); each compiles in its own process."""
    server = ForkServer(FORK_SERVER, {**os.environ, "PYTHONPATH": repo_pythonpath()})
    Child.server, Child.logs = server, tmp_path_factory.mktemp("children")
    try:
        yield server
    finally:
        server.close()


def phases(result: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e["details"] for e in result["events"] if e["phase"] == f"compile_cache.{name}"]


def version_dirs(data_dir: Path, key: str = KEY) -> list[Path]:
    return sorted((data_dir / "inductor-caches" / "CPU").glob(f"{key}/torch-*"))


def segments(data_dir: Path, key: str = KEY) -> list[Path]:
    return sorted((data_dir / "inductor-caches" / "CPU").glob(f"{key}/torch-*/segments/*.tar"))


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose store holds the MLP compiled for batch 8 (one cold compile, shared)."""
    data = tmp_path_factory.mktemp("published") / "data"
    result = Child(data, "8").result()
    assert result["fx_miss"] == 1
    assert len(segments(data)) == 1
    return data


def copy_of(published: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(published, data)
    return data


def test_of_many_runners_starting_together_exactly_one_compiles(tmp_path: Path) -> None:
    data = tmp_path / "data"
    children = [Child(data, "8") for _ in range(3)]
    results = [child.result() for child in children]
    misses = sorted(r["fx_miss"] for r in results)
    hits = sorted(r["fx_hit"] for r in results)
    assert misses == [0, 0, 1], results
    assert hits == [0, 1, 1]
    waited = [r for r in results if any(w.get("hit") for w in phases(r, "wait"))]
    assert len(waited) + sum(1 for r in results if phases(r, "load")[0]["hit"]) == 2
    assert len(segments(data)) == 1
    syncs = [phases(r, "sync")[0]["reason"] for r in results]
    assert sorted(syncs) == ["published", "unchanged", "unchanged"]


def test_holder_killed_mid_compile_is_taken_over(tmp_path: Path) -> None:
    data = tmp_path / "data"
    holder = Child(data, "8", "--sleep-in-body", "120")
    holder.wait_in_body()
    waiter = Child(data, "8")
    time.sleep(2)  # the waiter is now polling the held lease
    holder.process.kill()
    result = waiter.result()
    assert result["fx_miss"] == 1 and result["outcome"] == "ok"
    (wait,) = phases(result, "wait")
    assert wait["role"] == "compile" and "exited" in wait["reason"], wait
    assert len(segments(data)) == 1


def test_hung_holder_loses_its_lease_after_the_ttl(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ttl = {"MINIFAL_CACHE_LEASE_TTL": "2"}
    holder = Child(data, "8", "--sleep-in-body", "120", **ttl)
    holder.wait_in_body()
    os.kill(holder.process.pid, signal.SIGSTOP)  # alive but silent: only the TTL can tell
    try:
        started = time.monotonic()
        result = Child(data, "8", **ttl).result()
    finally:
        os.kill(holder.process.pid, signal.SIGKILL)
        os.kill(holder.process.pid, signal.SIGCONT)
        holder.process.wait()
    assert result["fx_miss"] == 1
    (wait,) = phases(result, "wait")
    assert wait["role"] == "compile" and "heartbeat" in wait["reason"], wait
    assert time.monotonic() - started < 120


def test_version_mismatch_is_a_logged_miss_and_both_artifacts_stay(
    published: Path, tmp_path: Path
) -> None:
    data = copy_of(published, tmp_path)
    other = Child(data, "8", "--torch-version", "2.99.0").result()
    assert other["fx_miss"] == 1
    (load,) = phases(other, "load")
    assert not load["hit"] and "version mismatch" in load["reason"]
    assert "torch: " in load["reason"] and "2.99.0 (here)" in load["reason"]
    assert len(version_dirs(data)) == 2 and len(segments(data)) == 2
    again = Child(data, "8").result()  # the original version still loads its own kernels
    assert (again["fx_hit"], again["fx_miss"]) == (1, 0)


def test_corrupt_artifact_is_a_logged_miss_and_gets_repaired(
    published: Path, tmp_path: Path
) -> None:
    data = copy_of(published, tmp_path)
    (segment,) = segments(data)
    segment.write_bytes(segment.read_bytes()[: segment.stat().st_size // 2])
    repaired = Child(data, "8").result()
    assert repaired["fx_miss"] == 1 and repaired["outcome"] == "ok"
    (load,) = phases(repaired, "load")
    assert not load["hit"] and load["reason"].startswith("corrupt artifact")
    assert [p.name for p in segments(data)] != [segment.name]
    assert list(segment.parent.glob("*.corrupt-*"))  # kept aside for inspection
    after = Child(data, "8").result()
    assert (after["fx_hit"], after["fx_miss"]) == (1, 0)


def test_unusable_data_dir_warns_and_the_app_still_starts(tmp_path: Path) -> None:
    # Root ignores chmod; a path below a regular file fails every write (ENOTDIR), for root too.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    child = Child(blocker / "data", "8")
    result = child.result()
    assert result["outcome"] == "ok" and result["fx_miss"] == 1
    assert child.process.returncode == 0
    assert "load failed" in child.stderr or "sync failed" in child.stderr


def _can_mount_read_only(path: Path) -> bool:
    probe = (
        f"mount --bind {path} {path} && mount -o remount,ro,bind {path} {path} && "
        f"! touch {path}/probe 2>/dev/null"
    )
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "sh", "-c", probe], capture_output=True).returncode == 0


def test_read_only_data_dir_still_loads(published: Path, tmp_path: Path) -> None:
    """A real read-only mount (private mount namespace), so writes fail for root as well."""
    data = copy_of(published, tmp_path)
    if not _can_mount_read_only(data):
        pytest.skip("cannot make a private read-only bind mount here (needs CAP_SYS_ADMIN)")
    events = tmp_path / "ro-events.jsonl"
    script = (
        f"mount --bind {data} {data} && mount -o remount,ro,bind {data} {data} && "
        f"exec {sys.executable} {CHILD} {KEY} 8,16"
    )
    run = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        env=child_env(data, events),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(next(ln for ln in run.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    # batch 8 came from the read-only store; batch 16 was compiled and could not be published
    assert (result["fx_hit"], result["fx_miss"]) == (1, 1)
    assert "sync failed" in run.stderr
    assert len(segments(data)) == 1


def test_two_runners_warming_different_shapes_publish_both(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, second = Child(data, "8"), Child(data, "16")
    results = [first.result(), second.result()]
    assert sum(r["fx_miss"] for r in results) == 2
    both = Child(data, "8,16").result()
    assert (both["fx_hit"], both["fx_miss"]) == (2, 0)


def test_body_exception_propagates_and_releases_the_lease(tmp_path: Path) -> None:
    data = tmp_path / "data"
    failing = Child(data, "8", "--raise-in-body").result()
    assert failing["outcome"] == "raised BodyError: boom"
    (compile_phase,) = phases(failing, "compile")
    assert compile_phase["fxgraph_cache_miss"] == 1
    lease_files = list((data / "inductor-caches" / "CPU").glob(f"{KEY}/*/leases/lease-*.json"))
    assert [json.loads(p.read_text())["released"] for p in lease_files] == [True]
    # with the default 30 s TTL a lease left held would make this runner wait; it loads at once
    started = time.monotonic()
    after = Child(data, "8").result()
    assert (after["fx_hit"], after["fx_miss"]) == (1, 0)
    assert phases(after, "wait") == [] and time.monotonic() - started < 25


# -- faults of the shared disk and of other hosts (issue 12): the app starts every time -----------


SKEWED_KEYS = {0.0: KEY, 3600.0: f"{KEY}-ahead", -3600.0: f"{KEY}-behind"}
OWN_SHAPE = {0.0: "8", 3600.0: "16", -3600.0: "24"}  # a graph the child has not compiled yet


def left_leases(published: Path, data: Path) -> None:
    """Make each of SKEWED_KEYS's stores empty, with a lease file saying that another runner,
    on a host whose clock is SKEW seconds off ours, is compiling it."""
    shutil.copytree(published, data)
    (version_dir,) = version_dirs(data)
    shutil.rmtree(version_dir)  # the store of KEY, as if nobody had published yet
    now = time.time()
    for skew_s, key in SKEWED_KEYS.items():
        leases = data / "inductor-caches" / "CPU" / key / version_dir.name / "leases"
        leases.mkdir(parents=True)
        body = {
            "token": "left-behind",
            "runner_id": "runner-7",
            "host": "a-host-that-no-longer-exists",
            "pid": 4242,
            "beat": 3,
            "wall_time": now + skew_s,
            "released": False,
        }
        (leases / "lease-0000000009.json").write_text(json.dumps(body))


@pytest.fixture(scope="module")
def taken_over(
    published: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """One runner-like process that meets the three left leases one after the other."""
    data = tmp_path_factory.mktemp("left-leases") / "data"
    left_leases(published, data)
    first, *others = SKEWED_KEYS  # a Child's first key is KEY
    more = [arg for skew_s in others for arg in (SKEWED_KEYS[skew_s], OWN_SHAPE[skew_s])]
    result = Child(data, OWN_SHAPE[first], *more, MINIFAL_CACHE_LEASE_TTL="2").result()
    return data, result


@pytest.mark.parametrize("skew_s", list(SKEWED_KEYS))
def test_a_lease_left_by_a_host_that_is_gone_is_taken_over(
    taken_over: tuple[Path, dict[str, Any]], skew_s: float
) -> None:
    """The holder's host no longer exists (its pid means nothing here) and its clock may be an
    hour ahead of or behind ours: only its silent heartbeat can tell, after the TTL."""
    data, result = taken_over
    key = SKEWED_KEYS[skew_s]
    assert result["outcome"] == "ok", result
    (wait,) = [w for w in phases(result, "wait") if w["key"] == key]
    assert wait["role"] == "compile", wait
    (compiled,) = [c for c in phases(result, "compile") if c["key"] == key]
    assert compiled["fxgraph_cache_miss"] == 1, compiled
    assert len(segments(data, key)) == 1


def _can_mount_tmpfs(path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = f"mount -t tmpfs -o size=64k tmpfs {path}"
    return subprocess.run(["unshare", "-m", "sh", "-c", probe], capture_output=True).returncode == 0


def test_a_full_disk_fails_the_publish_not_the_app(tmp_path: Path) -> None:
    """The data dir is a 64 KiB tmpfs: the compiled artifact does not fit (ENOSPC)."""
    data = tmp_path / "data"
    data.mkdir()
    if not _can_mount_tmpfs(data):
        pytest.skip("cannot mount a private tmpfs here (needs CAP_SYS_ADMIN)")
    events = tmp_path / "full-events.jsonl"
    script = f"mount -t tmpfs -o size=64k tmpfs {data} && exec {sys.executable} {CHILD} {KEY} 8"
    run = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        env=child_env(data, events),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(next(ln for ln in run.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert result["outcome"] == "ok" and result["fx_miss"] == 1
    assert "sync failed" in run.stderr, run.stderr[-2000:]


def test_a_publish_cut_short_leaves_no_segment_that_loads(published: Path, tmp_path: Path) -> None:
    """A holder killed mid-publish leaves a partial temp file next to the segments (publishing
    is temp + rename): it is not a segment, and the next runner loads what is there."""
    data = copy_of(published, tmp_path)
    (segment,) = segments(data)
    partial = segment.parent / ".tmp-5f2c0d9e6b7a4c1e8d3f2a1b0c9d8e7f"
    partial.write_bytes(segment.read_bytes()[: segment.stat().st_size // 3])
    result = Child(data, "8").result()
    assert (result["fx_hit"], result["fx_miss"]) == (1, 0), result
    assert result["outcome"] == "ok"
