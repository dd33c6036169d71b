"""An App's deployment settings (fal's class attributes), validated with fal's defaults."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class AppSettingsError(TypeError):
    """A setting of an App class is unknown or has a bad value; the message names it."""


class AppSettings(BaseModel):
    """Every setting fal's ``App`` accepts. Locally, some only inform (``regions``, ``image``):
    docs/running-apps.md says what each one does here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    machine_type: str | list[str] = "S"
    num_gpus: int | None = Field(default=None, ge=0)
    keep_alive: float = Field(default=60, ge=0)
    min_concurrency: int = Field(default=0, ge=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    concurrency_buffer: int = Field(default=0, ge=0)
    concurrency_buffer_perc: int = Field(default=0, ge=0, le=100 * 100)
    scaling_delay: float = Field(default=0, ge=0)
    max_multiplexing: int = Field(default=1, ge=1)
    request_timeout: float | None = Field(default=None, gt=0)
    request_start_timeout: float | None = Field(default=None, gt=0)
    startup_timeout: float | None = Field(default=None, gt=0)
    requirements: list[str] = Field(default_factory=list)
    requirements_context_dir: str | None = None
    local_python_modules: list[str] = Field(default_factory=list)
    app_name: str | None = None
    app_auth: Literal["public", "private", "shared"] | None = None
    app_files: list[str] = Field(default_factory=list)
    app_files_ignore: list[str] = Field(default_factory=list)
    app_files_context_dir: str | None = None
    secrets: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    image: Any = None
    kind: str | None = None
    python_version: str | None = None
    termination_grace_period_seconds: float | None = Field(default=None, ge=0)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    skip_retry_conditions: list[str] | None = None
    retry_config: Any = None
    data_mounts: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _an_image_makes_a_container_app(cls, values: Any) -> Any:
        """fal's rule: an App with an ``image`` is of kind ``container``."""
        if isinstance(values, dict) and values.get("image") is not None:
            values = {**values, "kind": "container"}
        return values

    @field_validator("requirements", mode="before")
    @classmethod
    def _flatten_requirement_layers(cls, value: Any) -> Any:
        """fal installs ``[[...], [...]]`` layer by layer; minifal only checks them, so the
        layers are one list here."""
        if isinstance(value, list) and value and all(isinstance(item, list) for item in value):
            return [requirement for layer in value for requirement in layer]
        return value

    @field_validator("machine_type")
    @classmethod
    def _machine_type_not_empty(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("machine_type list must not be empty")
        return value

    @property
    def machine_types(self) -> list[str]:
        return [self.machine_type] if isinstance(self.machine_type, str) else self.machine_type

    @property
    def wants_gpu(self) -> bool:
        return any(kind.upper().startswith("GPU") for kind in self.machine_types)

    @property
    def gpus_per_runner(self) -> int:
        """fal's rule: ``num_gpus`` when set, else 1 for a GPU machine type, else 0."""
        if self.num_gpus is not None:
            return self.num_gpus
        return 1 if self.wants_gpu else 0


SETTING_NAMES = frozenset(AppSettings.model_fields)
CLASS_KEYWORD_ALIASES = {"name": "app_name"}


def validate_settings(owner: str, values: dict[str, Any]) -> AppSettings:
    """Build ``AppSettings``; a bad value raises ``AppSettingsError`` naming ``Owner.setting``."""
    try:
        return AppSettings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{owner}.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise AppSettingsError(f"invalid App setting: {problems}") from None


def kebab_case(name: str) -> str:
    """``MyGoodApp`` -> ``my-good-app``; ``SDTurbo`` -> ``sd-turbo``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1-\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", name)
    return name.replace("_", "-").lower()
