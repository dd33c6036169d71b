"""Per-request logs, the pure parts: the marked line, a runner's tagging (streams, formatter,
threads, executor tasks) over an in-memory output, and the gateway's bounded store."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from minifal.fleet.request_logs import RequestLogs
from minifal.runner import request_logs
from minifal.runner.log_lines import MAX_MESSAGE_CHARS, LogEntry, decode, encode
from minifal.runner.request_logs import RequestLines, TaggedFormatter, TaggedStream
from minifal.runner_contract import REQUEST_LOG_MARKER

pytestmark = pytest.mark.unit


def entries(output: io.StringIO) -> list[LogEntry]:
    found = []
    for line in output.getvalue().splitlines():
        plain, entry = decode(line)
        assert plain == "" and entry is not None, line
        found.append(entry)
    return found


# -- the marked line -------------------------------------------------------------------------------


def test_a_line_round_trips_with_fal_fields() -> None:
    entry = LogEntry("req-1", "hello\nworld ü", "INFO", 1_700_000_000.5, "2023 INFO app: ")
    line = encode(entry)
    assert line.startswith(REQUEST_LOG_MARKER) and "\n" not in line
    assert decode(line) == ("", entry)
    assert entry.text == "2023 INFO app: hello\nworld ü"
    assert entry.as_fal() == {
        "message": "hello\nworld ü",
        "level": "INFO",
        "source": "USER",
        "timestamp": "2023-11-14T22:13:20.500000+00:00",
    }


def test_plain_lines_and_text_left_before_a_marker() -> None:
    assert decode("just a line") == ("just a line", None)
    entry = LogEntry("r", "m", "STDOUT", 1.0)
    assert decode("partial" + encode(entry)) == ("partial", entry)
    broken = REQUEST_LOG_MARKER + "{not json"
    assert decode(broken) == (broken, None)
    assert decode(REQUEST_LOG_MARKER + '{"r": "x"}')[1] is None


def test_a_long_message_is_cut_and_says_so() -> None:
    _, entry = decode(encode(LogEntry("r", "x" * (MAX_MESSAGE_CHARS + 10), "STDOUT", 1.0)))
    assert entry is not None
    assert entry.message.endswith("[10 chars cut]")


# -- a runner's tagging ----------------------------------------------------------------------------


def test_printed_lines_inside_a_request_are_tagged_outside_are_not() -> None:
    output, plain = io.StringIO(), io.StringIO()
    lines = RequestLines(output, clock=lambda: 5.0)
    stream = TaggedStream(plain, "STDOUT", lines)
    stream.write("setup line\n")
    token = lines.bind("req-a")
    stream.write("one")
    stream.write(" line\ntwo\r\nthree")
    assert lines.written("req-a") == 2
    lines.finish("req-a", token)
    stream.write("teardown line\n")
    assert plain.getvalue() == "setup line\nteardown line\n"
    assert [(e.request_id, e.message, e.level) for e in entries(output)] == [
        ("req-a", "one line", "STDOUT"),
        ("req-a", "two", "STDOUT"),
        ("req-a", "three", "STDOUT"),  # left without a newline: out at the request's end
    ]
    assert lines.written("req-a") == 0  # its count went with it


def test_marked_lines_pass_through_a_tagged_stream() -> None:
    output, plain = io.StringIO(), io.StringIO()
    lines = RequestLines(output)
    token = lines.bind("req-a")
    TaggedStream(plain, "STDERR", lines).write(encode(LogEntry("req-a", "m", "INFO", 1.0)) + "\n")
    lines.finish("req-a", token)
    assert plain.getvalue().startswith(REQUEST_LOG_MARKER) and output.getvalue() == ""


def test_a_record_during_a_request_keeps_its_level_and_the_handler_format() -> None:
    output, handled = io.StringIO(), io.StringIO()
    lines = RequestLines(output)
    handler = logging.StreamHandler(handled)
    handler.setFormatter(
        TaggedFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"), lines)
    )
    log = logging.getLogger("test_request_logs.formatter")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.warning("before %d", 1)
        token = lines.bind("req-b")
        log.warning("during %d", 2)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        assert lines.written("req-b") == 2
        lines.finish("req-b", token)
    finally:
        log.removeHandler(handler)
    first, *marked = handled.getvalue().split("\n", 1)
    assert first == "WARNING test_request_logs.formatter: before 1"
    found = [decode(line)[1] for line in marked[0].splitlines() if REQUEST_LOG_MARKER in line]
    assert [(e.level, e.message.splitlines()[0], e.prefix) for e in found if e] == [
        ("WARNING", "during 2", "WARNING test_request_logs.formatter: "),
        ("ERROR", "failed", "ERROR test_request_logs.formatter: "),
    ]
    assert found[1] is not None and "ValueError: boom" in found[1].message


def test_threads_and_executor_tasks_carry_their_starters_request() -> None:
    """Through the functions ``install`` puts in place of ``Thread.start`` and
    ``ThreadPoolExecutor.submit`` (called directly here: nothing global is patched)."""
    output = io.StringIO()
    lines = RequestLines(output)
    seen: dict[str, str | None] = {}

    def record(name: str) -> None:
        seen[name] = request_logs.current_request_id()

    executor = ThreadPoolExecutor(max_workers=1)
    token = lines.bind("req-a")
    thread = threading.Thread(target=record, args=("thread",))
    request_logs._start_in_context(thread)
    thread.join()
    request_logs._submit_in_context(executor, record, "task-a").result()  # starts the worker
    lines.finish("req-a", token)
    token = lines.bind("req-b")
    request_logs._submit_in_context(executor, record, "task-b").result()  # the same worker
    lines.finish("req-b", token)
    request_logs._submit_in_context(executor, record, "task-none").result()
    outside = threading.Thread(target=record, args=("outside",))
    request_logs._start_in_context(outside)
    outside.join()
    executor.shutdown()
    assert seen == {
        "thread": "req-a",
        "task-a": "req-a",
        "task-b": "req-b",
        "task-none": None,
        "outside": None,
    }


def test_two_requests_printing_from_threads_at_once_keep_their_lines_apart() -> None:
    output = io.StringIO()
    lines = RequestLines(output)
    stream = TaggedStream(io.StringIO(), "STDOUT", lines)
    start = threading.Barrier(2)

    def request(tag: str) -> None:
        token = lines.bind(tag)
        start.wait()
        for index in range(200):
            stream.write(f"{tag} ")
            stream.write(f"{index}\n")
        lines.finish(tag, token)

    threads = [threading.Thread(target=request, args=(tag,)) for tag in ("A", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for tag in ("A", "B"):
        mine = [e.message for e in entries(output) if e.request_id == tag]
        assert mine == [f"{tag} {index}" for index in range(200)]


# -- the gateway's store ---------------------------------------------------------------------------


def line(request_id: str, message: str = "m") -> LogEntry:
    return LogEntry(request_id, message, "INFO", 1.0)


def test_only_tracked_requests_keep_lines() -> None:
    logs = RequestLogs()
    logs.add("runner-0", line("health-check"))
    logs.track("req")
    logs.add("runner-0", line("req", "a"))
    logs.add("runner-0", line("req", "b"))
    assert not logs.knows("health-check")
    assert [e.message for e in logs.logs_for("req")] == ["a", "b"]
    assert [entry["message"] for entry in logs.fal_logs("req", 1)] == ["b"]
    assert logs.logs_for("unknown") == [] and logs.fal_logs("unknown") == []
    logs.forget("req")
    assert not logs.knows("req") and logs.total_bytes == 0


def test_a_request_over_its_lines_or_bytes_says_so_once() -> None:
    logs = RequestLogs(max_lines=3, max_bytes=10_000)
    logs.track("req")
    for index in range(10):
        logs.add("runner-0", line("req", str(index)))
    kept = logs.logs_for("req")
    assert [e.message for e in kept[:3]] == ["0", "1", "2"]
    assert len(kept) == 4 and "over its limit (3 lines" in kept[3].message
    by_bytes = RequestLogs(max_lines=100, max_bytes=300)
    by_bytes.track("req")
    for _ in range(10):
        by_bytes.add("runner-0", line("req", "x" * 100))
    assert len(by_bytes.logs_for("req")) == 2  # one line (164 bytes) and the notice


def test_the_oldest_requests_go_first_past_the_global_bounds() -> None:
    logs = RequestLogs(max_total_bytes=1_000, max_requests=3)
    for request_id in ("r1", "r2", "r3"):
        logs.track(request_id)
        logs.add("runner-0", line(request_id, "x" * 300))
    assert not logs.knows("r1") and logs.knows("r2")  # 3 x 364 bytes > 1000
    logs.track("r4")
    logs.track("r5")
    assert [logs.knows(r) for r in ("r2", "r3", "r4", "r5")] == [False, True, True, True]
    assert logs.total_bytes == 364


def test_settle_waits_for_the_lines_a_runner_said_it_wrote() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        logs = RequestLogs()
        logs.track("req")
        waiting = asyncio.ensure_future(logs.settle("req", "runner-0", 2, timeout=30))
        logs.add("runner-0", line("req"))
        await asyncio.sleep(0)
        logs.add("runner-1", line("req"))  # another runner's line does not count
        await asyncio.sleep(0)
        assert not waiting.done()
        logs.add("runner-0", line("req"))
        settled = await waiting
        missing = await logs.settle("req", "runner-0", 5, timeout=0.01)
        unknown = await logs.settle("nobody", "runner-0", 1, timeout=30)
        return settled, missing, unknown

    assert asyncio.run(scenario()) == (True, False, False)


def test_a_status_stream_wakes_on_a_line_or_a_change() -> None:
    async def scenario() -> None:
        logs = RequestLogs()
        logs.track("req")
        changed = asyncio.Event()
        waiting = asyncio.ensure_future(logs.wait(changed, "req", timeout=30))
        await asyncio.sleep(0)
        logs.add("runner-0", line("req"))
        await asyncio.wait_for(waiting, 5)
        waiting = asyncio.ensure_future(logs.wait(changed, None, timeout=30))
        await asyncio.sleep(0)
        changed.set()
        await asyncio.wait_for(waiting, 5)

    asyncio.run(scenario())
