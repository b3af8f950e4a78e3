"""Contract kits that third-party stores and ingest drivers import to prove they conform."""
