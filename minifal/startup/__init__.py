"""Startup observability: each runner's phases written as events, read back as a report.

``events`` writes and reads a runner's JSON lines; ``runs`` parses one run's files into runner
starts; ``report`` turns them into rows (text, JSON); ``timeline`` draws them; ``report_command``
is ``minifal startup-report``. The gateway's ``/metrics`` and ``/runners`` read the same events.
"""
