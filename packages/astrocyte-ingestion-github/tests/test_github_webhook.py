"""The webhook route's path (the core's webhook driver with the ``github`` payload mapping) and
the poller write the same memory for the same issue or comment."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from astrocyte import Astrocyte
from astrocyte.errors import ConfigError, ValidationError
from astrocyte.ingest.sink import IngestSink
from astrocyte.ingest.webhook import WebhookDriver, sign
from astrocyte_ingestion_github.driver import GitHubIssuesDriver
from astrocyte_ingestion_github.testing import FakeGitHub

from .conftest import CountingSink

REPO = "octo/hello"
BANK = "github:octo.hello"
SECRET = "webhook-secret"


def _hooks(engine: Astrocyte, **options: Any) -> WebhookDriver:
    config = WebhookDriver.validate_config(
        {"secrets": [SECRET], "payload": "github", "payload_options": options}
    )
    return WebhookDriver("github-hooks", config, sink=IngestSink(engine, source_id="github-hooks"))


async def _deliver(hooks: WebhookDriver, event: str, payload: dict[str, Any]) -> Any:
    body = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRET, body),
        "Content-Type": "application/json",
    }
    return await hooks.handle(headers, body)


def _repository() -> dict[str, Any]:
    return {"id": 1296269, "full_name": REPO, "name": "hello", "owner": {"login": "octo"}}


async def test_the_same_issue_by_webhook_and_by_poll_is_one_memory(
    github: FakeGitHub, engine: Astrocyte, make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    hooks = _hooks(engine)
    issue = github.create_issue(REPO, "Login fails", "login fails with a 500", labels=["bug"])
    by_hook = await _deliver(
        hooks, "issues", {"action": "opened", "issue": issue, "repository": _repository()}
    )
    assert by_hook.status == "stored"
    sink = CountingSink(engine)
    driver = make_driver(sink)
    await driver.poll_once()
    assert sink.counts == {"duplicate": 1}, "the poller wrote a second memory of the same version"
    edited = github.edit_issue(REPO, issue["number"], body="login fails with a 502 after the upgrade")
    again = await _deliver(
        hooks, "issues", {"action": "edited", "issue": edited, "repository": _repository()}
    )
    assert again.status == "stored" and again.memory_id == by_hook.memory_id
    await driver.poll_once()
    await driver.stop(5)
    assert sink.counts == {"duplicate": 2}
    assert (await engine.bank_stats(BANK)).memory_count == 1
    [hit] = (await engine.recall("login fails", bank_id=BANK)).hits
    assert hit.memory_id == by_hook.memory_id and "502" in hit.text


async def test_comment_events_retain_edit_and_forget_the_polled_memory(
    github: FakeGitHub, engine: Astrocyte, make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    issue = github.create_issue(REPO, "Question", "how do I configure it")
    comment = github.add_comment(REPO, issue["number"], "set the walrus option")
    driver = make_driver(CountingSink(engine))
    await driver.poll_once()
    await driver.stop(5)
    hooks = _hooks(engine)
    edited = github.edit_comment(REPO, comment["id"], "set the narwhal option")
    payload = {"action": "edited", "issue": issue, "comment": edited, "repository": _repository()}
    assert (await _deliver(hooks, "issue_comment", payload)).status == "stored"
    assert (await engine.bank_stats(BANK)).memory_count == 2
    assert "narwhal" in (await engine.recall("narwhal option", bank_id=BANK)).hits[0].text
    gone = await _deliver(hooks, "issue_comment", {**payload, "action": "deleted"})
    assert (gone.status, gone.code) == ("stored", "forgotten")
    assert (await engine.bank_stats(BANK)).memory_count == 1


async def test_deleted_and_transferred_issues_are_forgotten(github: FakeGitHub, engine: Astrocyte) -> None:
    hooks = _hooks(engine)
    for action in ("deleted", "transferred"):
        issue = github.create_issue(REPO, f"to be {action}", f"this issue will be {action}")
        await _deliver(hooks, "issues", {"action": "opened", "issue": issue, "repository": _repository()})
        outcome = await _deliver(
            hooks, "issues", {"action": action, "issue": issue, "repository": _repository()}
        )
        assert outcome.code == "forgotten"
    assert (await engine.bank_stats(BANK)).memory_count == 0


async def test_other_events_are_acknowledged_and_ignored(engine: Astrocyte) -> None:
    outcome = await _deliver(_hooks(engine), "ping", {"zen": "Keep it logically awesome.", "hook_id": 1})
    assert (outcome.status, outcome.code) == ("duplicate", "ignored")


async def test_an_unreadable_event_is_a_payload_error(engine: Astrocyte) -> None:
    with pytest.raises(ValidationError) as caught:
        await _deliver(_hooks(engine), "issues", {"action": "opened", "repository": _repository()})
    assert caught.value.code == "webhook_payload_invalid"


def test_bad_payload_options_stop_start_up() -> None:
    with pytest.raises(ConfigError):
        WebhookDriver.validate_config(
            {"secrets": [SECRET], "payload": "github", "payload_options": {"bank": "{nope}"}}
        )
    with pytest.raises(ConfigError):
        WebhookDriver.validate_config({"secrets": [SECRET], "payload": "no-such-mapping"})
