"""Test support: a local GitHub-API-compatible server and the contract kit's harness.

:class:`FakeGitHub` serves the part of GitHub's REST API the driver reads, shaped after GitHub's
public documentation: issue, pull request and comment objects with their real field names,
``sort``/``direction``/``since``/``state``/``labels``/``per_page``/``page`` parameters, ``Link``
pagination headers, ``ETag`` with ``If-None-Match`` answered 304 (not counted against the limit),
``x-ratelimit-*`` headers, the documented 401/403/429 bodies, and scripted failures (5xx, secondary
limits with ``retry-after``). It binds a free port on 127.0.0.1. Needs ``aiohttp`` (a test extra).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

from aiohttp import web
from astrocyte.errors import ProviderUnavailableError
from astrocyte.ingest.sink import Sink
from astrocyte.ingest.state import SourceState
from astrocyte.stores.memory import MemoryStore
from astrocyte.testing.ingest_contract import ContractMessage, ContractSettings, IngestHarness

from astrocyte_ingestion_github.config import GitHubSourceConfig
from astrocyte_ingestion_github.driver import GitHubIssuesDriver
from astrocyte_ingestion_github.mapping import Repo, object_ref

PRIMARY_LIMIT_BODY = {
    "message": "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, "
    "please include the request ID 0000:0000:0000000:0000000:00000000.",
    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
}
SECONDARY_LIMIT_BODY = {
    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID 0000:0000:0000000.",
    "documentation_url": "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
}
BAD_CREDENTIALS_BODY = {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}
NOT_FOUND_BODY = {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}


def iso(moment: float) -> str:
    return datetime.fromtimestamp(int(moment), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _user(login: str) -> dict[str, Any]:
    uid = int(hashlib.sha256(login.encode()).hexdigest()[:6], 16)
    return {
        "login": login,
        "id": uid,
        "node_id": f"MDQ6VXNlcj{uid}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "url": f"https://api.github.com/users/{login}",
        "html_url": f"https://github.com/{login}",
        "type": "User",
        "site_admin": False,
    }


@dataclass
class Failure:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RequestLog:
    at: float
    path: str
    query: dict[str, str]
    status: int
    user_agent: str
    conditional: bool


@dataclass
class _RepoData:
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_number: int = 1


class FakeGitHub:
    """An in-process GitHub REST API for one or more repositories."""

    def __init__(self, token: str = "test-token", *, rate_limit: int = 5000) -> None:
        self.token = token
        self.repos: dict[str, _RepoData] = {}
        self.requests: list[RequestLog] = []
        self.failures: list[Failure] = []
        self.rate_limit = rate_limit
        self.rate_remaining = rate_limit
        self.rate_reset = time.time() + 3600
        self.down = False
        self.app_public_key: str | None = None  # PEM; set to accept GitHub App installation tokens
        self.app_tokens: dict[str, int] = {}  # installation token -> installation id
        self.app_jwt_claims: list[dict[str, Any]] = []
        self._ids = itertools.count(1_000_001)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0

    # -- server ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/repos/{owner}/{repo}/issues", self._list_issues)
        app.router.add_get("/repos/{owner}/{repo}/issues/comments", self._list_comments)
        app.router.add_get("/repos/{owner}/{repo}/issues/{number}/comments", self._issue_comments)
        app.router.add_post("/app/installations/{installation}/access_tokens", self._installation_token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._listen(0)

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def break_transport(self) -> None:
        """Stop listening and reset whatever connection is still open."""
        self.down = True
        if self._site is not None:
            await self._site.stop()

    async def restore_transport(self) -> None:
        self.down = False
        await self._listen(self.port)

    # -- objects ---------------------------------------------------------------------------------

    def _repo(self, full_name: str) -> _RepoData:
        return self.repos.setdefault(full_name, _RepoData())

    def _stamp(self, previous: str | None = None) -> str:
        now = iso(time.time())
        if previous is not None and now <= previous:  # an edit always moves updated_at on
            now = iso(datetime.fromisoformat(previous.replace("Z", "+00:00")).timestamp() + 1)
        return now

    def create_issue(
        self,
        full_name: str,
        title: str,
        body: str | None = None,
        *,
        labels: Sequence[str] = (),
        pull_request: bool = False,
        user: str = "octocat",
    ) -> dict[str, Any]:
        data = self._repo(full_name)
        number = data.next_number
        data.next_number += 1
        issue_id = next(self._ids)
        now = self._stamp()
        api = f"https://api.github.com/repos/{full_name}/issues/{number}"
        kind = "pull" if pull_request else "issues"
        issue: dict[str, Any] = {
            "id": issue_id,
            "node_id": f"I_kwDO{issue_id}",
            "url": api,
            "repository_url": f"https://api.github.com/repos/{full_name}",
            "labels_url": api + "/labels{/name}",
            "comments_url": api + "/comments",
            "events_url": api + "/events",
            "html_url": f"https://github.com/{full_name}/{kind}/{number}",
            "number": number,
            "state": "open",
            "state_reason": None,
            "title": title,
            "body": body,
            "user": _user(user),
            "labels": [self._label(name) for name in labels],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "active_lock_reason": None,
            "comments": 0,
            "closed_at": None,
            "created_at": now,
            "updated_at": now,
            "closed_by": None,
            "author_association": "OWNER",
            "reactions": {"url": api + "/reactions", "total_count": 0, "+1": 0, "-1": 0},
            "timeline_url": api + "/timeline",
            "performed_via_github_app": None,
        }
        if pull_request:
            issue["pull_request"] = {
                "url": f"https://api.github.com/repos/{full_name}/pulls/{number}",
                "html_url": f"https://github.com/{full_name}/pull/{number}",
                "diff_url": f"https://github.com/{full_name}/pull/{number}.diff",
                "patch_url": f"https://github.com/{full_name}/pull/{number}.patch",
                "merged_at": None,
            }
        data.issues[number] = issue
        return issue

    def add_raw_issue(self, full_name: str, fields: dict[str, Any]) -> dict[str, Any]:
        """An issue object as given (for malformed-object tests), with an id and updated_at."""
        data = self._repo(full_name)
        number = data.next_number
        data.next_number += 1
        raw = {"id": next(self._ids), "number": number, "updated_at": self._stamp(), **fields}
        data.issues[number] = raw
        return raw

    def edit_issue(self, full_name: str, number: int, **changes: Any) -> dict[str, Any]:
        issue = self._repo(full_name).issues[number]
        if "labels" in changes:
            changes["labels"] = [self._label(name) for name in changes["labels"]]
        issue.update(changes)
        issue["updated_at"] = self._stamp(issue["updated_at"])
        if changes.get("state") == "closed":
            issue["closed_at"] = issue["updated_at"]
        return issue

    def add_comment(self, full_name: str, number: int, body: str, *, user: str = "hubot") -> dict[str, Any]:
        data = self._repo(full_name)
        issue = data.issues[number]
        comment_id = next(self._ids)
        now = self._stamp()
        comment = {
            "id": comment_id,
            "node_id": f"IC_kwDO{comment_id}",
            "url": f"https://api.github.com/repos/{full_name}/issues/comments/{comment_id}",
            "html_url": f"{issue['html_url']}#issuecomment-{comment_id}",
            "body": body,
            "user": _user(user),
            "created_at": now,
            "updated_at": now,
            "issue_url": issue["url"],
            "author_association": "CONTRIBUTOR",
            "reactions": {"total_count": 0},
            "performed_via_github_app": None,
        }
        data.comments[comment_id] = comment
        issue["comments"] += 1
        issue["updated_at"] = self._stamp(issue["updated_at"])
        return comment

    def edit_comment(self, full_name: str, comment_id: int, body: str) -> dict[str, Any]:
        comment = self._repo(full_name).comments[comment_id]
        comment["body"] = body
        comment["updated_at"] = self._stamp(comment["updated_at"])
        return comment

    def delete_comment(self, full_name: str, comment_id: int) -> None:
        data = self._repo(full_name)
        comment = data.comments.pop(comment_id)
        number = int(comment["issue_url"].rsplit("/", 1)[-1])
        issue = data.issues[number]
        issue["comments"] -= 1
        issue["updated_at"] = self._stamp(issue["updated_at"])

    def _label(self, name: str) -> dict[str, Any]:
        label_id = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        return {
            "id": label_id,
            "node_id": f"LA_kwDO{label_id}",
            "url": f"https://api.github.com/labels/{name}",
            "name": name,
            "color": "d73a4a",
            "default": False,
            "description": None,
        }

    # -- handlers --------------------------------------------------------------------------------

    async def _list_issues(self, request: web.Request) -> web.StreamResponse:
        data = self._repo_for(request)
        if isinstance(data, web.StreamResponse):
            return data
        items = list(data.issues.values())
        state = request.query.get("state", "open")
        if state != "all":
            items = [i for i in items if i.get("state") == state]
        wanted = [x for x in request.query.get("labels", "").split(",") if x]
        if wanted:
            items = [i for i in items if set(wanted) <= {label["name"] for label in i.get("labels") or []}]
        return self._listing(request, items)

    async def _list_comments(self, request: web.Request) -> web.StreamResponse:
        data = self._repo_for(request)
        if isinstance(data, web.StreamResponse):
            return data
        return self._listing(request, list(data.comments.values()))

    async def _issue_comments(self, request: web.Request) -> web.StreamResponse:
        data = self._repo_for(request)
        if isinstance(data, web.StreamResponse):
            return data
        number = int(request.match_info["number"])
        if number not in data.issues:
            return self._answer(request, 404, NOT_FOUND_BODY)
        url = data.issues[number]["url"]
        items = sorted((c for c in data.comments.values() if c["issue_url"] == url), key=lambda c: c["id"])
        return self._listing(request, items, sort=False)

    def _repo_for(self, request: web.Request) -> _RepoData | web.StreamResponse:
        """The repository a request names, or the answer refusing it (auth first, as GitHub)."""
        refused = self._refuse(request)
        if refused is not None:
            return refused
        data = self.repos.get(f"{request.match_info['owner']}/{request.match_info['repo']}")
        return self._answer(request, 404, NOT_FOUND_BODY) if data is None else data

    def _listing(
        self, request: web.Request, items: list[dict[str, Any]], *, sort: bool = True
    ) -> web.StreamResponse:
        since = request.query.get("since")
        if since:
            items = [i for i in items if str(i.get("updated_at")) >= since]
        if sort:
            key = request.query.get("sort", "created")
            field_name = "updated_at" if key == "updated" else "created_at"
            items.sort(key=lambda i: (str(i.get(field_name) or i.get("updated_at")), i["id"]))
            if request.query.get("direction", "desc") == "desc":
                items.reverse()
        per_page = min(100, int(request.query.get("per_page", "30")))
        page = int(request.query.get("page", "1"))
        chunk = items[(page - 1) * per_page : page * per_page]
        body = json.dumps(chunk).encode()
        etag = 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"ETag": etag}
        last = max(1, -(-len(items) // per_page))
        links = []
        if page < last:
            links += [(page + 1, "next"), (last, "last")]
        if page > 1:
            links += [(1, "first"), (page - 1, "prev")]
        if links:
            base = f"{self.url}{request.path}"
            headers["Link"] = ", ".join(
                f'<{base}?{urlencode({**request.query, "page": str(n)})}>; rel="{rel}"' for n, rel in links
            )
        if request.headers.get("If-None-Match") == etag:
            # GitHub: a 304 to an authorised conditional request does not count against the limit.
            return self._answer(request, 304, None, headers, count=False)
        return self._answer(request, 200, body, headers)

    async def _installation_token(self, request: web.Request) -> web.StreamResponse:
        """``POST /app/installations/{id}/access_tokens``: a JWT signed by the App buys a token."""
        import jwt

        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            assert self.app_public_key is not None
            claims = jwt.decode(presented, self.app_public_key, algorithms=["RS256"])
        except (AssertionError, jwt.InvalidTokenError):
            body = {
                "message": "A JSON web token could not be decoded",
                "documentation_url": "https://docs.github.com/rest",
            }
            return self._answer(request, 401, body, count=False)
        self.app_jwt_claims.append(claims)
        token = "ghs_" + uuid.uuid4().hex
        self.app_tokens[token] = int(request.match_info["installation"])
        answer: dict[str, Any] = {
            "token": token,
            "expires_at": iso(time.time() + 3600),
            "permissions": {"issues": "read", "metadata": "read"},
            "repository_selection": "selected",
        }
        return self._answer(request, 201, answer, count=False)

    def _refuse(self, request: web.Request) -> web.StreamResponse | None:
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if presented != self.token and presented not in self.app_tokens:
            return self._answer(request, 401, BAD_CREDENTIALS_BODY, count=False)
        if self.rate_remaining <= 0 and time.time() >= self.rate_reset:  # a new rate-limit window
            self.rate_remaining, self.rate_reset = self.rate_limit, time.time() + 3600
        if self.failures:
            failure = self.failures.pop(0)
            return self._answer(request, failure.status, failure.body, failure.headers)
        if self.rate_remaining <= 0:
            return self._answer(request, 403, PRIMARY_LIMIT_BODY, count=False)
        return None

    def _answer(
        self,
        request: web.Request,
        status: int,
        body: bytes | dict[str, Any] | None,
        headers: dict[str, str] | None = None,
        *,
        count: bool = True,
    ) -> web.StreamResponse:
        if self.down and request.transport is not None:
            request.transport.close()
        if count and status != 401 and self.rate_remaining > 0:
            self.rate_remaining -= 1
        limit_headers = {
            "x-ratelimit-limit": str(self.rate_limit),
            "x-ratelimit-remaining": str(max(0, self.rate_remaining)),
            "x-ratelimit-used": str(self.rate_limit - max(0, self.rate_remaining)),
            "x-ratelimit-reset": str(int(self.rate_reset)),
            "x-ratelimit-resource": "core",
            "x-github-api-version-selected": "2022-11-28",
            **(headers or {}),
        }
        self.requests.append(
            RequestLog(
                time.time(),
                request.path,
                dict(request.query),
                status,
                request.headers.get("User-Agent", ""),
                "If-None-Match" in request.headers,
            )
        )
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        return web.Response(
            status=status, body=body, headers=limit_headers, content_type="application/json" if body else None
        )


class FaultyStateStore(MemoryStore):
    """A memory store whose state writes to chosen keys can be made to fail the way a real store's
    do when it cannot write (:class:`ProviderUnavailableError`, transient), while every other read
    and write (cursors, leases, memories) keeps working."""

    def __init__(self) -> None:
        super().__init__()
        self.failing_keys: set[str] = set()
        self.failed_writes = 0

    async def set_state(self, namespace: str, key: str, value: str) -> None:
        if key in self.failing_keys:
            self.failed_writes += 1
            raise ProviderUnavailableError(f"state write {namespace}/{key} failed: store unavailable")
        await super().set_state(namespace, key, value)


class GitHubHarness(IngestHarness):
    """The ingest contract kit's harness: issues created on a :class:`FakeGitHub` are the
    transport; the driver's state (cursor, lease, dead letters) lives in a memory store that
    outlives each driver instance of a check, as the engine's store would.

    Poison kind: ``malformed_issue`` (an issue object without a usable ``title``); the other kinds
    of the kit (undecodable bytes, bad JSON, no bank) cannot occur per entry in a JSON array of
    REST objects whose bank the driver names itself.

    Optional hooks: ``replay`` forgets the stored cursors (since, overlap versions, ETag) as an
    operator resetting the source would, so the next driver reads the repository from the start;
    ``break_dead_letters`` makes the store fail every write of the source's dead-letter list.
    """

    poison_kinds: ClassVar[tuple[str, ...]] = ("malformed_issue",)
    contract_settings: ClassVar[ContractSettings] = ContractSettings(timeout=30.0)

    def __init__(self) -> None:
        self.server = FakeGitHub(token="contract-token")
        self._started = False
        self.repo = ""
        self.store = FaultyStateStore()
        self.state = SourceState(self.store, "unset")

    async def setup(self) -> None:
        if not self._started:
            await self.server.start()
            self._started = True
        self.repo = f"octo/contract-{uuid.uuid4().hex[:8]}"
        self.server.repos[self.repo] = _RepoData()
        self.store = FaultyStateStore()
        self.state = SourceState(self.store, f"github-contract-{uuid.uuid4().hex[:6]}")

    async def teardown(self) -> None:
        self.store.failing_keys.clear()
        if self.server.down:
            await self.server.restore_transport()

    def build_driver(self, sink: Sink) -> GitHubIssuesDriver:
        config = GitHubSourceConfig.model_validate(
            {
                "repositories": [self.repo],
                "api_url": self.server.url,
                "token": "contract-token",
                "bank": "contract-bank",
                "issue_template": "{body}",
                "include": {"comments": False},
                "interval_seconds": 0.2,
                "page_size": 20,
                "lease_seconds": 3,
                "overlap_seconds": 2,
                "max_retry_seconds": 0.5,
            }
        )
        return GitHubIssuesDriver(self.state.source_id, config, sink=sink, state=self.state)

    async def publish(self, messages: Sequence[ContractMessage]) -> list[str]:
        repo = Repo.parse(self.repo)
        refs = []
        for message in messages:
            issue = self.server.create_issue(
                self.repo, f"title of {message.content}", message.content, labels=message.tags
            )
            refs.append(object_ref(repo, "issue", issue))
        await asyncio.sleep(0)
        return refs

    async def publish_poison(self, kind: str) -> str:
        raw = self.server.add_raw_issue(
            self.repo, {"title": None, "html_url": "https://github.com/x/y/issues/1"}
        )
        return object_ref(Repo.parse(self.repo), "issue", raw)

    async def dead_letter_refs(self) -> list[str]:
        return [str(letter["ref"]) for letter in await self.state.dead_letters()]

    async def break_transport(self) -> None:
        await self.server.break_transport()

    async def restore_transport(self) -> None:
        await self.server.restore_transport()

    async def replay(self) -> None:
        for feed in ("issues", "issues/comments"):
            await self.state.set_json(f"cursor:{self.repo}:{feed}", None)

    async def break_dead_letters(self) -> None:
        self.store.failing_keys.add("dead_letters")

    async def restore_dead_letters(self) -> None:
        self.store.failing_keys.discard("dead_letters")
