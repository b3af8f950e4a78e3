"""GitHub App installation tokens: minted from a JWT signed with the App's key, then used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from astrocyte import Astrocyte
from astrocyte.errors import ConfigError
from astrocyte_ingestion_github.driver import GitHubIssuesDriver
from astrocyte_ingestion_github.testing import FakeGitHub
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .conftest import CountingSink

REPO = "octo/hello"


def _key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


async def test_polls_with_an_installation_token_minted_from_the_app_key(
    github: FakeGitHub, make_driver: Callable[..., GitHubIssuesDriver], tmp_path: Path
) -> None:
    private, public = _key_pair()
    key_file = tmp_path / "app.pem"
    key_file.write_text(private)
    github.app_public_key = public
    github.create_issue(REPO, "App", "polled as a GitHub App")
    async with Astrocyte.from_dict({"store": "memory"}) as engine:
        app = {"app_id": 4242, "installation_id": 77, "private_key_path": str(key_file)}
        driver = make_driver(CountingSink(engine), token=None, token_env=None, app=app)
        await driver.poll_once()
        await driver.stop(5)
        assert (await engine.bank_stats("github:octo.hello")).memory_count == 1
    [claims] = github.app_jwt_claims  # one token minted, reused for every request of the pass
    assert claims["iss"] == "4242" and claims["exp"] - claims["iat"] <= 600
    assert list(github.app_tokens.values()) == [77]


def test_app_auth_needs_exactly_one_key_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        GitHubIssuesDriver.validate_config(
            {"repositories": [REPO], "app": {"app_id": 1, "installation_id": 2}}
        )
    with pytest.raises(ConfigError):
        GitHubIssuesDriver.validate_config(
            {
                "repositories": [REPO],
                "app": {"app_id": 1, "installation_id": 2, "private_key_env": "NOPE_UNSET"},
            }
        )
