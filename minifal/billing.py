"""Billing declarations (fal's ``BillingComponents``/``BillingDeclaration``).

On fal, ``@fal.endpoint(path, billing=declaration)`` publishes the endpoint's billable components
in the deploy metadata (never in the OpenAPI), and each answer reports its units in the
``x-fal-billable-units`` response header. minifal checks declarations as fal does, records them
in the app's manifest, and the gateway exposes them, and the units answers report, in
``/metrics`` (``minifal.fleet.metrics``).
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

BILLING_COMPONENTS_VERSION = 1
BILLABLE_UNITS_HEADER = "x-fal-billable-units"
DECLARATION_ATTRIBUTE = "billing_declaration"
"""Where ``@endpoint(billing=...)`` keeps the declaration on the method (fal's attribute name)."""


class BillingComponents(TypedDict):
    """One endpoint's billable components: ``app`` is the JSON Schema (an object) of the report
    the endpoint sends, whose properties are the billable metrics; ``schema_id`` names it."""

    version: Literal[1]
    schema_id: str
    app: dict[str, Any]


@runtime_checkable
class BillingDeclaration(Protocol):
    """Anything with a ``declaration()`` method that returns ``BillingComponents``."""

    def declaration(self) -> BillingComponents: ...


def check_endpoint_billing(billing: object, is_websocket: bool) -> BillingDeclaration | None:
    """What ``@endpoint(..., billing=...)`` accepts, with fal's errors."""
    if billing is None:
        return None
    if (
        isinstance(billing, type)
        or not isinstance(billing, BillingDeclaration)
        or not callable(billing.declaration)
    ):
        raise TypeError("billing must be an object with a declaration() method")
    if is_websocket:
        raise ValueError("Websocket endpoints cannot declare billing components")
    return billing


def check_declaration(path: str, value: object) -> BillingComponents:
    """Refuse a malformed declaration, with fal's messages."""

    def fail(reason: str) -> ValueError:
        return ValueError(f"billing declaration for {path!r} {reason}")

    if not isinstance(value, dict):
        raise fail("must be a dict")
    if set(value) != {"version", "schema_id", "app"}:
        raise fail("must have exactly version, schema_id and app")
    version = value["version"]
    if isinstance(version, bool) or version != BILLING_COMPONENTS_VERSION:
        raise fail(f"must have version {BILLING_COMPONENTS_VERSION}")
    if not isinstance(value["schema_id"], str) or not value["schema_id"]:
        raise fail("must have a non-empty string schema_id")
    app = value["app"]
    if not isinstance(app, dict) or app.get("type") != "object":
        raise fail("must have an object JSON Schema as app")
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise fail("must be JSON-serializable, without NaN or infinity") from None
    if json.loads(encoded) != value:
        raise fail("must survive a JSON round trip unchanged")
    return value  # type: ignore[return-value]


def collect_billing_components(
    endpoints: list[tuple[str, Any]], owner: type
) -> dict[str, BillingComponents]:
    """``{path: components}`` of the endpoints (``(method name, spec)`` pairs) that declare
    billing, sorted by path; a malformed declaration raises ``ValueError`` naming the path."""
    components: dict[str, BillingComponents] = {}
    for method_name, spec in endpoints:
        declaration = getattr(getattr(owner, method_name), DECLARATION_ATTRIBUTE, None)
        if declaration is not None:
            components[spec.path] = check_declaration(spec.path, declaration.declaration())
    return dict(sorted(components.items()))


def billable_components(components: BillingComponents) -> list[str]:
    """The billable metric names of a declaration (its report schema's properties)."""
    return sorted(components["app"].get("properties") or {})


def parse_billable_units(value: str | None) -> float | None:
    """A ``x-fal-billable-units`` header value as a number; None when absent or not a number."""
    if value is None:
        return None
    try:
        units = float(value)
    except ValueError:
        return None
    return units if units >= 0 and units != float("inf") else None
