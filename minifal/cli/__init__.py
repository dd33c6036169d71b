"""The ``minifal`` command (``main.py``) and its text output: the runners table, the startup
report's command, the exported Dockerfile.

The top of the import graph: nothing imports ``cli`` but the console entry point and
``python -m minifal.cli``, except ``text_table``, a leaf that ``startup.report`` uses too.
"""
