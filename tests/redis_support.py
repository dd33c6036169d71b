"""A real ``redis-server`` on a free loopback port, for the tests of Redis-backed code."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import free_port

REDIS_START_TIMEOUT_S = 10.0


@contextmanager
def redis_server(work_dir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``redis://127.0.0.1:PORT/0`` of a fresh server (no persistence) and its process;
    skips when redis-server or redis-py is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install redis)")
    port = free_port()
    arguments = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(work_dir)]
    server = subprocess.Popen(
        [binary, *arguments, "--save", "", "--appendonly", "no"],
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
                time.sleep(0.05)  # back-off of a bounded readiness poll
        client.close()
        yield url, server
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)
