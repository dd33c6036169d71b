"""Fast tests of the compiled cache's pure parts and small file operations (no torch)."""

from __future__ import annotations

import importlib.util
import io
import sys
import threading
from pathlib import Path

import pytest

from minifal.compiled.cache.fingerprint import (
    BuildFingerprint,
    _declared_version,
    _triton_version,
    describe_mismatch,
)
from minifal.compiled.cache.layout import CacheLocation, key_parts
from minifal.compiled.cache.lease import (
    LeaseDir,
    LeaseRecord,
    LeaseState,
    LeaseWatch,
    assess_lease,
)
from minifal.compiled.cache.manifest import (
    DirScanner,
    is_cache_file,
    manifest_digest,
    new_or_changed,
)
from minifal.compiled.cache.pack_formats import ALL_FORMATS, CorruptArchive
from minifal.compiled.cache.segment_store import SegmentStore
from minifal.compiled.cache.settings import DEFAULT_LEASE_TTL_S, CacheSettings
from minifal.host.gpu import GpuInfo, parse_nvidia_smi, select_visible, short_gpu_type


def _record(**changes: object) -> LeaseRecord:
    base = dict(generation=1, token="t", runner_id="r0", host="h", pid=1, beat=0, wall_time=100.0)
    return LeaseRecord(**{**base, **changes})  # type: ignore[arg-type]


# ---------------------------------------------------------------- lease decisions


@pytest.mark.unit
def test_no_lease_is_claimable() -> None:
    verdict = assess_lease(None, 0, 100, 30, holder_gone_locally=False)
    assert verdict.state is LeaseState.ABSENT and verdict.claimable


@pytest.mark.unit
def test_fresh_lease_is_held() -> None:
    verdict = assess_lease(_record(), 5, 105, 30, holder_gone_locally=False)
    assert verdict.state is LeaseState.HELD and not verdict.claimable


@pytest.mark.unit
def test_released_lease_is_claimable() -> None:
    verdict = assess_lease(_record(released=True), 0, 100, 30, holder_gone_locally=False)
    assert verdict.state is LeaseState.RELEASED and verdict.claimable


@pytest.mark.unit
def test_lease_without_heartbeat_for_ttl_expires() -> None:
    verdict = assess_lease(_record(), 30, 130, 30, holder_gone_locally=False)
    assert verdict.state is LeaseState.EXPIRED and "no heartbeat" in verdict.reason


@pytest.mark.unit
def test_dead_local_holder_expires_at_once() -> None:
    verdict = assess_lease(_record(), 0, 100, 30, holder_gone_locally=True)
    assert verdict.state is LeaseState.EXPIRED and "exited" in verdict.reason


@pytest.mark.unit
def test_ancient_wall_clock_stamp_expires_at_first_sight() -> None:
    verdict = assess_lease(_record(wall_time=0.0), 0, 1000, 30, holder_gone_locally=False)
    assert verdict.state is LeaseState.EXPIRED


@pytest.mark.unit
def test_skewed_clock_within_ttl_does_not_expire() -> None:
    # the holder's clock is 40 s behind ours: under 2*TTL, so the observed beats decide
    verdict = assess_lease(_record(wall_time=60.0), 1, 100, 30, holder_gone_locally=False)
    assert verdict.state is LeaseState.HELD


@pytest.mark.unit
def test_watch_measures_time_unchanged_and_resets_on_beat() -> None:
    watch = LeaseWatch()
    assert watch.observe(_record(beat=0), 10.0) == 0
    assert watch.observe(_record(beat=0), 25.0) == 15
    assert watch.observe(_record(beat=1), 26.0) == 0
    assert watch.observe(_record(beat=1, token="other"), 27.0) == 0


# ---------------------------------------------------------------- lease files


@pytest.mark.unit
def test_only_one_of_many_racers_acquires_a_generation(tmp_path: Path) -> None:
    leases = LeaseDir(tmp_path / "leases")
    winners: list[LeaseRecord] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        if (record := leases.try_acquire(1)) is not None:
            winners.append(record)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert leases.current() == winners[0]


@pytest.mark.unit
def test_beat_release_and_takeover(tmp_path: Path) -> None:
    leases = LeaseDir(tmp_path)
    first = leases.try_acquire(1)
    assert first is not None
    beaten = leases.beat(first)
    assert beaten is not None and leases.current().beat == 1  # type: ignore[union-attr]
    second = leases.try_acquire(2)  # a waiter judged generation 1 expired
    assert second is not None
    assert leases.beat(beaten) is None  # the old holder learns it lost the claim
    leases.release(second)
    current = leases.current()
    assert current is not None and current.released and current.generation == 2
    assert leases.generations() == [2]


# ---------------------------------------------------------------- keys, manifests, fingerprints


@pytest.mark.unit
def test_key_parts_keep_slashes_and_drop_escapes() -> None:
    assert key_parts("sd-turbo/v1") == ["sd-turbo", "v1"]
    assert key_parts("/../a//b c") == ["_..", "a", "b_c"]
    assert key_parts("") == ["_"]


@pytest.mark.unit
def test_location_layout(tmp_path: Path) -> None:
    location = CacheLocation(tmp_path, "H100", "sd-turbo/v1", "torch-2.11.0-abc")
    assert location.segments_dir == (
        tmp_path / "inductor-caches/H100/sd-turbo/v1/torch-2.11.0-abc/segments"
    )


@pytest.mark.unit
def test_manifest_digest_covers_contents_not_only_names() -> None:
    assert manifest_digest({"a": "1"}) != manifest_digest({"a": "2"})
    assert manifest_digest({"a": "1", "b": "2"}) == manifest_digest({"b": "2", "a": "1"})


@pytest.mark.unit
def test_new_or_changed() -> None:
    assert new_or_changed({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "x"}) == {
        "b": "2",
        "c": "3",
    }


@pytest.mark.unit
def test_lock_and_temp_files_are_not_shared() -> None:
    assert is_cache_file("inductor/fxgraph/ab/fab/entry")
    assert not is_cache_file("inductor/locks/c5m.lock")
    assert not is_cache_file("triton/x/tmp.pid_1_2/kernel.cubin")
    assert not is_cache_file("inductor/ab/.tmp123")


@pytest.mark.unit
def test_scanner_hashes_contents_and_sees_rewrites(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/k.py").write_text("one")
    scanner = DirScanner(tmp_path)
    first = scanner.scan()
    (tmp_path / "d/k.py").write_text("two!")
    assert scanner.scan() != first


def _fingerprint(**changes: object) -> BuildFingerprint:
    base = dict(
        python="CPython 3.11.7",
        torch="2.11.0",
        triton="3.6.0",
        cuda="13.0",
        hip=None,
        device="NVIDIA A100-SXM4-40GB",
        device_capability="8.0",
        cpu_capability="AVX512",
        machine="x86_64",
    )
    return BuildFingerprint(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.unit
def test_fingerprint_separates_gpu_memory_variants_and_versions() -> None:
    a100_40 = _fingerprint()
    assert a100_40.dir_name != _fingerprint(device="NVIDIA A100-SXM4-80GB").dir_name
    assert a100_40.dir_name != _fingerprint(torch="2.13.0").dir_name
    assert a100_40.dir_name != _fingerprint(cpu_capability="AVX2").dir_name
    assert BuildFingerprint.from_dict(a100_40.as_dict()) == a100_40


@pytest.mark.unit
def test_mismatch_names_each_differing_field() -> None:
    differences = describe_mismatch(
        _fingerprint(torch="2.13.0").as_dict(), _fingerprint().as_dict()
    )
    assert differences == ["torch: 2.11.0 (artifact) != 2.13.0 (here)"]


@pytest.mark.unit
def test_a_literal_version_is_read_from_the_package_source(tmp_path: Path) -> None:
    init = tmp_path / "__init__.py"
    init.write_text('"""doc"""\n__version__ = \'3.6.0\'  # release\nimport os\n')
    assert _declared_version(str(init)) == "3.6.0"
    init.write_text("__version__ = '3.6.0'\nif True:\n    __version__ = '3.6.1'\n")
    assert _declared_version(str(init)) is None  # two assignments: the import says
    init.write_text("from ._version import __version__\n")
    assert _declared_version(str(init)) is None
    assert _declared_version(str(tmp_path / "module.py")) is None
    assert _declared_version(None) is None


@pytest.mark.unit
def test_the_fingerprint_names_triton_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "triton" in sys.modules or importlib.util.find_spec("triton") is not None:
        pytest.skip("a real Triton is installed here")
    (tmp_path / "triton").mkdir()
    (tmp_path / "triton" / "__init__.py").write_text("__version__ = '9.8.7'\nraise ImportError\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _triton_version() == "9.8.7"
    assert "triton" not in sys.modules


@pytest.mark.unit
def test_settings_from_env() -> None:
    settings = CacheSettings.from_env(
        {"MINIFAL_CACHE_LEASE_TTL": "2.5", "MINIFAL_STARTUP_DEADLINE": "1234"}, now=1000
    )
    assert (settings.lease_ttl_s, settings.deadline) == (2.5, 1234)
    defaults = CacheSettings.from_env({"MINIFAL_CACHE_LEASE_TTL": "nope"}, now=1000)
    assert defaults.lease_ttl_s == DEFAULT_LEASE_TTL_S and defaults.deadline == 1600


# ---------------------------------------------------------------- pack formats and the store


def _tree(root: Path) -> dict[str, str]:
    files = {"inductor/fxgraph/a/entry": "graph", "triton/k/kernel.cubin": "\x00bin"}
    for relpath, content in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(content)
    return DirScanner(root).scan()


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(ALL_FORMATS))
def test_formats_round_trip(tmp_path: Path, name: str) -> None:
    manifest = _tree(tmp_path / "src")
    buffer = io.BytesIO()
    ALL_FORMATS[name].pack(tmp_path / "src", manifest, buffer)
    assert ALL_FORMATS[name].unpack(buffer.getvalue(), tmp_path / "dst") == manifest
    assert DirScanner(tmp_path / "dst").scan() == manifest


@pytest.mark.unit
def test_store_publishes_content_addressed_segments_and_merges(tmp_path: Path) -> None:
    manifest = _tree(tmp_path / "src")
    store = SegmentStore(tmp_path / "segments")
    one = store.publish(
        tmp_path / "src", {"inductor/fxgraph/a/entry": manifest["inductor/fxgraph/a/entry"]}
    )
    two = store.publish(
        tmp_path / "src", {"triton/k/kernel.cubin": manifest["triton/k/kernel.cubin"]}
    )
    assert sorted(store.names()) == sorted([one.name, two.name])
    for name in store.names():
        store.load(name, tmp_path / "dst")
    assert DirScanner(tmp_path / "dst").scan() == manifest
    assert store.read_manifest(two.name) == two.manifest


@pytest.mark.unit
def test_store_detects_truncation_and_quarantines(tmp_path: Path) -> None:
    manifest = _tree(tmp_path / "src")
    store = SegmentStore(tmp_path / "segments")
    segment = store.publish(tmp_path / "src", manifest)
    path = store.segments_dir / segment.name
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptArchive):
        store.load(segment.name, tmp_path / "dst")
    store.quarantine(segment.name)
    assert store.names() == []


# ---------------------------------------------------------------- GPU names


@pytest.mark.unit
def test_short_gpu_type_matches_fal_one_word() -> None:
    assert short_gpu_type("NVIDIA H100 80GB HBM3") == "H100"
    assert short_gpu_type("NVIDIA A100-SXM4-80GB") == "A100"
    assert short_gpu_type("NVIDIA GeForce RTX 4090") == "RTX4090"
    assert short_gpu_type("Tesla T4") == "T4"


@pytest.mark.unit
def test_select_visible_respects_cuda_visible_devices() -> None:
    gpus = parse_nvidia_smi(
        "0, GPU-aaa, NVIDIA A100-SXM4-40GB\n1, GPU-bbb, NVIDIA A100-SXM4-80GB\n"
    )
    assert gpus[1] == GpuInfo("1", "GPU-bbb", "NVIDIA A100-SXM4-80GB")
    assert select_visible(gpus, None) == gpus[0]
    assert select_visible(gpus, "1,0") == gpus[1]
    assert select_visible(gpus, "GPU-bb") == gpus[1]
    assert select_visible(gpus, "") is None
    assert select_visible(gpus, "-1") is None


@pytest.mark.process
def test_importing_the_toolkit_modules_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, minifal.compiled.cache, minifal.host.gpu; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.unit
def test_a_wait_for_another_runners_compile_asks_at_each_poll_whether_to_go_on(
    tmp_path: Path,
) -> None:
    """``keep_waiting`` (serving while compiling: the runner shuts down) ends the wait as a miss
    without the lease; its first call tells the waiter that the wait began."""
    import time

    from minifal.compiled.cache import api
    from minifal.compiled.cache.manifest import DirScanner

    location = CacheLocation(tmp_path, "CPU", "tests/wait", "torch-x")
    assert LeaseDir(location.leases_dir).try_acquire(1) is not None  # held: this process lives
    private = tmp_path / "private"
    session = api._Session(
        "tests/wait",
        private,
        DirScanner(private),
        loaded_at=time.time(),
        location=location,
        store=SegmentStore(location.segments_dir),
    )
    asked: list[int] = []

    def keep_waiting() -> bool:
        asked.append(1)
        return len(asked) < 2

    settings = CacheSettings(lease_ttl_s=30.0, deadline=time.time() + 60, local_root=None)
    api._claim_or_wait(session, settings, keep_waiting)
    assert len(asked) == 2
    assert session.heartbeat is None  # no lease taken
