"""This machine's NVIDIA GPUs as ``nvidia-smi`` lists them: no torch, no CUDA context.

``nvidia-smi`` numbers GPUs in PCI bus order and ignores ``CUDA_VISIBLE_DEVICES``; the fleet
(``--gpus``, one runner per GPU) and ``get_gpu_type()`` both go by that numbering.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

QUERY = ["--query-gpu=index,uuid,name", "--format=csv,noheader"]
TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class GpuInfo:
    """One row of ``nvidia-smi --query-gpu=index,uuid,name``."""

    index: str
    uuid: str
    name: str


def parse_nvidia_smi(output: str) -> list[GpuInfo]:
    """Rows of ``nvidia-smi --query-gpu=index,uuid,name --format=csv,noheader``."""
    gpus = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",", 2)]
        if len(parts) == 3 and parts[0]:
            gpus.append(GpuInfo(index=parts[0], uuid=parts[1], name=parts[2]))
    return gpus


def list_gpus() -> list[GpuInfo]:
    """Every GPU of the machine; none without ``nvidia-smi`` or when it fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        result = subprocess.run(
            [smi, *QUERY], capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(result.stdout)
