"""Knobs of the compiled cache, read from the environment once per load."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from minifal.host import envs
from minifal.host.envs import Setting

DEFAULT_LEASE_TTL_S = envs.CACHE_LEASE_TTL.default
T = TypeVar("T")
# fal's platform default startup_timeout: how long a runner may wait for another's compile when the
# runner did not export its own deadline.
DEFAULT_STARTUP_BUDGET_S = 600.0
POLL_INTERVAL_S = 0.5
PROGRESS_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True)
class CacheSettings:
    lease_ttl_s: float
    deadline: float  # time.time() seconds after which nobody waits for another runner's compile
    local_root: str | None  # parent of the private per-process dir; None: local_dir.py decides
    redirect_autotune: bool = True  # look up Triton tuning results in the private dir (see
    # autotune_lookup.py)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], now: float) -> CacheSettings:
        """A value that does not parse is the default (the cache never fails a runner)."""
        local_root = _or_default(envs.CACHE_LOCAL_ROOT, environ, None)
        return cls(
            lease_ttl_s=_or_default(envs.CACHE_LEASE_TTL, environ, DEFAULT_LEASE_TTL_S),
            deadline=_or_default(envs.STARTUP_DEADLINE, environ, now + DEFAULT_STARTUP_BUDGET_S),
            local_root=str(local_root) if local_root is not None else None,
            redirect_autotune=_or_default(envs.CACHE_AUTOTUNE_REDIRECT, environ, True),
        )


def current_settings() -> CacheSettings:
    return CacheSettings.from_env(os.environ, time.time())


def _or_default(setting: Setting[T], environ: Mapping[str, str], default: T) -> T:
    try:
        value = setting.get(environ)
    except ValueError:
        return default
    return default if value is None else value
