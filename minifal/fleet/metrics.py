"""Prometheus metrics of the gateway, with fal's names, plus runners' startup phases and billing.

Billing, as fal's platform counts it: an answer's ``x-fal-billable-units`` header is the units
it costs; an answer without one is billed per second of inference; a 5xx is never billed. The
App's declared ``BillingComponents`` are exposed as info series. A gateway that serves several
apps renders each app's series with an ``app`` label (``render_by_app``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from minifal.billing import BILLABLE_UNITS_HEADER, billable_components, parse_billable_units
from minifal.fleet.runner import Runner, RunnerState
from minifal.startup.events import read_events


class _FleetCollector:
    """Values read at scrape time from the live fleet, so they can never go stale."""

    def __init__(
        self, runners: Callable[[], Sequence[Runner]], queue_size: Callable[[], int]
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
        for runner in (r for r in runners if r.pid is not None):
            for event in read_events(runner.events_file, runner.pid):
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
        yield from _suspension_families(runners)


def _suspension_families(runners: Sequence[Runner]) -> Iterable[Any]:
    suspends = CounterMetricFamily(
        "minifal_runner_suspends", "Suspensions of each runner", labels=["runner_id"]
    )
    resumes = CounterMetricFamily(
        "minifal_runner_resumes", "Resumes of each runner", labels=["runner_id"]
    )
    held = GaugeMetricFamily(
        "minifal_runner_suspended_host_memory_bytes",
        "Host memory a suspended runner holds (its GPU state included)",
        labels=["runner_id"],
    )
    for runner in runners:
        record = runner.suspensions
        suspends.add_metric([runner.runner_id], record.suspends)
        resumes.add_metric([runner.runner_id], record.resumes)
        if record.host_memory_bytes is not None:
            held.add_metric([runner.runner_id], record.host_memory_bytes)
    yield suspends
    yield resumes
    yield held


class _BillingDeclarationCollector:
    """The App's billing declarations: one series per endpoint and billable component."""

    def __init__(self, declarations: Mapping[str, Any]) -> None:
        self.declarations = declarations

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "minifal_billing_component_info",
            "Billable components each endpoint declares (fal's BillingComponents)",
            labels=["endpoint", "schema_id", "version", "component"],
        )
        for endpoint, declaration in self.declarations.items():
            for component in billable_components(declaration) or [""]:
                labels = [endpoint, declaration["schema_id"], str(declaration["version"])]
                family.add_metric([*labels, component], 1)
        yield family


class GatewayMetrics:
    def __init__(
        self,
        runners: Callable[[], Sequence[Runner]],
        queue_size: Callable[[], int],
        billing_declarations: Mapping[str, Any] | None = None,
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
        self.billable_units = Counter(
            "minifal_billable_units",
            f"Units answers reported in {BILLABLE_UNITS_HEADER}, by endpoint",
            ["endpoint"],
            registry=self.registry,
        )
        self.billed_seconds = Counter(
            "minifal_billed_inference_seconds",
            f"Inference seconds of answers without {BILLABLE_UNITS_HEADER} (billed per second)",
            ["endpoint"],
            registry=self.registry,
        )
        self.registry.register(_FleetCollector(runners, queue_size))
        self.registry.register(_BillingDeclarationCollector(billing_declarations or {}))

    def completed(self, status: int, seconds: float) -> None:
        self.requests_completed.labels(status=str(status)).inc()
        self.request_latency.observe(seconds)

    def answered(
        self,
        endpoint: str,
        status: int,
        headers: Mapping[str, str],
        inference_seconds: float | None,
    ) -> None:
        """Bill a runner's answer: its reported units, else its inference time; a 5xx is free."""
        if status >= 500:
            return
        units = parse_billable_units(headers.get(BILLABLE_UNITS_HEADER))
        if units is not None:
            self.billable_units.labels(endpoint=endpoint).inc(units)
        elif inference_seconds is not None:
            self.billed_seconds.labels(endpoint=endpoint).inc(max(inference_seconds, 0.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _AppLabelledCollector:
    """Every app's series in one exposition: each sample gets its app's ``app`` label, and the
    families of one name are merged (a family's HELP and TYPE are said once)."""

    def __init__(self, registries: Mapping[str, CollectorRegistry]) -> None:
        self.registries = registries

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for app, registry in self.registries.items():
            for family in registry.collect():
                into = merged.get(family.name)
                if into is None:
                    into = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = into
                into.samples += [
                    sample._replace(labels={"app": app, **sample.labels})
                    for sample in family.samples
                ]
        return list(merged.values())


def render_by_app(metrics: Mapping[str, GatewayMetrics]) -> bytes:
    """The metrics of several apps' gateways as one exposition, labelled by app name."""
    registry = CollectorRegistry()
    registry.register(_AppLabelledCollector({app: each.registry for app, each in metrics.items()}))
    return generate_latest(registry)
