"""minifal: run fal.App applications on your own machines.

``import minifal as fal`` gives the same names as ``import fal`` (fal's ``__all__``, plus
``wrap_app`` and the ``toolkit``, ``distributed``, ``container`` and ``exceptions`` modules).
Inside an app file run by minifal, ``import fal`` itself resolves here when the real ``fal``
package is not installed (see ``minifal.compat.fal_alias``). What each name means locally:
docs/running-apps.md and docs/containers.md.
"""

from minifal import container, exceptions
from minifal.app import App
from minifal.billing import BillingComponents, BillingDeclaration
from minifal.compat.functions import function
from minifal.compat.result_cache import cached
from minifal.compat.sync import sync_dir
from minifal.container import ContainerImage
from minifal.credentials import FalServerlessKeyCredentials
from minifal.endpoints import HealthCheck, endpoint, realtime
from minifal.runner.wrap_app import wrap_app
from minifal.settings import AppSettingsError
from minifal.version import __version__, version_tuple

isolated = function
"""fal's older name of ``function``."""

__all__ = [
    "App",
    "AppSettingsError",
    "BillingComponents",
    "BillingDeclaration",
    "ContainerImage",
    "FalServerlessKeyCredentials",
    "HealthCheck",
    "__version__",
    "cached",
    "container",
    "endpoint",
    "exceptions",
    "function",
    "realtime",
    "sync_dir",
    "version_tuple",
    "wrap_app",
]

# Submodules that are attributes of ``fal`` after ``import fal``, imported on first use so that
# the core does not pay for pillow (toolkit) or torch.distributed (distributed) when an app
# never touches them.
_LAZY_SUBMODULES = ("toolkit", "distributed")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"minifal.{name}")
    raise AttributeError(f"module 'minifal' has no attribute {name!r}")
