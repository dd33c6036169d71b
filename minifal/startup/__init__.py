"""Startup observability: each runner's phases written as events, read back as a report.

``events`` writes and reads a runner's JSON lines; ``runs`` parses one run's files into runner
starts (start lines paired with end lines); ``progress`` tells the phases in progress and how
long the same ones took last time; ``report`` turns them into rows (text, JSON); ``timeline``
draws them; the command ``minifal startup-report`` is ``cli/startup_report.py``. The gateway's
``/metrics``, ``/dashboard`` and its console's progress lines read the same events.

Imported by the runner (which writes events), the fleet, the compiled machinery and the CLI;
imports ``host``, ``runner_contract`` and ``cli.text_table`` (a leaf) only.
"""
