"""A runner's log lines, tagged with the request they belong to.

Behind a gateway, while the runner handles a request (``request_id.RequestIdMiddleware`` binds
its id to a context variable), every ``logging`` record and every line the app prints to
``sys.stdout``/``sys.stderr`` goes out as a marked line (``log_lines``): the gateway keeps it
with the request and still writes it, readable, to the runner's log. Lines outside a request
(imports, ``setup()``, ``teardown()``, health probes from no request) are written as before.

What carries the request's id:
- the endpoint, async or sync (FastAPI runs a sync one in its threadpool in a copy of the
  request's context), and the asyncio tasks it creates (asyncio copies the context);
- threads it starts with ``threading.Thread`` while it handles the request: ``install`` makes
  their ``run()`` run in a copy of the starter's context, as Python 3.14 does with
  ``-X thread_inherit_context``; and functions submitted to a ``ThreadPoolExecutor``
  (``loop.run_in_executor`` too): each runs in its submitter's context, whichever worker
  thread runs it, so a pool started by one request never tags another's lines.

What does not (those lines stay in the runner's log only, shown per runner): threads started
before the request that work for it (a worker from ``setup()`` fed through a queue); native
threads, and C code or libraries writing to file descriptors 1 and 2 directly (CUDA, Triton's
compiler, a ``print`` in a C extension) or to ``sys.stdout.buffer``; child processes
(``subprocess``, ``multiprocessing``).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar, Token
from typing import IO, Any

from minifal.runner.log_lines import MAX_MESSAGE_CHARS, LogEntry, encode
from minifal.runner_contract import REQUEST_LOG_MARKER

_request_id: ContextVar[str | None] = ContextVar("minifal_log_request_id", default=None)


def current_request_id() -> str | None:
    return _request_id.get()


class RequestLines:
    """Writes a request's lines, marked, to the runner's output; counts them per request (the
    answer's ``LOG_LINES_HEADER``) and holds printed text until its newline."""

    def __init__(self, output: IO[str], clock: Callable[[], float] = time.time) -> None:
        self.output = output
        self.clock = clock
        self._lock = threading.RLock()
        """Re-entrant: a signal handler that logs may interrupt a write (uvicorn's does)."""
        self._written: dict[str, int] = {}
        self._pending: dict[tuple[str, str], str] = {}

    # -- a request's life ------------------------------------------------------------------------

    def bind(self, request_id: str) -> Token[str | None]:
        with self._lock:
            self._written[request_id] = 0
        return _request_id.set(request_id)

    def written(self, request_id: str) -> int:
        """Lines of ``request_id`` written (or formatted for writing) so far."""
        return self._written.get(request_id, 0)

    def finish(self, request_id: str, token: Token[str | None]) -> None:
        """The request is over: its printed text without a newline goes out, its count goes."""
        _request_id.reset(token)
        with self._lock:
            for key in [key for key in self._pending if key[0] == request_id]:
                self._write(LogEntry(request_id, self._pending.pop(key), key[1], self.clock()))
            self._written.pop(request_id, None)

    # -- lines -----------------------------------------------------------------------------------

    def printed(self, request_id: str, level: str, text: str) -> None:
        """Text the app printed (``level``: ``STDOUT`` or ``STDERR``): each whole line is one
        entry; the rest waits for its newline (or the request's end)."""
        with self._lock:
            key = (request_id, level)
            pending = self._pending.pop(key, "") + text
            *lines, rest = pending.split("\n")
            now = self.clock()
            for line in lines:
                self._write(LogEntry(request_id, line.removesuffix("\r"), level, now))
            if len(rest) > MAX_MESSAGE_CHARS:
                self._write(LogEntry(request_id, rest, level, now))
            elif rest:
                self._pending[key] = rest

    def counted(self, request_id: str) -> None:
        """A record's line that a logging handler writes itself."""
        with self._lock:
            self._count(request_id)

    def _count(self, request_id: str) -> None:
        """Counted while the request runs (a thread may write after its end: not counted)."""
        if request_id in self._written:
            self._written[request_id] += 1

    def _write(self, entry: LogEntry) -> None:
        self._count(entry.request_id)
        self.output.write(encode(entry) + "\n")
        self.output.flush()


class TaggedStream:
    """``sys.stdout`` or ``sys.stderr`` of a runner: text written during a request goes to
    ``RequestLines``; anything else (and marked lines) to the stream, as before."""

    def __init__(self, stream: IO[str], level: str, lines: RequestLines) -> None:
        self._stream = stream
        self._level = level
        self._lines = lines

    def write(self, text: str) -> int:
        request_id = _request_id.get()
        if request_id is None or text.startswith(REQUEST_LOG_MARKER):
            return self._stream.write(text)
        self._lines.printed(request_id, self._level, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding, buffer, isatty...
        return getattr(self._stream, name)


class TaggedFormatter(logging.Formatter):
    """A handler's formatter during a request: the record as a marked line, with fal's level
    and the handler's own format before the message; outside a request, the handler's own."""

    def __init__(self, inner: logging.Formatter, lines: RequestLines) -> None:
        super().__init__()
        self.inner = inner
        self.lines = lines

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        request_id = _request_id.get()
        if request_id is None:
            return text
        at = text.find(record.message)
        prefix = text[:at] if at > 0 else ""
        self.lines.counted(request_id)
        return encode(
            LogEntry(request_id, text[len(prefix) :], record.levelname, record.created, prefix)
        )


# -- the runner process ----------------------------------------------------------------------------

_installed: RequestLines | None = None


def install() -> RequestLines:
    """Tag this process's lines from now on (a runner behind a gateway; idempotent): its
    ``sys.stdout``/``sys.stderr``, the root logger's stream handlers, and threads and executor
    tasks started during a request (see the module's docstring)."""
    global _installed
    if _installed is not None:
        return _installed
    lines = RequestLines(sys.stdout)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (
            sys.stdout,
            sys.stderr,
        ):
            handler.setFormatter(TaggedFormatter(handler.formatter or logging.Formatter(), lines))
    sys.stdout = TaggedStream(sys.stdout, "STDOUT", lines)  # type: ignore[assignment]
    sys.stderr = TaggedStream(sys.stderr, "STDERR", lines)  # type: ignore[assignment]
    if not getattr(sys.flags, "thread_inherit_context", 0):
        threading.Thread.start = _start_in_context  # type: ignore[method-assign]
    ThreadPoolExecutor.submit = _submit_in_context  # type: ignore[method-assign]
    _installed = lines
    return lines


_thread_start = threading.Thread.start
_executor_submit = ThreadPoolExecutor.submit


def _start_in_context(self: threading.Thread) -> None:
    """``Thread.start``: a thread started during a request runs in a copy of its context."""
    if _request_id.get() is not None:
        context = contextvars.copy_context()
        run = self.run
        self.run = lambda: context.run(run)  # type: ignore[method-assign]
    _thread_start(self)


def _submit_in_context(
    self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any
) -> Future[Any]:
    """``ThreadPoolExecutor.submit``: the function runs in its submitter's context."""
    return _executor_submit(self, contextvars.copy_context().run, fn, *args, **kwargs)
