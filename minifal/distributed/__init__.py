"""``fal.distributed``: one App runner, ``world_size`` worker processes, one process group.

A ``DistributedRunner`` (in the App's process) starts the workers, each a ``DistributedWorker``
subclass on a GPU of its own (``cuda:<rank>``, NCCL; the CPU and gloo without CUDA), and calls
them: ``invoke`` for a result, ``stream`` for streamed items. See docs/distributed.md.
"""

from minifal.distributed.worker import DistributedRunner, DistributedWorker

__all__ = ["DistributedRunner", "DistributedWorker"]
