"""Warnings logged once per process: what a fal storage feature does not do locally.

A repository or helper whose fal meaning is only partly kept here (a cloud bucket, an upload
policy) says so once, the first time it is used, rather than on every file an app stores.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("minifal.files")


class OncePerProcess:
    """Log each distinct notice (by key) at most once in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def warn(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        logger.warning(message)


notices = OncePerProcess()
"""The process's notices; tests replace it to see a first warning again."""
