"""Where an App runs here, next to where it asked to run (its container image).

minifal runs every App in the current Python environment; an App's ``ContainerImage`` is recorded,
not built. The runner's log, the manifest, ``/runners`` and ``minifal runners`` all say so from
the summary built here; ``minifal dockerfile`` builds the image on your own machines.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

from minifal.compat.dockerfile_text import final_base_image
from minifal.container import ContainerImage

RUNS_IN = "current environment"


def describe_image(image: object) -> dict[str, Any] | None:
    """A JSON-safe account of an App's ``image``: never a registry password or build secret."""
    if image is None:
        return None
    if isinstance(image, ContainerImage):
        return {
            "base_image": final_base_image(image.dockerfile_str, image.build_args),
            "build_args": dict(image.build_args),
            "context_dir": str(image.context_dir),
            "dockerfile_lines": len(image.dockerfile_str.strip().splitlines()),
            "registries": sorted(image.registries),
            "secrets": sorted(image.secrets),
        }
    if isinstance(image, dict):  # already described (a manifest read back by the gateway)
        return image
    return {"base_image": None, "description": repr(image)[:200]}


def environment_summary(kind: str | None, image: object) -> dict[str, Any]:
    """What ``/runners`` reports under ``environment``."""
    return {
        "runs_in": RUNS_IN,
        "python": platform.python_version(),
        "executable": sys.executable,
        "kind": kind or "virtualenv",
        "image": describe_image(image),
    }


def environment_note(app_name: str, summary: dict[str, Any]) -> str:
    """One line for logs and tables: where this App runs, and what it declared."""
    where = f"the {RUNS_IN} (Python {summary['python']}, {summary['executable']})"
    image = summary.get("image")
    if not image:
        return f"{app_name} runs in {where}"
    base = image.get("base_image") or "a custom image"
    args = image.get("build_args") or {}
    with_args = f", build args {', '.join(sorted(args))}" if args else ""
    return (
        f"{app_name} declares a container image (FROM {base}{with_args}): minifal runs it in "
        f"{where}, not in that image; 'minifal dockerfile' writes a Dockerfile to build it"
    )
