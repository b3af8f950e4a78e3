"""Contract kits that third-party stores and ingest drivers import to prove they conform, and the
helpers their tests share."""

from astrocyte.testing._helpers import missing_service, service_env

__all__ = ["missing_service", "service_env"]
