"""One log format for the gateway and every runner (a runner's lines also get a ``[runner-id]``
prefix when the gateway copies them to its console), less the library lines that tell a user
of minifal nothing."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

LIBRARY_NOISE: dict[str, tuple[str, ...]] = {
    # diffusers' pipelines ask for CLIP's image processor, which falls back to its PIL version
    # without torchvision, once per process: the fork server, each runner, each compile worker.
    "transformers.utils.import_utils": ("requires torchvision (not installed); falling back",),
}
"""Logger name -> message fragments dropped from it. Only lines that change nothing for the
user: a warning about what their app does is never listed here."""


class DropMessages(logging.Filter):
    """Drops the records whose message contains one of ``fragments``."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # One line per proxied request from httpx would double the gateway's access log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name, fragments in LIBRARY_NOISE.items():
        library_logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in library_logger.filters):
            library_logger.addFilter(DropMessages(fragments))
