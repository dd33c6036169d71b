"""A crashed distributed worker is a crashed runner: the runner process fails, visibly.

After a worker dies, its ``DistributedRunner`` has stopped the other workers and cannot serve
again. Inside a minifal runner process (``minifal serve``, or a runner of ``minifal run``) that
process then stops as on SIGTERM (in-flight requests get their answers, the failed call a 503;
``teardown()`` runs) and exits with the runner's ``EXIT_DISTRIBUTED_WORKER_CRASHED``
(``minifal.runner_contract``), so the fleet's supervisor restarts it after its crash back-off, like
any runner that crashed, and says "a distributed worker died". In any other process (a script, a
test) the error raised by the call is the whole story.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys

from minifal.host import envs
from minifal.runner_contract import EXIT_DISTRIBUTED_WORKER_CRASHED

logger = logging.getLogger("minifal.distributed")


def serving_an_app() -> bool:
    """Whether this process is a minifal runner (its server module runs, with a run id)."""
    return "minifal.runner.server" in sys.modules and envs.RUN_ID.is_set()


def fail_runner_process(error: Exception) -> None:
    if not serving_an_app():
        return
    logger.error(
        "%s: this runner cannot serve any more; it stops and exits with code %d",
        error,
        EXIT_DISTRIBUTED_WORKER_CRASHED,
    )
    atexit.register(_exit_with_code, EXIT_DISTRIBUTED_WORKER_CRASHED)
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_with_code(code: int) -> None:
    """The runner's graceful stop ends in exit code 0: this handler, registered after the
    others and so run first, flushes the logs and exits with the crash code instead (the
    handlers it skips would stop worker processes, which are already gone)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
