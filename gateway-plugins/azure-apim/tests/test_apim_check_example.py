"""examples/check_memory.py, run with the real openai client against a stand-in for the APIM gateway.

The stand-in (127.0.0.1, a free port) answers like the deployed chat API: a chat completion with the
X-Astrocyte-* headers the fragments set. It shows the example calls the path APIM serves, sends the
subscription key in the header APIM reads, and judges memory by the headers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from apim_files import PLUGIN

EXAMPLE = PLUGIN / "examples" / "check_memory.py"
KEY = "subscription-key-for-test"


class FakeApim(ThreadingHTTPServer):
    def __init__(self, memory_headers: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.memory_headers = memory_headers
        self.seen: list[dict[str, object]] = []


class Handler(BaseHTTPRequestHandler):
    server: FakeApim

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(
            {"path": self.path, "key": self.headers.get("Ocp-Apim-Subscription-Key"), **body}
        )
        if self.headers.get("Ocp-Apim-Subscription-Key") != KEY:
            self._send(
                401, {"statusCode": 401, "message": "Access denied due to missing subscription key."}, {}
            )
            return
        memory = self.server.memory_headers[
            min(len(self.server.seen) - 1, len(self.server.memory_headers) - 1)
        ]
        completion = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "You like genmaicha."},
                }
            ],
        }
        self._send(200, completion, {"X-Astrocyte-Memory": memory, "X-Astrocyte-Retain": "queued"})

    def _send(self, status: int, payload: dict[str, object], headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def apim(request: pytest.FixtureRequest) -> Iterator[FakeApim]:
    server = FakeApim(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_example(server: FakeApim, key: str = KEY) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CHAT_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}/memory-chat",
        "APIM_SUBSCRIPTION_KEY": key,
        "MODEL": "gpt-4o-mini",
        "CHECK_WAIT_SECONDS": "0",
    }
    return subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("apim", [["miss", "hit"]], indirect=True)
def test_the_example_passes_when_the_second_call_is_a_memory_hit(apim: FakeApim) -> None:
    result = run_example(apim)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1st call: memory=miss retain=queued" in result.stdout
    assert "2nd call: memory=hit retain=queued" in result.stdout
    assert [seen["path"] for seen in apim.seen] == ["/memory-chat/chat/completions"] * 2
    assert all(seen["key"] == KEY for seen in apim.seen)
    assert apim.seen[0]["messages"] == [
        {"role": "user", "content": "Please remember: my favourite tea is genmaicha."}
    ]


@pytest.mark.parametrize("apim", [["miss", "miss"]], indirect=True)
def test_the_example_fails_when_memory_never_hits(apim: FakeApim) -> None:
    result = run_example(apim)
    assert result.returncode == 1
    assert "2nd call: memory=miss" in result.stdout


@pytest.mark.parametrize("apim", [["hit"]], indirect=True)
def test_a_wrong_subscription_key_is_an_error_not_a_pass(apim: FakeApim) -> None:
    result = run_example(apim, key="wrong")
    assert result.returncode != 0
    assert "AuthenticationError" in result.stderr
