"""Astrocyte's HTTP gateway: ``create_app(settings)`` builds the FastAPI app; ``astrocyte-gateway``
runs it under uvicorn."""

__version__ = "0.1.0"

from astrocyte_gateway.app import create_app
from astrocyte_gateway.settings import Settings

__all__ = ["Settings", "__version__", "create_app"]
