"""The ``github`` webhook payload mapping (entry point in ``astrocyte.webhook_payloads``).

The core's webhook driver verifies the delivery (``X-Hub-Signature-256``, ``X-GitHub-Delivery``)
and hands the body here; ``issues`` and ``issue_comment`` events become the same messages the
poller makes for the same objects (:mod:`astrocyte_ingestion_github.mapping`), so a webhook and a
poller on the same repository write one memory per issue or comment:

- ``issues``: any action but ``deleted`` / ``transferred`` retains the issue's current version;
  ``deleted`` and ``transferred`` forget it (a transferred issue reappears, under its new
  repository's bank, when that repository is watched).
- ``issue_comment``: ``created`` / ``edited`` retain the comment; ``deleted`` forgets it.
- Every other event (``ping`` included) is acknowledged and ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from astrocyte.errors import ValidationError
from astrocyte.ingest.driver import validate_model
from astrocyte.ingest.sink import IngestMessage

from astrocyte_ingestion_github.config import MappingOptions
from astrocyte_ingestion_github.mapping import (
    MalformedObject,
    Repo,
    comment_key,
    comment_message,
    comment_on_pull_request,
    forget_message,
    host_of,
    is_pull_request,
    issue_key,
    issue_message,
    object_ref,
)

_FORGET_ISSUE = frozenset({"deleted", "transferred"})


def github_payload(options: Mapping[str, Any]) -> GitHubPayload:
    """The mapping factory: ``payload_options`` are the poller's mapping keys (``bank``,
    ``issue_template``, ``comment_template``, ``tags``, ``label_tags``, ``include``)."""
    return GitHubPayload(validate_model(MappingOptions, options))


class GitHubPayload:
    """Maps one verified GitHub delivery to messages."""

    def __init__(self, options: MappingOptions) -> None:
        self.options = options

    def __call__(self, headers: Mapping[str, str], body: bytes) -> Sequence[IngestMessage]:
        event = {k.lower(): v for k, v in headers.items()}.get("x-github-event", "")
        if event not in ("issues", "issue_comment"):
            return []
        try:
            payload = json.loads(body)
            repo = Repo.parse(str(payload["repository"]["full_name"]))
            action = str(payload.get("action") or "")
            issue = payload["issue"]
            if event == "issues":
                return self._issue(repo, action, issue)
            return self._comment(repo, action, issue, payload["comment"])
        except (ValueError, TypeError, KeyError, MalformedObject) as exc:
            raise ValidationError(
                f"the GitHub {event} event is not readable: {type(exc).__name__}: {exc}",
                code="webhook_payload_invalid",
            ) from exc

    def _issue(self, repo: Repo, action: str, issue: Mapping[str, Any]) -> list[IngestMessage]:
        include = self.options.include
        if not (include.pull_requests if is_pull_request(issue) else include.issues):
            return []
        if action in _FORGET_ISSUE:
            key = issue_key(host_of(str(issue["html_url"])), int(issue["id"]))
            return [forget_message(self.options, repo, key, object_ref(repo, "issue", issue))]
        return [issue_message(self.options, repo, issue)]

    def _comment(
        self, repo: Repo, action: str, issue: Mapping[str, Any], comment: Mapping[str, Any]
    ) -> list[IngestMessage]:
        include = self.options.include
        if not include.comments or (comment_on_pull_request(comment) and not include.pull_requests):
            return []
        if action == "deleted":
            key = comment_key(host_of(str(comment["html_url"])), int(comment["id"]))
            return [forget_message(self.options, repo, key, object_ref(repo, "comment", comment))]
        return [comment_message(self.options, repo, comment, int(issue["number"]))]
