"""Knobs of the compiled cache, read from the environment once per load."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from minifal.runner_contract import ENV_STARTUP_DEADLINE

ENV_LEASE_TTL = "MINIFAL_CACHE_LEASE_TTL"
ENV_LOCAL_ROOT = "MINIFAL_CACHE_LOCAL_ROOT"
ENV_AUTOTUNE_REDIRECT = "MINIFAL_CACHE_AUTOTUNE_REDIRECT"  # "0": see autotune_lookup.py

DEFAULT_LEASE_TTL_S = 30.0
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
    redirect_autotune: bool = True  # look up Triton tuning results in the private dir

    @classmethod
    def from_env(cls, environ: Mapping[str, str], now: float) -> CacheSettings:
        return cls(
            lease_ttl_s=_positive_float(environ.get(ENV_LEASE_TTL), DEFAULT_LEASE_TTL_S),
            deadline=_positive_float(
                environ.get(ENV_STARTUP_DEADLINE), now + DEFAULT_STARTUP_BUDGET_S
            ),
            local_root=environ.get(ENV_LOCAL_ROOT) or None,
            redirect_autotune=environ.get(ENV_AUTOTUNE_REDIRECT, "1") != "0",
        )


def current_settings() -> CacheSettings:
    return CacheSettings.from_env(os.environ, time.time())


def _positive_float(value: str | None, default: float) -> float:
    try:
        parsed = float(value) if value else default
    except ValueError:
        return default
    return parsed if parsed > 0 else default
