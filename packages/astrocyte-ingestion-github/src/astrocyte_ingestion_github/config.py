"""The ``github`` source's configuration schema (the driver keys of ``sources.<id>``)."""

from __future__ import annotations

import os
import re
import string
from datetime import UTC, datetime
from typing import Literal

from astrocyte.ingest.driver import DriverConfig
from pydantic import Field, SecretStr, field_validator, model_validator

_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")

ISSUE_FIELDS = ("owner", "repo", "number", "title", "body", "state", "user", "url", "labels", "kind")
COMMENT_FIELDS = ("owner", "repo", "number", "body", "user", "url", "kind")
BANK_FIELDS = ("owner", "repo")

DEFAULT_ISSUE_TEMPLATE = "{owner}/{repo}#{number} ({kind}, {state}) {title}\n\n{body}"
DEFAULT_COMMENT_TEMPLATE = "Comment by {user} on {owner}/{repo}#{number}:\n\n{body}"


def _check_template(value: str, allowed: tuple[str, ...]) -> str:
    for _, name, _spec, _conversion in string.Formatter().parse(value):
        if name is not None and name not in allowed:
            raise ValueError(f"unknown field {{{name}}}; allowed: {', '.join(allowed)}")
    return value


class Include(DriverConfig):
    """What to turn into memories."""

    issues: bool = True
    pull_requests: bool = True
    comments: bool = True


class MappingOptions(DriverConfig):
    """How an issue or comment becomes a memory. Shared by the poller and the webhook mapping, so
    both write the same memory for the same object when configured alike (the defaults are)."""

    # The driver names each memory's bank itself (a template over the repository), so the common
    # bank_id / bank_template keys of a source are not needed.
    bank: str = "github:{owner}.{repo}"
    issue_template: str = DEFAULT_ISSUE_TEMPLATE
    comment_template: str = DEFAULT_COMMENT_TEMPLATE
    tags: list[str] = Field(default_factory=list, description="added to every memory, before labels")
    label_tags: bool = Field(default=True, description="an issue's label names become its tags")
    include: Include = Field(default_factory=Include)

    @field_validator("bank")
    @classmethod
    def _bank_fields(cls, value: str) -> str:
        return _check_template(value, BANK_FIELDS)

    @field_validator("issue_template")
    @classmethod
    def _issue_fields(cls, value: str) -> str:
        return _check_template(value, ISSUE_FIELDS)

    @field_validator("comment_template")
    @classmethod
    def _comment_fields(cls, value: str) -> str:
        return _check_template(value, COMMENT_FIELDS)


class AppAuth(DriverConfig):
    """Authenticate as a GitHub App installation: the driver mints its own installation tokens
    (JWT signed with the App's private key, RS256) and renews them before they expire."""

    app_id: int = Field(ge=1)
    installation_id: int = Field(ge=1)
    private_key: SecretStr | None = Field(default=None, description="PEM text, e.g. ${GITHUB_APP_KEY}")
    private_key_env: str | None = None
    private_key_path: str | None = None

    @model_validator(mode="after")
    def _one_key(self) -> AppAuth:
        given = [
            self.private_key is not None,
            self.private_key_env is not None,
            self.private_key_path is not None,
        ]
        if sum(given) != 1:
            raise ValueError("give exactly one of private_key, private_key_env, private_key_path")
        try:
            import jwt  # noqa: F401  # PyJWT with cryptography: the `app` extra
        except ImportError:
            raise ValueError(
                "GitHub App auth needs PyJWT: pip install './packages/astrocyte-ingestion-github[app]'"
            ) from None
        if self.private_key_env is not None and not os.environ.get(self.private_key_env):
            raise ValueError(f"the {self.private_key_env} environment variable is not set")
        return self

    def pem(self) -> str:
        """The private key, read now (a rotated key file is picked up at the next token)."""
        if self.private_key is not None:
            return self.private_key.get_secret_value()
        if self.private_key_env is not None:
            return os.environ[self.private_key_env]
        assert self.private_key_path is not None
        with open(self.private_key_path, encoding="ascii") as handle:
            return handle.read()


class GitHubSourceConfig(MappingOptions):
    """Config of a ``driver: github`` poll source. See the package README for every key."""

    repositories: list[str] = Field(min_length=1, description="owner/repo, one or more")
    api_url: str = Field(
        default="https://api.github.com", description="GitHub Enterprise: https://HOST/api/v3"
    )
    ca_bundle: str | None = Field(default=None, description="PEM file of CAs to trust (GitHub Enterprise)")
    token: SecretStr | None = None
    token_env: str | None = "GITHUB_TOKEN"
    allow_anonymous: bool = Field(default=False, description="poll public repositories without a token")
    app: AppAuth | None = Field(default=None, description="authenticate as a GitHub App installation")
    state: Literal["open", "closed", "all"] = "all"
    labels: list[str] = Field(default_factory=list, description="only issues carrying all of these labels")
    interval_seconds: float = Field(default=60.0, gt=0)
    page_size: int = Field(default=100, ge=1, le=100)
    overlap_seconds: float = Field(default=5.0, ge=0, le=3600)
    lease_seconds: float = Field(default=30.0, ge=1)
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    max_retry_seconds: float = Field(default=300.0, gt=0, description="cap of one backoff wait")
    start_from: str | None = Field(
        default=None, description="ISO 8601 time: ignore issues not updated since (default: everything)"
    )
    user_agent: str = "astrocyte-ingestion-github"

    @field_validator("repositories")
    @classmethod
    def _repo_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _REPO.match(name):
                raise ValueError(f"{name!r} is not owner/repo")
        if len(set(value)) != len(value):
            raise ValueError("a repository is listed twice")
        return value

    @field_validator("start_from")
    @classmethod
    def _start(cls, value: str | None) -> str | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("must be an http(s) URL such as https://api.github.com")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _auth(self) -> GitHubSourceConfig:
        if self.app is not None:
            if self.token is not None:
                raise ValueError("give either token or app, not both")
            return self
        if self.resolved_token() is None and not self.allow_anonymous:
            where = f"the {self.token_env} environment variable" if self.token_env else "token"
            raise ValueError(
                f"no GitHub token: set {where} (or token: ...), or allow_anonymous: true for public "
                "repositories at 60 requests an hour"
            )
        return self

    def resolved_token(self) -> str | None:
        """The token to send: ``token`` when given, else the ``token_env`` variable (None with
        ``app``: the driver mints installation tokens)."""
        if self.app is not None:
            return None
        if self.token is not None and self.token.get_secret_value():
            return self.token.get_secret_value()
        if self.token_env:
            return os.environ.get(self.token_env) or None
        return None

    def mapping(self) -> MappingOptions:
        return MappingOptions.model_validate(self.model_dump(include=set(MappingOptions.model_fields)))
