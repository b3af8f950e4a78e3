"""Redis Streams ingestion for Astrocyte: the ``redis`` stream driver."""

from astrocyte_ingestion_redis.config import FieldMapping, RedisStreamConfig, TlsOptions
from astrocyte_ingestion_redis.driver import RedisStreamDriver

__all__ = ["FieldMapping", "RedisStreamConfig", "RedisStreamDriver", "TlsOptions"]
__version__ = "0.1.0"
