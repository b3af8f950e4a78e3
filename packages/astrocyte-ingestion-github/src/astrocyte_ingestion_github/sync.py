"""Incremental sync of one repository's issues and comments into the sink.

Each feed (``/repos/{owner}/{repo}/issues`` and ``/repos/{owner}/{repo}/issues/comments``) is read
oldest change first (``sort=updated&direction=asc``) from a cursor kept in the store:

- ``since``: the newest ``updated_at`` settled so far. A pass asks from ``since - overlap_seconds``
  (GitHub's ``since`` is second-grained and a change can become visible to the list a moment after
  its timestamp); ``recent`` remembers the version (``updated_at``) of every object inside that
  overlap, so those already settled are not submitted again: the overlap never repeats a memory.
- Pages: after each page the next request starts again from the page's newest ``updated_at``
  (keyset paging: an object edited mid-pass moves to the end of the order instead of shifting an
  unread one onto a page already read). Only when a whole page shares one ``updated_at`` (the
  keyset cannot move) is the ``Link: rel="next"`` URL followed.
- ETag: the first request of a pass carries ``If-None-Match`` with the ETag of the last answer to
  the same URL, so a repository with no change answers 304 (no quota spent, nothing submitted).
- The cursor is saved after each page has been settled by the sink (stored, duplicate, or
  rejected and dead-lettered), never before: a crash repeats at most one page, and the store's
  idempotency turns the repeat into duplicates.
- Dead letters (malformed objects, messages the sink rejects) are written after the page's valid
  messages were submitted, so a failing dead-letter write never holds a valid message back. A write
  that fails is retried with backoff (health says ``degraded``) and the cursor waits until every
  dead letter of the page is written: a stop meanwhile leaves the page to be read again, and the
  dead-letter list ignores a reference it already holds, so nothing is dead-lettered twice.

Deleted comments: GitHub's lists have no tombstones, so an issue whose ``comments`` count dropped
below the comments remembered for it has its comment list read in full, and the comments missing
from it are forgotten. A comment list answering 404 or 410 (the issue was deleted or
moved where the token cannot see) has its remembered comments forgotten. A deleted or transferred
issue itself simply stops appearing in the list, which a poller cannot tell from "unchanged": the
webhook mapping forgets it on the ``deleted`` / ``transferred`` events.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from astrocyte.ingest.sink import IngestMessage, Sink, report_dead_lettered
from astrocyte.ingest.state import SourceState

from astrocyte_ingestion_github.client import GitHubClient, GitHubError
from astrocyte_ingestion_github.config import GitHubSourceConfig
from astrocyte_ingestion_github.mapping import (
    MalformedObject,
    Repo,
    comment_key,
    comment_message,
    comment_on_pull_request,
    forget_message,
    host_of,
    is_pull_request,
    issue_message,
    issue_number_of,
    object_ref,
)

log = logging.getLogger("astrocyte_ingestion_github")

Sleep = Callable[[float], Awaitable[None]]
Letter = tuple[str, str, str, bool]  # (raw ref, code, reason, poison: never reached the sink)


class LeaseLost(Exception):
    """Another replica holds the repository now: stop syncing it."""


@dataclass(slots=True)
class Cursor:
    since: str | None = None
    recent: dict[str, str] = field(default_factory=dict)  # object id -> version settled
    etag: str | None = None
    etag_for: str | None = None  # the request the ETag answered

    @classmethod
    def load(cls, raw: Any) -> Cursor:
        if not isinstance(raw, dict):
            return cls()
        return cls(raw.get("since"), dict(raw.get("recent") or {}), raw.get("etag"), raw.get("etag_for"))

    def dump(self) -> dict[str, Any]:
        return {"since": self.since, "recent": self.recent, "etag": self.etag, "etag_for": self.etag_for}


@dataclass(slots=True)
class SyncStats:
    """Counters for health and tests."""

    pages: int = 0
    not_modified: int = 0
    submitted: int = 0
    dead_lettered: int = 0
    forgotten: int = 0


class RepoSync:
    """Reads one repository's feeds and settles them through the sink."""

    def __init__(
        self,
        repo: Repo,
        config: GitHubSourceConfig,
        client: GitHubClient,
        sink: Sink,
        state: SourceState,
        *,
        sleep: Sleep,
        still_held: Callable[[], bool],
        on_trouble: Callable[[str], None] | None = None,
    ) -> None:
        self.repo = repo
        self.config = config
        self.options = config.mapping()
        self.client = client
        self.sink = sink
        self.state = state
        self.stats = SyncStats()
        self._sleep = sleep
        self._still_held = still_held
        self._on_trouble = on_trouble or (lambda why: None)
        self._letters: list[Letter] = []  # dead letters of the page being settled

    async def poll(self) -> None:
        """One pass over every feed the config includes."""
        include = self.options.include
        if include.issues or include.pull_requests:
            await self._feed("issues", self._issue_messages)
        if include.comments:
            await self._feed("issues/comments", self._comment_messages)

    # -- one feed --------------------------------------------------------------------------------

    async def _feed(
        self, feed: str, to_messages: Callable[[list[Any]], Awaitable[list[IngestMessage]]]
    ) -> None:
        cursor_key = f"cursor:{self.repo.full_name}:{feed}"
        cursor = Cursor.load(await self.state.get_json(cursor_key))
        path = f"/repos/{self.repo.full_name}/{feed}"
        base = self._params(feed, _minus(cursor.since, self.config.overlap_seconds) or self.config.start_from)
        params: dict[str, str] | None = base
        url: str = path
        first = True
        while True:
            if not self._still_held():
                raise LeaseLost(self.repo.full_name)
            request_id = json.dumps([url, params], sort_keys=True)
            etag = cursor.etag if first and cursor.etag_for == request_id else None
            page = await self.client.get_page(url, params, etag)
            self.stats.pages += 1
            if page.items is None:  # 304: nothing changed since the last identical request
                self.stats.not_modified += 1
                return
            fresh = [item for item in page.items if not _settled(cursor, item)]
            self._letters = []
            await self._settle(await to_messages(fresh))
            await self._write_dead_letters()
            before = cursor.since
            _advance(cursor, page.items, self.config.overlap_seconds)
            if first:
                cursor.etag, cursor.etag_for = page.etag, request_id
            await self.state.set_json(cursor_key, cursor.dump())
            if page.next_url is None:
                return
            first = False
            if cursor.since != before:
                url, params = path, {**base, "since": cursor.since or ""}
            else:  # the keyset cannot move (a full page of one timestamp): follow Link
                url, params = page.next_url, None

    def _params(self, feed: str, since: str | None) -> dict[str, str]:
        params = {"sort": "updated", "direction": "asc", "per_page": str(self.config.page_size)}
        if feed == "issues":
            params["state"] = self.config.state
            if self.config.labels:
                params["labels"] = ",".join(self.config.labels)
        if since:
            params["since"] = since
        return params

    # -- issues ----------------------------------------------------------------------------------

    async def _issue_messages(self, items: list[Any]) -> list[IngestMessage]:
        include = self.options.include
        messages: list[IngestMessage] = []
        for item in items:
            if not isinstance(item, dict):
                self._dead_letter(
                    f"{self.repo.full_name}:issue:?", "malformed_object", "not an object", poison=True
                )
                continue
            wanted = include.pull_requests if is_pull_request(item) else include.issues
            try:
                if wanted:
                    messages.append(issue_message(self.options, self.repo, item))
                if include.comments:
                    messages.extend(await self._deleted_comments(item))
            except MalformedObject as exc:
                self._dead_letter(
                    object_ref(self.repo, "issue", item), "malformed_object", str(exc), poison=True
                )
        return messages

    async def _deleted_comments(self, issue: dict[str, Any]) -> list[IngestMessage]:
        """Forget messages for remembered comments of ``issue`` that GitHub no longer lists."""
        number = issue.get("number")
        known_key = f"comments:{self.repo.full_name}#{number}"
        known: list[int] = list(await self.state.get_json(known_key) or [])
        count = issue.get("comments")
        if not known or not isinstance(count, int) or count >= len(known):
            return []
        host = host_of(str(issue.get("html_url") or ""))
        try:
            present = {
                c.get("id")
                for c in await self._all_pages(f"/repos/{self.repo.full_name}/issues/{number}/comments")
            }
        except GitHubError as exc:
            if exc.status not in (404, 410):
                raise
            present = set()  # the issue is gone (deleted, or moved out of reach): so are its comments
        gone = [cid for cid in known if cid not in present]
        await self.state.set_json(known_key, [cid for cid in known if cid in present])
        return [
            forget_message(
                self.options,
                self.repo,
                comment_key(host, cid),
                f"{self.repo.full_name}:comment:{cid}@deleted",
            )
            for cid in gone
        ]

    async def _all_pages(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        url: str | None = path
        params: dict[str, str] | None = {"per_page": "100"}
        while url is not None:
            page = await self.client.get_page(url, params)
            items.extend(i for i in page.items or [] if isinstance(i, dict))
            url, params = page.next_url, None
        return items

    # -- comments --------------------------------------------------------------------------------

    async def _comment_messages(self, items: list[Any]) -> list[IngestMessage]:
        messages: list[IngestMessage] = []
        by_issue: dict[int, list[int]] = {}
        for item in items:
            if not isinstance(item, dict):
                self._dead_letter(
                    f"{self.repo.full_name}:comment:?", "malformed_object", "not an object", poison=True
                )
                continue
            if comment_on_pull_request(item) and not self.options.include.pull_requests:
                continue
            try:
                number = issue_number_of(item)
                messages.append(comment_message(self.options, self.repo, item, number))
            except MalformedObject as exc:
                self._dead_letter(
                    object_ref(self.repo, "comment", item), "malformed_object", str(exc), poison=True
                )
                continue
            by_issue.setdefault(number, []).append(int(item["id"]))
        for number, ids in by_issue.items():
            key = f"comments:{self.repo.full_name}#{number}"
            known: list[int] = list(await self.state.get_json(key) or [])
            added = [cid for cid in ids if cid not in known]
            if added:
                await self.state.set_json(key, known + added)
        return messages

    # -- settling --------------------------------------------------------------------------------

    async def _settle(self, messages: Sequence[IngestMessage]) -> None:
        """Submit until every message is settled; transient failures back off (the cursor waits)."""
        pending = list(messages)
        delay = 0.2
        while pending:
            outcomes = await self.sink.submit(pending)
            self.stats.submitted += len(pending)
            retry: list[IngestMessage] = []
            wait = 0.0
            for message, outcome in zip(pending, outcomes, strict=True):
                if outcome.status == "failed":
                    retry.append(message)
                    wait = max(wait, outcome.retry_after or 0.0)
                elif outcome.status == "rejected":
                    self._dead_letter(
                        message.raw_ref or "?", outcome.code or "rejected", outcome.reason or ""
                    )
                elif outcome.code == "forgotten":
                    self.stats.forgotten += 1
            if retry:
                await self._sleep(max(wait, delay))
                delay = min(self.config.max_retry_seconds, delay * 2)
            pending = retry

    def _dead_letter(self, ref: str, code: str, reason: str, *, poison: bool = False) -> None:
        """Queue a dead letter; :meth:`_write_dead_letters` writes it once the page's valid
        messages are settled. Poison (never submitted) is reported to the sink once written, so
        it is counted and logged like a rejection."""
        self._letters.append((ref, code, reason, poison))

    async def _write_dead_letters(self) -> None:
        """Write the page's dead letters, retrying a failing write with backoff until it succeeds
        (the cursor is saved only after): a dead letter is never dropped."""
        pending, self._letters = self._letters, []
        delay = 0.2
        while pending:
            failed: list[Letter] = []
            trouble = ""
            for letter in pending:
                ref, code, reason, poison = letter
                entry = {"code": code, "reason": reason, "repository": self.repo.full_name}
                try:
                    added = await self.state.dead_letter(ref, entry)
                except Exception as exc:  # the store refused the write: keep it, try again
                    failed.append(letter)
                    trouble = f"dead-letter store: {type(exc).__name__}"
                    continue
                if added and poison:
                    report_dead_lettered(self.sink, ref, code, reason)
                self.stats.dead_lettered += 1
                log.warning("github object dead-lettered", extra={"raw_ref": ref, "code": code})
            if failed:
                log.warning(
                    "dead-letter write failed; retrying", extra={"pending": len(failed), "why": trouble}
                )
                self._on_trouble(trouble)
                await self._sleep(delay)
                delay = min(self.config.max_retry_seconds, delay * 2)
                if not self._still_held():
                    raise LeaseLost(self.repo.full_name)
            pending = failed


def _version(item: dict[str, Any]) -> str:
    """``updated_at`` plus a digest of the object: two edits within one second differ."""
    digest = hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{item.get('updated_at')}#{digest}"


def _settled(cursor: Cursor, item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    return cursor.recent.get(str(item.get("id"))) == _version(item)


def _advance(cursor: Cursor, items: list[Any], overlap: float) -> None:
    """Move ``since`` to the newest ``updated_at`` of the page; keep in ``recent`` the versions
    inside the overlap window before it."""
    stamps = [
        str(i["updated_at"]) for i in items if isinstance(i, dict) and isinstance(i.get("updated_at"), str)
    ]
    newest = max([cursor.since or "", *stamps]) or None
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("updated_at"), str):
            cursor.recent[str(item.get("id"))] = _version(item)
    cursor.since = newest
    floor = _minus(newest, overlap)
    if floor is not None:
        cursor.recent = {k: v for k, v in cursor.recent.items() if v >= floor}


def _minus(stamp: str | None, seconds: float) -> str | None:
    """An ISO 8601 UTC time (GitHub's ``YYYY-MM-DDTHH:MM:SSZ``) minus ``seconds``, same form."""
    if not stamp:
        return None
    from datetime import datetime, timedelta

    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")) - timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["Cursor", "LeaseLost", "RepoSync", "SyncStats"]
