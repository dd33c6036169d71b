"""minifal: run fal.App applications on your own machines.

``import minifal as fal`` gives the same names as ``import fal`` for serving apps. Inside an app
file run by minifal, ``import fal`` itself resolves here when the real ``fal`` package is not
installed (see ``minifal.fal_alias``).
"""

from minifal import exceptions
from minifal.app import App
from minifal.endpoints import HealthCheck, endpoint, realtime
from minifal.settings import AppSettingsError

__version__ = "0.1.0"

__all__ = [
    "App",
    "AppSettingsError",
    "HealthCheck",
    "__version__",
    "endpoint",
    "exceptions",
    "realtime",
]


def __getattr__(name: str):
    # ``fal.toolkit`` is an attribute of ``fal`` after ``import fal``; import it on first use so
    # that the core does not pay for pillow and friends when an app never touches the toolkit.
    if name == "toolkit":
        import minifal.toolkit

        return minifal.toolkit
    raise AttributeError(f"module 'minifal' has no attribute {name!r}")
