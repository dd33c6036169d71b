"""Prometheus metrics of the gateway, with fal's names, plus runners' startup phases."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from minifal.fleet.runner_process import RunnerProcess, RunnerState
from minifal.startup_events import read_events


class _FleetCollector:
    """Values read at scrape time from the live fleet, so they can never go stale."""

    def __init__(
        self, runners: Callable[[], Sequence[RunnerProcess]], queue_size: Callable[[], int]
    ) -> None:
        self.runners = runners
        self.queue_size = queue_size

    def collect(self) -> Iterable[GaugeMetricFamily]:
        runners = list(self.runners())
        by_state = GaugeMetricFamily("fal_app_runners", "Runners by state", labels=["state"])
        for state in RunnerState:
            by_state.add_metric([state.value], sum(1 for r in runners if r.state == state))
        yield by_state
        yield GaugeMetricFamily(
            "fal_app_queue_size", "Requests waiting for a runner", value=self.queue_size()
        )
        yield GaugeMetricFamily(
            "fal_app_concurrent_requests",
            "Requests being served by runners",
            value=sum(r.in_flight for r in runners),
        )
        phases = GaugeMetricFamily(
            "minifal_runner_startup_phase_seconds",
            "Duration of each startup phase of each runner's latest start",
            labels=["runner_id", "phase"],
        )
        for runner in runners:
            events = [e for e in read_events(runner.events_file) if e.get("pid") == runner.pid]
            for event in events:
                phases.add_metric([runner.runner_id, event["phase"]], event["duration_s"])
        yield phases
        startup = GaugeMetricFamily(
            "minifal_runner_startup_seconds",
            "Seconds from process start to ready",
            labels=["runner_id"],
        )
        for runner in runners:
            if runner.startup_seconds is not None:
                startup.add_metric([runner.runner_id], runner.startup_seconds)
        yield startup


class GatewayMetrics:
    def __init__(
        self, runners: Callable[[], Sequence[RunnerProcess]], queue_size: Callable[[], int]
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests_received = Counter(
            "fal_app_requests_received", "Requests received", registry=self.registry
        )
        self.requests_completed = Counter(
            "fal_app_requests_completed",
            "Requests completed, by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "fal_app_request_latency",
            "Seconds from arrival to answer",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.registry.register(_FleetCollector(runners, queue_size))

    def completed(self, status: int, seconds: float) -> None:
        self.requests_completed.labels(status=str(status)).inc()
        self.request_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
