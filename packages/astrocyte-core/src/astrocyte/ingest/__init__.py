"""The ingestion contract: drivers, the sink, the supervisor, webhook verification."""
