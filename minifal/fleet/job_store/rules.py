"""The queue's pure rules: what a resumed request needs, and what retention forgets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from minifal.fleet.job_store.base import StoredRequest

DEFAULT_RETENTION_SECONDS = 24 * 3600.0
"""Answered requests are kept (status, result) this long (``--queue-retention``)."""
DEFAULT_RETENTION_BYTES = 1 << 30
"""... and at most this many bytes of them, oldest forgotten first (``--queue-retention-size``)."""

Resume = Literal["run", "fail", "webhook", "nothing"]


def resume_plan(request: StoredRequest, max_attempts: int) -> Resume:
    """What a gateway that takes a request over does with it.

    Waiting: run it. Started on a runner that died with its gateway: run it again, unless it
    used up its attempts (counted across gateways), then it fails as a lost runner would.
    Answered with a webhook not sent: send it. Anything else: nothing to do.
    """
    if request.status != "COMPLETED":
        return "run" if request.attempts < max_attempts else "fail"
    return "webhook" if request.webhook_state == "pending" else "nothing"


@dataclass(frozen=True)
class Retention:
    seconds: float = DEFAULT_RETENTION_SECONDS
    bytes: int = DEFAULT_RETENTION_BYTES


@dataclass(frozen=True)
class Answered:
    """An answered request as retention sees it."""

    id: str
    finished: float
    size: int


def to_forget(answered: Iterable[Answered], now: float, retention: Retention) -> list[str]:
    """Answered requests older than ``retention.seconds``, then the oldest of the rest until
    they hold at most ``retention.bytes``."""
    by_age = sorted(answered, key=lambda a: a.finished)
    forget = [a.id for a in by_age if now - a.finished > retention.seconds]
    kept = by_age[len(forget) :]
    total = sum(a.size for a in kept)
    for answer in kept:
        if total <= retention.bytes:
            break
        forget.append(answer.id)
        total -= answer.size
    return forget
