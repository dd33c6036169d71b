"""fal's ``AppClient``: call an App's endpoints as methods, against a running minifal server.

``AppClient(MyApp, url)`` has one attribute per HTTP endpoint of ``MyApp``, named after its
method: ``client.increment({"value": 1})`` POSTs to ``url + "/increment"`` and returns the
endpoint's output model (a dict when the method names none). The URL is a runner's
(``minifal serve``), or a gateway's (``minifal run``), with or without fal's ``/<owner>/<app>``
prefix. A non-2xx answer raises ``AppClientError`` with its status, message and headers.

``AppClient.connect(MyApp)`` is fal's local test harness: it starts the App in a runner process
of its own (``minifal serve FILE::MyApp`` on a free loopback port, its output on this process's
stderr), waits until it is ready, yields the client and stops the runner when the block ends.
A key in ``$FAL_KEY`` (``ID:SECRET``) is sent as ``Authorization: Key ...``, as fal's client does.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from minifal.endpoints import EndpointSpec, endpoint_spec
from minifal.exceptions import FalServerlessException
from minifal.runner_contract import DEFAULT_HOST, READY_PATH

ENV_FAL_KEY = "FAL_KEY"
STOP_TIMEOUT_SECONDS = 30.0


@dataclass
class AppClientError(FalServerlessException):
    """An endpoint answered with an error status (or a spawned App never became ready)."""

    message: str
    status_code: int
    headers: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


def default_auth_headers() -> dict[str, str]:
    """``Authorization: Key $FAL_KEY`` when the variable is set, else nothing."""
    key = os.environ.get(ENV_FAL_KEY)
    return {"Authorization": f"Key {key}"} if key else {}


def _output_class(method: Callable[..., Any]) -> type | None:
    """The class the endpoint's return annotation names, when it is one that takes the JSON
    object's fields as keywords (a pydantic model, a dataclass)."""
    try:
        returns = typing.get_type_hints(method).get("return")
    except Exception:  # an annotation that does not resolve here: answer the plain JSON
        return None
    return returns if inspect.isclass(returns) and returns is not dict else None


class EndpointClient:
    """One endpoint of an ``AppClient``: calling it POSTs the input and returns the output."""

    def __init__(
        self,
        url: str,
        endpoint: Callable[..., Any],
        signature: EndpointSpec,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.endpoint = endpoint
        self.signature = signature
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.return_type = _output_class(endpoint)

    def __call__(self, data: Any) -> Any:
        import httpx

        url = self.url + self.signature.path
        body = data.model_dump(mode="json") if hasattr(data, "model_dump") else dict(data)
        response = httpx.post(url, json=body, timeout=self.timeout, headers=self.headers)
        if not response.is_success:
            raise AppClientError(
                f"Failed to POST {url}: {response.status_code} {response.text}",
                response.status_code,
                dict(response.headers),
            )
        output = response.json()
        if self.return_type is None or not isinstance(output, dict):
            return output
        return self.return_type(**output)


class AppClient:
    def __init__(self, cls: type, url: str, timeout: float | None = None) -> None:
        self.url = url.rstrip("/")
        self.cls = cls
        self._headers = default_auth_headers()
        owner, _, app_name = self.url.rpartition("/")
        self.application = f"{owner.rpartition('/')[2]}/{app_name}"
        """fal's ``owner/app`` id, read from the URL's last two segments."""
        for name, method in inspect.getmembers(cls, inspect.isfunction):
            spec = endpoint_spec(method)
            if spec is None or spec.kind != "http":
                continue
            client = EndpointClient(self.url, method, spec, timeout, self._headers)
            setattr(self, name, client)

    @classmethod
    @contextlib.contextmanager
    def connect(
        cls,
        app_cls: type,
        *,
        health_request_timeout: float = 30,
        startup_timeout: float = 60,
        health_check_interval: float = 0.5,
    ) -> Iterator[AppClient]:
        """Serve ``app_cls`` in a runner of its own for the block; yield a client of it."""
        info = spawn_app(app_cls)
        try:
            info.wait(
                health_request_timeout=health_request_timeout,
                startup_timeout=startup_timeout,
                health_check_interval=health_check_interval,
            )
            yield cls(app_cls, info.url)
        finally:
            info.stop()

    def health(self) -> Any:
        """``GET /health``: the App's ``health()``."""
        import httpx

        response = httpx.get(self.url + "/health", headers=self._headers)
        response.raise_for_status()
        return response.json()


class AppSpawnInfo:
    """An App served by a runner process of its own (``App.spawn()``)."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, application: str) -> None:
        self.process = process
        self.url = url
        self.application = application

    def wait(
        self,
        *,
        health_request_timeout: float = 30,
        startup_timeout: float = 60,
        health_check_interval: float = 0.5,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Until the runner is ready (its readiness probe answers 200); ``AppClientError``
        when it exits first or is not ready within ``startup_timeout`` seconds."""
        import httpx

        deadline = time.monotonic() + startup_timeout
        last_error = "no answer yet"
        with httpx.Client(headers=dict(headers or default_auth_headers())) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AppClientError(
                        f"{self.application} exited with code {self.process.returncode} "
                        "before it was ready (its output is above)",
                        500,
                    )
                try:
                    response = client.get(self.url + READY_PATH, timeout=health_request_timeout)
                except httpx.TransportError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code == 200:
                        return
                    last_error = f"HTTP {response.status_code} {response.text}"
                time.sleep(health_check_interval)  # between probes of a bounded poll
        raise AppClientError(
            f"{self.application} was not ready after {startup_timeout} s: {last_error}", 500
        )

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit within 30 s; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_SECONDS)
        return self.process.returncode


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((DEFAULT_HOST, 0))
        return sock.getsockname()[1]


def _stderr_descriptor() -> int | None:
    """This process's stderr, where the runner's output goes; None (inherited) when stderr is
    not a file (pytest's capture)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def spawn_app(app_cls: type) -> AppSpawnInfo:
    """Start ``minifal serve FILE::Class`` for ``app_cls`` on a free loopback port."""
    if "<locals>" in app_cls.__qualname__:
        raise TypeError(f"{app_cls.__qualname__} must be defined at the top level of its file")
    reference = f"{inspect.getfile(app_cls)}::{app_cls.__qualname__}"
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "minifal.cli", "serve", reference, "--port", str(port)],
        stdout=_stderr_descriptor(),
    )
    name = getattr(app_cls, "resolved_app_name", lambda: app_cls.__name__)()
    return AppSpawnInfo(process, f"http://{DEFAULT_HOST}:{port}", f"local/{name}")
