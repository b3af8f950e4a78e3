"""Incremental sync against the local GitHub-compatible server, into engines over real stores."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from astrocyte import Astrocyte
from astrocyte.errors import ProviderUnavailableError
from astrocyte.ingest.state import SourceState
from astrocyte_ingestion_github.driver import GitHubIssuesDriver
from astrocyte_ingestion_github.mapping import Repo, object_ref
from astrocyte_ingestion_github.testing import FakeGitHub

from .conftest import CountingSink, config, eventually

REPO = "octo/hello"
BANK = "github:octo.hello"


async def _poll(driver: GitHubIssuesDriver) -> None:
    await driver.poll_once()


async def _memories(engine: Astrocyte) -> int:
    return (await engine.bank_stats(BANK)).memory_count


async def test_250_issues_updated_between_two_polls_are_all_ingested(
    github: FakeGitHub, engine: Astrocyte, make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    numbers = [github.create_issue(REPO, f"issue {i}", f"first text {i}")["number"] for i in range(260)]
    sink = CountingSink(engine)
    driver = make_driver(sink, include={"comments": False})
    await _poll(driver)
    assert await _memories(engine) == 260
    for number in numbers[:250]:
        github.edit_issue(REPO, number, body=f"edited text {number}")
    before = len(github.requests)
    await _poll(driver)
    await driver.stop(5)
    pages = [r for r in github.requests[before:] if r.path.endswith("/issues")]
    assert len(pages) >= 3, "250 changes at 100 per page need several pages"
    assert sink.counts.get("stored") == 260 + 250
    assert await _memories(engine) == 260, "an edit must replace its issue's memory, not add one"
    hits = (await engine.recall("edited text 17", bank_id=BANK, max_results=3)).hits
    assert hits[0].text.endswith("edited text 17")


async def test_unchanged_repository_polls_with_304_and_retains_nothing(
    github: FakeGitHub, engine: Astrocyte, make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    issue = github.create_issue(REPO, "stable", "nothing changes here")
    github.add_comment(REPO, issue["number"], "a comment")
    sink = CountingSink(engine)
    driver = make_driver(sink)
    await _poll(driver)
    await _poll(driver)  # the overlap window is re-read once, and found settled
    submitted, remaining = sink.submitted, github.rate_remaining
    before = len(github.requests)
    await _poll(driver)
    await driver.stop(5)
    answers = github.requests[before:]
    assert answers and all(r.status == 304 and r.conditional for r in answers), [r.status for r in answers]
    assert sink.submitted == submitted, "an unchanged repository retained something"
    assert github.rate_remaining == remaining, "a 304 must cost no quota"
    assert await _memories(engine) == 2


async def test_restart_resumes_from_the_stored_cursor_without_duplicates_or_gaps(
    github: FakeGitHub, engine_config: dict[str, Any], make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    for i in range(30):
        github.create_issue(REPO, f"before {i}", f"before restart {i}")
    async with Astrocyte.from_dict(engine_config) as first_engine:
        first = make_driver(CountingSink(first_engine), page_size=10, include={"comments": False})
        await _poll(first)
        await first.stop(5)
    github.edit_issue(REPO, 3, body="edited while the poller was down")
    for i in range(15):
        github.create_issue(REPO, f"after {i}", f"after restart {i}")
    async with Astrocyte.from_dict(engine_config) as engine:
        sink = CountingSink(engine)
        second = make_driver(sink, page_size=10, include={"comments": False})
        before = len(github.requests)
        await _poll(second)
        await second.stop(5)
        first_request = github.requests[before]
        assert "since" in first_request.query, "the restarted poller did not resume from its cursor"
        assert sink.counts == {"stored": 16}, sink.counts  # 15 new + 1 edited; nothing repeated
        assert await _memories(engine) == 45
        hits = (await engine.recall("edited while the poller was down", bank_id=BANK, max_results=1)).hits
        assert "edited while the poller was down" in hits[0].text


async def test_an_edited_issue_leaves_exactly_one_memory_with_the_new_text(
    github: FakeGitHub, engine: Astrocyte, make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    issue = github.create_issue(REPO, "Crash on start", "the zebra module crashes on start")
    sink = CountingSink(engine)
    driver = make_driver(sink)
    await _poll(driver)
    first_id = (await engine.recall("zebra", bank_id=BANK)).hits[0].memory_id
    github.edit_issue(REPO, issue["number"], body="the giraffe module crashes on start", labels=["bug"])
    await _poll(driver)
    await driver.stop(5)
    assert await _memories(engine) == 1
    hits = (await engine.recall("giraffe module", bank_id=BANK)).hits
    assert [h.memory_id for h in hits] == [first_id]
    assert "giraffe" in hits[0].text and hits[0].tags == ["bug"]
    assert not [h for h in (await engine.recall("zebra", bank_id=BANK)).hits if "zebra" in h.text]


async def test_a_deleted_comment_is_forgotten(
    github: FakeGitHub, engine: Astrocyte, make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    issue = github.create_issue(REPO, "Discuss", "let us discuss")
    keep = github.add_comment(REPO, issue["number"], "a comment that stays")
    doomed = github.add_comment(REPO, issue["number"], "a comment about penguins that goes")
    sink = CountingSink(engine)
    driver = make_driver(sink)
    await _poll(driver)
    assert await _memories(engine) == 3
    github.delete_comment(REPO, doomed["id"])
    await _poll(driver)
    await driver.stop(5)
    assert sink.counts.get("forgotten") == 1
    assert await _memories(engine) == 2
    assert keep["body"] in (await engine.recall("comment that stays", bank_id=BANK)).hits[0].text
    assert not [h for h in (await engine.recall("penguins", bank_id=BANK)).hits if "penguins" in h.text]


async def test_pull_requests_and_labels_follow_the_config(
    github: FakeGitHub, engine: Astrocyte, make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    github.create_issue(REPO, "An issue", "plain issue", labels=["bug"])
    github.create_issue(REPO, "A PR", "a pull request", pull_request=True, labels=["bug"])
    github.create_issue(REPO, "Other", "unlabelled issue")
    driver = make_driver(
        CountingSink(engine), labels=["bug"], include={"pull_requests": False, "comments": False}
    )
    await _poll(driver)
    await driver.stop(5)
    assert github.requests[0].query["labels"] == "bug"
    assert await _memories(engine) == 1
    [hit] = (await engine.recall("plain issue", bank_id=BANK)).hits
    assert hit.metadata["github_type"] == "issue" and hit.metadata["number"] == 1


async def test_runs_under_the_core_supervisor_with_state_in_the_engines_store(
    github: FakeGitHub, engine: Astrocyte
) -> None:
    from astrocyte.ingest.supervisor import IngestSupervisor

    github.create_issue(REPO, "Supervised", "polled by a supervised driver")
    source = {
        "type": "poll",
        "driver": "github",
        "repositories": [REPO],
        "api_url": github.url,
        "token": "ghp_testtoken",
        "interval_seconds": 0.2,
        "start_from": "2000-01-01T00:00:00+00:00",
    }
    supervisor = IngestSupervisor.from_mapping(engine, {"github": source})
    await supervisor.start()
    try:
        for _ in range(200):
            if await engine.store.bank_exists(BANK) and await _memories(engine):
                break
            await asyncio.sleep(0.05)
        assert await _memories(engine) == 1
        cursor = await engine.store.get_state("ingest:github", f"cursor:{REPO}:issues")
        assert cursor is not None and '"since"' in cursor
    finally:
        await supervisor.stop(5)


class _DeadLetterWritesFail:
    """The engine's real store, except that it refuses writes of the dead-letter list (as a store
    does when it cannot write: a transient ``ProviderUnavailableError``) while ``failing``."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.failing = True
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def set_state(self, namespace: str, key: str, value: str) -> None:
        if self.failing and key == "dead_letters":
            self.refused += 1
            raise ProviderUnavailableError("the store refused the write")
        await self._store.set_state(namespace, key, value)


async def test_a_failing_dead_letter_write_holds_back_no_valid_issue_and_loses_no_dead_letter(
    github: FakeGitHub, engine: Astrocyte
) -> None:
    github.create_issue(REPO, "good one", "first valid issue")
    raw = github.add_raw_issue(REPO, {"title": None, "html_url": f"https://github.com/{REPO}/issues/2"})
    github.create_issue(REPO, "good two", "second valid issue")
    sink = CountingSink(engine)
    store = _DeadLetterWritesFail(sink.store)
    state = SourceState(store, sink.source_id)
    settings = config(
        api_url=github.url, include={"comments": False}, interval_seconds=0.2, max_retry_seconds=0.3
    )
    driver = GitHubIssuesDriver(sink.source_id, settings, sink=sink, state=state)
    task = asyncio.create_task(driver.start())
    cursor_key = f"cursor:{REPO}:issues"
    try:
        await eventually(
            "both valid issues stored", lambda: sink.counts.get("stored") == 2 and store.refused >= 2
        )
        health = await driver.health()
        assert health.state == "degraded" and "dead-letter store" in (health.detail or ""), health
        assert await state.dead_letters() == []
        assert await state.get_json(cursor_key) is None, "the cursor moved past an unwritten dead letter"
        store.failing = False

        async def settled() -> bool:
            return bool(await state.dead_letters()) and await state.get_json(cursor_key) is not None

        await eventually("the dead letter written and the cursor saved", settled)

        async def running() -> bool:
            return (await driver.health()).state == "running"

        await eventually("health running again", running)
    finally:
        await driver.stop(5)
        await task
    refs = [letter["ref"] for letter in await state.dead_letters()]
    assert refs == [object_ref(Repo.parse(REPO), "issue", raw)]
    assert sink.counts.get("stored") == 2
    assert await _memories(engine) == 2
