"""The messages a ``DistributedRunner`` and its worker processes exchange over their pipes.

Every rank has its own duplex pipe to the runner. The runner sends each call to every rank (so
all ranks run the same calls in the same order, as their collectives need); every rank answers
``CallDone``, and rank 0 alone sends what the caller gets: streamed items and the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from minifal.distributed.class_reference import ClassReference

# -- what a worker process is started with --


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker process needs before its first message (plain, picklable data)."""

    worker_class: ClassReference
    world_size: int
    backend: str
    """``"nccl"`` (one GPU per rank, ``cuda:<rank>``) or ``"gloo"`` (CPU)."""
    master_addr: str
    master_port: int
    """Where the runner process serves the rendezvous store of ``torch.distributed``."""
    timeout_s: float
    """``torch.distributed``'s timeout for collectives (the runner's ``timeout``)."""
    cwd: str | None
    parent_pid: int


# -- runner -> worker --


@dataclass(frozen=True)
class Setup:
    """The keyword arguments of ``DistributedRunner.start()``, for ``DistributedWorker.setup``."""

    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    call_id: int
    payload: bytes
    """The payload dict, as ``distributed_serialize`` wrote it."""
    streaming: bool
    as_text_events: bool


@dataclass(frozen=True)
class Exit:
    """Run ``teardown()``, leave the process group and exit."""


# -- worker -> runner --


@dataclass(frozen=True)
class Ready:
    """``setup()`` returned: this rank takes calls."""


@dataclass(frozen=True)
class WorkerFailed:
    """The worker process is about to exit because of ``error`` (its last words)."""

    stage: str
    """``"setup"`` or ``"serving"``."""
    error: str
    """``Type: message`` of the exception; the whole traceback went to the worker's output."""


@dataclass(frozen=True)
class StreamItem:
    call_id: int
    data: bytes
    """Encoded as the call asked: a Server-Sent Event, or ``distributed_serialize`` bytes."""


@dataclass(frozen=True)
class Result:
    call_id: int
    data: bytes


@dataclass(frozen=True)
class CallDone:
    call_id: int
    error: str | None = None
    """Set when ``__call__`` raised on this rank."""
