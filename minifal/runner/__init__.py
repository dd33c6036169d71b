"""One runner: a process that serves one App over HTTP (``minifal serve``, or one of a fleet)."""
