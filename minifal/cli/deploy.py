"""``minifal deploy APP --url GATEWAY [--app-name NAME] [--strategy rolling|recreate]``: a running
gateway takes a new revision of its app (of the app ``APP`` is, or ``NAME``, when it serves
several), and the command follows the rollout until the revision serves or fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import httpx

from minifal.compat.project import absolute_reference
from minifal.host import envs

POLL_SECONDS = 0.5
REQUEST_TIMEOUT_S = 300.0
"""The gateway answers a deploy after it has imported the app in a child process."""


def describe(revision: dict[str, Any], status: str | None = None) -> str:
    """``revision r2-3fa9c1d2: serving``; ``revision r2-3fa9c1d2 of hello: serving`` from a
    gateway of several apps (its answers name the app)."""
    of_app = f" of {revision['app_name']}" if revision.get("app_name") else ""
    line = f"revision {revision.get('revision')}{of_app}: {status or revision.get('status')}"
    return line + (f" ({revision['reason']})" if revision.get("reason") else "")


def follow(client: httpx.Client, deployed: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the revision until it serves, fails or is retired, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    revision: dict[str, Any] = {**deployed, "status": "deploying"}
    params = {"app_name": deployed["app_name"]} if deployed.get("app_name") else None
    while time.monotonic() < deadline:
        response = client.get(f"/_minifal/revisions/{deployed['revision']}", params=params)
        response.raise_for_status()
        revision = response.json()
        if revision.get("status") != "deploying":
            return revision
        time.sleep(POLL_SECONDS)
    return revision


def main_deploy(args: argparse.Namespace) -> int:
    auth_key = args.auth_key or envs.AUTH_KEY.get()
    headers = {"Authorization": f"Key {auth_key}"} if auth_key else {}
    body = {"app": absolute_reference(args.app), "strategy": args.strategy}
    if args.app_name:
        body["app_name"] = args.app_name
    url = args.url.rstrip("/")
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=REQUEST_TIMEOUT_S) as client:
            response = client.post("/_minifal/deploy", json=body)
            answer = response.json() if response.content else {}
            if response.status_code not in (200, 202):
                print(
                    f"minifal: deploy refused ({response.status_code}): ", end="", file=sys.stderr
                )
                print(answer.get("detail", response.text[:500]), file=sys.stderr)
                for problem in answer.get("problems") or ():
                    print(f"  {problem}", file=sys.stderr)
                return 2
            if answer.get("unchanged"):
                print(f"{describe(answer)}: the app is unchanged, nothing to deploy")
                return 0
            print(describe(answer, f"deploying ({args.strategy})"), flush=True)
            revision = follow(client, answer, args.timeout)
    except (httpx.HTTPError, ValueError) as exc:
        print(f"minifal: cannot deploy to the gateway at {url}: {exc}", file=sys.stderr)
        return 1
    print(describe(revision))
    if revision.get("status") == "deploying":
        print(f"minifal: still deploying after {args.timeout:.0f} s", file=sys.stderr)
    return 0 if revision.get("status") == "serving" else 1
