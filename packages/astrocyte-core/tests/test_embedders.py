"""The hashing embedder, and the openai embedder against a real local HTTP server."""

from __future__ import annotations

import time

import numpy as np
import pytest
from astrocyte.embedders.hashing import HashingEmbedder
from astrocyte.embedders.openai import OpenAIEmbedder
from astrocyte.errors import ConfigError, ProviderUnavailableError, ValidationError
from fixtures.openai_server import FakeOpenAIServer, Reply, error_body

# -- hashing -------------------------------------------------------------------------------------


async def test_hashing_is_deterministic_normalised_float32() -> None:
    embedder = HashingEmbedder({})
    first = await embedder.embed(["Alice prefers tea", "Bob likes hiking"])
    again = await HashingEmbedder({}).embed(["Alice prefers tea", "Bob likes hiking"])
    assert first.shape == (2, 384) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)


async def test_hashing_related_texts_are_closer_than_unrelated() -> None:
    a, b, c = await HashingEmbedder({}).embed(
        ["Alice prefers green tea", "does Alice prefer tea?", "the rocket launched from Florida"]
    )
    assert float(a @ b) > float(a @ c) + 0.1


async def test_hashing_tokenises_unicode_and_ignores_case() -> None:
    embedder = HashingEmbedder({"dimensions": 64})
    upper, lower = await embedder.embed(["ÜBER Straße 東京", "über straße 東京"])
    np.testing.assert_allclose(upper, lower)


async def test_hashing_gives_text_without_words_a_nonzero_vector() -> None:
    vectors = await HashingEmbedder({"dimensions": 16}).embed(["!!!", "🙂"])
    assert np.all(np.linalg.norm(vectors, axis=1) > 0.99)


async def test_hashing_batch_equals_one_at_a_time() -> None:
    embedder = HashingEmbedder({"dimensions": 128})
    texts = [f"memory number {i} about topic {i % 7}" for i in range(100)]  # over the inline limit
    batch = await embedder.embed(texts)
    single = np.vstack([await embedder.embed([t]) for t in texts])
    np.testing.assert_allclose(batch, single, rtol=1e-6)


def test_hashing_embeds_thousands_of_texts_per_second() -> None:
    embedder = HashingEmbedder({})
    texts = [f"user {i} said they prefer tea over coffee in the morning, item {i}" for i in range(3000)]
    started = time.perf_counter()
    embedder.embed_sync(texts)
    assert time.perf_counter() - started < 1.0  # ~0.1 s on a laptop; generous for a shared CI box


def test_hashing_rejects_bad_config() -> None:
    with pytest.raises(ConfigError) as info:
        HashingEmbedder.validate_config({"dimensions": 2, "ngrams": 3})
    issues = info.value.details["issues"]
    assert "ngrams: unknown key" in issues and any(i.startswith("dimensions:") for i in issues)


# -- openai --------------------------------------------------------------------------------------


def openai_embedder(server: FakeOpenAIServer, **extra: object) -> OpenAIEmbedder:
    config = {
        "base_url": server.base_url,
        "api_key": "sk-test-secret",
        "model": "text-embedding-3-small",
        "dimensions": server.dimensions,
        "timeout": 2.0,
        "max_retries": 2,
        "backoff_initial": 0.01,
        **extra,
    }
    return OpenAIEmbedder(config)


async def test_openai_embeds_and_sends_the_documented_request(fake_openai: FakeOpenAIServer) -> None:
    embedder = openai_embedder(fake_openai)
    try:
        vectors = await embedder.embed(["Alice prefers tea", "Bob likes hiking"])
    finally:
        await embedder.close()
    assert vectors.shape == (2, fake_openai.dimensions) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    (request,) = fake_openai.requests_to("embeddings")
    assert request.headers["Authorization"] == "Bearer sk-test-secret"
    assert request.body == {
        "model": "text-embedding-3-small",
        "input": ["Alice prefers tea", "Bob likes hiking"],
        "encoding_format": "float",
    }


async def test_openai_batches_by_batch_size_and_keeps_order(fake_openai: FakeOpenAIServer) -> None:
    embedder = openai_embedder(fake_openai, batch_size=3)
    texts = [f"text {i}" for i in range(8)]
    try:
        vectors = await embedder.embed(texts)
    finally:
        await embedder.close()
    assert len(fake_openai.requests_to("embeddings")) == 3
    expected = HashingEmbedder({"dimensions": fake_openai.dimensions}).embed_sync(texts)
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)


async def test_openai_waits_out_retry_after_on_429(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.queue(
        "embeddings",
        Reply(
            429, error_body("Rate limit reached", "requests", "rate_limit_exceeded"), {"Retry-After": "0.3"}
        ),
    )
    embedder = openai_embedder(fake_openai)
    started = time.perf_counter()
    try:
        vectors = await embedder.embed(["hello"])
    finally:
        await embedder.close()
    assert time.perf_counter() - started >= 0.3
    assert vectors.shape == (1, fake_openai.dimensions)
    assert len(fake_openai.requests_to("embeddings")) == 2


async def test_openai_fails_at_once_when_retry_after_is_too_long(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.queue("embeddings", Reply(429, headers={"Retry-After": "120"}))
    embedder = openai_embedder(fake_openai, max_retry_after=5)
    with pytest.raises(ProviderUnavailableError) as info:
        await embedder.embed(["hello"])
    await embedder.close()
    assert info.value.details["retry_after"] == 120
    assert len(fake_openai.requests_to("embeddings")) == 1


async def test_openai_retries_server_errors_then_succeeds(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.queue("embeddings", Reply(500), Reply(503))
    embedder = openai_embedder(fake_openai)
    try:
        vectors = await embedder.embed(["hello"])
    finally:
        await embedder.close()
    assert vectors.shape == (1, fake_openai.dimensions)
    assert len(fake_openai.requests_to("embeddings")) == 3


async def test_openai_gives_up_after_max_retries(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.queue("embeddings", Reply(500), Reply(500), Reply(500))
    embedder = openai_embedder(fake_openai)
    with pytest.raises(ProviderUnavailableError) as info:
        await embedder.embed(["hello"])
    await embedder.close()
    assert info.value.code == "provider_unavailable" and "HTTP 500" in info.value.message
    assert len(fake_openai.requests_to("embeddings")) == 3


async def test_openai_slow_response_times_out(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.queue("embeddings", Reply(delay=1.0), Reply(delay=1.0))
    embedder = openai_embedder(fake_openai, timeout=0.2, max_retries=1)
    started = time.perf_counter()
    with pytest.raises(ProviderUnavailableError, match="timed out"):
        await embedder.embed(["hello"])
    await embedder.close()
    assert time.perf_counter() - started < 0.9


async def test_openai_malformed_json_is_a_bad_response(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.queue("embeddings", Reply(200, b'{"data": [{"embedding": [0.1, '))
    embedder = openai_embedder(fake_openai)
    with pytest.raises(ProviderUnavailableError) as info:
        await embedder.embed(["hello"])
    await embedder.close()
    assert info.value.code == "provider_bad_response"


async def test_openai_wrong_dimension_is_a_validation_error(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.queue("embeddings", Reply(dimensions=fake_openai.dimensions * 2))
    embedder = openai_embedder(fake_openai)
    with pytest.raises(ValidationError) as info:
        await embedder.embed(["hello"])
    await embedder.close()
    assert info.value.code == "embedding_dimension_mismatch"
    assert str(fake_openai.dimensions * 2) in info.value.message


async def test_openai_bad_key_is_a_config_error_without_the_key(fake_openai: FakeOpenAIServer) -> None:
    body = error_body(
        "Incorrect API key provided: sk-test-secret.", "invalid_request_error", "invalid_api_key"
    )
    fake_openai.queue("embeddings", Reply(401, body))
    embedder = openai_embedder(fake_openai)
    with pytest.raises(ConfigError) as info:
        await embedder.embed(["hello"])
    await embedder.close()
    assert info.value.code == "provider_auth_failed"
    assert "sk-test-secret" not in info.value.message
    assert len(fake_openai.requests_to("embeddings")) == 1  # never retried


async def test_openai_rejected_request_carries_the_server_message(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.queue("embeddings", Reply(400, error_body("input is too long", "invalid_request_error")))
    embedder = openai_embedder(fake_openai)
    with pytest.raises(ValidationError) as info:
        await embedder.embed(["hello"])
    await embedder.close()
    assert info.value.code == "provider_rejected" and "input is too long" in info.value.message


async def test_openai_unreachable_server_is_unavailable() -> None:
    embedder = OpenAIEmbedder(
        {
            "base_url": "http://127.0.0.1:9/v1",
            "model": "m",
            "dimensions": 8,
            "max_retries": 1,
            "backoff_initial": 0,
        }
    )
    with pytest.raises(ProviderUnavailableError, match="connection failed"):
        await embedder.embed(["hello"])
    health = await embedder.health()
    await embedder.close()
    assert not health.healthy


async def test_openai_health_reports_a_reachable_server(fake_openai: FakeOpenAIServer) -> None:
    embedder = openai_embedder(fake_openai)
    health = await embedder.health()
    await embedder.close()
    assert health.healthy and health.latency_ms is not None


def test_openai_key_never_shows_in_repr() -> None:
    embedder = OpenAIEmbedder({"api_key": "sk-hidden", "model": "m", "dimensions": 8})
    assert "sk-hidden" not in repr(embedder)
    assert "sk-hidden" not in repr(embedder._settings)


def test_openai_config_needs_model_and_dimensions() -> None:
    with pytest.raises(ConfigError) as info:
        OpenAIEmbedder.validate_config({"api_key": "x", "base_urll": "y"})
    issues = info.value.details["issues"]
    assert "model: Field required" in issues and "dimensions: Field required" in issues
    assert "base_urll: unknown key" in issues
