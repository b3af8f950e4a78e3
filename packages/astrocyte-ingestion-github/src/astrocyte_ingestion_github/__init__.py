"""GitHub issues and comments as Astrocyte memories: the ``github`` poll driver and webhook mapping."""

from astrocyte_ingestion_github.config import GitHubSourceConfig
from astrocyte_ingestion_github.driver import GitHubIssuesDriver

__all__ = ["GitHubIssuesDriver", "GitHubSourceConfig"]
__version__ = "0.1.0"
