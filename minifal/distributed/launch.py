"""fal's lower-level launcher: run a function in ``world_size`` processes of one process group.

``DistributedRunner`` does not use it (it keeps a pipe to each of its workers); it is here for
code written against ``fal.distributed.utils``. Each process gets ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``, NCCL on ``cuda:<rank>`` (gloo on CPU without CUDA), runs
``func(*args, **kwargs)`` and leaves the group.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from minifal.distributed.process_group import (
    GLOO,
    NCCL,
    join_process_group,
    leave_process_group,
    set_rank_environment,
)


def wrap_distributed_worker(
    rank: int,
    func: Callable[..., Any],
    world_size: int,
    master_addr: str,
    master_port: int,
    timeout: int,
    cwd: str | Path | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """The body of each process ``launch_distributed_processes`` spawns."""
    import torch

    if cwd:
        os.chdir(str(cwd))
    set_rank_environment(rank, world_size, master_addr, master_port)
    print(f"[debug] Worker {rank} started with PID {os.getpid()}.", flush=True)
    backend = NCCL if torch.cuda.is_available() else GLOO
    join_process_group(rank, world_size, backend, timeout)
    try:
        func(*args, **kwargs)
    finally:
        leave_process_group()


def launch_distributed_processes(
    func: Callable[..., Any],
    world_size: int = 1,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
    timeout: int = 1800,
    cwd: str | Path | None = None,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Spawn ``world_size`` processes running ``func`` (``join=False``): the returned
    ``torch.multiprocessing.ProcessContext`` has their ``processes`` and ``join()``."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if dist.is_initialized():
        raise RuntimeError(
            "Distributed process group is already initialized. "
            "Please ensure that you are not trying to initialize it multiple times."
        )
    print(f"[debug] Launching distributed processes with world size {world_size}.", flush=True)
    return mp.start_processes(
        wrap_distributed_worker,
        args=(func, world_size, master_addr, master_port, timeout, cwd, args, kwargs),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
