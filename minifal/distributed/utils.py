"""``fal.distributed.utils``: fal's module of that name, with its public names.

Each name lives in the module that owns its job: the wire formats in ``serialization``, the
launcher in ``launch``, the timer in ``keepalive``.
"""

from minifal.distributed.keepalive import KeepAliveTimer
from minifal.distributed.launch import launch_distributed_processes, wrap_distributed_worker
from minifal.distributed.serialization import (
    distributed_deserialize,
    distributed_serialize,
    encode_text_event,
    format_deserialized_data,
    format_for_serialization,
    has_type_name,
    is_numpy_array,
    is_pil_image,
    is_torch_tensor,
)

__all__ = [
    "KeepAliveTimer",
    "distributed_deserialize",
    "distributed_serialize",
    "encode_text_event",
    "format_deserialized_data",
    "format_for_serialization",
    "has_type_name",
    "is_numpy_array",
    "is_pil_image",
    "is_torch_tensor",
    "launch_distributed_processes",
    "wrap_distributed_worker",
]
