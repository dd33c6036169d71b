"""Which kind of realtime session a method serves, read from its type hints as fal reads them.

| input hint              | output hint                   | mode             |
| ----------------------- | ----------------------------- | ---------------- |
| ``Input``               | ``Output``                    | unary            |
| ``Input``               | ``Iterator``/``AsyncIterator`` | server streaming |
| ``AsyncIterator[Input]`` | ``Output``                    | client streaming |
| ``AsyncIterator[Input]`` | ``AsyncIterator[Output]``     | bidirectional    |

A method that streams its inputs must be ``async`` (fal calls it on the event loop); minifal says
so when the app starts instead of failing every session.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter

from minifal.endpoints import INFERRED, RealtimeOptions
from minifal.runner.signatures import resolved_signature

RealtimeMode = Literal["unary", "server_streaming", "client_streaming", "bidi"]

_ASYNC_STREAMS = {
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
}
_SYNC_STREAMS = {
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
}


@dataclass(frozen=True)
class RealtimeShape:
    mode: RealtimeMode
    input_type: Any
    """The type of one input message (an item of the input stream when inputs stream)."""
    output_type: Any
    """The type of one output message, or None when the method does not say."""

    @property
    def streams_inputs(self) -> bool:
        return self.mode in ("client_streaming", "bidi")

    def input_adapter(self) -> TypeAdapter:
        return TypeAdapter(self.input_type)


def _stream_item(annotation: Any, streams: set[Any]) -> Any | None:
    """``X`` for ``AsyncIterator[X]`` (``Any`` when bare), None when not such a stream."""
    origin = typing.get_origin(annotation) or annotation
    if origin not in streams:
        return None
    arguments = typing.get_args(annotation)
    return arguments[0] if arguments else Any


def _input_parameter(method: Callable[..., Any], signature: inspect.Signature) -> Any:
    positional = [
        parameter
        for parameter in signature.parameters.values()
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    if not positional:
        raise TypeError(f"realtime method {method.__name__}() needs an input parameter")
    extra = [p.name for p in positional[1:] if p.default is inspect.Parameter.empty]
    if extra:
        raise TypeError(
            f"realtime method {method.__name__}() takes one input; "
            f"its other parameters {extra} need defaults"
        )
    annotation = positional[0].annotation
    return Any if annotation is inspect.Parameter.empty else annotation


def realtime_shape(method: Callable[..., Any], options: RealtimeOptions) -> RealtimeShape:
    """The session shape of a bound realtime method; TypeError when fal could not serve it."""
    function = getattr(method, "__func__", method)
    signature = resolved_signature(method)
    input_hint = _input_parameter(method, signature)
    output_hint = signature.return_annotation
    if output_hint is inspect.Signature.empty:
        output_hint = None

    if _stream_item(input_hint, _SYNC_STREAMS) is not None:
        raise TypeError(
            f"realtime method {method.__name__}(): an input stream is "
            f"AsyncIterator[...], not {input_hint}"
        )
    input_item = _stream_item(input_hint, _ASYNC_STREAMS)
    output_item = _stream_item(output_hint, _ASYNC_STREAMS)
    sync_output_item = _stream_item(output_hint, _SYNC_STREAMS)
    is_async_generator = inspect.isasyncgenfunction(function)

    mode: RealtimeMode
    if input_item is not None:
        mode = "bidi" if output_item is not None or is_async_generator else "client_streaming"
        if not (inspect.iscoroutinefunction(function) or is_async_generator):
            raise TypeError(
                f"realtime method {method.__name__}() streams its inputs, so it must be "
                "'async def' (as on fal)"
            )
        if mode == "client_streaming" and sync_output_item is not None:
            raise TypeError(
                f"realtime method {method.__name__}() streams its inputs: its output stream "
                f"must be AsyncIterator[...], not {output_hint}"
            )
    elif (
        output_item is not None
        or sync_output_item is not None
        or is_async_generator
        or inspect.isgeneratorfunction(function)
    ):
        mode = "server_streaming"
    else:
        mode = "unary"

    takes_batches = any(
        parameter.kind is parameter.VAR_POSITIONAL for parameter in signature.parameters.values()
    )
    if options.max_batch_size > 1 and input_item is None and not takes_batches:
        raise TypeError(
            f"realtime method {method.__name__}() has max_batch_size={options.max_batch_size}: "
            "it takes a batch as (input, *inputs)"
        )
    item_in = input_item if input_item is not None else input_hint
    item_out = next(
        (item for item in (output_item, sync_output_item) if item is not None), output_hint
    )
    if options.input_modal is not INFERRED:
        item_in = Any if options.input_modal is None else options.input_modal
    if options.output_modal is not INFERRED:
        item_out = options.output_modal
    return RealtimeShape(mode, item_in, None if item_out is Any else item_out)
