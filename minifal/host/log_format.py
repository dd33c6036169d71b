"""One log format for the gateway and every runner (a runner's lines also get a ``[runner-id]``
prefix when the gateway copies them to its console)."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # One line per proxied request from httpx would double the gateway's access log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
