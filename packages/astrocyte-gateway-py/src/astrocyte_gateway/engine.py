"""Build the core engine the gateway serves: ``ASTROCYTE_CONFIG_PATH`` or the embedded default."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from astrocyte.errors import ConfigError

from astrocyte_gateway.settings import Settings

log = logging.getLogger("astrocyte_gateway.engine")


def embedded_default(data_dir: str, auth_mode: str = "dev") -> dict[str, Any]:
    """One SQLite file in ``data_dir`` and the offline hashing embedder: runs with no service.
    Outside dev mode each principal owns the bank named after it, and nothing else."""
    config: dict[str, Any] = {
        "store": "sqlite",
        "store_config": {"path": str(Path(data_dir) / "astrocyte.db")},
        "embedder": "hashing",
    }
    if auth_mode != "dev":
        config["access_control"] = {"enabled": True, "owner_banks": True}
    return config


def check_access_control(settings: Settings, config: Any) -> None:
    """Outside dev mode, authentication without isolation does not start: ``access_control`` must
    be enabled, or turned off explicitly (``access_control: {enabled: false}``), which is logged."""
    if settings.auth_mode == "dev":
        return
    access = config.access_control
    if access.enabled:
        return
    if "enabled" in access.model_fields_set:
        log.warning(
            "access control is off (access_control.enabled: false): every authenticated caller may "
            "read, write and forget every bank"
        )
        return
    raise ConfigError(
        f"ASTROCYTE_AUTH_MODE={settings.auth_mode} without access control lets every caller use every "
        "bank: set access_control: {enabled: true} with access_grants (or owner_banks: true) in "
        "astrocyte.yaml, or access_control: {enabled: false} to accept that",
        code="access_control_required",
    )


def build_engine(settings: Settings) -> Any:
    """An unopened ``astrocyte.Astrocyte`` (the lifespan opens and closes it)."""
    from astrocyte import Astrocyte

    if settings.config_path:
        return Astrocyte.from_config(settings.config_path)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    return Astrocyte.from_dict(embedded_default(settings.data_dir, settings.auth_mode))
