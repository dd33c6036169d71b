"""What the gateway needs to know about an App without serving it: settings, routes, OpenAPI.

The gateway runs ``python -m minifal.runner.app_manifest APP`` in a child process, so that it never
imports the app's heavy dependencies itself (fal apps import torch inside ``setup()``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from minifal.compat.app_environment import describe_image
from minifal.endpoints import EndpointKind, HealthCheck
from minifal.host import envs
from minifal.settings import AppSettings


class ManifestError(Exception):
    """The app file could not be inspected; the message carries the child's error output."""


@dataclass(frozen=True)
class ManifestEndpoint:
    """One route of the App, as the gateway needs to know it."""

    path: str
    kind: EndpointKind
    health_check: HealthCheck | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ManifestEndpoint:
        check = data.get("health_check")
        return cls(data["path"], data["kind"], HealthCheck(**check) if check else None)


@dataclass(frozen=True)
class AppManifest:
    app_name: str
    class_name: str
    settings: AppSettings
    endpoints: tuple[ManifestEndpoint, ...]
    openapi: dict[str, Any]
    billing_components: dict[str, Any] = field(default_factory=dict)
    """Per endpoint path, its ``BillingComponents`` declaration (kept out of the OpenAPI)."""

    def endpoint_kind(self, path: str) -> EndpointKind | None:
        return next((e.kind for e in self.endpoints if e.path == path), None)

    @property
    def health_endpoint(self) -> ManifestEndpoint | None:
        """The endpoint with fal's ``HealthCheck`` (an App has at most one)."""
        return next((e for e in self.endpoints if e.health_check is not None), None)


def build_manifest(reference: str) -> dict[str, Any]:
    from minifal.runner.app_loader import load_app_class
    from minifal.runner.asgi import build_asgi_app

    app_class = load_app_class(reference)
    api = build_asgi_app(app_class())  # routes only: setup() runs in the lifespan, not here
    settings = app_class.settings()
    # The image travels as its description: JSON-safe, and without registry passwords.
    settings_json = settings.model_dump(mode="json", exclude={"image"})
    settings_json["image"] = describe_image(settings.image)
    return {
        "app_name": app_class.resolved_app_name(),
        "class_name": app_class.__name__,
        "settings": settings_json,
        "billing_components": app_class.get_billing_components(),
        "endpoints": [
            ManifestEndpoint(spec.path, spec.kind, spec.health_check).to_json()
            for _, spec in app_class.endpoints()
        ],
        "openapi": api.openapi(),
    }


def inspect_app(reference: str, timeout: float = 180.0, source: str | None = None) -> AppManifest:
    """Import the app in a fresh interpreter and return its manifest; ``source``: a copy of
    the app file to import instead (``MINIFAL_APP_SOURCE``)."""
    env = None if source is None else {**os.environ, envs.APP_SOURCE.name: source}
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "minifal.runner.app_manifest", reference],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ManifestError(f"importing {reference} took over {timeout:.0f} s") from None
    if completed.returncode != 0:
        raise ManifestError(completed.stderr.strip() or f"exit code {completed.returncode}")
    data = json.loads(completed.stdout.strip().splitlines()[-1])
    return AppManifest(
        app_name=data["app_name"],
        class_name=data["class_name"],
        settings=AppSettings(**data["settings"]),
        endpoints=tuple(ManifestEndpoint.from_json(e) for e in data["endpoints"]),
        openapi=data["openapi"],
        billing_components=data["billing_components"],
    )


def main() -> int:
    if len(sys.argv) != 2:
        print(
            "usage: python -m minifal.runner.app_manifest path/to/app.py[::Class]", file=sys.stderr
        )
        return 2
    try:
        manifest = build_manifest(sys.argv[1])
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    # The app's import may print; the manifest is the last line.
    print("\n" + json.dumps(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
