"""fal's three entry points, over the segment store, the lease and the private local dir.

``load_inductor_cache(key)``: point Inductor and Triton at this process's private dir; if the
shared store has segments for this key and build fingerprint, unpack them (hit); otherwise claim
the compile lease, or wait for its holder to publish (bounded by the startup deadline) and load
that. Returns a content hash of the local dir. ``sync_inductor_cache(key, dir_hash)``: publish the
files the store lacks as one new segment, then release the lease. Neither ever raises: a cache
that does not work costs a compile, never the app's start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minifal.compiled import torch_internals
from minifal.compiled.cache.autotune_lookup import redirect_autotune_lookups
from minifal.compiled.cache.fingerprint import (
    BuildFingerprint,
    current_fingerprint,
    describe_mismatch,
)
from minifal.compiled.cache.layout import CacheLocation
from minifal.compiled.cache.lease import (
    Heartbeat,
    LeaseDir,
    LeaseWatch,
    assess_lease,
)
from minifal.compiled.cache.local_dir import private_cache_root
from minifal.compiled.cache.manifest import (
    DirScanner,
    Manifest,
    manifest_digest,
    new_or_changed,
)
from minifal.compiled.cache.pack_formats import CorruptArchive
from minifal.compiled.cache.segment_store import SegmentStore
from minifal.compiled.cache.settings import (
    POLL_INTERVAL_S,
    PROGRESS_LOG_INTERVAL_S,
    CacheSettings,
    current_settings,
)
from minifal.compiled.cache.torch_timings import CompileTimes, compile_times
from minifal.host.data_dir import data_dir
from minifal.host.gpu import get_gpu_type
from minifal.startup.events import OpenSpan, begin, finish, phase

logger = logging.getLogger("minifal.compile_cache")

_FX_COUNTERS = ("fxgraph_cache_hit", "fxgraph_cache_miss")


@dataclass
class _Session:
    """What one ``load_inductor_cache`` learned, for the matching ``sync_inductor_cache``."""

    key: str
    root: Path
    scanner: DirScanner
    loaded_at: float
    fingerprint: BuildFingerprint | None = None
    location: CacheLocation | None = None
    store: SegmentStore | None = None
    known: Manifest = field(default_factory=dict)  # files the store holds, as far as we know
    seen_segments: set[str] = field(default_factory=set)
    heartbeat: Heartbeat | None = None
    hit: bool = False
    fx_counters_at_load: dict[str, int] = field(default_factory=dict)
    times_at_load: CompileTimes = field(default_factory=compile_times)
    block: OpenSpan | None = None  # the ``compile_cache.compile`` phase: from load to sync


_sessions: dict[str, _Session] = {}


def load_inductor_cache(cache_key: str) -> str:
    """Fill this process's private Inductor cache from the shared store; returns the dir's hash.

    A ``torch.compile`` follows (fal's plain path): the autotune lookups are redirected now."""
    if current_settings().redirect_autotune and "torch" in sys.modules:  # never import torch here
        redirect_autotune_lookups()
    return load_cache_scope(cache_key)


def load_cache_scope(
    cache_key: str,
    include: Callable[[str], bool] | None = None,
    keep_waiting: Callable[[], bool] | None = None,
) -> str:
    """``load_inductor_cache``, where only the private dir's files that ``include`` accepts (by
    path relative to the dir) are this key's: hashed, and published by ``sync_inductor_cache``.

    ``keep_waiting`` is asked at each poll while another runner holds the lease: False stops
    the wait (a miss, without the lease). Its first call says that the wait began.

    It imports no compiler (Inductor, Dynamo, Triton): a load that finds nothing costs none."""
    settings = current_settings()
    try:
        root = private_cache_root(settings.local_root)
    except OSError as exc:
        logger.warning("compiled cache %r: no private cache dir (%s); compiling", cache_key, exc)
        return ""
    session = _Session(cache_key, root, DirScanner(root, include), loaded_at=time.time())
    _sessions[cache_key] = session
    try:
        _load(session, settings, keep_waiting)
    except Exception as exc:
        logger.warning("compiled cache %r: load failed (%s); compiling instead", cache_key, exc)
    session.fx_counters_at_load = _fx_counters()
    session.times_at_load = compile_times()
    session.loaded_at = time.time()
    session.block = begin(
        "compile_cache.compile", session.loaded_at, key=cache_key, hit=session.hit
    )
    return manifest_digest(session.scanner.scan())


def sync_inductor_cache(cache_key: str, dir_hash: str, *, scan: bool = True) -> None:
    """Publish what this process compiled since ``load_inductor_cache``; a no-op if nothing new.

    ``scan=False``: the caller knows it added nothing (the lease is still released)."""
    session = _sessions.get(cache_key)
    if session is None:
        logger.warning("compiled cache %r: sync without a load in this process; skipped", cache_key)
        return
    try:
        _sync(session, dir_hash, scan)
    except Exception as exc:
        logger.warning("compiled cache %r: sync failed (%s); the app goes on", cache_key, exc)
    finally:
        _release(session)


@contextmanager
def synchronized_inductor_cache(cache_key: str) -> Iterator[None]:
    """Load before the block, publish after it, even when it raises (its exception propagates)."""
    dir_hash = load_inductor_cache(cache_key)
    try:
        yield
    finally:
        sync_inductor_cache(cache_key, dir_hash)


def _load(
    session: _Session, settings: CacheSettings, keep_waiting: Callable[[], bool] | None
) -> None:
    with phase("compile_cache.load", key=session.key, hit=False) as details:
        fingerprint = current_fingerprint()
        location = CacheLocation(data_dir(), get_gpu_type(), session.key, fingerprint.dir_name)
        session.fingerprint, session.location = fingerprint, location
        session.store = SegmentStore(location.segments_dir)
        details.update(format=session.store.fmt.name, version=fingerprint.dir_name)
        loaded, nbytes, corrupt = _load_new_segments(session)
        details.update(bytes=nbytes, segments=loaded)
        if loaded:
            session.hit = True
            details.update(hit=True, reason="loaded")
            return
        reason = _miss_reason(location, fingerprint)
        details["reason"] = f"corrupt artifact: {', '.join(corrupt)}" if corrupt else reason
        logger.info("compiled cache %r: miss (%s)", session.key, details["reason"])
    _claim_or_wait(session, settings, keep_waiting)


def _claim_or_wait(
    session: _Session, settings: CacheSettings, keep_waiting: Callable[[], bool] | None = None
) -> None:
    """Become the one runner that compiles, or wait for it and load what it publishes."""
    assert session.location is not None and session.store is not None
    leases = LeaseDir(session.location.leases_dir)
    watch = LeaseWatch()
    started = time.time()
    next_log = started + PROGRESS_LOG_INTERVAL_S
    with phase("compile_cache.wait", key=session.key, hit=False) as details:
        while True:
            if session.store.names():
                loaded, nbytes, _ = _load_new_segments(session)
                if loaded:
                    session.hit = True
                    details.update(hit=True, bytes=nbytes, segments=loaded, reason="published")
                    return
            current = leases.current()
            unchanged_for = watch.observe(current, time.monotonic())
            gone = (
                current is not None and not current.released and leases.holder_gone_locally(current)
            )
            verdict = assess_lease(current, unchanged_for, time.time(), settings.lease_ttl_s, gone)
            if verdict.claimable:
                generation = current.generation + 1 if current else 1
                try:
                    mine = leases.try_acquire(generation)
                except OSError as exc:
                    logger.warning("compiled cache %r: no lease (%s); compiling", session.key, exc)
                    details.update(reason=f"lease unavailable: {exc}", role="compile")
                    return
                if mine is None:
                    continue  # another runner claimed this generation first
                if session.store.names():  # published between our look and our claim
                    leases.release(mine)
                    continue
                session.heartbeat = Heartbeat(leases, mine, settings.lease_ttl_s, settings.deadline)
                session.heartbeat.start()
                reason = verdict.state.value + (f": {verdict.reason}" if verdict.reason else "")
                details.update(role="compile", reason=reason, generation=generation)
                if verdict.reason:
                    logger.info("compiled cache %r: taking the lease (%s)", session.key, reason)
                return
            if keep_waiting is not None and not keep_waiting():
                details.update(reason=f"stopped waiting ({verdict.reason})")
                return
            now = time.time()
            if now >= settings.deadline:
                logger.warning(
                    "compiled cache %r: startup deadline reached waiting (%s); compiling",
                    session.key,
                    verdict.reason,
                )
                details.update(role="compile", reason=f"deadline ({verdict.reason})")
                return
            if now >= next_log:
                logger.info(
                    "compiled cache %r: waiting %.0fs for another runner's compile (%s)",
                    session.key,
                    now - started,
                    verdict.reason,
                )
                next_log = now + PROGRESS_LOG_INTERVAL_S
            time.sleep(POLL_INTERVAL_S)


def _load_new_segments(session: _Session) -> tuple[int, int, list[str]]:
    """Unpack segments not loaded yet; returns (count, bytes, names found corrupt)."""
    assert session.store is not None
    loaded = nbytes = 0
    corrupt = []
    for name in session.store.names():
        if name in session.seen_segments:
            continue
        try:
            segment = session.store.load(name, session.root)
        except FileNotFoundError:
            continue
        except CorruptArchive as exc:
            logger.warning("compiled cache %r: corrupt segment skipped: %s", session.key, exc)
            corrupt.append(name)
            # A read-only store keeps it: every loader skips it until a writer repairs it.
            with contextlib.suppress(OSError):
                session.store.quarantine(name)
            continue
        session.seen_segments.add(name)
        session.known.update(segment.manifest)
        session.scanner.trust(segment.manifest)
        loaded += 1
        nbytes += segment.nbytes
    return loaded, nbytes, corrupt


def _miss_reason(location: CacheLocation, fingerprint: BuildFingerprint) -> str:
    """Why nothing was found: no artifact at all, or only ones built with something else."""
    ours = fingerprint.as_dict()
    others = []
    try:
        siblings = sorted(location.key_dir.glob("*/fingerprint.json"))
    except OSError:
        siblings = []
    for path in siblings:
        if path.parent.name == fingerprint.dir_name:
            continue
        try:
            differences = describe_mismatch(ours, json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
        others.append(f"{path.parent.name} differs in {'; '.join(differences)}")
    if others:
        return "version mismatch: " + " | ".join(others)
    return "no artifact yet"


def _sync(session: _Session, dir_hash: str, scan: bool) -> None:
    now = time.time()
    fx = _fx_counters()
    times = compile_times().since(session.times_at_load)
    block = session.block or OpenSpan("compile_cache.compile", session.loaded_at, None)
    finish(
        block,
        now,
        key=session.key,
        hit=session.hit,
        **{k: fx.get(k, 0) - session.fx_counters_at_load.get(k, 0) for k in _FX_COUNTERS},
        **asdict(times),
    )
    with phase("compile_cache.sync", key=session.key, bytes=0) as details:
        if not scan:
            details["reason"] = "nothing compiled"
            return
        current = session.scanner.scan()
        if manifest_digest(current) == dir_hash:
            details["reason"] = "unchanged"
            return
        store, location = session.store, session.location
        if store is None or location is None or session.fingerprint is None:
            details["reason"] = "no shared store"
            return
        details["format"] = store.fmt.name
        for name in store.names():  # merge: learn what others published since our load
            if name not in session.seen_segments:
                try:
                    session.known.update(store.read_manifest(name))
                    session.seen_segments.add(name)
                except (CorruptArchive, OSError):
                    continue
        new = new_or_changed(current, session.known)
        if not new:
            details["reason"] = "already published"
            return
        _write_fingerprint(location, session.fingerprint)
        segment = store.publish(session.root, new)
        session.seen_segments.add(segment.name)
        session.known.update(new)
        details.update(reason="published", bytes=segment.nbytes, files=len(new))
        logger.info(
            "compiled cache %r: published %d files (%.1f MB)",
            session.key,
            len(new),
            segment.nbytes / 1e6,
        )


def _release(session: _Session) -> None:
    if session.heartbeat is None:
        return
    try:
        session.heartbeat.stop_and_release()
    except OSError as exc:
        logger.warning("compiled cache %r: could not release the lease (%s)", session.key, exc)
    session.heartbeat = None


def _write_fingerprint(location: CacheLocation, fingerprint: BuildFingerprint) -> None:
    if location.fingerprint_file.exists():
        return
    location.version_dir.mkdir(parents=True, exist_ok=True)
    temp = location.version_dir / f".tmp-{uuid.uuid4().hex}"
    temp.write_text(json.dumps(fingerprint.as_dict(), indent=2))
    os.replace(temp, location.fingerprint_file)


def _fx_counters() -> dict[str, int]:
    """torch's own FX graph cache counters, if Dynamo is loaded (never imports it: a process
    without it has counted nothing)."""
    if not torch_internals.dynamo_imported():
        return {}
    try:
        counters = torch_internals.dynamo_counters("inductor")
    except ImportError:
        return {}
    return {k: int(counters.get(k, 0)) for k in _FX_COUNTERS}
