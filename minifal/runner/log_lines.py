"""A request's log line on its way from a runner to the gateway, and fal's fields for it.

A runner behind a gateway writes each line that belongs to a request (``runner/request_logs.py``)
as one line of its stdout: ``MARKER`` then compact JSON (``r`` request id, ``l`` level, ``m``
message, ``t`` seconds since the epoch, ``p`` the prefix its log format puts before the message).
The gateway reads the runner's output anyway (to its console and the runner's log file); a line
with the marker is routed to its request (``fleet/request_logs.py``) and written out as the
readable line it stands for. Any other line is the runner's own, as before.

Levels are fal's (isolate's): ``DEBUG`` ``INFO`` ``WARNING`` ``ERROR`` (``CRITICAL`` too) for
``logging`` records, ``STDOUT`` and ``STDERR`` for what the app prints; the source is ``USER``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from minifal.runner_contract import REQUEST_LOG_MARKER

MARKER_BYTES = REQUEST_LOG_MARKER.encode()
MAX_MESSAGE_CHARS = 16_000
"""A longer message is cut (and says so): a line on the runner's pipe stays under the gateway's
line limit (64 KiB)."""
USER_SOURCE = "USER"


@dataclass(frozen=True)
class LogEntry:
    """One line of one request, as fal's ``logs`` field has it (``as_fal``)."""

    request_id: str
    message: str
    level: str
    timestamp: float
    prefix: str = ""
    """What the runner's log format puts before the message (time, level, logger); empty for
    printed lines."""
    source: str = USER_SOURCE

    @property
    def text(self) -> str:
        """The line as the runner's own log shows it."""
        return self.prefix + self.message

    def as_fal(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "level": self.level,
            "source": self.source,
            "timestamp": datetime.fromtimestamp(self.timestamp, UTC).isoformat(),
        }


def cut(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]}... [{len(message) - MAX_MESSAGE_CHARS} chars cut]"


def encode(entry: LogEntry) -> str:
    """The marked line, without its newline."""
    fields: dict[str, Any] = {
        "r": entry.request_id,
        "l": entry.level,
        "m": cut(entry.message),
        "t": entry.timestamp,
    }
    if entry.prefix:
        fields["p"] = entry.prefix
    return REQUEST_LOG_MARKER + json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def decode(line: str) -> tuple[str, LogEntry | None]:
    """A line of a runner's output -> (plain text before the marker, the entry or None).

    A line without the marker is all plain text. Text before the marker is what another
    writer left without a newline; a marked line that does not parse is plain text too.
    """
    start = line.find(REQUEST_LOG_MARKER)
    if start < 0:
        return line, None
    try:
        fields = json.loads(line[start + len(REQUEST_LOG_MARKER) :])
        entry = LogEntry(
            request_id=str(fields["r"]),
            message=str(fields["m"]),
            level=str(fields["l"]),
            timestamp=float(fields["t"]),
            prefix=str(fields.get("p", "")),
        )
    except (ValueError, KeyError, TypeError):
        return line, None
    return line[:start], entry
