"""``KVStore``: the SQLite store in the data dir (across real processes) and the Redis store
(against a real ``redis-server`` on a loopback port, when the binary and redis-py exist)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port

from minifal.host import envs
from minifal.toolkit import KVStore, KVStoreException
from minifal.toolkit.kv import MAX_TTL_S, SQLITE_FILE_NAME
from minifal.toolkit.kv.sqlite_store import SQLiteKVBackend

REDIS_START_TIMEOUT_S = 10.0
ENV_REDIS_URL = envs.KV_REDIS_URL.name


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "data"
    monkeypatch.setenv("MINIFAL_DATA_DIR", str(directory))
    monkeypatch.delenv(ENV_REDIS_URL, raising=False)
    return directory


@pytest.mark.unit
def test_set_get_delete_in_the_data_dir(data_dir: Path) -> None:
    kv = KVStore("myapp")

    assert kv.get("missing") is None
    kv.set("config", json.dumps({"enabled": True}))
    assert json.loads(kv.get("config")) == {"enabled": True}
    kv.set("config", "replaced", ttl=60)
    assert kv.get("config") == "replaced"
    kv.delete("config")
    kv.delete("config")  # idempotent, as on fal
    assert kv.get("config") is None
    assert (data_dir / SQLITE_FILE_NAME).is_file()


@pytest.mark.unit
def test_namespaces_are_separate() -> None:
    KVStore("a").set("k", "from a")
    KVStore("b").set("k", "from b")

    assert KVStore("a").get("k") == "from a"
    assert KVStore("b").get("k") == "from b"


@pytest.mark.unit
@pytest.mark.parametrize("ttl", [0, 59, MAX_TTL_S + 1, 1.5, True])
def test_ttl_outside_fals_bounds_is_refused(ttl: object) -> None:
    with pytest.raises(KVStoreException, match="ttl"):
        KVStore("app").set("k", "v", ttl=ttl)  # type: ignore[arg-type]


@pytest.mark.unit
def test_bad_keys_and_values_are_refused() -> None:
    kv = KVStore("app")
    with pytest.raises(TypeError, match=r"json\.dumps"):
        kv.set("k", {"not": "a string"})  # type: ignore[arg-type]
    with pytest.raises(KVStoreException, match="non-empty"):
        kv.get("")
    with pytest.raises(KVStoreException, match="longer than"):
        kv.get("k" * 2000)
    with pytest.raises(KVStoreException, match="db_name"):
        KVStore("")


@pytest.mark.unit
def test_entries_expire_after_their_ttl(data_dir: Path) -> None:
    now = [1000.0]
    kv = KVStore("app", backend=SQLiteKVBackend(data_dir / "kv.sqlite3", clock=lambda: now[0]))
    kv.set("short", "v", ttl=60)
    kv.set("default", "v")

    now[0] += 59
    assert kv.get("short") == "v"
    now[0] += 2
    assert kv.get("short") is None
    assert kv.get("default") == "v"  # 30 days by default
    now[0] += MAX_TTL_S
    assert kv.get("default") is None


@pytest.mark.unit
def test_an_unusable_store_raises_kvstore_exception(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    kv = KVStore("app", backend=SQLiteKVBackend(blocker / "kv.sqlite3"))
    with pytest.raises(KVStoreException, match="failed"):
        kv.set("k", "v")


WRITER = textwrap.dedent(
    """
    import sys
    from minifal.toolkit import KVStore

    name, count = sys.argv[1], int(sys.argv[2])
    kv = KVStore("shared")
    for i in range(count):
        kv.set(f"{name}-{i}", str(i))
        kv.set("last-writer", name)
        assert kv.get(f"{name}-{i}") == str(i)
    print("done", name)
    """
)


@pytest.mark.process
def test_two_processes_share_the_sqlite_store(data_dir: Path) -> None:
    count = 100
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("one", "two")
    ]
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        assert out.startswith("done")

    kv = KVStore("shared")
    for name in ("one", "two"):
        assert [kv.get(f"{name}-{i}") for i in range(count)] == [str(i) for i in range(count)]
    assert kv.get("last-writer") in {"one", "two"}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install redis)")
    port = free_port()
    work_dir = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.process
def test_redis_store_when_configured(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    monkeypatch.setenv(ENV_REDIS_URL, redis_url)
    kv = KVStore("myapp")
    kv.set("k", "v", ttl=120)

    assert kv.get("k") == "v"
    assert KVStore("other").get("k") is None
    raw = redis.Redis.from_url(redis_url)
    assert 0 < raw.ttl("fal-kv:myapp:k") <= 120
    kv.delete("k")
    assert kv.get("k") is None
    raw.close()


@pytest.mark.unit
def test_unreachable_redis_is_a_kvstore_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("redis", reason="redis-py is not installed (pip install redis)")
    monkeypatch.setenv(ENV_REDIS_URL, f"redis://127.0.0.1:{free_port()}/0")

    with pytest.raises(KVStoreException, match=r"Redis GET on redis://127\.0\.0\.1"):
        KVStore("app").get("k")
