"""``fal.distributed.worker``: fal's module holds ``DistributedWorker`` and
``DistributedRunner``; here each has a module of its own (``distributed_worker``, ``runner``,
which needs the worker class) and this one names both, at fal's path."""

from minifal.distributed.distributed_worker import DistributedWorker
from minifal.distributed.runner import DistributedRunner

__all__ = ["DistributedRunner", "DistributedWorker"]
