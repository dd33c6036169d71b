"""Whether this process may fork now: a child of fork inherits one thread only, and cannot use a
CUDA driver that its parent initialized (``fork_server.py`` asks before it forks runners).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import warnings

from minifal.compiled import torch_internals

CUDA_DRIVER = "libcuda.so.1"
CUDA_ERROR_NOT_INITIALIZED = 3


def fork_hazards() -> list[str]:
    """Why forking this process now would be unsafe; empty when it is safe."""
    hazards = []
    current = threading.current_thread()
    others = [thread.name for thread in threading.enumerate() if thread is not current]
    if others:
        hazards.append(f"Python threads running: {', '.join(others)}")
    if cuda_driver_initialized():
        hazards.append("the CUDA driver was initialized by an import")
    elif torch_cuda_poisoned():
        hazards.append("torch would refuse CUDA in a child (an import asked torch.cuda)")
    return hazards


def cuda_driver_initialized() -> bool:
    """Whether ``cuInit`` ran here. The driver library loaded is harmless (``RTLD_NOLOAD``
    finds it without loading it); asked for the device count before ``cuInit`` it answers
    CUDA_ERROR_NOT_INITIALIZED, and initializes nothing."""
    try:
        driver = ctypes.CDLL(CUDA_DRIVER, mode=os.RTLD_NOLOAD)
    except OSError:
        return False  # not loaded
    count = ctypes.c_int(0)
    return driver.cuDeviceGetCount(ctypes.byref(count)) != CUDA_ERROR_NOT_INITIALIZED


def torch_cuda_poisoned() -> bool:
    """Whether a child forked now would find torch's CUDA refused ("Cannot re-initialize CUDA
    in forked subprocess"): asked of a probe child, since only a child can tell."""
    if "torch" not in sys.modules:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        os._exit(1 if torch_internals.cuda_in_bad_fork() else 0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) != 0
