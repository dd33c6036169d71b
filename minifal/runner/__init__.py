"""One runner: a process that serves one App over HTTP (``minifal serve``, or one of a fleet).

The app loader and manifest, the ASGI app of an App, the server and its lifecycle, realtime,
the stored-files route, the fork server, the import record, ``fal.wrap_app``.

Imported by the package root (``wrap_app``), the CLI, and the fleet (only the manifest, the
import record and the stored-files route). It imports the App model, ``compat``, ``compiled``,
``host``, ``offload`` (its routes around a suspension), ``startup``, ``exceptions`` and a few
``toolkit`` names (a fetch error's status, a stored file); never the fleet or the CLI.
"""
