"""Validation of the ``sources`` section of ``astrocyte.yaml``.

Each source mixes common keys (read here) with its driver's own keys (validated by the driver
class's ``validate_config``, so a third-party driver is checked exactly like ours)::

    sources:
      agent-events:
        type: stream
        driver: redis                 # entry-point name, or module:Class
        principal: service:ingest     # default service:<source_id>
        trust_message_principals: ["user:*"]
        required: true
        bank_id: shared               # default bank when a message names none
        bank_template: "user-{user}"  # or: bank from message metadata fields
        url: redis://127.0.0.1:6379   # ...driver keys

Every error is a :class:`ConfigError` whose message starts with ``sources.<id>.<key>``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from astrocyte.errors import ConfigError
from astrocyte.ingest.driver import SourceType, load_driver_class
from astrocyte.ingest.principals import PrincipalPolicy, is_principal, validate_globs

SOURCE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class _CommonKeys(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["stream", "poll"]
    driver: str = Field(min_length=1)
    principal: str | None = None
    trust_message_principals: list[str] = Field(default_factory=list)
    required: bool = False
    bank_id: str | None = None
    bank_template: str | None = None

    @field_validator("principal")
    @classmethod
    def _principal_shape(cls, value: str | None) -> str | None:
        if value is not None and not is_principal(value):
            raise ValueError("must look like user:<id>, agent:<id> or service:<id>")
        return value

    @field_validator("trust_message_principals")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        return list(validate_globs(value))

    @field_validator("bank_template")
    @classmethod
    def _template_fields(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)
        return value


COMMON_KEYS = frozenset(_CommonKeys.model_fields)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One validated source: the common part plus the driver's own validated config."""

    source_id: str
    source_type: SourceType  # the ``type`` key
    driver: str
    driver_class: type[Any]
    driver_config: Any
    principal: str
    trust_message_principals: tuple[str, ...] = ()
    required: bool = False
    bank_id: str | None = None
    bank_template: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def principal_policy(self) -> PrincipalPolicy:
        return PrincipalPolicy(self.source_id, self.principal, self.trust_message_principals)


def template_fields(template: str) -> list[str]:
    """Names a bank template reads from message metadata; rejects positional or formatted fields."""
    names: list[str] = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or not name.isidentifier() or spec or conversion:
            raise ValueError(f"template field {{{name}}} must be a plain metadata key like {{user}}")
        names.append(name)
    return names


def validate_source(source_id: str, mapping: Mapping[str, Any]) -> SourceConfig:
    """Validate one source; the driver class is loaded to check its keys."""
    prefix = f"sources.{source_id}"
    if not SOURCE_ID_PATTERN.match(source_id):
        raise ConfigError(
            f"{prefix}: source ids are 1-128 letters, digits and ._- starting with a letter or digit",
            details={"path": prefix},
        )
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{prefix}: must be a mapping", details={"path": prefix})
    try:
        common = _CommonKeys.model_validate(dict(mapping))
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join([prefix, *(str(p) for p in first["loc"])])
        raise ConfigError(f"{path}: {first['msg']}", details={"path": path}) from exc
    try:
        driver_class = load_driver_class(common.type, common.driver)
    except ConfigError as exc:
        raise ConfigError(
            f"{prefix}.driver: {exc.message}", code=exc.code, details={"path": f"{prefix}.driver"}
        ) from exc
    driver_keys = {k: v for k, v in mapping.items() if k not in COMMON_KEYS}
    driver_config = _validate_driver_keys(prefix, driver_class, driver_keys)
    return SourceConfig(
        source_id=source_id,
        source_type=common.type,
        driver=common.driver,
        driver_class=driver_class,
        driver_config=driver_config,
        principal=common.principal or f"service:{source_id}",
        trust_message_principals=tuple(common.trust_message_principals),
        required=common.required,
        bank_id=common.bank_id,
        bank_template=common.bank_template,
        raw=dict(mapping),
    )


def _validate_driver_keys(prefix: str, driver_class: type[Any], keys: dict[str, Any]) -> Any:
    try:
        return driver_class.validate_config(keys)
    except ConfigError as exc:
        inner = exc.details.get("path")
        path = f"{prefix}.{inner}" if inner else prefix
        text = exc.message.removeprefix(f"{inner}: ") if inner else exc.message
        raise ConfigError(f"{path}: {text}", code=exc.code, details={"path": path}) from exc
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join([prefix, *(str(p) for p in first["loc"])])
        raise ConfigError(f"{path}: {first['msg']}", details={"path": path}) from exc


def validate_sources(mapping: Mapping[str, Any] | None) -> dict[str, SourceConfig]:
    """Validate the whole ``sources`` section (``None`` or empty means no sources)."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(
            "sources: must be a mapping of source id to source settings", details={"path": "sources"}
        )
    return {str(source_id): validate_source(str(source_id), body) for source_id, body in mapping.items()}
