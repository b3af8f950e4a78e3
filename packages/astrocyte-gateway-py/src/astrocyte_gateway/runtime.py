"""What the routes share at run time: the engine, the authenticator, metrics and ingest handles.

Stored on ``app.state.gateway`` by the app factory; routes reach it through :mod:`deps`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from astrocyte_gateway.auth import Authenticator
from astrocyte_gateway.metrics import GatewayMetrics
from astrocyte_gateway.settings import Settings


@dataclass(slots=True)
class GatewayRuntime:
    settings: Settings
    metrics: GatewayMetrics
    authenticator: Authenticator
    limiter: Any | None = None
    brain: Any | None = None  # astrocyte.Astrocyte once the lifespan opened it
    supervisor: Any | None = None  # astrocyte.ingest supervisor when sources are configured
    webhooks: Any | None = None  # webhook verifier for POST /v1/ingest/webhook/{source_id}
