"""astrocyte.yaml loading: defaults, ${ENV} substitution, and errors that name every problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from astrocyte.config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_SQLITE_PATH,
    AstrocyteConfig,
    load_config,
    parse_config,
)
from astrocyte.errors import ConfigError
from astrocyte.policy.config import PolicyConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "astrocyte.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_config_at_all_means_sqlite_and_hashing() -> None:
    config = parse_config({})
    assert config.store == "sqlite"
    assert config.store_config == {"path": DEFAULT_SQLITE_PATH}
    assert config.embedder == "hashing"
    assert config.llm is None
    assert config.recall.rrf_k == 60


def test_an_empty_file_means_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).store == "sqlite"


def test_another_store_does_not_inherit_the_sqlite_path() -> None:
    assert parse_config({"store": "memory"}).store_config == {}


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "store: memory\nembeder: hashing\n"))
    assert info.value.code == "config_invalid"
    assert "embeder: unknown key" in info.value.message
    assert "astrocyte.yaml" in info.value.message


def test_every_problem_is_listed_with_its_dotted_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "store": "memory",
                "chunking": {"max_charz": 10},
                "limits": {"max_tags": "many"},
                "access_grants": [{"bank_id": "*", "principal": "user:*", "permissions": ["fly"]}],
            }
        )
    issues = info.value.details["issues"]
    assert "chunking.max_charz: unknown key" in issues
    assert any(i.startswith("limits.max_tags:") for i in issues)
    assert any(i.startswith("access_grants[0].permissions[0]:") for i in issues)
    assert len(issues) == 3
    for issue in issues:
        assert issue in info.value.message


def test_provider_config_is_validated_by_the_provider() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {"store": "memory", "store_config": {"pathh": "x"}, "embedder_config": {"dimensionz": 3}}
        )
    issues = info.value.details["issues"]
    assert any(i.startswith("store_config") and "pathh" in i for i in issues)
    assert "embedder_config.dimensionz: unknown key" in issues


def test_unknown_provider_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"store": "memory", "embedder": "word2vec"})
    assert "embedder:" in info.value.message and "word2vec" in info.value.message


def test_llm_config_without_an_llm_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"store": "memory", "llm_config": {"model": "gpt-4o-mini"}})
    assert "llm_config: set but no llm is named" in info.value.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.code == "config_invalid"
    assert "not found" in info.value.message


def test_yaml_syntax_error_reports_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "store: memory\nrecall:\n  rrf_k: [1, 2\n"))
    assert info.value.code == "config_invalid"
    assert "line 4" in info.value.message or "line 3" in info.value.message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- store\n- memory\n"))


def test_env_references_are_substituted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASTRO_STORE", "memory")
    monkeypatch.setenv("ASTRO_DIMS", "64")
    monkeypatch.delenv("ASTRO_UNSET", raising=False)
    config = load_config(
        write(
            tmp_path,
            "store: ${ASTRO_STORE}\n"
            "embedder_config:\n  dimensions: ${ASTRO_DIMS}\n"
            "recall:\n  rrf_k: ${ASTRO_UNSET:-30}\n"
            "recall_authority: {tiers: ['pre-${ASTRO_STORE}-post', '$${NOT_A_VAR}']}\n",
        )
    )
    assert config.store == "memory"
    assert config.embedder_config == {"dimensions": 64}  # whole-value references keep their YAML type
    assert config.recall.rrf_k == 30
    assert config.recall_authority is not None
    assert config.recall_authority.tiers == ["pre-memory-post", "${NOT_A_VAR}"]


def test_missing_env_variable_is_an_error_naming_it_and_where() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {"store": "memory", "llm": "openai", "llm_config": {"model": "m", "api_key": "${OPENAI_KEY_X}"}},
            environ={},
        )
    assert "llm_config.api_key: environment variable OPENAI_KEY_X is not set" in info.value.message


def test_empty_env_variable_falls_back_to_its_default() -> None:
    config = parse_config({"store": "${S:-memory}"}, environ={"S": ""})
    assert config.store == "memory"


def test_policy_sections_become_a_policy_config() -> None:
    config = parse_config({"store": "memory", "access_control": {"enabled": True}, "limits": {"max_tags": 3}})
    assert isinstance(config, AstrocyteConfig)
    policy = config.policy
    assert isinstance(policy, PolicyConfig) and policy.access_control.enabled and policy.limits.max_tags == 3


def test_secrets_do_not_appear_in_the_config_repr() -> None:
    config = parse_config(
        {"store": "memory", "llm": "openai", "llm_config": {"model": "m", "api_key": "sk-very-secret"}}
    )
    assert "sk-very-secret" not in repr(config)
    assert "sk-very-secret" not in str(config)


def test_the_shipped_example_config_is_valid() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    assert config.store == "sqlite" and config.embedder == "hashing"


def test_a_source_with_an_unknown_driver_is_a_start_up_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"store": "memory", "sources": {"s1": {"type": "stream", "driver": "no-such-driver"}}})
    assert info.value.code == "config_invalid"
    assert "sources.s1" in info.value.message
