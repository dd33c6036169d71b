"""``minifal runners``: the gateway's ``GET /runners`` shown as ``fal runners list`` shows runners.

A title, where the runners run (this environment, and the container image the App declared),
fal's columns (Alias, Machine Type, Runner ID, In Flight Requests, Expires In, Uptime, Revision,
State), then minifal's own: how long the runner took to become ready, and its GPUs; below it,
the app's last revisions (which serves, which rolls out, which failed and why). A gateway that
serves several apps lists every app's runners in one table (the Alias column is each runner's
app, as on fal), and each app's environment and revisions below it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import httpx

from minifal.cli.text_table import align_columns, short_node
from minifal.compat.app_environment import environment_note
from minifal.host import envs

TIMEOUT_S = 10.0


class GatewayError(Exception):
    """The gateway could not be asked, or did not answer with its runners."""


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def format_duration(seconds: float | None) -> str:
    """``45s``, ``3m 05s``, ``2h 07m``: the precision a glance at a table needs."""
    if seconds is None:
        return "-"
    whole = max(int(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


# Header, key in each runner's JSON object, how its value is shown.
COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("Alias", "alias", _text),
    ("Machine Type", "machine_type", _text),
    ("Runner ID", "runner_id", _text),
    ("In Flight Requests", "in_flight_requests", _text),
    ("Expires In", "expires_in", format_duration),
    ("Uptime", "uptime", format_duration),
    ("Revision", "revision", _text),
    ("State", "state", _text),
    ("Startup", "startup_seconds", _seconds),
    ("GPUs", "gpus", _text),
    ("Node", "node", short_node),
)


def format_runners(payload: dict[str, Any]) -> str:
    """A title line, the table, then the last exit reason of each runner that has one."""
    runners = [_with_cpu_shown(runner) for runner in payload.get("runners") or []]
    lines = [[header for header, _, _ in COLUMNS]]
    lines += [[show(runner.get(key)) for _, key, show in COLUMNS] for runner in runners]
    table = align_columns(lines).splitlines()
    run_id = _text(payload.get("run_id"))
    apps = payload.get("apps") if isinstance(payload.get("apps"), list) else None
    if apps is None:  # one app
        app = _text(payload.get("app"))
        title = f"app {app}, run {run_id}: {len(runners)} runner(s)"
        environment = payload.get("environment")
        where = [environment_note(app, environment)] if isinstance(environment, dict) else []
        revisions = revision_notes(payload.get("revisions"))
    else:
        names = ", ".join(_text(app.get("app")) for app in apps)
        title = f"apps {names}, run {run_id}: {len(runners)} runner(s)"
        where = [
            environment_note(_text(app.get("app")), app["environment"])
            for app in apps
            if isinstance(app.get("environment"), dict)
        ]
        revisions = [
            f"{_text(app.get('app'))}: {note}"
            for app in apps
            for note in revision_notes(app.get("revisions"))
        ]
    exits = [
        f"{runner.get('runner_id')}: last exit: {runner['last_exit_reason']}"
        for runner in runners
        if runner.get("last_exit_reason")
    ]
    on_cpu = cpu_notes(payload.get("runners") or [])
    suspensions = [line for runner in runners if (line := suspension_note(runner))]
    return "\n".join([title, *where, *table, *on_cpu, *exits, *suspensions, *revisions])


def _runs_on_cpu(runner: dict[str, Any]) -> bool:
    """A runner on the gateway's machine with no GPU (a Ray node's GPUs are Ray's to assign,
    and not reported)."""
    return runner.get("node") in (None, "local") and not runner.get("gpus")


def _with_cpu_shown(runner: dict[str, Any]) -> dict[str, Any]:
    return {**runner, "gpus": "CPU"} if _runs_on_cpu(runner) else runner


def cpu_notes(runners: list[dict[str, Any]]) -> list[str]:
    """One line naming the runners of a GPU machine type that run on CPU here (no GPU visible
    when they started), so that ``GPU-H100`` in the table is not read as where they run."""
    on_cpu = [
        runner
        for runner in runners
        if str(runner.get("machine_type") or "").upper().startswith("GPU") and _runs_on_cpu(runner)
    ]
    if not on_cpu:
        return []
    names = ", ".join(str(runner.get("runner_id")) for runner in on_cpu)
    machine_type = on_cpu[0].get("machine_type")
    return [f"{names}: on CPU here (no GPU was visible), though the app asks for {machine_type}"]


REVISIONS_SHOWN = 5


def revision_notes(revisions: Any) -> list[str]:
    """``revision r2-3fa9c1d2: serving (rolling)`` for each of the last few revisions."""
    if not isinstance(revisions, dict):
        return []
    notes = []
    for revision in (revisions.get("revisions") or [])[-REVISIONS_SHOWN:]:
        how = f" ({revision['strategy']})" if revision.get("strategy") else ""
        why = f": {revision['reason']}" if revision.get("reason") else ""
        notes.append(f"revision {revision.get('revision')}: {revision.get('status')}{how}{why}")
    return notes


def suspension_note(runner: dict[str, Any]) -> str | None:
    """``runner-0: suspended 3 times (last 6.3 s), resumed 2 times (last 1.9 s); holds 9.2 GiB
    of host memory`` for a runner that was ever suspended."""
    record = runner.get("suspensions") or {}
    if not record.get("suspends"):
        return None
    note = (
        f"{runner.get('runner_id')}: suspended {record['suspends']} time(s)"
        f" (last {_seconds(record.get('last_suspend_s'))})"
    )
    if record.get("resumes"):
        note += (
            f", resumed {record['resumes']} time(s) (last {_seconds(record.get('last_resume_s'))})"
        )
    if record.get("host_memory_bytes") is not None:
        note += f"; holds {record['host_memory_bytes'] / 2**30:.1f} GiB of host memory"
        if record.get("pinned_bytes") is not None:
            note += f" ({record['pinned_bytes'] / 2**30:.1f} GiB of it pinned tensors)"
    if record.get("asleep"):
        note += "; asleep: its CUDA context and graphs still on its GPU"
    if record.get("graphs_released") is not None:
        note += (
            f"; {record['graphs_released']} CUDA graph(s) dropped before its checkpoint"
            f" ({(record.get('released_bytes') or 0) / 2**30:.1f} GiB given back)"
        )
    return note


def fetch_runners(url: str, auth_key: str | None = None) -> dict[str, Any]:
    """``GET <url>/runners``; raises :class:`GatewayError` with a one-line reason."""
    endpoint = url.rstrip("/") + "/runners"
    headers = {"Authorization": f"Key {auth_key}"} if auth_key else {}
    try:
        response = httpx.get(endpoint, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise GatewayError(f"cannot reach the gateway at {url}: {exc}") from exc
    if response.status_code == 401:
        raise GatewayError(
            f"{endpoint}: 401 unauthorized (pass --auth-key or set {envs.AUTH_KEY.name})"
        )
    if response.status_code != 200:
        raise GatewayError(f"{endpoint}: HTTP {response.status_code}: {response.text[:200]}")
    try:
        payload = response.json()
    except ValueError as exc:
        raise GatewayError(f"{endpoint}: not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise GatewayError(f"{endpoint}: expected a JSON object, got {type(payload).__name__}")
    return payload


def main_runners(args: argparse.Namespace) -> int:
    """``minifal runners [--url U] [--json] [--auth-key K]``."""
    try:
        payload = fetch_runners(args.url, args.auth_key or envs.AUTH_KEY.get())
    except GatewayError as exc:
        print(f"minifal: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(payload, indent=2) if args.json else format_runners(payload))
    return 0
