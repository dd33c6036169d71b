"""``WrappedModule``: an ``nn.Module`` standing in for another one.

Like torch.compile's ``OptimizedModule``, what the wrapper does not have is the wrapped module's,
so code that reads ``unet.config``, ``unet.dtype`` or ``vae.decoder.conv_in`` through the
wrapper still works; ``_orig_mod`` is the wrapped module, by the same name torch uses.
"""

from __future__ import annotations

from typing import Any

import torch


class WrappedModule(torch.nn.Module):
    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self._orig_mod = module

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._orig_mod, name)
