"""The CUDA driver's checkpoint API, called from the gateway on a runner's pid (ctypes).

``cuCheckpointProcessLock`` waits for the process's GPU work to finish and blocks new work,
``cuCheckpointProcessCheckpoint`` moves its whole GPU state (memory, contexts) into that
process's host memory and releases the GPU, ``cuCheckpointProcessRestore`` puts it back on the
same GPU and ``cuCheckpointProcessUnlock`` lets it run CUDA again. The process itself keeps
running on the CPU (its HTTP server answers) and never notices, except that a CUDA call made
meanwhile waits. Driver r570 (CUDA 12.8) and later, Linux, no CRIU needed.

``load_cuda_checkpoint()`` says whether this host can do it (the library, the symbols, the driver
version, a GPU) and why not; every failure of a call raises ``CheckpointError`` with the driver's
own error name. ``host_cuda_checkpoint()`` is that answer made once per process: ``minifal run``
starts it in a thread at its very start (``cuInit`` takes a second on some hosts), beside the
app's inspection, and the gateway that needs it later gets the same answer.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import threading
import time
from dataclasses import dataclass

from minifal.host.cuda_driver import LIBRARY, open_driver

logger = logging.getLogger("minifal.fleet")

MIN_DRIVER_VERSION = 12080  # cuDriverGetVersion of CUDA 12.8 (driver r570): the API appeared
SYMBOLS = (
    "cuCheckpointProcessLock",
    "cuCheckpointProcessCheckpoint",
    "cuCheckpointProcessRestore",
    "cuCheckpointProcessUnlock",
    "cuCheckpointProcessGetState",
)
# What a CUresult means for a runner, where the driver's own name is not enough.
ERROR_HINTS = {
    2: "out of memory (host memory for the GPU state, or GPU memory to restore it into)",
    3: "the driver is not initialised in the gateway",
    201: "no CUDA context in that process: it never used the GPU",
    401: "the process is in the wrong state for this step (already locked or checkpointed?)",
    801: "not supported by this driver, GPU or process (e.g. CUDA IPC or UVM in use)",
    909: "locking timed out: GPU work still running after the lock timeout",
}


class ProcessState(enum.IntEnum):
    """``CUprocessState``."""

    RUNNING = 0
    LOCKED = 1
    CHECKPOINTED = 2
    FAILED = 3


class CheckpointError(RuntimeError):
    """A checkpoint call failed; the message names the step, the pid and the driver's error."""


class _LockArgs(ctypes.Structure):
    _fields_ = [
        ("timeoutMs", ctypes.c_uint),
        ("reserved0", ctypes.c_uint),
        ("reserved1", ctypes.c_uint64 * 7),
    ]


@dataclass(frozen=True)
class Timings:
    lock_s: float = 0.0
    checkpoint_s: float = 0.0
    restore_s: float = 0.0
    unlock_s: float = 0.0


class CudaCheckpoint:
    """The driver's checkpoint calls on other processes; blocking (run them in a thread)."""

    def __init__(self, library: ctypes.CDLL, driver_version: int) -> None:
        self._cuda = library
        self.driver_version = driver_version
        for name in SYMBOLS:
            getattr(library, name).restype = ctypes.c_int

    def state(self, pid: int) -> ProcessState:
        value = ctypes.c_int(-1)
        self._check(
            "get state", pid, self._cuda.cuCheckpointProcessGetState(pid, ctypes.byref(value))
        )
        return ProcessState(value.value)

    def suspend(self, pid: int, lock_timeout_s: float) -> Timings:
        """Lock (at most ``lock_timeout_s``), then checkpoint; unlocks again if the checkpoint
        fails, so a failed suspend leaves a running process."""
        args = _LockArgs(timeoutMs=max(1, int(lock_timeout_s * 1000)))
        start = time.perf_counter()
        self._check("lock", pid, self._cuda.cuCheckpointProcessLock(pid, ctypes.byref(args)))
        locked = time.perf_counter()
        try:
            self._check("checkpoint", pid, self._cuda.cuCheckpointProcessCheckpoint(pid, None))
        except CheckpointError:
            self._cuda.cuCheckpointProcessUnlock(pid, None)
            raise
        return Timings(lock_s=locked - start, checkpoint_s=time.perf_counter() - locked)

    def resume(self, pid: int) -> Timings:
        start = time.perf_counter()
        self._check("restore", pid, self._cuda.cuCheckpointProcessRestore(pid, None))
        restored = time.perf_counter()
        self._check("unlock", pid, self._cuda.cuCheckpointProcessUnlock(pid, None))
        return Timings(restore_s=restored - start, unlock_s=time.perf_counter() - restored)

    def _check(self, step: str, pid: int, result: int) -> None:
        if result != 0:
            raise CheckpointError(
                f"{step} of pid {pid} failed: {describe_error(self._cuda, result)}"
            )


def describe_error(library: ctypes.CDLL | None, result: int) -> str:
    """``CUDA_ERROR_...`` (from the driver when it can name it) and what it means here."""
    name = f"CUresult {result}"
    if library is not None:
        text = ctypes.c_char_p()
        get_name = library.cuGetErrorName
        get_name.restype = ctypes.c_int
        if get_name(result, ctypes.byref(text)) == 0 and text.value:
            name = text.value.decode()
    hint = ERROR_HINTS.get(result)
    return f"{name} ({hint})" if hint else name


def load_cuda_checkpoint(library: str = LIBRARY) -> tuple[CudaCheckpoint | None, str]:
    """The checkpoint API of this host, or None and why not (said once by the caller)."""
    cuda, why_not = open_driver(SYMBOLS, library, needs=" (needs r570 / CUDA 12.8+)")
    if cuda is None:
        return None, why_not
    version = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None, "the CUDA driver did not initialise (no GPU visible to the gateway?)"
    if version.value < MIN_DRIVER_VERSION:
        return None, f"CUDA driver API {version.value} < {MIN_DRIVER_VERSION} (r570 / CUDA 12.8)"
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return None, "no GPU"
    return CudaCheckpoint(
        cuda, version.value
    ), f"CUDA driver API {version.value}, {count.value} GPU(s)"


_HOST_PROBE_LOCK = threading.Lock()
_host_probe: tuple[CudaCheckpoint | None, str] | None = None


def host_cuda_checkpoint() -> tuple[CudaCheckpoint | None, str]:
    """``load_cuda_checkpoint()`` of the default library, made once per process; a caller that
    comes while another thread makes it waits for that answer."""
    global _host_probe
    with _HOST_PROBE_LOCK:
        if _host_probe is None:
            _host_probe = load_cuda_checkpoint()
        return _host_probe
