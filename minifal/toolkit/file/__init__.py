"""``fal.toolkit.file``: ``File``, ``CompressedFile``, ``FileField`` and the file repositories."""

# The package re-exports its module, as fal's does; the names are listed once, in file.py.
from minifal.toolkit.file import file as _file
from minifal.toolkit.file.file import *  # noqa: F403

__all__ = _file.__all__
