"""Child processes that die with their parent (Linux ``PR_SET_PDEATHSIG``).

The signal is armed in the child between fork and exec (``preexec_fn``). Linux sends it when the
*thread* that forked the child exits, so fork from a thread that outlives the child's work.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get ``signum`` when its parent dies."""

    def set_parent_death_signal() -> None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signum)

    return set_parent_death_signal
