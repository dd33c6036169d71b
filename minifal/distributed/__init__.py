"""``fal.distributed``: one App runner, ``world_size`` worker processes, one process group.

A ``DistributedRunner`` (in the App's process) starts the workers, each a ``DistributedWorker``
subclass on a GPU of its own (``cuda:<rank>``, NCCL; the CPU and gloo without CUDA), and calls
them: ``invoke`` for a result, ``stream`` for streamed items. See docs/distributed.md.

fal's module paths only (what ``import fal.distributed...`` reaches): imported by the App's
code, by no layer of minifal. It imports ``exceptions``, ``host``, ``compat.fal_alias`` (a worker
class is loaded by reference in its process) and the runner contract (the exit code that says a
worker died).
"""

from minifal.distributed.worker import DistributedRunner, DistributedWorker

__all__ = ["DistributedRunner", "DistributedWorker"]
