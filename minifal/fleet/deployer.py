"""The app's revisions in a running gateway: which one serves, which one rolls out.

``deploy()`` checks a new revision (its manifest, computed in a child process as at start, and
whether it can replace the serving one) and makes it the target of a rollout; the gateway's
scaling loop then calls ``step()``, which applies ``revisions.plan_rollout`` through the
supervisor until the target is promoted or has failed. ``watch()`` (``minifal run --watch``)
deploys when the app file changes. A gateway of several apps loads an app once to know which
of its apps it is (``load_revision``) and hands what it loaded to that app's deployer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minifal.compat.project import (
    ProjectError,
    absolute_reference,
    is_app_name,
    load_project_app,
)
from minifal.fleet.backends.base import RunnerRevision
from minifal.fleet.revisions import (
    Revision,
    RevisionStatus,
    RolloutView,
    RunnerSide,
    Standing,
    Strategy,
    compare_manifests,
    content_hash,
    plan_rollout,
    revision_id,
)
from minifal.fleet.runner import Runner, RunnerState
from minifal.fleet.supervisor import Supervisor
from minifal.runner.app_manifest import AppManifest, ManifestError, inspect_app

logger = logging.getLogger("minifal.fleet")

REVISIONS_KEPT = 50
SOURCES_DIR = "app-revisions"
"""Under the data dir: each revision's copy of the app file, by content hash. The same
content keeps the same path across runs, so what keys on a code object's file name (Python's
bytecode cache, tracebacks, compiled caches) stays stable."""
WATCH_EVERY_SECONDS = 1.0


class DeployRejected(Exception):
    """A deploy the gateway refuses: its HTTP status, what is wrong, and the details."""

    def __init__(self, status: int, detail: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problems = problems


def app_source_file(reference: str) -> Path | None:
    """The file a reference loads (``file.py[::Class]``, or a project app's ``ref``); None for
    a project app given as an entry point."""
    if is_app_name(reference):
        try:
            ref = load_project_app(reference).ref
        except ProjectError:
            return None
        if ref is None:
            return None
        reference = ref
    return Path(reference.partition("::")[0])


def keep_source(reference: str, data_dir: Path) -> tuple[str, Path | None]:
    """Read the app file once: its content hash, and a copy of it that the revision's runners
    import whatever happens to the file later (``DATA_DIR/app-revisions/<hash>/<name>``). A project
    app given as an entry point has no file to keep: its hash is the reference's. Raises
    ``OSError`` when the file cannot be read or kept."""
    path = app_source_file(reference)
    class_name = reference.partition("::")[2] or None
    if path is None:
        return content_hash(reference.encode(), class_name), None
    source = path.read_bytes()
    digest = content_hash(source, class_name)
    kept = data_dir / SOURCES_DIR / digest / path.name
    if not kept.is_file():
        kept.parent.mkdir(parents=True, exist_ok=True)
        partial = kept.with_name(kept.name + ".partial")
        partial.write_bytes(source)
        partial.replace(kept)
    return digest, kept


@dataclass(frozen=True)
class LoadedApp:
    """An app reference as a new revision's runners would load it: its content hash, the kept
    copy of its file (None for a project's entry point) and its manifest."""

    reference: str
    source_hash: str
    source: str | None
    manifest: AppManifest


async def read_source(reference: str, data_dir: Path) -> tuple[str, str | None]:
    """``keep_source`` off the event loop; the kept copy as a string. Raises ``DeployRejected``
    (422) when the file cannot be read."""
    try:
        digest, kept = await asyncio.to_thread(keep_source, reference, data_dir)
    except OSError as exc:
        raise DeployRejected(422, f"cannot read {reference}: {exc}") from None
    return digest, None if kept is None else str(kept)


async def load_manifest(reference: str, source: str | None) -> AppManifest:
    """The app's manifest, from a child process. Raises ``DeployRejected`` (422) when it does
    not load."""
    try:
        return await asyncio.to_thread(inspect_app, reference, source=source)
    except ManifestError as exc:
        raise DeployRejected(422, f"{reference} does not load", (str(exc),)) from None


async def load_revision(reference: str, data_dir: Path) -> LoadedApp:
    """Read, keep and load the app at ``reference``. Raises ``DeployRejected`` (422)."""
    digest, source = await read_source(reference, data_dir)
    return LoadedApp(reference, digest, source, await load_manifest(reference, source))


def standing(runner: Runner) -> Standing:
    if runner.trial_failure is not None:
        return Standing.FAILED
    if runner.state is RunnerState.TERMINATED:
        return Standing.GONE
    if runner.retiring or runner.state in (RunnerState.DRAINING, RunnerState.TERMINATING):
        return Standing.LEAVING
    if runner.accepts_requests:
        return Standing.READY
    return Standing.STARTING


def runner_side(runner: Runner) -> RunnerSide:
    return RunnerSide(
        runner.runner_id,
        runner.revision_id or "",
        standing(runner),
        runner.in_flight,
        runner.idle_since,
        runner.trial_failure,
    )


class Deployer:
    """``capacity``: how many CPU runners the machine holds (the scaler's hard cap; a GPU
    fleet's comes from its GPU pool)."""

    def __init__(
        self,
        supervisor: Supervisor,
        manifest: AppManifest,
        app_reference: str,
        data_dir: Path,
        capacity: int | None,
        on_promoted: Callable[[AppManifest], None],
    ) -> None:
        self.supervisor = supervisor
        self.data_dir = data_dir
        pool = supervisor.gpu_pool
        self.surge = pool.per_runner == 0
        """GPU runners never share a GPU for a rollout; CPU runners may share a core."""
        self.capacity = capacity if self.surge else max(1, len(pool.gpus) // pool.per_runner)
        self.on_promoted = on_promoted
        first_hash, kept = keep_source(app_reference, data_dir)
        first = Revision(
            revision_id(1, first_hash),
            1,
            first_hash,
            app_reference,
            time.time(),
            RevisionStatus.SERVING,
            source=None if kept is None else str(kept),
            promoted_at=time.time(),
        )
        self.revisions: list[Revision] = [first]
        self.serving = first
        self.target: Revision | None = None
        self._manifests = {first.revision_id: manifest}
        self._deploying = asyncio.Lock()
        self._numbers = 1

    @property
    def app_name(self) -> str:
        """The app's name (the same in every revision: ``compare_manifests``)."""
        return self._manifests[self.serving.revision_id].app_name

    @property
    def rolling_out(self) -> bool:
        return self.target is not None

    def runner_revision(self, revision: Revision | None = None) -> RunnerRevision:
        """What a runner of ``revision`` (default: the serving one) starts with."""
        revision = revision or self.serving
        return RunnerRevision(revision.revision_id, revision.app_reference, revision.source)

    def find(self, revision_id: str) -> Revision | None:
        return next((r for r in self.revisions if r.revision_id == revision_id), None)

    # -- a deploy ----------------------------------------------------------------------------------

    async def deploy(
        self, reference: str | None, strategy: Strategy, loaded: LoadedApp | None = None
    ) -> Revision:
        """Check the app at ``reference`` (default: the serving revision's) and make it the
        target of a rollout; the serving revision when its content is the same. ``loaded``:
        the app already loaded (``load_revision``; its reference wins). Raises
        ``DeployRejected``."""
        if self._deploying.locked() or self.target is not None:
            busy = self.target.revision_id if self.target else "another deploy"
            raise DeployRejected(409, f"{busy} is rolling out: wait for it to finish")
        async with self._deploying:
            if loaded is not None:
                reference, new_hash, source = loaded.reference, loaded.source_hash, loaded.source
            else:
                reference = reference or self.serving.app_reference
                new_hash, source = await read_source(reference, self.data_dir)
            same_app = absolute_reference(reference) == absolute_reference(
                self.serving.app_reference
            )
            if same_app and new_hash == self.serving.source_hash:
                return self.serving
            manifest = loaded.manifest if loaded else await load_manifest(reference, source)
            check = compare_manifests(self._manifests[self.serving.revision_id], manifest)
            if check.problems:
                raise DeployRejected(
                    409, f"{reference} cannot replace the serving revision", check.problems
                )
            self._numbers += 1
            revision = Revision(
                revision_id(self._numbers, new_hash),
                self._numbers,
                new_hash,
                reference,
                time.time(),
                RevisionStatus.DEPLOYING,
                strategy=strategy,
                source=source,
            )
            self._manifests[revision.revision_id] = manifest
            self.revisions.append(revision)
            dropped = self.revisions[:-REVISIONS_KEPT]
            self.revisions[: len(dropped)] = [r for r in dropped if r is self.serving]
            self.target = revision
        kept = f"; kept until the gateway restarts: {', '.join(check.kept)}" if check.kept else ""
        logger.info(
            "revision %s: deploying %s (%s), replacing %s%s",
            revision.revision_id,
            reference,
            strategy.value,
            self.serving.revision_id,
            kept,
        )
        return revision

    # -- the rollout, from the scaling loop ----------------------------------------------------

    def step(self, wanted: int) -> None:
        """One step of the rollout: start, drain, promote or fail (``plan_rollout``)."""
        target = self.target
        if target is None or target.strategy is None:
            return
        view = RolloutView(
            target.revision_id,
            target.strategy,
            tuple(runner_side(runner) for runner in self.supervisor.runners),
            wanted,
            self.capacity,
            self.surge,
        )
        plan = plan_rollout(view)
        for runner_id in plan.drain:
            runner = self.supervisor.find(runner_id)
            if runner is None:
                continue
            if plan.failed is not None:
                why = f"revision {target.revision_id} failed"
            else:
                why = f"revision {target.revision_id} replaces it"
            self.supervisor.drain(runner, why)
        for _ in range(plan.start):
            runner = self.supervisor.add_runner(self.runner_revision(target), trial=True)
            logger.info("[%s] starting: revision %s", runner.runner_id, target.revision_id)
        if plan.failed is not None:
            self._failed(target, plan.failed)
        elif plan.promote:
            self._promote(target)

    def _promote(self, target: Revision) -> None:
        now = time.time()
        old = self.serving
        old.status, old.retired_at = RevisionStatus.RETIRED, now
        target.status, target.promoted_at = RevisionStatus.SERVING, now
        self.serving, self.target = target, None
        self.supervisor.end_trial(target.revision_id)
        self.on_promoted(self._manifests[target.revision_id])
        for revision in self.revisions:
            if revision.status is not RevisionStatus.SERVING:
                self._manifests.pop(revision.revision_id, None)
        logger.info(
            "revision %s serves (rolled out in %.1f s); %s retired",
            target.revision_id,
            now - target.created_at,
            old.revision_id,
        )

    def _failed(self, target: Revision, reason: str) -> None:
        target.status, target.reason = RevisionStatus.FAILED, reason
        self.target = None
        self._manifests.pop(target.revision_id, None)
        logger.error(
            "revision %s failed (%s): it takes no traffic; %s keeps serving",
            target.revision_id,
            reason,
            self.serving.revision_id,
        )

    # -- --watch -------------------------------------------------------------------------------

    async def watch(self, every: float = WATCH_EVERY_SECONDS) -> None:
        """Deploy (rolling) when the serving app's file changes; a change seen while a rollout
        runs is deployed after it."""
        path = app_source_file(self.serving.app_reference)
        if path is None:
            logger.warning(
                "--watch: %s is not a file; nothing to watch", self.serving.app_reference
            )
            return
        logger.info("--watch: a change of %s deploys a new revision", path)
        seen = _mtime(path)
        while True:
            await asyncio.sleep(every)
            mtime = _mtime(path)
            if mtime == seen or self.rolling_out or self._deploying.locked():
                continue
            seen = mtime
            try:
                await self.deploy(None, Strategy.ROLLING)
            except DeployRejected as exc:
                details = "".join(f"\n  {problem}" for problem in exc.problems)
                logger.error("--watch: %s not deployed: %s%s", path, exc.detail, details)

    def to_json(self) -> dict[str, object]:
        return {
            "serving": self.serving.revision_id,
            "rollout": None if self.target is None else self.target.revision_id,
            "revisions": [revision.to_json() for revision in self.revisions],
        }


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
