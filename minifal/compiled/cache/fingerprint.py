"""What compiled kernels depend on, so that an artifact is only ever loaded where it was built.

The fingerprint names the Python, torch, Triton and CUDA/HIP versions, the exact device (not fal's
one word: an A100 40GB and an A100 80GB differ) and, because Inductor's C++ kernels are built for
the host's vector ISA, the CPU capability torch dispatches to. Each fingerprint gets its own
directory under the key, so two versions of a fleet never overwrite each other's kernels.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import platform
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass

FINGERPRINT_FIELDS = (
    "python",
    "torch",
    "triton",
    "cuda",
    "hip",
    "device",
    "device_capability",
    "cpu_capability",
    "machine",
)


@dataclass(frozen=True)
class BuildFingerprint:
    python: str
    torch: str
    triton: str | None
    cuda: str | None
    hip: str | None
    device: str  # exact accelerator name, or "cpu"
    device_capability: str | None  # e.g. "9.0" for sm_90
    cpu_capability: str  # torch's CPU dispatch level: "AVX512", "AVX2", "DEFAULT"...
    machine: str  # x86_64, aarch64

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def dir_name(self) -> str:
        """Readable and unique: ``torch-2.11.0+cu130-<digest>``."""
        return f"torch-{self.torch}-{self.digest}"

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BuildFingerprint:
        return cls(**{name: data.get(name) for name in FINGERPRINT_FIELDS})  # type: ignore[arg-type]


def describe_mismatch(ours: Mapping[str, object], theirs: Mapping[str, object]) -> list[str]:
    """Field-by-field differences, as ``torch: 2.11.0 (artifact) != 2.13.0 (here)``."""
    return [
        f"{name}: {theirs.get(name)} (artifact) != {ours.get(name)} (here)"
        for name in FINGERPRINT_FIELDS
        if ours.get(name) != theirs.get(name)
    ]


def current_fingerprint() -> BuildFingerprint:
    """The fingerprint of this process (imports torch; call only where torch is needed anyway)."""
    import torch

    device, capability = "cpu", None
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        device = torch.cuda.get_device_name(index)
        major, minor = torch.cuda.get_device_capability(index)
        capability = f"{major}.{minor}"
    return BuildFingerprint(
        python=f"{platform.python_implementation()} {sys.version.split()[0]}",
        torch=torch.__version__,
        triton=_triton_version(),
        cuda=torch.version.cuda,
        hip=getattr(torch.version, "hip", None),
        device=device,
        device_capability=capability,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        machine=platform.machine(),
    )


def _triton_version() -> str | None:
    """``triton.__version__``, read from its ``__init__.py`` where that assigns a literal
    (Triton's releases do), else imported. Importing Triton is compiler work that a runner
    whose store turns out empty has no use for before it is ready."""
    module = sys.modules.get("triton")
    if module is None:
        try:
            spec = importlib.util.find_spec("triton")
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        declared = _declared_version(spec.origin)
        if declared is not None:
            return declared
        try:
            import triton as module
        except ImportError:
            return None
    return getattr(module, "__version__", None)


_VERSION_LINE = re.compile(r"""^__version__\s*=\s*(['"])([^'"\n]+)\1\s*(#.*)?$""", re.MULTILINE)


def _declared_version(init_file: str | None) -> str | None:
    """The literal ``__version__ = "..."`` of a package's ``__init__.py``, if it has exactly
    one (another assignment may be conditional: then the import says)."""
    if not init_file or not init_file.endswith("__init__.py"):
        return None
    try:
        with open(init_file, encoding="utf-8") as source:
            text = source.read()
    except (OSError, UnicodeDecodeError):
        return None
    if len(re.findall(r"^\s*__version__\s*=", text, re.MULTILINE)) != 1:
        return None
    match = _VERSION_LINE.search(text)
    return match.group(2) if match else None
