"""Build the core engine the gateway serves: ``ASTROCYTE_CONFIG_PATH`` or the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from astrocyte_gateway.settings import Settings


def embedded_default(data_dir: str) -> dict[str, Any]:
    """One SQLite file in ``data_dir`` and the offline hashing embedder: runs with no service."""
    return {
        "store": "sqlite",
        "store_config": {"path": str(Path(data_dir) / "astrocyte.db")},
        "embedder": "hashing",
    }


def build_engine(settings: Settings) -> Any:
    """An unopened ``astrocyte.Astrocyte`` (the lifespan opens and closes it)."""
    from astrocyte import Astrocyte

    if settings.config_path:
        return Astrocyte.from_config(settings.config_path)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    return Astrocyte.from_dict(embedded_default(settings.data_dir))
