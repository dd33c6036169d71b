"""Constant load on a fleet of ``apps_revisions/revision_app.py`` while revisions roll out: a few
client threads, each sending its next request as soon as the last one is answered, sync and
queue calls alternating, every answer recorded with the revision that served it.

Used by ``test_revision_processes.py`` and ``benchmarks/rolling_revision.py``.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

APP_NAME = "revision-app"
STATUS_POLL_S = 0.05
REQUEST_TIMEOUT_S = 60.0
QUEUE_WAIT_S = 120.0


@dataclass(frozen=True)
class Answer:
    kind: str  # "sync" or "queue"
    tag: str
    sent_at: float
    done_at: float
    status: int  # the HTTP status of the answer (a queue call's result); 0: no answer
    revision: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.revision is not None and self.error is None


class Load:
    """``clients`` threads calling ``base_url`` until ``stop()``; each call works ``work_s``."""

    def __init__(self, base_url: str, clients: int, work_s: float = 0.05) -> None:
        self.base_url = base_url
        self.clients = clients
        self.work_s = work_s
        self.answers: list[Answer] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(index,), name=f"load-{index}", daemon=True)
            for index in range(clients)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Answer]:
        """Stop sending; wait for the calls in flight (each is bounded by its timeouts)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S + QUEUE_WAIT_S)
        return sorted(self.answers, key=lambda answer: answer.sent_at)

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=REQUEST_TIMEOUT_S) as client:
            for number in itertools.count():
                if self._stop.is_set():
                    return
                tag = f"{index}-{number}"
                kind = "sync" if (index + number) % 2 == 0 else "queue"
                with self._lock:
                    self.sent += 1
                sent_at = time.time()
                try:
                    answer = self._call(client, kind, tag, sent_at)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    answer = Answer(kind, tag, sent_at, time.time(), 0, None, repr(exc))
                with self._lock:
                    self.answers.append(answer)

    def _call(self, client: httpx.Client, kind: str, tag: str, sent_at: float) -> Answer:
        body = {"seconds": self.work_s, "tag": tag}
        if kind == "sync":
            response = client.post("/", json=body)
        else:
            handle = client.post(f"/queue/local/{APP_NAME}", json=body)
            if handle.status_code != 200:
                return Answer(
                    kind, tag, sent_at, time.time(), handle.status_code, None, handle.text
                )
            status_url = handle.json()["status_url"]
            deadline = time.monotonic() + QUEUE_WAIT_S
            while client.get(status_url).json()["status"] != "COMPLETED":
                if time.monotonic() > deadline:
                    return Answer(kind, tag, sent_at, time.time(), 0, None, "queue wait")
                time.sleep(STATUS_POLL_S)
            response = client.get(handle.json()["response_url"])
        done_at = time.time()
        if response.status_code != 200:
            return Answer(kind, tag, sent_at, done_at, response.status_code, None, response.text)
        answer = response.json()
        if answer.get("tag") != tag:
            return Answer(kind, tag, sent_at, done_at, 200, None, f"answer for {answer}")
        return Answer(kind, tag, sent_at, done_at, 200, answer["revision"])


def last_old_send(answers: list[Answer], old: str, since: float) -> float | None:
    """Seconds from ``since`` (the deploy) to the last call sent that the ``old`` revision
    served: every call sent after it got another revision. None: no call after ``since`` did."""
    old_sends = [a.sent_at for a in answers if a.revision == old and a.sent_at >= since]
    return None if not old_sends else max(old_sends) - since


def latency_ms(answers: list[Answer]) -> dict[str, float | None]:
    times = sorted((answer.done_at - answer.sent_at) * 1000 for answer in answers)
    if not times:
        return {"p50": None, "p99": None, "max": None}
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return {"p50": statistics.median(times), "p99": p99, "max": times[-1]}


def summary(answers: list[Answer], sent: int) -> dict[str, Any]:
    revisions: dict[str, int] = {}
    for answer in answers:
        if answer.revision is not None:
            revisions[answer.revision] = revisions.get(answer.revision, 0) + 1
    return {
        "sent": sent,
        "answered": len(answers),
        "lost": sent - len(answers),
        "failed": sum(1 for answer in answers if not answer.ok),
        "sync": sum(1 for answer in answers if answer.kind == "sync"),
        "queue": sum(1 for answer in answers if answer.kind == "queue"),
        "by_revision": revisions,
        "latency_ms": latency_ms(answers),
        "failures": [asdict(answer) for answer in answers if not answer.ok][:10],
    }
