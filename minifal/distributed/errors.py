"""The error a call gets when the runner's worker processes are gone."""

from __future__ import annotations

from minifal.exceptions import AppException

STATUS_SERVICE_UNAVAILABLE = 503


class DistributedWorkerCrashed(RuntimeError, AppException):
    """A worker process died (or the workers fell out of step): this runner cannot serve.

    A ``RuntimeError``, as fal raises when its workers are gone. Raised out of an endpoint it
    answers 503 with this message, so the fleet retries a queued request on another runner
    while this one restarts.
    """

    def __init__(self, message: str) -> None:
        AppException.__init__(self, message, STATUS_SERVICE_UNAVAILABLE)
