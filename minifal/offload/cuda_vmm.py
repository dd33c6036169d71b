"""The CUDA driver's virtual memory calls (ctypes on libcuda): an arena's ``DeviceMemory``.

``cuMemAddressReserve`` takes a range of device addresses, ``cuMemCreate`` physical memory,
``cuMemMap`` and ``cuMemSetAccess`` put one at the other; ``cuMemUnmap`` and ``cuMemRelease``
give the physical memory back while the range stays reserved, so the same addresses can be
mapped again later. The torch-memory-saver package does the same in C++ for the caching
allocator's blocks; here it serves the arenas of ``arena.py``.

The device tensor over a mapped range is torch's own (``torch.as_tensor`` of an object with
``__cuda_array_interface__``: no copy, torch never frees it). The host buffer is a plain CPU
tensor pinned with ``cuMemHostRegister``: its pages count in the process's resident memory as
any other (what the gateway reports), and it is exactly the arena's size (torch's pinned
allocator rounds up to a power of two).

Every call first makes the device's primary context (torch's) current on the calling thread:
the runner calls from a worker thread that may never have used CUDA. ``load_device_memory``
says whether this process can (the library, the symbols, a device that supports it) and why
not; a failed call raises ``VirtualMemoryError`` with the driver's name for the error.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from minifal.host.cuda_driver import LIBRARY, open_driver

SYMBOLS = (
    "cuInit",
    "cuDeviceGet",
    "cuDeviceGetAttribute",
    "cuDevicePrimaryCtxRetain",
    "cuCtxSetCurrent",
    "cuMemGetAllocationGranularity",
    "cuMemAddressReserve",
    "cuMemAddressFree",
    "cuMemCreate",
    "cuMemRelease",
    "cuMemMap",
    "cuMemUnmap",
    "cuMemSetAccess",
    "cuMemHostRegister_v2",
    "cuMemHostUnregister",
    "cuGetErrorName",
)
VIRTUAL_MEMORY_SUPPORTED = 102  # CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED
ALLOCATION_PINNED = 1  # CU_MEM_ALLOCATION_TYPE_PINNED (device memory that cannot migrate)
LOCATION_DEVICE = 1  # CU_MEM_LOCATION_TYPE_DEVICE
ACCESS_READ_WRITE = 3  # CU_MEM_ACCESS_FLAGS_PROT_READWRITE
GRANULARITY_RECOMMENDED = 1  # CU_MEM_ALLOC_GRANULARITY_RECOMMENDED
HOST_PAGE = 4096


class VirtualMemoryError(RuntimeError):
    """A driver call failed; the message names the call and the driver's error."""


class _Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocationFlags(ctypes.Structure):
    _fields_ = [
        ("compressionType", ctypes.c_ubyte),
        ("gpuDirectRDMACapable", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class _AllocationProp(ctypes.Structure):
    """``CUmemAllocationProp``."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("requestedHandleTypes", ctypes.c_int),
        ("location", _Location),
        ("win32HandleMetaData", ctypes.c_void_p),
        ("allocFlags", _AllocationFlags),
    ]


class _AccessDesc(ctypes.Structure):
    """``CUmemAccessDesc``."""

    _fields_ = [("location", _Location), ("flags", ctypes.c_int)]


class _DeviceRange:
    """What ``torch.as_tensor`` reads to make a tensor over device memory it does not own."""

    def __init__(self, address: int, size: int) -> None:
        self.__cuda_array_interface__ = {
            "shape": (size,),
            "typestr": "|u1",
            "data": (address, False),
            "strides": None,
            "version": 2,  # no stream: the arena synchronizes itself
        }


class CudaDeviceMemory:
    """``arena.DeviceMemory`` on CUDA device ``index`` (torch's numbering, which the driver
    shares under the same ``CUDA_VISIBLE_DEVICES``). ``pin_host``: pin host buffers (else they
    are pageable: slower copies, for drivers whose checkpoint refuses registered memory)."""

    def __init__(self, library: ctypes.CDLL, index: int, pin_host: bool = True) -> None:
        self._cuda = library
        self.pin_host = pin_host
        for name in SYMBOLS:
            getattr(library, name).restype = ctypes.c_int
        self.index = index
        device = ctypes.c_int(0)
        self._check("cuDeviceGet", library.cuDeviceGet(ctypes.byref(device), index))
        self._context = ctypes.c_void_p()
        self._check(
            "cuDevicePrimaryCtxRetain",
            library.cuDevicePrimaryCtxRetain(ctypes.byref(self._context), device),
        )
        self._prop = _AllocationProp(
            type=ALLOCATION_PINNED, location=_Location(type=LOCATION_DEVICE, id=device.value)
        )
        self._access = _AccessDesc(
            location=_Location(type=LOCATION_DEVICE, id=device.value), flags=ACCESS_READ_WRITE
        )
        granularity = ctypes.c_size_t(0)
        self._call(
            "cuMemGetAllocationGranularity",
            ctypes.byref(granularity),
            ctypes.byref(self._prop),
            ctypes.c_int(GRANULARITY_RECOMMENDED),
        )
        self._granularity = granularity.value

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.index)

    @property
    def granularity(self) -> int:
        return self._granularity

    def reserve(self, size: int, address: int = 0) -> int:
        start = ctypes.c_uint64(0)
        self._call(
            "cuMemAddressReserve",
            ctypes.byref(start),
            ctypes.c_size_t(size),
            ctypes.c_size_t(0),
            ctypes.c_uint64(address),
            ctypes.c_uint64(0),
        )
        return start.value

    def free(self, address: int, size: int) -> None:
        self._call("cuMemAddressFree", ctypes.c_uint64(address), ctypes.c_size_t(size))

    def create(self, size: int) -> int:
        handle = ctypes.c_uint64(0)
        self._call(
            "cuMemCreate",
            ctypes.byref(handle),
            ctypes.c_size_t(size),
            ctypes.byref(self._prop),
            ctypes.c_uint64(0),
        )
        return handle.value

    def map(self, address: int, size: int, handle: int) -> None:
        self._call(
            "cuMemMap",
            ctypes.c_uint64(address),
            ctypes.c_size_t(size),
            ctypes.c_size_t(0),
            ctypes.c_uint64(handle),
            ctypes.c_uint64(0),
        )
        try:
            self._call(
                "cuMemSetAccess",
                ctypes.c_uint64(address),
                ctypes.c_size_t(size),
                ctypes.byref(self._access),
                ctypes.c_size_t(1),
            )
        except VirtualMemoryError:
            self._cuda.cuMemUnmap(ctypes.c_uint64(address), ctypes.c_size_t(size))
            raise

    def unmap(self, address: int, size: int) -> None:
        self._call("cuMemUnmap", ctypes.c_uint64(address), ctypes.c_size_t(size))

    def release(self, handle: int) -> None:
        self._call("cuMemRelease", ctypes.c_uint64(handle))

    def tensor_at(self, address: int, size: int) -> torch.Tensor:
        return torch.as_tensor(_DeviceRange(address, size), device=self.device)

    def host_buffer(self, size: int) -> torch.Tensor:
        if not self.pin_host:
            return torch.empty(size, dtype=torch.uint8)
        block = torch.empty(size + HOST_PAGE, dtype=torch.uint8)
        buffer = block[-block.data_ptr() % HOST_PAGE :][:size]  # pinned from a page's start
        self._call(
            "cuMemHostRegister_v2",
            ctypes.c_void_p(buffer.data_ptr()),
            ctypes.c_size_t(size),
            ctypes.c_uint(0),
        )
        return buffer

    def free_host_buffer(self, buffer: torch.Tensor) -> None:
        if not self.pin_host:
            return
        self._call("cuMemHostUnregister", ctypes.c_void_p(buffer.data_ptr()))

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.index)

    def _call(self, name: str, *args: Any) -> None:
        self._check("cuCtxSetCurrent", self._cuda.cuCtxSetCurrent(self._context))
        self._check(name, getattr(self._cuda, name)(*args))

    def _check(self, name: str, result: int) -> None:
        if result != 0:
            raise VirtualMemoryError(f"{name} failed: {error_name(self._cuda, result)}")


def error_name(library: ctypes.CDLL, result: int) -> str:
    """``CUDA_ERROR_...`` as the driver names it, else the number."""
    text = ctypes.c_char_p()
    if library.cuGetErrorName(result, ctypes.byref(text)) == 0 and text.value:
        return text.value.decode()
    return f"CUresult {result}"


def load_device_memory(
    index: int, library: str = LIBRARY, pin_host: bool = True
) -> tuple[CudaDeviceMemory | None, str]:
    """Virtual memory calls on CUDA device ``index`` of this process, or None and why not
    (the caller says it once). torch must have initialised CUDA on that device already."""
    cuda, why_not = open_driver(SYMBOLS, library)
    if cuda is None:
        return None, why_not
    device, supported = ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuInit.restype = cuda.cuDeviceGet.restype = cuda.cuDeviceGetAttribute.restype = (
        ctypes.c_int
    )
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), index) != 0:
        return None, f"no CUDA device {index} for the driver"
    if (
        cuda.cuDeviceGetAttribute(ctypes.byref(supported), VIRTUAL_MEMORY_SUPPORTED, device) != 0
        or not supported.value
    ):
        return None, f"CUDA device {index} does not support virtual memory management"
    try:
        return CudaDeviceMemory(cuda, index, pin_host), "CUDA virtual memory management"
    except VirtualMemoryError as error:
        return None, str(error)
