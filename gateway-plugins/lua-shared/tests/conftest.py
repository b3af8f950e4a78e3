"""Session fixtures: the e2e rig (rig.py) started once, and an `openai` client per route."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import rig

BUDGET_MS = 300


def _require(binary: str | None, what: str) -> str:
    if binary and shutil.which(binary):
        return binary
    if os.environ.get("CI"):
        pytest.fail(f"{what} not found ({binary!r}); run scripts/services up")
    pytest.skip(f"{what} not found")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _require(os.environ.get("ASTROCYTE_TEST_NGINX_BIN", "/usr/sbin/nginx"), "nginx")
    folder = tmp_path_factory.mktemp("plugins")
    gateway = rig.Gateway(folder)
    upstream = rig.Upstream()
    broken = rig.BrokenAstrocyte()
    closed = f"http://127.0.0.1:{rig.free_port()}"  # nothing listens there: Astrocyte down
    routes = {
        "main": rig.plugin_conf(gateway.url, timeout_ms=2000),
        "noretain": rig.plugin_conf(gateway.url, timeout_ms=2000, retain=False),
        "allow": rig.plugin_conf(
            gateway.url, timeout_ms=2000, retain=False, bank_header_allowlist=["notes:{consumer}"]
        ),
        "small": rig.plugin_conf(gateway.url, timeout_ms=2000, max_body_bytes=1024),
        "down": rig.plugin_conf(closed, timeout_ms=BUDGET_MS),
        "slow": rig.plugin_conf(f"{broken.url}/slow", timeout_ms=BUDGET_MS),
        "unauth": {**rig.plugin_conf(gateway.url, timeout_ms=BUDGET_MS), "api_key": "not-the-key"},
        "err": rig.plugin_conf(f"{broken.url}/err", timeout_ms=BUDGET_MS),
        "closed": rig.plugin_conf(closed, timeout_ms=BUDGET_MS, fail_open=False),
        "plain": False,
    }
    nginx = rig.Nginx(folder, int(upstream.url.rsplit(":", 1)[1]), routes)
    with rig.started(gateway, upstream, broken, nginx):
        yield {"gateway": gateway, "upstream": upstream, "nginx": nginx}


@pytest.fixture(params=["kong", "apisix"])
def platform(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def case() -> str:
    return uuid.uuid4().hex[:12]


class Caller:
    """The official openai client through one plugin route, as one consumer."""

    def __init__(self, stack: dict[str, Any], platform: str, case: str) -> None:
        self.stack, self.platform, self.case = stack, platform, case

    def client(self, route: str, key: str = "alice-key", **headers: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.stack["nginx"].base_url(self.platform, route),
            api_key="sk-upstream-not-used",
            default_headers={"apikey": key, "X-Test-Case": self.case, **headers},
            max_retries=0,
            timeout=30.0,
        )

    def chat(self, route: str, content: Any, key: str = "alice-key", **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        raw = self.client(route, key, **headers).chat.completions.with_raw_response.create(
            model=kwargs.pop("model", "m"), messages=[{"role": "user", "content": content}], **kwargs
        )
        return raw

    def seen(self) -> list[dict[str, Any]]:
        return list(self.stack["upstream"].seen.get(self.case, []))


@pytest.fixture
def caller(stack: dict[str, Any], platform: str, case: str) -> Caller:
    return Caller(stack, platform, case)


@pytest.fixture
def error_log(stack: dict[str, Any]) -> Path:
    return Path(stack["nginx"].error_log)
