"""``fal.cached``: remember a function's results for the life of the process.

fal keeps them in the runner process, keyed by the function's source code, so that a model
loaded by a ``@fal.cached`` function is loaded once per runner, however often it is called. The
same here: one cache per process (per runner), keyed by source; results are kept per arguments
(which must be hashable), for as long as the process lives.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import threading
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("minifal.cached")

_memoized: dict[str, Callable[..., object]] = {}
_lock = threading.Lock()


def cached(func: Callable[P, R]) -> Callable[P, R]:
    """Cache ``func``'s results in memory; a function without source (built in, made by
    ``exec``) cannot be keyed and is returned unchanged, with a warning, as on fal."""
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        logger.warning("function %s can not be cached (no source code)", func.__name__)
        return func
    key = hashlib.sha256(source.encode()).hexdigest()

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _lock:
            memoized = _memoized.get(key)
            if memoized is None:
                memoized = _memoized[key] = lru_cache(maxsize=None)(func)
        return memoized(*args, **kwargs)  # type: ignore[return-value]

    return wrapper
