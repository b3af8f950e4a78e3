"""The hashing embedder's vectors are a storage format: databases hold them, so they never change.

Two guards: vectors pinned from the first released implementation (``fixtures/hashing_vectors.json``),
and a plain reference implementation of the algorithm compared over thousands of varied texts, so a
faster implementation can be checked far beyond the pinned examples.
"""

from __future__ import annotations

import json
import random
import re
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astrocyte.embedders.hashing import HashingEmbedder

PINNED = json.loads((Path(__file__).parent / "fixtures" / "hashing_vectors.json").read_text("utf-8"))
_WORD = re.compile(r"\w+")


def reference_embed(texts: list[str], dimensions: int = 384, bigrams: bool = True) -> np.ndarray:
    """The algorithm, written for clarity: blake2b-64 of each lowercased unigram and bigram."""
    matrix = np.zeros((len(texts), dimensions), dtype=np.float64)
    for row, text in enumerate(texts):
        words = _WORD.findall(text.lower())
        if not words:
            features = [text.strip() or "\x00empty"]
        elif bigrams and len(words) > 1:
            features = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
        else:
            features = words
        for feature in features:
            value = int.from_bytes(blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
            matrix[row, (value >> 1) % dimensions] += 1.0 if value & 1 else -1.0
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0.0] = 1.0
    return (matrix / norms).astype(np.float32)


def pinned_matrix(case: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    dimensions = case["config"].get("dimensions", 384)
    texts = [text for text, _ in case["rows"]]
    matrix = np.zeros((len(texts), dimensions), dtype=np.float32)
    for row, (_, nonzero) in enumerate(case["rows"]):
        for index, value in nonzero:
            matrix[row, index] = value
    return texts, matrix


def varied_texts(count: int, seed: int, *, ascii_only: bool = False) -> list[str]:
    """Texts mixing ASCII, accents, CJK, emoji, punctuation-only, repeats and whitespace."""
    rng = random.Random(seed)
    if ascii_only:  # includes control characters, which are neither words nor always whitespace
        words = [
            "tea",
            "Alice",
            "ORDER",
            "42",
            "x_y",
            "e-mail",
            "a@b.c",
            "!!",
            "-",
            "\x01",
            "\x7f",
            "\t",
            "__",
        ]
    else:
        words = "tea Alice über Straße 東京 café order 42 x_y İ ﬁ 🙂 !! -".split()
    texts = []
    for _ in range(count):
        size = rng.choice([0, 1, 1, 2, 3, 8, 20, 60])
        texts.append(rng.choice([" ", "  ", ", ", "\n"]).join(rng.choice(words) for _ in range(size)))
    return texts


@pytest.mark.parametrize("case", PINNED["cases"], ids=lambda case: json.dumps(case["config"]))
def test_vectors_match_the_released_ones(case: dict[str, Any]) -> None:
    texts, expected = pinned_matrix(case)
    embedder = HashingEmbedder(case["config"])
    np.testing.assert_allclose(embedder.embed_sync(texts), expected, rtol=0, atol=1e-6)
    for text, row in zip(texts, expected, strict=True):  # one text alone takes a different path
        np.testing.assert_allclose(embedder.embed_sync([text])[0], row, rtol=0, atol=1e-6)


def test_reference_implementation_reproduces_the_pins() -> None:
    for case in PINNED["cases"]:
        texts, expected = pinned_matrix(case)
        np.testing.assert_allclose(reference_embed(texts, **case["config"]), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("ascii_only", [False, True], ids=["unicode", "ascii"])
@pytest.mark.parametrize("config", [{}, {"dimensions": 16}, {"dimensions": 1000, "bigrams": False}])
async def test_vectors_match_the_reference_over_varied_batches(
    config: dict[str, Any], ascii_only: bool
) -> None:
    embedder = HashingEmbedder(config)
    texts = varied_texts(3000, seed=len(json.dumps(config)), ascii_only=ascii_only)
    expected = reference_embed(texts, **config)
    got = await embedder.embed(texts)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    again = await embedder.embed(texts)  # second pass: every feature now comes from the caches
    np.testing.assert_allclose(again, expected, rtol=0, atol=1e-6)
    for size in (1, 2, 7, 64, 65):
        np.testing.assert_allclose(embedder.embed_sync(texts[:size]), expected[:size], rtol=0, atol=1e-6)


def test_a_text_holding_nul_does_not_change_its_neighbours() -> None:
    texts = ["first text", "nul\x00inside", "\x00", "last text here"]
    np.testing.assert_allclose(
        HashingEmbedder({}).embed_sync(texts), reference_embed(texts), rtol=0, atol=1e-6
    )


def test_an_empty_batch_has_no_rows() -> None:
    assert HashingEmbedder({}).embed_sync([]).shape == (0, 384)


def test_the_feature_cache_stays_bounded_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    from astrocyte.embedders import hashing

    monkeypatch.setattr(hashing, "_TABLE_LIMIT", 50)
    embedder = HashingEmbedder({"dimensions": 24})  # a dimension count no other test caches
    batch = [f"unique words {i} w{i}x" for i in range(200)]
    with_nul = [f"nul\x00{i} z{i}y" for i in range(200)]  # the one-by-one path
    expected = reference_embed(batch + with_nul, dimensions=24)
    rows = []
    for start in range(0, 400, 10):
        rows.append(embedder.embed_sync((batch + with_nul)[start : start + 10]))
        assert len(embedder._table) <= 50
    rows.append(embedder.embed_sync(batch))  # more new features than the cache holds
    assert len(embedder._table) <= 50
    np.testing.assert_allclose(np.vstack(rows[:-1]), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(rows[-1], expected[:200], rtol=0, atol=1e-6)
