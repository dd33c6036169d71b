"""``torch.distributed`` for the ranks of one runner: backend, devices and the rendezvous.

Rank ``r`` uses ``cuda:<r>``: the ``r``-th GPU the runner process sees (the fleet gives each
runner its own GPUs through ``CUDA_VISIBLE_DEVICES``, and worker processes inherit it), with
NCCL. Without CUDA every rank runs on the CPU with gloo.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from minifal.runner_contract import export_to_process

NCCL = "nccl"
GLOO = "gloo"
STORE_CONNECT_TIMEOUT_S = 120.0


def rank_device(rank: int) -> Any:
    """``torch.device`` of a rank: its own GPU, or the CPU where there is no CUDA."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", rank)
    return torch.device("cpu")


def choose_backend(world_size: int) -> str:
    """NCCL when every rank gets a GPU of its own, gloo without CUDA; else a clear error."""
    import torch

    if not torch.cuda.is_available():
        return GLOO
    gpus = torch.cuda.device_count()
    if world_size > gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all")
        raise ValueError(
            f"world_size={world_size} needs one GPU per rank, but this runner sees {gpus} "
            f"(CUDA_VISIBLE_DEVICES={visible}); set the App's num_gpus to {world_size}"
        )
    return NCCL


def set_rank_environment(rank: int, world_size: int, master_addr: str, master_port: int) -> None:
    """The variables ``torchrun`` sets, which libraries built on torch.distributed read."""
    export_to_process(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size),
            "MASTER_ADDR": master_addr,
            "MASTER_PORT": str(master_port),
        }
    )


def host_rendezvous_store(master_addr: str, preferred_port: int) -> Any:
    """The rendezvous store, served by the runner process for its ranks.

    ``preferred_port`` when it is free, else a port the OS picks: several runners on one host
    never race for one fixed port, since the port is bound here before any rank starts.
    """
    import torch.distributed as dist

    def serve(port: int) -> Any:
        return dist.TCPStore(
            master_addr,
            port,
            None,
            True,
            datetime.timedelta(seconds=STORE_CONNECT_TIMEOUT_S),
            wait_for_workers=False,
        )

    try:
        return serve(preferred_port)
    except (RuntimeError, OSError):
        return serve(0)


def join_process_group(
    rank: int,
    world_size: int,
    backend: str,
    timeout_s: float,
    store_address: tuple[str, int] | None = None,
) -> None:
    """``init_process_group`` for this rank: through the runner's store when it is given, else
    through ``MASTER_ADDR``/``MASTER_PORT`` (``env://``, where rank 0 serves the store)."""
    import torch
    import torch.distributed as dist

    device_id = None
    if backend == NCCL:
        torch.cuda.set_device(rank)
        device_id = torch.device("cuda", rank)
    timeout = datetime.timedelta(seconds=timeout_s)
    store = None
    if store_address is not None:
        host, port = store_address
        store = dist.TCPStore(
            host, port, None, False, datetime.timedelta(seconds=STORE_CONNECT_TIMEOUT_S)
        )
    dist.init_process_group(
        backend=backend,
        init_method=None if store is not None else "env://",
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=timeout,
        device_id=device_id,
    )


def leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
