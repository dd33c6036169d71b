"""The CUDA driver library (``libcuda``) over ctypes, for the calls torch does not make: the
process checkpoint (``fleet/backends/cuda_checkpoint.py``) and virtual memory
(``offload/cuda_vmm.py``)."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

LIBRARY = "libcuda.so.1"


def open_driver(
    symbols: Sequence[str], library: str = LIBRARY, needs: str = ""
) -> tuple[ctypes.CDLL | None, str]:
    """The driver with every one of ``symbols``, or None and why not (``needs`` says which
    driver would have them)."""
    try:
        cuda = ctypes.CDLL(library)
    except OSError:
        return None, f"no CUDA driver ({library} not found)"
    missing = [name for name in symbols if not hasattr(cuda, name)]
    if missing:
        return None, f"the CUDA driver has no {', '.join(missing)}{needs}"
    return cuda, ""
