"""Every ``MINIFAL_*`` environment variable, declared once: its name, type, default and doc.

The rest of minifal asks this module (``envs.DATA_DIR.get()``, ``envs.FORK_SERVER.get(env)``)
and never spells a ``MINIFAL_*`` name itself; the variables a fleet hands each runner are
built by ``minifal.runner_contract``, from these declarations. ``scripts/settings_table.py``
writes ``docs/settings.md`` from ``SETTINGS``; ``tests/test_settings_registry.py`` checks both.

A value is read when asked for (a test or a child's environment may change it), and an empty
value counts as unset. A value that does not parse raises ``ValueError`` naming the variable;
the reader decides whether that is fatal or falls back (and says so).

This module imports nothing of minifal: every layer may import it. It is long because it is
the one list: each variable takes eight lines, and splitting the list would make two places to
look.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class Scope(enum.Enum):
    """Who sets a variable and who reads it (the table's sections)."""

    USER = "Set by you, read by minifal"
    RUNNER = (
        "Set for each runner by its fleet, or by the runner for its workers (the runner contract)"
    )
    EXAMPLE_APPS = "Read by the example apps (apps/, which run on fal too)"
    TOOLING = "Read by the repository's scripts and tests"


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: ``get()`` is its typed value, else ``default``."""

    name: str
    type: str
    """What the value looks like, as the table says it."""
    parse: Callable[[str], T]
    default: T
    doc: str
    scope: Scope = Scope.USER
    default_text: str | None = None
    """The table's default where ``default`` is None because the reader computes it."""

    def raw(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The text as set (``environ`` or this process's environment); None when unset/empty."""
        value = (os.environ if environ is None else environ).get(self.name)
        return value if value else None

    def get(self, environ: Mapping[str, str] | None = None) -> T:
        text = self.raw(environ)
        if text is None:
            return self.default
        try:
            return self.parse(text)
        except ValueError as exc:
            raise ValueError(f"${self.name}={text!r}: {exc}") from None

    def is_set(self, environ: Mapping[str, str] | None = None) -> bool:
        return self.raw(environ) is not None

    def describe_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        return "unset" if self.default is None else str(self.default)


def _text(value: str) -> str:
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        normalized = value.strip().lower()
        if normalized not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return normalized

    return parse


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("expected a positive number")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("expected 0 or more")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("expected 0 or more")
    return number


def _switch(value: str) -> bool:
    """``0`` turns it off; any other value leaves it on."""
    return value.strip() != "0"


# -- set by you, read by minifal -------------------------------------------------------------------

DATA_DIR: Setting[Path | None] = Setting(
    "MINIFAL_DATA_DIR",
    "path",
    Path,
    None,
    "The shared, persistent data dir (fal's /data); --data-dir wins. The fleet passes its own "
    "to every runner.",
    default_text="/data where writable, else ./.minifal/data",
)
HOST: Setting[str] = Setting(
    "MINIFAL_HOST", "address", _text, "127.0.0.1", "Where `python app.py` (fal.wrap_app) listens."
)
PORT: Setting[int] = Setting(
    "MINIFAL_PORT",
    "port",
    int,
    8080,
    "The port of `python app.py` (fal.wrap_app) when the app passes no exposed_port.",
)
QUEUE_STORE: Setting[str | None] = Setting(
    "MINIFAL_QUEUE_STORE",
    "store URL",
    _text,
    None,
    "Where minifal run keeps queue requests (--queue-store): sqlite, sqlite:///DIR, "
    "redis://HOST:PORT/DB or memory.",
    default_text="sqlite (DATA_DIR/queue)",
)
AUTH_KEY: Setting[str | None] = Setting(
    "MINIFAL_AUTH_KEY",
    "text",
    _text,
    None,
    "The key `minifal run` requires and `minifal runners` sends when given no --auth-key.",
)
MAX_BODY_SIZE: Setting[str] = Setting(
    "MINIFAL_MAX_BODY_SIZE",
    "size (50MB, 512KiB, bytes)",
    _text,
    "50MiB",
    "The largest request body read (larger: 413) when no --max-body-size is given; the "
    "gateway passes its own to its runners.",
)
SUSPEND: Setting[str] = Setting(
    "MINIFAL_SUSPEND",
    "auto, on, off",
    _choice("auto", "on", "off"),
    "auto",
    "The default of `minifal run --suspend`: suspend idle runners to host memory.",
)
FORK_SERVER: Setting[bool] = Setting(
    "MINIFAL_FORK_SERVER",
    "on, off",
    lambda value: _choice("on", "off")(value) == "on",
    True,
    "Whether `minifal run` forks its local runners from a fork server (off: exec each one).",
    default_text="on",
)
FAILURE_BACKOFF_SECONDS: Setting[float] = Setting(
    "MINIFAL_FAILURE_BACKOFF_SECONDS",
    "seconds",
    _non_negative_float,
    30.0,
    "A crashed runner waits this much more per consecutive failure before its restart "
    "(at most 10 min).",
)
HEALTH_CHECK_INTERVAL: Setting[float] = Setting(
    "MINIFAL_HEALTH_CHECK_INTERVAL",
    "seconds",
    _positive_float,
    15.0,
    "How often the gateway calls the App's HealthCheck on each ready runner.",
)
MAX_DOWNLOAD_BYTES: Setting[int] = Setting(
    "MINIFAL_MAX_DOWNLOAD_BYTES",
    "bytes",
    int,
    100 * 1024 * 1024,
    "The size cap of an input the toolkit fetches from a URL (File, Image...).",
    default_text="104857600 (100 MiB)",
)
KV_REDIS_URL: Setting[str | None] = Setting(
    "MINIFAL_KV_REDIS_URL",
    "redis:// URL",
    _text,
    None,
    "KVStore in this Redis (shared by runners on several machines) instead of SQLite in "
    "the data dir.",
)
BYTECODE_CACHE: Setting[str] = Setting(
    "MINIFAL_BYTECODE_CACHE",
    "auto, on, off",
    _choice("auto", "on", "off"),
    "auto",
    "Runners keep Python bytecode in DATA_DIR/pycache (auto: when the installed packages "
    "ship none).",
)
CACHE_LEASE_TTL: Setting[float] = Setting(
    "MINIFAL_CACHE_LEASE_TTL",
    "seconds",
    _positive_float,
    30.0,
    "How long a compiling runner's claim on a cache key lasts without a heartbeat.",
)
CACHE_LOCAL_ROOT: Setting[Path | None] = Setting(
    "MINIFAL_CACHE_LOCAL_ROOT",
    "path",
    Path,
    None,
    "Where each runner's private Inductor/Triton cache dir is made.",
    default_text="/dev/shm with 8 GiB free, else the system temp dir",
)
CACHE_AUTOTUNE_REDIRECT: Setting[bool] = Setting(
    "MINIFAL_CACHE_AUTOTUNE_REDIRECT",
    "0 or 1",
    _switch,
    True,
    "0: Triton's autotuning results are not looked up in the private cache dir.",
    default_text="1",
)
PRECOMPILED_WORKERS: Setting[int | None] = Setting(
    "MINIFAL_PRECOMPILED_WORKERS",
    "count",
    _non_negative_int,
    None,
    "How many compile worker processes a runner's precompiled modules use (0: compile inline).",
    default_text="0 below 8 cores, else one per 4 cores, at most 4",
)
SERVE_WHILE_COMPILING: Setting[bool] = Setting(
    "MINIFAL_SERVE_WHILE_COMPILING",
    "0 or 1",
    _switch,
    True,
    "0: a runner whose precompiled modules compile (or wait for another runner's compile) is "
    "ready only once they are compiled, not as soon as its eager warmup ran.",
    default_text="1",
)
PRECOMPILED_PRELOAD: Setting[str | None] = Setting(
    "MINIFAL_PRECOMPILED_PRELOAD",
    "first-calls, artifacts, store, none",
    _choice("first-calls", "artifacts", "store", "none"),
    None,
    "What a warm runner loads in the background when a precompiled block opens.",
    default_text="first-calls on a GPU, else artifacts",
)

# -- set by the fleet for each runner (minifal.runner_contract), read inside it ------------------

RUN_ID: Setting[str | None] = Setting(
    "MINIFAL_RUN_ID",
    "text",
    _text,
    None,
    "The fleet run the runner belongs to (DATA_DIR/runs/RUN_ID/).",
    Scope.RUNNER,
    default_text="a new one per `minifal serve`",
)
RUNNER_ID: Setting[str] = Setting(
    "MINIFAL_RUNNER_ID",
    "text",
    _text,
    "local",
    "The runner's name in its run (runner-0, runner-1...); local: not in a runner.",
    Scope.RUNNER,
    default_text="runner-0 under `minifal serve`, local outside a runner",
)
EVENTS_FILE: Setting[Path | None] = Setting(
    "MINIFAL_EVENTS_FILE",
    "path",
    Path,
    None,
    "Where the runner appends its startup events (JSON lines).",
    Scope.RUNNER,
    default_text="DATA_DIR/runs/RUN_ID/RUNNER_ID.jsonl",
)
PUBLIC_URL: Setting[str | None] = Setting(
    "MINIFAL_PUBLIC_URL",
    "URL",
    _text,
    None,
    "Where clients reach the App; file URLs are built from it.",
    Scope.RUNNER,
    default_text="http://HOST:PORT/ of the runner",
)
NODE: Setting[str] = Setting(
    "MINIFAL_NODE",
    "text",
    _text,
    "local",
    "Which machine the runner runs on: local, or its Ray node id.",
    Scope.RUNNER,
)
REVISION: Setting[str | None] = Setting(
    "MINIFAL_REVISION",
    "text",
    _text,
    None,
    "The revision of the app a fleet's runner serves (fleet/revisions.py), in its events.",
    Scope.RUNNER,
)
APP_SOURCE: Setting[Path | None] = Setting(
    "MINIFAL_APP_SOURCE",
    "path",
    Path,
    None,
    "A copy of the app file to import instead (a revision's content, kept by the gateway); "
    "the module keeps the file's own path as __file__.",
    Scope.RUNNER,
)
STARTUP_DEADLINE: Setting[float | None] = Setting(
    "MINIFAL_STARTUP_DEADLINE",
    "time.time() seconds",
    _positive_float,
    None,
    "When startup_timeout stops the runner; the compiled cache's waits end before it.",
    Scope.RUNNER,
    default_text="now + 600 s when the App sets no startup_timeout",
)

# -- read by the example apps (they run on fal too, so they read os.environ themselves) ----------

SD_WEIGHTS: Setting[str] = Setting(
    "MINIFAL_SD_WEIGHTS",
    "auto, hub, random-full, random-tiny, or a directory",
    _text,
    "auto",
    "The SD-Turbo app's weights (apps/sd_turbo_pipeline.py).",
    Scope.EXAMPLE_APPS,
)
SD_COMPILE: Setting[str | None] = Setting(
    "MINIFAL_SD_COMPILE",
    "precompiled, static, regional, dynamic, none",
    _text,
    None,
    "The SD-Turbo app's compile strategy (apps/sd_turbo.py).",
    Scope.EXAMPLE_APPS,
    default_text="precompiled on minifal",
)
SD_PRECOMPILE: Setting[str | None] = Setting(
    "MINIFAL_SD_PRECOMPILE",
    "any of unet,vae,text",
    _text,
    None,
    "The modules the SD-Turbo app's precompiled strategy covers.",
    Scope.EXAMPLE_APPS,
    default_text="unet,vae on a GPU, unet on CPU",
)
SD_MAX_AUTOTUNE: Setting[str] = Setting(
    "MINIFAL_SD_MAX_AUTOTUNE",
    "any of unet,vae,text, or none",
    _text,
    "none",
    "The precompiled SD-Turbo modules compiled with Inductor's max-autotune settings (minifal's "
    "precompiled path only; their own artifacts, compiles several times longer).",
    Scope.EXAMPLE_APPS,
)
SD_CUDA_GRAPHS: Setting[str] = Setting(
    "MINIFAL_SD_CUDA_GRAPHS",
    "any of unet,vae,text, or none",
    _text,
    "unet,vae,text",
    "The SD-Turbo modules whose calls replay from CUDA graphs (GPU).",
    Scope.EXAMPLE_APPS,
)

SD_BATCH_SIZES: Setting[str] = Setting(
    "MINIFAL_SD_BATCH_SIZES",
    "comma-separated batch sizes",
    _text,
    "1",
    "The batch sizes SD-Turbo's @batched endpoint runs and warms (1: no batching).",
    Scope.EXAMPLE_APPS,
)
SD_CHANNELS_LAST: Setting[str] = Setting(
    "MINIFAL_SD_CHANNELS_LAST",
    "0 or 1",
    _text,
    "0",
    "1: SD-Turbo's UNet and VAE weights in channels_last memory format (GPU).",
    Scope.EXAMPLE_APPS,
)
SD_VAE_UPSAMPLE: Setting[str] = Setting(
    "MINIFAL_SD_VAE_UPSAMPLE",
    "interpolate or subpixel",
    _text,
    "interpolate",
    "subpixel: SD-Turbo's VAE decoder upsamples by one 2x2 convolution of the small image "
    "(apps/sd_turbo_upsample.py; the same pixels, fewer FLOPs).",
    Scope.EXAMPLE_APPS,
)
SD_CUDNN_BENCHMARK: Setting[str] = Setting(
    "MINIFAL_SD_CUDNN_BENCHMARK",
    "0 or 1",
    _text,
    "0",
    "1: cuDNN autotunes SD-Turbo's convolutions (torch.backends.cudnn.benchmark; GPU).",
    Scope.EXAMPLE_APPS,
)
SD_ARENA: Setting[str] = Setting(
    "MINIFAL_SD_ARENA",
    "0 or 1",
    _text,
    "1",
    "0: SD-Turbo's weights stay in torch's allocator, not in an offload arena (a suspension's "
    "checkpoint then moves them; GPU, minifal).",
    Scope.EXAMPLE_APPS,
)

# -- read by the repository's scripts and tests ----------------------------------------------------

FAL_PYTHON: Setting[str | None] = Setting(
    "MINIFAL_FAL_PYTHON",
    "path",
    _text,
    None,
    "The Python that has the real fal installed (scripts/fal_compat_table.py, its test).",
    Scope.TOOLING,
    default_text="./.venv-fal/bin/python",
)
TORCH_VERSION: Setting[str] = Setting(
    "MINIFAL_TORCH_VERSION",
    "version",
    _text,
    "2.13.0",
    "The torch scripts/setup-env.sh installs.",
    Scope.TOOLING,
)

SETTINGS: tuple[Setting, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, Setting)
)
"""Every declared variable, in the order above (the table's order)."""
