"""Which GPU this process sees: fal's one-word type (``H100``) and the exact device name.

fal reads the first line of ``nvidia-smi`` whatever ``CUDA_VISIBLE_DEVICES`` says; here the first
GPU *visible to this process* is reported, so a runner pinned to GPU 3 of a mixed host names GPU 3.
Asking ``nvidia-smi`` (``minifal.host.nvidia_smi``, not torch) keeps this usable without torch
installed and without creating a CUDA context. nvidia-smi numbers GPUs in PCI bus order; set
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (what most fleets do) so that CUDA's ``cuda:0`` is the same card
on mixed hosts.
"""

from __future__ import annotations

import functools
import os

from minifal.host.nvidia_smi import GpuInfo, list_gpus
from minifal.host.nvidia_smi import parse_nvidia_smi as parse_nvidia_smi

CPU_TYPE = "CPU"

# Marketing words that precede the model on NVIDIA names ("NVIDIA GeForce RTX 4090", "Tesla V100").
_VENDOR_WORDS = {"NVIDIA", "GEFORCE", "TESLA", "QUADRO"}
# Series words that only make sense joined to the next word ("RTX 4090" -> "RTX4090").
_SERIES_WORDS = {"RTX", "GTX", "TITAN"}


def short_gpu_type(device_name: str) -> str:
    """fal's one-word type: ``NVIDIA H100 80GB HBM3`` -> ``H100``, ``A100-SXM4-80GB`` -> ``A100``"""
    words = [w for w in device_name.replace("-", " ").split() if w.upper() not in _VENDOR_WORDS]
    if not words:
        return CPU_TYPE
    if words[0].upper() in _SERIES_WORDS and len(words) > 1:
        return words[0] + words[1]
    return words[0]


def select_visible(gpus: list[GpuInfo], cuda_visible_devices: str | None) -> GpuInfo | None:
    """The GPU that CUDA calls ``cuda:0`` under ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs)."""
    if cuda_visible_devices is None:
        return gpus[0] if gpus else None
    first = cuda_visible_devices.split(",")[0].strip()
    if not first or first.startswith("-"):
        return None  # "" or "-1": no GPU is visible
    for gpu in gpus:
        by_uuid = first.startswith(("GPU-", "MIG-")) and gpu.uuid.startswith(first)
        if first == gpu.index or by_uuid:
            return gpu
    return None


@functools.lru_cache(maxsize=8)
def _visible_gpu(cuda_visible_devices: str | None) -> GpuInfo | None:
    return select_visible(list_gpus(), cuda_visible_devices)


def get_gpu_name() -> str | None:
    """Exact name of this process's first visible GPU (``NVIDIA A100-SXM4-80GB``), or None."""
    gpu = _visible_gpu(os.environ.get("CUDA_VISIBLE_DEVICES"))
    return gpu.name if gpu else None


def get_gpu_type() -> str:
    """fal-compatible one-word type of this process's first visible GPU, ``CPU`` without one."""
    name = get_gpu_name()
    return short_gpu_type(name) if name else CPU_TYPE
