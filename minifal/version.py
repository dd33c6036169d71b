"""minifal's version, spelled once: the package root re-exports it (fal's ``__version__`` and
``version_tuple``); modules the root imports read it here."""

__version__ = "0.1.0"
version_tuple = (0, 1, 0)
