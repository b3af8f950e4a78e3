"""How a GitHub issue, pull request or comment becomes one memory.

The poller (REST objects) and the webhook mapping (the ``issue`` / ``comment`` objects inside
``issues`` and ``issue_comment`` events, which GitHub sends in the same REST representation) both
call :func:`issue_message` / :func:`comment_message`, so the same object yields the same message:

- bank: ``bank`` rendered with the repository's owner and name;
- ``memory_key``: ``<host>:issue:<id>`` or ``<host>:comment:<id>`` (GitHub's numeric id, stable
  across edits; the host keeps github.com and an Enterprise server apart);
- idempotency key: ``<memory_key>@<updated_at>#<digest of content and tags>``: one key per version,
  so a retry of a version is a duplicate and an edit replaces the memory (the digest tells apart two
  edits within one second, which share an ``updated_at``);
- content: the configured template over the object's fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from astrocyte.ingest.sink import IngestMessage

from astrocyte_ingestion_github.config import MappingOptions


class MalformedObject(ValueError):
    """A GitHub object without the fields a memory needs (dead-lettered, never retried)."""


@dataclass(frozen=True, slots=True)
class Repo:
    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @classmethod
    def parse(cls, full_name: str) -> Repo:
        owner, _, name = full_name.partition("/")
        return cls(owner, name)


def issue_key(host: str, issue_id: int) -> str:
    return f"{host}:issue:{issue_id}"


def comment_key(host: str, comment_id: int) -> str:
    return f"{host}:comment:{comment_id}"


def object_ref(repo: Repo, kind: str, obj: Mapping[str, Any]) -> str:
    """The transport reference of a version of an object, as logs and dead letters show it."""
    return f"{repo.full_name}:{kind}:{obj.get('id')}@{obj.get('updated_at')}"


def is_pull_request(issue: Mapping[str, Any]) -> bool:
    return issue.get("pull_request") is not None


def comment_on_pull_request(comment: Mapping[str, Any]) -> bool:
    return "/pull/" in str(comment.get("html_url") or "")


def issue_message(options: MappingOptions, repo: Repo, issue: Mapping[str, Any]) -> IngestMessage:
    """The memory of one issue (or pull request) version; raises :class:`MalformedObject`."""
    issue_id, number, updated = _int(issue, "id"), _int(issue, "number"), _time(issue, "updated_at")
    title, body = _text(issue, "title"), _text(issue, "body", optional=True)
    url = _text(issue, "html_url")
    labels = [str(label["name"]) for label in _labels(issue)]
    kind = "pull request" if is_pull_request(issue) else "issue"
    user = _login(issue)
    fields = {
        "owner": repo.owner,
        "repo": repo.name,
        "number": number,
        "title": title,
        "body": body,
        "state": str(issue.get("state") or ""),
        "user": user,
        "url": url,
        "labels": ", ".join(labels),
        "kind": kind,
    }
    key = issue_key(_host(url), issue_id)
    content, tags = options.issue_template.format_map(fields), _tags(options, labels)
    return IngestMessage(
        idempotency_key=_version_key(key, str(issue["updated_at"]), content, tags),
        content=content,
        bank_id=options.bank.format(owner=repo.owner, repo=repo.name),
        metadata={
            "github_type": "pull_request" if kind == "pull request" else "issue",
            "repository": repo.full_name,
            "number": number,
            "url": url,
            "state": fields["state"],
            "author": user,
            "updated_at": issue["updated_at"],
        },
        tags=tags,
        occurred_at=updated,
        raw_ref=object_ref(repo, "issue", issue),
        memory_key=key,
    )


def comment_message(
    options: MappingOptions, repo: Repo, comment: Mapping[str, Any], number: int | None = None
) -> IngestMessage:
    """The memory of one comment version; ``number`` is its issue's (read from ``issue_url`` when
    not given). Raises :class:`MalformedObject`."""
    comment_id, updated = _int(comment, "id"), _time(comment, "updated_at")
    body, url = _text(comment, "body", optional=True), _text(comment, "html_url")
    if number is None:
        number = issue_number_of(comment)
    user = _login(comment)
    fields = {
        "owner": repo.owner,
        "repo": repo.name,
        "number": number,
        "body": body,
        "user": user,
        "url": url,
        "kind": "pull request" if comment_on_pull_request(comment) else "issue",
    }
    key = comment_key(_host(url), comment_id)
    content = options.comment_template.format_map(fields)
    return IngestMessage(
        idempotency_key=_version_key(key, str(comment["updated_at"]), content, tuple(options.tags)),
        content=content,
        bank_id=options.bank.format(owner=repo.owner, repo=repo.name),
        metadata={
            "github_type": "comment",
            "repository": repo.full_name,
            "number": number,
            "url": url,
            "author": user,
            "updated_at": comment["updated_at"],
        },
        tags=tuple(options.tags),
        occurred_at=updated,
        raw_ref=object_ref(repo, "comment", comment),
        memory_key=key,
    )


def forget_message(options: MappingOptions, repo: Repo, memory_key: str, ref: str) -> IngestMessage:
    """A message deleting the memory of a deleted comment or a vanished issue."""
    return IngestMessage(
        idempotency_key=f"{memory_key}@deleted",
        content="",
        bank_id=options.bank.format(owner=repo.owner, repo=repo.name),
        raw_ref=ref,
        memory_key=memory_key,
        forget=True,
    )


def _version_key(memory_key: str, updated_at: str, content: str, tags: tuple[str, ...]) -> str:
    digest = hashlib.sha256("\x1f".join([content, *tags]).encode()).hexdigest()[:16]
    return f"{memory_key}@{updated_at}#{digest}"


def issue_number_of(comment: Mapping[str, Any]) -> int:
    issue_url = str(comment.get("issue_url") or "")
    tail = issue_url.rstrip("/").rsplit("/", 1)[-1]
    if not tail.isdigit():
        raise MalformedObject("comment without a usable issue_url")
    return int(tail)


def host_of(url: str) -> str:
    return _host(url)


def _host(url: str) -> str:
    host = urlsplit(url).hostname
    if not host:
        raise MalformedObject("object without a usable html_url")
    return host


def _int(obj: Mapping[str, Any], name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedObject(f"field {name!r} is not an integer")
    return value


def _text(obj: Mapping[str, Any], name: str, *, optional: bool = False) -> str:
    value = obj.get(name)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise MalformedObject(f"field {name!r} is not text")
    return value


def _time(obj: Mapping[str, Any], name: str) -> datetime:
    value = obj.get(name)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise MalformedObject(f"field {name!r} is not an ISO 8601 time") from None


def _labels(issue: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    labels = issue.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, Mapping) and "name" in x for x in labels):
        raise MalformedObject("field 'labels' is not a list of labels")
    return labels


def _login(obj: Mapping[str, Any]) -> str:
    user = obj.get("user")
    return str(user.get("login") or "") if isinstance(user, Mapping) else ""


def _tags(options: MappingOptions, labels: list[str]) -> tuple[str, ...]:
    tags = list(options.tags) + (labels if options.label_tags else [])
    return tuple(dict.fromkeys(tags))
