"""``fal.toolkit.utils.retry``: retry a function (sync or async) with back-off."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Literal

BackoffType = Literal["exponential", "fixed"]

logger = logging.getLogger(__name__)


def retry(
    max_retries: int = 3,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    backoff_type: BackoffType = "exponential",
    jitter: bool = False,
    should_retry: Callable[[Exception], bool] | None = None,
) -> Callable:
    """Call the function up to ``max_retries`` times while it raises (and ``should_retry``
    agrees); wait ``base_delay * 2**(n-1)`` (or ``base_delay``) between tries, at most
    ``max_delay``, times 0.5-1.5 with ``jitter``. Cancellation is never retried."""

    def delay_after(attempt: int) -> float:
        factor = 2 ** (attempt - 1) if backoff_type == "exponential" else 1
        delay = min(base_delay * factor, max_delay)
        return delay * random.uniform(0.5, 1.5) if jitter else delay

    def give_up(exc: Exception, attempt: int) -> bool:
        if should_retry is not None and not should_retry(exc):
            return True
        if attempt >= max_retries:
            logger.warning("Giving up after %d attempts: %s", attempt, exc)
            return True
        logger.info("Retrying (%d of %d) after: %s", attempt, max_retries, exc)
        return False

    def decorator(func: Callable) -> Callable:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                attempt = 0
                while True:
                    try:
                        return await func(*args, **kwargs)
                    except Exception as exc:
                        attempt += 1
                        if give_up(exc, attempt):
                            raise
                        await asyncio.sleep(delay_after(attempt))

            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            attempt = 0
            while True:
                try:
                    return func(*args, **kwargs)
                except Exception as exc:
                    attempt += 1
                    if give_up(exc, attempt):
                        raise
                    time.sleep(delay_after(attempt))

        return wrapper

    return decorator


__all__ = ["BackoffType", "retry"]
