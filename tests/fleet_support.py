"""Helpers that run real ``minifal run`` fleets (a gateway and its runner processes) in tests.

A fleet is a subprocess started as a user starts it; readiness is ``GET /health`` showing every
runner ready (bounded polling, never a fixed sleep); it is stopped with SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import fal_client
import fal_client.client as fal_client_module
import httpx
from conftest import clean_env, free_port, minifal_command

APPS_FLEET_DIR = Path(__file__).parent / "apps_fleet"
FLEET_READY_TIMEOUT_S = 90.0
FLEET_STOP_TIMEOUT_S = 45.0
POLL_INTERVAL_S = 0.05


class FleetError(AssertionError):
    """The fleet did not do in time what the test waited for; the message has its log."""


@dataclass
class Fleet:
    """One running ``minifal run`` subprocess."""

    process: subprocess.Popen[bytes]
    base_url: str
    port: int
    workers: int | None
    """``--workers N``, or None: the fleet scales by the App's own settings."""
    data_dir: Path
    log_path: Path
    verify: ssl.SSLContext | bool = True
    auth_key: str | None = None
    _log_file: IO[bytes] | None = field(repr=False, default=None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    @property
    def ws_base_url(self) -> str:
        return "ws://" + self.base_url.removeprefix("http://")

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.auth_key}"} if self.auth_key else {}

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(
            base_url=self.base_url, verify=self.verify, headers=self.auth_headers, **kwargs
        )

    def health(self) -> dict[str, Any]:
        with self.client() as client:
            return client.get("/health").json()

    def runners(self) -> list[dict[str, Any]]:
        with self.client() as client:
            response = client.get("/runners")
            response.raise_for_status()
            return response.json()["runners"]

    def stop(self, timeout: float = FLEET_STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; SIGKILL (and fail) only if it does not exit in time."""
        killed = False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                self.process.kill()
                self.process.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if killed:
            raise FleetError(f"minifal run did not exit within {timeout} s of SIGTERM")
        return self.process.returncode


def poll_until(
    condition: Callable[[], Any], timeout: float, what: str, fleet: Fleet | None = None
) -> Any:
    """Call ``condition`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            log = f"\n--- fleet log ---\n{fleet.log()[-6000:]}" if fleet is not None else ""
            raise FleetError(f"timed out after {timeout} s waiting for {what}{log}")
        time.sleep(POLL_INTERVAL_S)  # back-off between probes of a bounded poll


def _wait_until_ready(fleet: Fleet, timeout: float, runners: int) -> None:
    """Until ``/health`` answers and shows ``runners`` ready runners."""
    with httpx.Client(timeout=2.0, verify=fleet.verify) as client:

        def ready() -> bool:
            if fleet.process.poll() is not None:
                raise FleetError(
                    f"minifal run exited with {fleet.process.returncode} before it was ready:\n"
                    + fleet.log()
                )
            try:
                health = client.get(fleet.url("/health")).json()
            except (httpx.TransportError, ValueError):
                return False
            return health.get("runners_ready", -1) >= runners

        poll_until(ready, timeout, f"the gateway with {runners} ready runner(s)", fleet)


AUTH_KEY_LINE = re.compile(r"requests need 'Authorization: Key (\S+)'")


def logged_auth_key(fleet: Fleet) -> str:
    """The key a fleet of an ``app_auth="private"`` app made up and logged."""
    match = AUTH_KEY_LINE.search(fleet.log())
    if match is None:
        raise FleetError("no generated auth key in the log:\n" + fleet.log())
    return match.group(1)


@contextmanager
def start_fleet(
    app: str | Path | Sequence[str | Path],
    work_dir: Path,
    *,
    workers: int | None = 2,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    auth_key: str | None = None,
    ready_timeout: float = FLEET_READY_TIMEOUT_S,
    wait_for_runners: bool = True,
    port: int | None = None,
    data_dir: Path | None = None,
    log_name: str = "fleet.log",
) -> Iterator[Fleet]:
    """``minifal run APP --workers N --port P --data-dir work_dir/data``, until the block ends.

    ``app``: one app, or several (``minifal run A B ...``: one gateway, an app at each path).

    ``workers=None`` passes no ``--workers`` (the App's scaling settings decide); ``env`` is
    added to the fleet's environment. Ready means every runner ready, or with
    ``wait_for_runners=False`` (implied by ``workers=None``) the gateway answering. ``port``,
    ``data_dir``: those of an earlier fleet, to restart it (default: a free port, work_dir/data).
    """
    port = port or free_port()
    data_dir = data_dir or work_dir / "data"
    log_path = work_dir / log_name
    log_file = log_path.open("wb")
    apps = [str(app)] if isinstance(app, str | Path) else [str(each) for each in app]
    arguments = ["run", *apps, "--port", str(port), "--data-dir", str(data_dir)]
    if workers is not None:
        arguments += ["--workers", str(workers)]
    arguments += extra_args
    process = subprocess.Popen(
        minifal_command(*arguments),
        cwd=work_dir,
        env=clean_env() | (env or {}),
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    scheme = "https" if "--tls-cert" in extra_args else "http"
    fleet = Fleet(
        process,
        f"{scheme}://127.0.0.1:{port}/",
        port,
        workers,
        data_dir,
        log_path,
        verify,
        auth_key,
        log_file,
    )
    try:
        runners = workers if wait_for_runners and workers is not None else 0
        _wait_until_ready(fleet, ready_timeout, runners)
        yield fleet
    finally:
        fleet.stop()


def pid_is_gone(pid: int) -> bool:
    """No such process, or only a zombie of it (it exited; its parent did not reap it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    state = next((line for line in status.splitlines() if line.startswith("State:")), "")
    return state.split()[1:2] == ["Z"]


@contextmanager
def fal_client_of(fleet: Fleet) -> Iterator[fal_client.SyncClient]:
    """fal's client, unchanged but for where it sends: fal's hosts become the gateway's
    address (plain HTTP on loopback; the TLS variant is in test_fleet.py)."""
    names = ("RUN_URL_FORMAT", "QUEUE_URL_FORMAT", "REALTIME_URL_FORMAT")
    saved = [getattr(fal_client_module, name) for name in names]
    host = f"127.0.0.1:{fleet.port}/"
    urls = (f"http://{host}", f"http://{host}queue/", f"ws://{host}")
    for name, url in zip(names, urls, strict=True):
        setattr(fal_client_module, name, url)
    try:
        yield fal_client.SyncClient(key="local:key")
    finally:
        for name, value in zip(names, saved, strict=True):
            setattr(fal_client_module, name, value)
