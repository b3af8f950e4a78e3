"""Both plugins end to end: the official openai client -> nginx running the unmodified plugin ->
an OpenAI-compatible upstream, with the real Astrocyte gateway (api_key mode, SQLite) as memory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

HEADER = "x-astrocyte-memory"


def _system_text(record: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in record["body"]["messages"] if m["role"] == "system")


def _eventually(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _retained(stack: dict[str, Any], user: str, marker: str) -> list[dict[str, Any]]:
    def find() -> list[dict[str, Any]]:
        hits = stack["gateway"].recall(user, f"user:{user}", marker, max_results=50)
        return [hit for hit in hits if marker in hit["text"]]

    return list(_eventually(find))


def test_recalled_memory_is_injected_escaped_in_one_system_block(caller: Any, stack: dict[str, Any]) -> None:
    stack["gateway"].retain("alice", "user:alice", f"Alice's cat {caller.case} is called <Mo> & Bo")
    answer = caller.chat("main", f"what is the name of cat {caller.case}?")
    assert answer.headers[HEADER] == "hit"
    assert answer.parse().choices[0].message.content == f"reply-{caller.case}"
    (record,) = caller.seen()
    messages = record["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    block = messages[0]["content"]
    assert block.count("<astrocyte_memories>") == 1
    assert f"cat {caller.case} is called &lt;Mo&gt; &amp; Bo" in block
    assert messages[1] == {"role": "user", "content": f"what is the name of cat {caller.case}?"}


def test_text_parts_are_a_query_too(caller: Any, stack: dict[str, Any]) -> None:
    stack["gateway"].retain("alice", "user:alice", f"Alice's bike {caller.case} is red")
    parts = [{"type": "text", "text": "what colour is"}, {"type": "text", "text": f"bike {caller.case}?"}]
    answer = caller.chat("main", parts)
    assert answer.headers[HEADER] == "hit"
    (record,) = caller.seen()
    assert f"bike {caller.case} is red" in _system_text(record)
    assert record["body"]["messages"][1]["content"] == parts


def test_no_memory_is_a_miss_and_the_body_is_unchanged(caller: Any) -> None:
    answer = caller.chat("noretain", f"anything about {caller.case}?", key="carol-key")
    assert answer.headers[HEADER] == "miss"
    (record,) = caller.seen()
    assert record["body"]["messages"] == [{"role": "user", "content": f"anything about {caller.case}?"}]


def test_no_consumer_is_skipped(caller: Any) -> None:
    answer = caller.chat("main", "hello", key="unknown-key")
    assert answer.headers[HEADER] == "skipped"
    (record,) = caller.seen()
    assert len(record["body"]["messages"]) == 1


@pytest.mark.parametrize("route", ["down", "slow", "unauth", "err"])
def test_failing_astrocyte_leaves_the_call_unchanged(caller: Any, route: str, error_log: Path) -> None:
    answer = caller.chat(route, f"question {caller.case}")
    assert answer.headers[HEADER] == "error"
    assert answer.parse().choices[0].message.content == f"reply-{caller.case}"
    (record,) = caller.seen()
    assert record["body"]["messages"] == [{"role": "user", "content": f"question {caller.case}"}]
    assert "astrocyte recall failed" in error_log.read_text()


def test_fail_closed_route_refuses_when_astrocyte_is_down(caller: Any) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        caller.chat("closed", "hello")
    assert raised.value.status_code == 503
    assert raised.value.response.headers[HEADER] == "error"
    assert caller.seen() == []


def test_json_answer_is_retained_as_one_conversation_memory(caller: Any, stack: dict[str, Any]) -> None:
    caller.chat("main", f"remember that my locker is {caller.case}")
    (hit,) = _retained(stack, "alice", f"reply-{caller.case}")
    assert hit["text"] == f"user: remember that my locker is {caller.case}\nassistant: reply-{caller.case}"
    assert hit["metadata"]["model"] == "m"
    assert hit["metadata"]["route"] == "main"
    assert hit["metadata"]["request_id"]


def test_stream_reaches_the_client_before_upstream_finishes_and_is_retained(
    caller: Any, stack: dict[str, Any]
) -> None:
    stream = caller.client("main").chat.completions.create(
        model="stream-slow", messages=[{"role": "user", "content": f"stream {caller.case}"}], stream=True
    )
    first_chunk_at, parts = None, []
    for chunk in stream:
        if first_chunk_at is None:
            first_chunk_at = time.time()
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    assert "".join(parts) == f"reply-{caller.case}"
    (record,) = caller.seen()
    assert first_chunk_at is not None and first_chunk_at < record["finished_at"]
    (hit,) = _retained(stack, "alice", f"reply-{caller.case}")
    assert hit["text"] == f"user: stream {caller.case}\nassistant: reply-{caller.case}"


def test_interrupted_stream_is_not_retained(caller: Any, stack: dict[str, Any], error_log: Path) -> None:
    with pytest.raises((openai.APIError, httpx.HTTPError)):  # the client sees the stream break
        for _ in caller.client("main").chat.completions.create(
            model="interrupt", messages=[{"role": "user", "content": f"cut {caller.case}"}], stream=True
        ):
            pass
    assert _eventually(lambda: "stream interrupted before it finished" in error_log.read_text())
    hits = stack["gateway"].recall("alice", "user:alice", f"partial-{caller.case}", max_results=50)
    assert not [hit for hit in hits if f"partial-{caller.case}" in hit["text"]]


def test_bank_header_outside_the_allow_list_is_ignored_and_client_headers_stripped(
    caller: Any, stack: dict[str, Any]
) -> None:
    stack["gateway"].retain("bob", "user:bob", f"Bob's pin for door {caller.case} is 4242")
    stack["gateway"].retain("alice", "user:alice", f"Alice's pin for door {caller.case} is 1111")
    headers = {"X-Astrocyte-Bank": "user:bob", "X-Astrocyte-Principal": "user:bob"}
    answer = caller.chat("allow", f"pin for door {caller.case}?", headers=headers)
    assert answer.headers[HEADER] == "hit"
    (record,) = caller.seen()
    block = _system_text(record)
    assert "1111" in block and "4242" not in block
    assert not [name for name in record["headers"] if name.lower().startswith("x-astrocyte-")]
    assert "apikey" not in {name.lower() for name in record["headers"]}


def test_bank_header_on_the_allow_list_is_used(caller: Any, stack: dict[str, Any]) -> None:
    stack["gateway"].retain("alice", "notes:alice", f"Note {caller.case}: buy oat milk")
    answer = caller.chat("allow", f"note {caller.case}?", headers={"X-Astrocyte-Bank": "notes:alice"})
    assert answer.headers[HEADER] == "hit"
    assert f"Note {caller.case}: buy oat milk" in _system_text(caller.seen()[0])


def test_two_consumers_never_see_each_others_memories(caller: Any, stack: dict[str, Any]) -> None:
    stack["gateway"].retain("alice", "user:alice", f"secret {caller.case} alice-only-{caller.case}")
    stack["gateway"].retain("bob", "user:bob", f"secret {caller.case} bob-only-{caller.case}")
    caller.chat("noretain", f"secret {caller.case}", key="bob-key")
    caller.chat("noretain", f"secret {caller.case}", key="alice-key")
    as_bob, as_alice = (_system_text(record) for record in caller.seen())
    assert f"bob-only-{caller.case}" in as_bob and "alice-only" not in as_bob
    assert f"alice-only-{caller.case}" in as_alice and "bob-only" not in as_alice


def test_empty_json_array_stays_an_array(caller: Any, stack: dict[str, Any]) -> None:
    stack["gateway"].retain("alice", "user:alice", f"Alice's lamp {caller.case} is blue")
    answer = caller.chat(
        "noretain", f"lamp {caller.case}?", extra_body={"stop": [], "metadata": {}, "seed": 12345678901234567}
    )
    assert answer.headers[HEADER] == "hit"
    (record,) = caller.seen()
    assert record["body"]["stop"] == []
    assert record["body"]["metadata"] == {}
    assert '"seed": 12345678901234567' in record["raw"] or '"seed":12345678901234567' in record["raw"]


def test_body_over_the_cap_passes_untouched(caller: Any, stack: dict[str, Any]) -> None:
    stack["gateway"].retain("alice", "user:alice", f"long {caller.case}")
    content = f"long {caller.case} " + "x" * 2000
    answer = caller.chat("small", content)
    assert answer.headers[HEADER] == "skipped"
    (record,) = caller.seen()
    assert json.loads(record["raw"])["messages"] == [{"role": "user", "content": content}]


def test_route_without_the_plugin_has_no_header(caller: Any) -> None:
    answer = caller.chat("plain", "hello")
    assert HEADER not in answer.headers
