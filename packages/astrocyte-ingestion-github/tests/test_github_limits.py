"""Rate limits, conditional requests and transient failures, as GitHub documents them."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from astrocyte import Astrocyte
from astrocyte.errors import ConfigError
from astrocyte_ingestion_github.driver import GitHubIssuesDriver
from astrocyte_ingestion_github.testing import SECONDARY_LIMIT_BODY, Failure, FakeGitHub

from .conftest import TOKEN, CountingSink

REPO = "octo/hello"


@pytest.fixture
async def engine(tmp_path: object) -> Astrocyte:  # type: ignore[override]
    async with Astrocyte.from_dict({"store": "memory"}) as brain:
        yield brain


async def test_with_remaining_quota_zero_no_request_is_sent_before_the_reset(
    github: FakeGitHub, engine: Astrocyte, make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    github.create_issue(REPO, "one", "an issue")
    reset = time.time() + 3
    github.rate_remaining, github.rate_reset = 1, reset  # the next answer says remaining 0
    driver = make_driver(CountingSink(engine))
    await driver.poll_once()
    await driver.stop(5)
    first, *rest = github.requests
    assert first.status == 200 and rest, "the comments feed should still be read after the reset"
    assert all(r.at >= int(reset) for r in rest), "a request went out before x-ratelimit-reset"
    assert all(r.status == 200 for r in rest)


async def test_a_primary_limit_403_waits_for_the_reset(
    github: FakeGitHub, engine: Astrocyte, make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    github.create_issue(REPO, "one", "an issue")
    reset = time.time() + 2
    github.rate_remaining, github.rate_reset = 0, reset
    driver = make_driver(CountingSink(engine), include={"comments": False})
    await driver.poll_once()
    await driver.stop(5)
    refused, *after = github.requests
    assert refused.status == 403
    assert after and all(r.at >= int(reset) for r in after), "retried before x-ratelimit-reset"
    assert (await engine.bank_stats("github:octo.hello")).memory_count == 1


@pytest.mark.parametrize("status", [403, 429])
async def test_a_secondary_limit_waits_retry_after(
    status: int, github: FakeGitHub, engine: Astrocyte, make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    github.create_issue(REPO, "one", "an issue")
    github.failures.append(Failure(status, SECONDARY_LIMIT_BODY, {"retry-after": "2"}))
    driver = make_driver(CountingSink(engine), include={"comments": False})
    await driver.poll_once()
    await driver.stop(5)
    refused, retried, *_ = github.requests
    assert refused.status == status and retried.status == 200
    assert retried.at - refused.at >= 2.0, "retried before retry-after"


async def test_server_errors_are_retried_with_backoff(
    github: FakeGitHub, engine: Astrocyte, make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    github.create_issue(REPO, "one", "an issue")
    body = {"message": "Server Error"}
    github.failures += [Failure(502, body), Failure(503, body), Failure(500, body)]
    driver = make_driver(CountingSink(engine), include={"comments": False})
    await driver.poll_once()
    await driver.stop(5)
    assert [r.status for r in github.requests[:4]] == [502, 503, 500, 200]
    gaps = [b.at - a.at for a, b in zip(github.requests, github.requests[1:4], strict=False)]
    assert gaps[1] > gaps[0] * 1.2, "the waits between retries should grow"
    assert (await engine.bank_stats("github:octo.hello")).memory_count == 1


async def test_a_bad_token_reports_degraded_with_the_reason(
    github: FakeGitHub, engine: Astrocyte, make_driver: Callable[..., GitHubIssuesDriver]
) -> None:
    driver = make_driver(CountingSink(engine), token="wrong")
    await driver.poll_once()
    health = await driver.health()
    await driver.stop(5)
    assert health.state == "degraded" and "401" in (health.detail or "")
    assert TOKEN not in (health.detail or "")


def test_a_missing_token_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    with pytest.raises(ConfigError) as caught:
        GitHubIssuesDriver.validate_config({"repositories": [REPO]})
    assert "GITHUB_TOKEN" in caught.value.message
    monkeypatch.setenv("GITHUB_TOKEN", "from-env")
    assert GitHubIssuesDriver.validate_config({"repositories": [REPO]}).resolved_token() == "from-env"
    assert GitHubIssuesDriver.validate_config(
        {"repositories": [REPO], "token_env": None, "allow_anonymous": True}
    )


@pytest.mark.parametrize(
    ("keys", "path"),
    [
        ({"repositories": ["not-a-repo"]}, "repositories"),
        ({"repositories": [REPO], "page_size": 101}, "page_size"),
        ({"repositories": [REPO], "bank": "{owner}-{team}"}, "bank"),
        ({"repositories": [REPO], "surprise": 1}, "surprise"),
        ({"repositories": [REPO], "api_url": "ftp://x"}, "api_url"),
    ],
)
def test_bad_config_names_the_key(keys: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        GitHubIssuesDriver.validate_config({"token": TOKEN, **keys})
    assert caught.value.details["path"].startswith(path)
