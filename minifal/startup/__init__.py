"""Startup observability: each runner's phases written as events, read back as a report.

``events`` writes and reads a runner's JSON lines; ``runs`` parses one run's files into runner
starts; ``report`` turns them into rows (text, JSON); ``timeline`` draws them; the command
``minifal startup-report`` is ``cli/startup_report.py``. The gateway's ``/metrics`` and
``/runners`` read the same events.

Imported by the runner (which writes events), the fleet, the compiled machinery and the CLI;
imports ``host``, ``runner_contract`` and ``cli.text_table`` (a leaf) only.
"""
