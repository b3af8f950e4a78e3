"""The openai chat LLM against a real local HTTP server."""

from __future__ import annotations

import pytest
from astrocyte.errors import ConfigError, ProviderUnavailableError
from astrocyte.llms.openai import OpenAIChatLLM
from fixtures.openai_server import FakeOpenAIServer, Reply


def chat_llm(server: FakeOpenAIServer, **extra: object) -> OpenAIChatLLM:
    return OpenAIChatLLM(
        {
            "base_url": server.base_url,
            "api_key": "sk-chat-secret",
            "model": "gpt-4o-mini",
            "max_retries": 2,
            "backoff_initial": 0.01,
            **extra,
        }
    )


async def test_completion_returns_the_assistant_message(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.chat_answer = "  Alice drinks tea.  "
    llm = chat_llm(fake_openai)
    try:
        answer = await llm.complete("be brief", "what does Alice drink?", max_tokens=64)
    finally:
        await llm.close()
    assert answer == "Alice drinks tea."
    (request,) = fake_openai.requests_to("chat/completions")
    assert request.body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "what does Alice drink?"},
        ],
        "temperature": 0.2,
        "max_tokens": 64,
    }
    assert request.headers["Authorization"] == "Bearer sk-chat-secret"


async def test_completion_retries_429_then_answers(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.queue("chat/completions", Reply(429, headers={"Retry-After": "0.05"}))
    llm = chat_llm(fake_openai)
    try:
        assert await llm.complete("s", "u") == "Alice prefers tea."
    finally:
        await llm.close()
    assert len(fake_openai.requests_to("chat/completions")) == 2


async def test_completion_unavailable_after_repeated_5xx(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.queue("chat/completions", Reply(502), Reply(502), Reply(502))
    llm = chat_llm(fake_openai)
    with pytest.raises(ProviderUnavailableError):
        await llm.complete("s", "u")
    await llm.close()


async def test_completion_without_choices_is_a_bad_response(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.queue("chat/completions", Reply(200, {"id": "x", "object": "chat.completion", "choices": []}))
    llm = chat_llm(fake_openai)
    with pytest.raises(ProviderUnavailableError) as info:
        await llm.complete("s", "u")
    await llm.close()
    assert info.value.code == "provider_bad_response"


async def test_completion_times_out_on_a_slow_server(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.queue("chat/completions", Reply(delay=1.0))
    llm = chat_llm(fake_openai, timeout=0.2, max_retries=0)
    with pytest.raises(ProviderUnavailableError, match="timed out"):
        await llm.complete("s", "u")
    await llm.close()


async def test_azure_style_key_header_and_query(fake_openai: FakeOpenAIServer) -> None:
    llm = chat_llm(fake_openai, api_key_header="api-key", extra_query={"api-version": "2024-06-01"})
    try:
        await llm.complete("s", "u")
    finally:
        await llm.close()
    (request,) = fake_openai.requests_to("chat/completions")
    assert request.headers["api-key"] == "sk-chat-secret" and "Authorization" not in request.headers
    assert "api-version=2024-06-01" in request.path


async def test_health_uses_the_models_endpoint(fake_openai: FakeOpenAIServer) -> None:
    llm = chat_llm(fake_openai)
    health = await llm.health()
    await llm.close()
    assert health.healthy and health.name == "llm"
    assert fake_openai.requests_to("models")


def test_config_rejects_unknown_keys_and_hides_the_key() -> None:
    with pytest.raises(ConfigError, match="temprature: unknown key"):
        OpenAIChatLLM.validate_config({"model": "m", "temprature": 1})
    assert "sk-x" not in repr(OpenAIChatLLM({"model": "m", "api_key": "sk-x"}))
