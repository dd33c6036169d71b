"""Precompiled artifacts on disk, inside the process's private compiled-cache dir.

::

    <private cache root>/precompiled/<module digest>/<signature digest>.bin    CompiledArtifact
    <private cache root>/precompiled/<module digest>/<signature digest>.json   what it is for

The private root is the one ``load_inductor_cache``/``sync_inductor_cache`` fill and publish, so
artifacts share the store's single flight, version-safe fingerprint directories and
merge-not-overwrite segments. Only what a loading process needs is published: the artifacts (an
artifact carries its graph, its Triton kernels and their autotuning results) and the C++ kernel
libraries Inductor built for CPU graphs (the artifact carries their source only, and rebuilding
them with gcc would cost more than the rest of the load), and the host modules Triton built with
gcc (``triton/<hash>/cuda_utils*.so``, the driver's helpers: 0.34 s of gcc in every warm GPU
runner otherwise; Triton names each by the hash of its source and the build's Python and
compiler, so a runner that differs builds its own). Inductor's own cache entries, which
duplicate the artifacts' contents (462 MB against 167 MB for the SD-Turbo UNet's two shapes),
stay private. The ``.json`` is written last, by rename: an artifact without one is ignored.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ARTIFACTS_DIR_NAME = "precompiled"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ArtifactMeta:
    module_class: str
    module_digest: str
    signature_digest: str
    signature_label: str
    input_plan: list[str]
    out_spec: str
    capture_s: float
    compile_s: float
    format_version: int = FORMAT_VERSION
    first_called_at: float = 0.0  # when the compiling runner first called it: the load order
    # the graph inputs' layouts and grad mode, for a first call with placeholders (first_call.py)
    input_layouts: list = field(default_factory=list)
    grad_enabled: bool = False

    @classmethod
    def from_json(cls, text: str) -> ArtifactMeta:
        data = json.loads(text)
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"artifact format {data.get('format_version')} != {FORMAT_VERSION}")
        # absent from artifacts saved before they existed
        optional = {"first_called_at", "input_layouts", "grad_enabled"}
        return cls(
            **{
                name: data[name]
                for name in cls.__dataclass_fields__
                if name in data or name not in optional
            }
        )


def belongs_to_artifacts(relpath: str) -> bool:
    """What the precompiled path publishes, by path relative to the private cache root."""
    return relpath.startswith(ARTIFACTS_DIR_NAME + "/") or (
        relpath.startswith(("inductor/", "triton/")) and relpath.endswith(".so")
    )


class ArtifactDir:
    def __init__(self, cache_root: Path) -> None:
        self.root = cache_root / ARTIFACTS_DIR_NAME

    def binary_path(self, module_digest: str, signature_digest: str) -> Path:
        return self.root / module_digest / f"{signature_digest}.bin"

    def listed(self) -> list[tuple[ArtifactMeta, Path]]:
        """Every complete artifact, as (meta, binary path), in the order the compiling runner
        first called them (a warm runner's warmup calls them in that order too); unreadable
        ones are skipped."""
        found = []
        for meta_path in sorted(self.root.glob("*/*.json")):
            try:
                meta = ArtifactMeta.from_json(meta_path.read_text())
            except (OSError, ValueError, KeyError, TypeError):
                continue
            binary = meta_path.with_suffix(".bin")
            if binary.is_file():
                found.append((meta, binary))
        return sorted(found, key=lambda pair: pair[0].first_called_at)

    def save(self, meta: ArtifactMeta, artifact: Any, saved_at: Path | None = None) -> Path:
        """Save ``artifact`` (a CompiledArtifact; or adopt its file ``saved_at``, moved in) and
        then its meta, each by temp + rename."""
        binary = self.binary_path(meta.module_digest, meta.signature_digest)
        binary.parent.mkdir(parents=True, exist_ok=True)
        temp = binary.with_name(f".tmp-{uuid.uuid4().hex}.bin")
        try:
            if saved_at is not None:
                os.replace(saved_at, temp)
            else:
                artifact.save(path=str(temp), format="binary")
            os.replace(temp, binary)
        finally:
            temp.unlink(missing_ok=True)
        meta_temp = binary.with_name(f".tmp-{uuid.uuid4().hex}.json")
        meta_temp.write_text(json.dumps(asdict(meta), indent=1))
        os.replace(meta_temp, binary.with_suffix(".json"))
        return binary


def load_artifact(path: Path) -> Any:
    """A saved ``CompiledArtifact``, ready to call."""
    from torch._inductor import CompiledArtifact

    with _vec_isa_trusted():
        return CompiledArtifact.load(path=str(path), format="binary")


@contextmanager
def _vec_isa_trusted() -> Iterator[None]:
    """Skip Inductor's CPU vector-ISA probe (a gcc build and a child process, ~0.8 s) while loading.

    The probe asks whether this host can build and load code for the ISAs its CPU flags claim.
    A loaded artifact's C++ kernels were built by a host of the same build fingerprint (torch's
    CPU capability included) and come as libraries: nothing is built. An explicit setting wins.
    """
    from torch._inductor import config

    if config.cpp.vec_isa_ok is not None:
        yield
        return
    with config.patch({"cpp.vec_isa_ok": True}):
        yield
