"""fal's ``fal.realtime`` module: the ``realtime`` decorator and its default message codec
(msgpack). The sessions themselves are served by ``minifal.runner.realtime``."""

from __future__ import annotations

import logging

from minifal.endpoints import realtime
from minifal.runner.realtime_frames import msgpack_decode as msgpack_decode_message
from minifal.runner.realtime_frames import msgpack_encode as msgpack_encode_message

logger = logging.getLogger("minifal.realtime")

__all__ = ["logger", "msgpack_decode_message", "msgpack_encode_message", "realtime"]
