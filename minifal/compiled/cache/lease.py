"""Single flight across runners: a compile lease that expires unless its holder keeps beating.

Protocol (every step is one atomic operation that also holds on NFS-like shared filesystems):

- Leases are files ``leases/lease-<generation>.json``; the highest generation is the current one.
- **Acquire** generation g+1 (when the current one is absent, released or expired) by writing a temp
  file and hard-linking it to ``lease-<g+1>.json``: ``link`` fails if the name exists, so of several
  runners racing for g+1 exactly one wins, and nobody ever sees a half-written lease.
- **Heartbeat**: the holder rewrites its own file (temp + rename) with ``beat`` incremented, every
  TTL/3. A holder that finds a higher generation has lost its claim and stops.
- **Expiry** is judged by each waiter from *its own* monotonic clock: a lease whose
  ``(token, beat)`` has not changed for TTL seconds is expired, so clocks of different hosts
  never have to agree. Two shortcuts: a holder on this host whose pid is gone is dead at once, and
  a lease whose wall-clock stamp is older than 2*TTL (a leftover from long ago) is expired at
  first sight.
- **Release**: the holder rewrites its file with ``released: true`` (never deletes it, so
  generations only grow) and removes older generations.

The judgement (``assess_lease``) and the observation memory (``LeaseWatch``) are pure; ``LeaseDir``
does the file I/O; ``Heartbeat`` is the holder's thread.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from minifal.host import envs

logger = logging.getLogger("minifal.compile_cache")

_LEASE_NAME = re.compile(r"^lease-(\d+)\.json$")


@dataclass(frozen=True)
class LeaseRecord:
    generation: int
    token: str
    runner_id: str
    host: str
    pid: int
    beat: int
    wall_time: float  # holder's time.time() at its last beat; a hint only (clocks may differ)
    released: bool = False

    @property
    def holder(self) -> str:
        return f"{self.runner_id}@{self.host}:{self.pid}"


class LeaseState(enum.Enum):
    ABSENT = "absent"
    HELD = "held"
    RELEASED = "released"
    EXPIRED = "expired"


@dataclass(frozen=True)
class LeaseVerdict:
    state: LeaseState
    reason: str = ""

    @property
    def claimable(self) -> bool:
        return self.state is not LeaseState.HELD


def assess_lease(
    record: LeaseRecord | None,
    unchanged_for_s: float,
    now_wall: float,
    ttl_s: float,
    holder_gone_locally: bool,
) -> LeaseVerdict:
    """Whether the current lease still holds, from what one waiter has observed of it."""
    if record is None:
        return LeaseVerdict(LeaseState.ABSENT)
    if record.released:
        return LeaseVerdict(LeaseState.RELEASED, f"released by {record.holder}")
    if holder_gone_locally:
        return LeaseVerdict(LeaseState.EXPIRED, f"holder {record.holder} exited")
    if unchanged_for_s >= ttl_s:
        return LeaseVerdict(
            LeaseState.EXPIRED, f"no heartbeat from {record.holder} for {unchanged_for_s:.1f}s"
        )
    if now_wall - record.wall_time > 2 * ttl_s:
        return LeaseVerdict(
            LeaseState.EXPIRED,
            f"last heartbeat of {record.holder} {now_wall - record.wall_time:.0f}s ago",
        )
    return LeaseVerdict(LeaseState.HELD, f"held by {record.holder}")


class LeaseWatch:
    """A waiter's memory of the lease: how long has it seen the same (generation, token, beat)?"""

    def __init__(self) -> None:
        self._seen: tuple[int, str, int] | None = None
        self._since = 0.0

    def observe(self, record: LeaseRecord | None, now_monotonic: float) -> float:
        """Record an observation; returns how long the lease has been unchanged."""
        current = None if record is None else (record.generation, record.token, record.beat)
        if current != self._seen:
            self._seen, self._since = current, now_monotonic
        return now_monotonic - self._since


def holder_identity() -> tuple[str, str, int]:
    return (envs.RUNNER_ID.get(), socket.gethostname(), os.getpid())


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LeaseDir:
    """The lease files of one key and fingerprint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _file(self, generation: int) -> Path:
        return self.path / f"lease-{generation:010d}.json"

    def generations(self) -> list[int]:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _LEASE_NAME.match(n)))

    def current(self) -> LeaseRecord | None:
        """The highest generation's record; an unreadable one reads as held with no beat."""
        generations = self.generations()
        if not generations:
            return None
        generation = generations[-1]
        try:
            data = json.loads(self._file(generation).read_text())
            return LeaseRecord(**{**data, "generation": generation})
        except FileNotFoundError:
            return self.current()  # cleaned up meanwhile: a newer one exists
        except (OSError, ValueError, TypeError):
            return LeaseRecord(generation, "", "?", "?", -1, -1, time.time())

    def holder_gone_locally(self, record: LeaseRecord) -> bool:
        return record.host == socket.gethostname() and record.pid > 0 and not pid_exists(record.pid)

    def try_acquire(self, generation: int) -> LeaseRecord | None:
        """Create ``generation`` atomically; None if another runner created it first."""
        runner_id, host, pid = holder_identity()
        record = LeaseRecord(
            generation, uuid.uuid4().hex, runner_id, host, pid, beat=0, wall_time=time.time()
        )
        self.path.mkdir(parents=True, exist_ok=True)
        temp = self._write_temp(record)
        try:
            os.link(temp, self._file(generation))
        except FileExistsError:
            return None
        finally:
            temp.unlink(missing_ok=True)
        return record

    def beat(self, record: LeaseRecord) -> LeaseRecord | None:
        """Renew ``record``; None if a newer generation took over (the claim is lost)."""
        if self.generations()[-1:] != [record.generation]:
            return None
        renewed = replace(record, beat=record.beat + 1, wall_time=time.time())
        os.replace(self._write_temp(renewed), self._file(record.generation))
        return renewed

    def release(self, record: LeaseRecord) -> None:
        """Mark released (generations only grow) and drop older generations."""
        if self.generations()[-1:] == [record.generation]:
            released = replace(record, released=True, wall_time=time.time())
            os.replace(self._write_temp(released), self._file(record.generation))
        for generation in self.generations():
            if generation < record.generation:
                self._file(generation).unlink(missing_ok=True)

    def _write_temp(self, record: LeaseRecord) -> Path:
        temp = self.path / f".tmp-{uuid.uuid4().hex}"
        body = {k: v for k, v in asdict(record).items() if k != "generation"}
        with open(temp, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        return temp


class Heartbeat:
    """The holder's thread: renews the lease every TTL/3 until stopped or ``max_hold_until``.

    Stopping at ``max_hold_until`` (the holder's own startup deadline) makes a holder whose main
    thread hangs lose its claim too, not only one whose process died.
    """

    def __init__(
        self, leases: LeaseDir, record: LeaseRecord, ttl_s: float, max_hold_until: float
    ) -> None:
        self.leases = leases
        self.record = record
        self.interval_s = max(ttl_s / 3, 0.05)
        self.max_hold_until = max_hold_until
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="compile-cache-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if time.time() > self.max_hold_until:
                logger.warning("compile lease held past the startup deadline; letting it expire")
                return
            try:
                renewed = self.leases.beat(self.record)
            except OSError as exc:
                logger.warning("could not renew the compile lease: %s", exc)
                continue
            if renewed is None:
                self.lost = True
                logger.warning("compile lease was taken over by another runner")
                return
            self.record = renewed

    def stop_and_release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self.lost:
            self.leases.release(self.record)
