"""Precompiled artifacts on disk, inside the process's private compiled-cache dir.

::

    <private cache root>/precompiled/<module digest>/<signature digest>.unpacked/  a CUDA graph
    <private cache root>/precompiled/<module digest>/<signature digest>.bin        a CPU graph
    <private cache root>/precompiled/<module digest>/<signature digest>.json       what it is for

A ``CompiledArtifact`` is saved in one of torch's two forms: unpacked (the graph's AOTAutograd
and Inductor cache entries as files) or binary (the same entries serialized into one file; a
load deserializes them and writes them out as files first). See ``unpacked_form_pays``.

The private root is the one ``load_inductor_cache``/``sync_inductor_cache`` fill and publish, so
artifacts share the store's single flight, version-safe fingerprint directories and
merge-not-overwrite segments. Only what a loading process needs is published: the artifacts (an
artifact carries its graph, its Triton kernels and their autotuning results) and the C++ kernel
libraries Inductor built for CPU graphs (the artifact carries their source only, and rebuilding
them with gcc would cost more than the rest of the load), and the host modules Triton built with
gcc (``triton/<hash>/cuda_utils*.so``, the driver's helpers: 0.34 s of gcc in every warm GPU
runner otherwise; Triton names each by the hash of its source and the build's Python and
compiler, so a runner that differs builds its own). Inductor's own cache entries in the private
root duplicate the artifacts' contents and stay private. The ``.json`` is written last, by
rename: an artifact without one is ignored.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minifal.compiled.cache.inductor_setup import prepare_inductor
from minifal.compiled.torch_internals import (
    inductor_vec_isa_ok,
    load_compiled_artifact,
    patched_inductor_config,
    save_compiled_artifact,
)

ARTIFACTS_DIR_NAME = "precompiled"
FORMAT_VERSION = 1
UNPACKED_SUFFIX = ".unpacked"
logger = logging.getLogger("minifal.precompiled")
# torch's "unpacked" save and load point Inductor's cache dir (a process-wide setting) at the
# artifact's dir while they run: one such save or load at a time in this process.
_unpacked_form_lock = threading.Lock()


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
        """Every complete artifact, as (meta, path: its unpacked dir where there is one, else
        its binary), in the order the compiling runner first called them (a warm runner's
        warmup calls them in that order too); unreadable ones are skipped."""
        found = []
        for meta_path in sorted(self.root.glob("*/*.json")):
            try:
                meta = ArtifactMeta.from_json(meta_path.read_text())
            except (OSError, ValueError, KeyError, TypeError):
                continue
            unpacked = meta_path.with_suffix(UNPACKED_SUFFIX)
            binary = meta_path.with_suffix(".bin")
            if unpacked.is_dir():
                found.append((meta, unpacked))
            elif binary.is_file():
                found.append((meta, binary))
        return sorted(found, key=lambda pair: pair[0].first_called_at)

    def save(self, meta: ArtifactMeta, artifact: Any, saved_at: Path | None = None) -> Path:
        """Save ``artifact`` (a CompiledArtifact; or adopt its file ``saved_at``, moved in, and
        the unpacked dir a worker saved next to it) and then its meta, each by temp + rename.

        A CUDA artifact is kept in torch's unpacked form where that could be saved: the binary
        is then removed (it holds the same entries, packed)."""
        binary = self.binary_path(meta.module_digest, meta.signature_digest)
        binary.parent.mkdir(parents=True, exist_ok=True)
        temp = binary.with_name(f".tmp-{uuid.uuid4().hex}.bin")
        try:
            if saved_at is not None:
                os.replace(saved_at, temp)
            else:
                save_compiled_artifact(artifact, str(temp), "binary")
            os.replace(temp, binary)
        finally:
            temp.unlink(missing_ok=True)
        unpacked = binary.with_suffix(UNPACKED_SUFFIX)
        shutil.rmtree(unpacked, ignore_errors=True)
        if saved_at is not None:
            worker_unpacked = saved_at.with_suffix(UNPACKED_SUFFIX)
            if worker_unpacked.is_dir():
                os.replace(worker_unpacked, unpacked)
        elif unpacked_form_pays([str(layout[3]) for layout in meta.input_layouts]):
            save_unpacked(artifact, unpacked)
        if unpacked.is_dir():
            binary.unlink()
        meta_temp = binary.with_name(f".tmp-{uuid.uuid4().hex}.json")
        meta_temp.write_text(json.dumps(asdict(meta), indent=1))
        os.replace(meta_temp, binary.with_suffix(".json"))
        return unpacked if unpacked.is_dir() else binary


def unpacked_form_pays(devices: list[str]) -> bool:
    """Whether a graph whose inputs are on these devices is kept in torch's unpacked form.

    A binary artifact is torch's cache entries serialized into one file: every load
    deserializes them and writes them out as files first (1.2 of the 2.9-3.1 s that the SD-Turbo
    UNet's and VAE decoder's four artifacts take to load on an H200). The unpacked form is
    those files, published as they are: a load reads its entries directly. A CUDA graph's
    kernels are in its entries (cubins). A CPU graph's C++ libraries are not: loaded from
    another dir than the one they were built in, they would be built again with gcc, so CPU
    artifacts stay binary.
    """
    return any(device.startswith("cuda") for device in devices)


def save_unpacked(artifact: Any, target: Path) -> bool:
    """Save ``artifact`` in torch's unpacked form as the dir ``target`` (temp + rename); False,
    with nothing left behind, if it cannot be (the binary form is used then)."""
    temp = target.with_name(f".tmp-{uuid.uuid4().hex}{UNPACKED_SUFFIX}")
    try:
        with _unpacked_form_lock:
            save_compiled_artifact(artifact, str(temp), "unpacked")
        os.replace(temp, target)
    except Exception as exc:  # an older torch, a full disk: the binary form serves
        logger.warning("precompiled: not saved unpacked (%s): the binary form is used", exc)
        return False
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return True


def load_artifact(path: Path) -> Any:
    """A saved ``CompiledArtifact`` (a binary file or an unpacked dir), ready to call."""
    prepare_inductor()
    if path.is_dir():
        with _unpacked_form_lock:
            return load_compiled_artifact(str(path), "unpacked")
    with _vec_isa_trusted():
        return load_compiled_artifact(str(path), "binary")


@contextmanager
def _vec_isa_trusted() -> Iterator[None]:
    """Skip Inductor's CPU vector-ISA probe (a gcc build and a child process, ~0.8 s) while loading.

    The probe asks whether this host can build and load code for the ISAs its CPU flags claim.
    A loaded artifact's C++ kernels were built by a host of the same build fingerprint (torch's
    CPU capability included) and come as libraries: nothing is built. An explicit setting wins.
    """
    if inductor_vec_isa_ok() is not None:
        yield
        return
    with patched_inductor_config({"cpp.vec_isa_ok": True}):
        yield
