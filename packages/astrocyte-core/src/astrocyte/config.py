"""``astrocyte.yaml``: loading, ``${ENV}`` substitution and validation.

Every problem found is reported at once, in one :class:`~astrocyte.errors.ConfigError` whose message
lists each issue with its dotted path (``store_config.pathh: unknown key``).

Environment substitution applies to string values only (never to keys or to YAML syntax):

* ``${VAR}`` is replaced by the variable's value; a missing variable is always an error naming it
  and where it was used, so a secret can never silently become empty.
* ``${VAR:-default}`` uses ``default`` when ``VAR`` is unset or empty.
* ``$${`` is a literal ``${``.
* When a value is exactly one reference (``port: ${PG_PORT}``) the substituted text is read as a
  YAML scalar, so numbers and booleans keep their type.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from astrocyte.errors import ConfigError
from astrocyte.policy.config import PolicyConfig
from astrocyte.providers import EMBEDDERS, LLMS, STORES, load_class

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AstrocyteConfig",
    "ChunkingConfig",
    "RecallConfig",
    "ReflectConfig",
    "load_config",
    "parse_config",
    "validate_model",
]

DEFAULT_SQLITE_PATH = "./data/astrocyte.db"
#: The shipped embedded default (SQLite + hashing), for processes started without a config file.
DEFAULT_CONFIG_PATH = Path(__file__).parent / "examples" / "astrocyte.yaml"
_POLICY_KEYS = tuple(PolicyConfig.model_fields)
_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ISSUE_LINE = re.compile(r"^[A-Za-z_][\w.\[\]-]*: ")
_WHOLE_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}$")

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChunkingConfig(_Strict):
    """How retained content is split into searchable chunks."""

    max_chars: int = Field(default=1200, ge=100, le=100_000)
    overlap_chars: int = Field(default=150, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingConfig:
        if self.overlap_chars >= self.max_chars // 2:
            raise ValueError("overlap_chars must be less than half of max_chars")
        return self


class RecallConfig(_Strict):
    """Fusion and candidate sizes for recall."""

    rrf_k: int = Field(default=60, ge=1)  # reciprocal rank fusion constant
    # Chunks fetched per arm: max(candidate_pool, max_results * candidate_multiplier). Fusion needs
    # some depth beyond max_results, but every extra candidate is re-read and re-scored by the store.
    candidate_pool: int = Field(default=30, ge=1, le=10_000)
    candidate_multiplier: int = Field(default=3, ge=1, le=100)
    max_results_limit: int = Field(default=1000, ge=1)
    # Vector hits at or below this cosine similarity are ignored before fusion (None: keep all).
    # The default drops only vectors sharing nothing with the query (0 with the hashing embedder),
    # which RRF would otherwise rank as if relevant; raise it for embedders whose unrelated texts
    # still score high (the scale is embedder-specific).
    min_similarity: float | None = Field(default=0.0, ge=-1.0, le=1.0)


class ReflectConfig(_Strict):
    """How reflect gathers memories and sizes its answer."""

    max_memories: int = Field(default=12, ge=1, le=200)
    context_tokens: int = Field(default=3000, ge=100)  # budget for memories in the prompt
    answer_tokens: int = Field(default=512, ge=16)  # default answer budget


class AstrocyteConfig(PolicyConfig):
    """The validated ``astrocyte.yaml``. Policy sections (``access_control``, ``access_grants``,
    ``barriers``, ``recall_authority``, ``limits``) are the fields of :class:`PolicyConfig`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str = "sqlite"
    store_config: dict[str, Any] = Field(default_factory=dict)
    embedder: str = "hashing"
    embedder_config: dict[str, Any] = Field(default_factory=dict)
    llm: str | None = None
    llm_config: dict[str, Any] = Field(default_factory=dict)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    recall: RecallConfig = Field(default_factory=RecallConfig)
    reflect: ReflectConfig = Field(default_factory=ReflectConfig)
    # Validated by ``astrocyte.ingest`` through each driver's own schema.
    sources: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_store_config(cls, data: Any) -> Any:
        # The default path only makes sense for the default store; others start from nothing.
        if isinstance(data, Mapping) and data.get("store_config") is None:
            data = dict(data)
            data["store_config"] = (
                {"path": DEFAULT_SQLITE_PATH} if data.get("store", "sqlite") == "sqlite" else {}
            )
        return data

    def __repr_args__(self) -> Any:
        # Provider and source mappings are free-form and may hold secrets (api_key, dsn, tokens).
        for name, value in super().__repr_args__():
            yield name, _mask_secrets(value) if name in _FREE_FORM_FIELDS else value

    @property
    def policy(self) -> PolicyConfig:
        """The policy sections as the :class:`PolicyConfig` the policy engine takes."""
        return PolicyConfig.model_validate(self.model_dump(include=set(_POLICY_KEYS)))


_FREE_FORM_FIELDS = frozenset({"store_config", "embedder_config", "llm_config", "sources"})
_SECRET_KEY = re.compile(r"key|secret|password|passwd|token|dsn|credential|auth", re.IGNORECASE)


def _mask_secrets(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: "***" if isinstance(k, str) and _SECRET_KEY.search(k) and v else _mask_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask_secrets(v) for v in value]
    return value


# -- public entry points ------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> AstrocyteConfig:
    """Read, substitute and validate a YAML file. Raises ``ConfigError(code="config_invalid")``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: invalid YAML: {_describe_yaml_error(exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{file}: the top level must be a mapping of keys, not {type(raw).__name__}")
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc.message}", details=exc.details) from None


def parse_config(mapping: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> AstrocyteConfig:
    """Substitute ``${ENV}`` references in ``mapping`` and validate it, providers included."""
    issues: list[str] = []
    substituted = _substitute(dict(mapping), os.environ if environ is None else environ, "", issues)
    if issues:
        raise _config_error(issues)
    try:
        config = AstrocyteConfig.model_validate(substituted)
    except PydanticValidationError as exc:
        raise _config_error(format_pydantic_errors(exc)) from None
    issues.extend(_provider_issues(config))
    issues.extend(_source_issues(config))
    if issues:
        raise _config_error(issues)
    return config


def validate_model(model: type[M], mapping: Mapping[str, Any]) -> M:
    """Validate a provider's config mapping against its pydantic ``model``; for ``validate_config``."""
    try:
        return model.model_validate(dict(mapping))
    except PydanticValidationError as exc:
        raise _config_error(format_pydantic_errors(exc)) from None


def format_pydantic_errors(exc: PydanticValidationError, prefix: str = "") -> list[str]:
    """One ``dotted.path: problem`` line per pydantic error."""
    lines = []
    for err in exc.errors():
        path = _dotted(prefix, err["loc"])
        problem = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{path}: {problem}" if path else problem)
    return lines


# -- helpers ------------------------------------------------------------------------------------


def _config_error(issues: list[str]) -> ConfigError:
    if len(issues) == 1:
        message = f"invalid configuration: {issues[0]}"
    else:
        message = "invalid configuration:\n" + "\n".join(f"  - {issue}" for issue in issues)
    return ConfigError(message, details={"issues": issues})


def _dotted(prefix: str, loc: Iterable[Any]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return problem


def _substitute(value: Any, environ: Mapping[str, str], path: str, issues: list[str]) -> Any:
    if isinstance(value, str):
        return _substitute_str(value, environ, path, issues)
    if isinstance(value, Mapping):
        return {k: _substitute(v, environ, _dotted(path, [k]), issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, environ, f"{path}[{i}]", issues) for i, v in enumerate(value)]
    return value


def _lookup(name: str, default: str | None, environ: Mapping[str, str], path: str, issues: list[str]) -> str:
    found = environ.get(name)
    if found is None or (found == "" and default is not None):
        if default is None:
            issues.append(
                f"{path}: environment variable {name} is not set (use ${{{name}:-default}} for a default)"
            )
            return ""
        return default
    return found


def _substitute_str(text: str, environ: Mapping[str, str], path: str, issues: list[str]) -> Any:
    if "$" not in text:
        return text
    whole = _WHOLE_REF.match(text)
    if whole:
        replaced = _lookup(whole.group(1), whole.group(2), environ, path, issues)
        try:
            typed = yaml.safe_load(replaced) if replaced else replaced
        except yaml.YAMLError:
            return replaced
        # Only scalars keep their YAML type; anything structured stays the literal text.
        return typed if isinstance(typed, (int, float, bool)) else replaced

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        return _lookup(match.group(1), match.group(2), environ, path, issues)

    return _ENV_REF.sub(replace, text)


def _source_issues(config: AstrocyteConfig) -> list[str]:
    """Validate ``sources`` through each driver's own schema, so a bad source fails at start-up."""
    if not config.sources:
        return []
    from astrocyte.ingest.config import validate_sources  # ingestion is optional at import time

    try:
        validate_sources(config.sources)
    except ConfigError as exc:
        return [exc.message]
    return []


def _provider_issues(config: AstrocyteConfig) -> list[str]:
    """Load each named provider and run its ``validate_config`` so bad keys fail at start-up."""
    issues: list[str] = []
    wanted = [
        (STORES, "store", config.store, config.store_config),
        (EMBEDDERS, "embedder", config.embedder, config.embedder_config),
    ]
    if config.llm:
        wanted.append((LLMS, "llm", config.llm, config.llm_config))
    elif config.llm_config:
        issues.append("llm_config: set but no llm is named")
    for group, key, name, mapping in wanted:
        try:
            cls = load_class(group, name)
        except ConfigError as exc:
            issues.append(f"{key}: {exc.message}")
            continue
        validate = getattr(cls, "validate_config", None)
        if not callable(validate):
            continue
        try:
            validate(dict(mapping))
        except ConfigError as exc:
            issues.extend(_prefixed(f"{key}_config", exc))
    return issues


def _prefixed(prefix: str, exc: ConfigError) -> list[str]:
    listed = exc.details.get("issues")
    lines = [str(line) for line in listed] if isinstance(listed, list) and listed else [exc.message]
    return [line if line.startswith(prefix) else _join_issue(prefix, line) for line in lines]


def _join_issue(prefix: str, line: str) -> str:
    # "pathh: unknown key" becomes "store_config.pathh: unknown key"; free text stays readable.
    return f"{prefix}.{line}" if _ISSUE_LINE.match(line) else f"{prefix}: {line}"
