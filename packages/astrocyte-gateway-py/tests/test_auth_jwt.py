"""jwt mode against a real JWKS server on 127.0.0.1: expiry, audience, issuer, alg none, algorithm
confusion, key rotation (unknown kid refetches), JWKS unreachable (refused)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from astrocyte import Astrocyte
from conftest import assert_error, free_port, serve
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://idp.example.test/"
AUDIENCE = "astrocyte"


class Jwks:
    """A JWKS + OIDC discovery server whose key set a test can rotate."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": ISSUER, "jwks_uri": f"{owner.url}/jwks.json"}
                else:
                    owner.hits += 1
                    body = {"keys": owner.keys}
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, kid: str, key: Any, alg: str = "RS256") -> None:
        algorithm = ECAlgorithm if alg == "ES256" else RSAAlgorithm
        jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
        self.keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    yield server
    server.close()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "iat": now, **overrides}


def env_for(url: str, **extra: str) -> dict[str, str]:
    return {
        "ASTROCYTE_AUTH_MODE": "jwt",
        "ASTROCYTE_JWT_JWKS_URL": f"{url}/jwks.json",
        "ASTROCYTE_JWT_ALGORITHMS": "RS256,ES256,PS256",
        "ASTROCYTE_JWT_ISSUER": ISSUER,
        "ASTROCYTE_JWT_AUDIENCE": AUDIENCE,
        "ASTROCYTE_JWT_JWKS_REFETCH_COOLDOWN_SECONDS": "0",
        **extra,
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_valid_token_authenticates_with_mapped_principal(
    jwks: Jwks, rsa_key: Any, brain: Astrocyte
) -> None:
    jwks.publish("k1", rsa_key)
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})
    async with serve(env_for(jwks.url), brain) as (http, _):
        response = await http.get("/v1/banks", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert_error(await http.get("/v1/banks"), 401, "jwt_missing")


async def test_expired_wrong_audience_and_wrong_issuer_are_refused(
    jwks: Jwks, rsa_key: Any, brain: Astrocyte
) -> None:
    jwks.publish("k1", rsa_key)
    cases = {
        "jwt_expired": claims(exp=int(time.time()) - 60),
        "jwt_audience_invalid": claims(aud="someone-else"),
        "jwt_issuer_invalid": claims(iss="https://evil.example/"),
        "jwt_claim_missing": {k: v for k, v in claims().items() if k != "exp"},
    }
    async with serve(env_for(jwks.url), brain) as (http, _):
        for code, payload in cases.items():
            token = jwt.encode(payload, rsa_key, algorithm="RS256", headers={"kid": "k1"})
            assert_error(await http.get("/v1/banks", headers=bearer(token)), 401, code)


async def test_alg_none_and_algorithm_confusion_are_refused(
    jwks: Jwks, rsa_key: Any, brain: Astrocyte
) -> None:
    jwks.publish("k1", rsa_key)
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": "k1"})
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # HS256 "signed" with the RSA public key: the classic confusion attack.
    confused = _hs256_with_raw_key(claims(), public_pem)
    async with serve(env_for(jwks.url), brain) as (http, _):
        assert_error(await http.get("/v1/banks", headers=bearer(unsigned)), 401, "jwt_algorithm_refused")
        assert_error(await http.get("/v1/banks", headers=bearer(confused)), 401, "jwt_algorithm_refused")
        # An EC-declared token pointing at an RSA key is refused too.
        es_key = ec.generate_private_key(ec.SECP256R1())
        mismatched = jwt.encode(claims(), es_key, algorithm="ES256", headers={"kid": "k1"})
        assert_error(await http.get("/v1/banks", headers=bearer(mismatched)), 401, "jwt_algorithm_refused")


def _hs256_with_raw_key(payload: dict[str, Any], key: bytes) -> str:
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
        + "."
        + b64(json.dumps(payload).encode())
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


async def test_unknown_kid_then_rotation(jwks: Jwks, rsa_key: Any, brain: Astrocyte) -> None:
    jwks.publish("old", rsa_key)
    new_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(), new_key, algorithm="ES256", headers={"kid": "new"})
    async with serve(env_for(jwks.url), brain) as (http, _):
        old = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "old"})
        assert (await http.get("/v1/banks", headers=bearer(old))).status_code == 200
        assert_error(await http.get("/v1/banks", headers=bearer(token)), 401, "jwt_unknown_kid")
        jwks.publish("new", new_key, alg="ES256")  # the IdP rotates its keys
        hits_before = jwks.hits
        assert (await http.get("/v1/banks", headers=bearer(token))).status_code == 200
        assert jwks.hits == hits_before + 1  # one refetch for the unknown kid, then cached
        assert (await http.get("/v1/banks", headers=bearer(token))).status_code == 200
        assert jwks.hits == hits_before + 1


async def test_unknown_kid_refetch_respects_the_cooldown(jwks: Jwks, rsa_key: Any, brain: Astrocyte) -> None:
    jwks.publish("k1", rsa_key)
    env = env_for(jwks.url, ASTROCYTE_JWT_JWKS_REFETCH_COOLDOWN_SECONDS="60")
    async with serve(env, brain) as (http, _):
        for i in range(5):
            token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": f"bogus-{i}"})
            assert_error(await http.get("/v1/banks", headers=bearer(token)), 401, "jwt_unknown_kid")
        assert jwks.hits == 1


async def test_jwks_unreachable_is_refused(rsa_key: Any, brain: Astrocyte) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})
    async with serve(env_for(f"http://127.0.0.1:{free_port()}"), brain) as (http, _):
        response = await http.get("/v1/banks", headers=bearer(token))
        assert_error(response, 503, "jwks_unavailable")


async def test_oidc_discovery_finds_the_jwks(jwks: Jwks, rsa_key: Any, brain: Astrocyte) -> None:
    jwks.publish("k1", rsa_key)
    env = env_for(jwks.url)
    del env["ASTROCYTE_JWT_JWKS_URL"]
    env["ASTROCYTE_JWT_OIDC_DISCOVERY_URL"] = f"{jwks.url}/.well-known/openid-configuration"
    token = jwt.encode(claims(sub="service:etl"), rsa_key, algorithm="PS256", headers={"kid": "k1"})
    jwks.keys[0]["alg"] = "PS256"
    async with serve(env, brain) as (http, _):
        assert (await http.get("/v1/banks", headers=bearer(token))).status_code == 200


async def test_hs256_shared_secret(brain: Astrocyte) -> None:
    env = {
        "ASTROCYTE_AUTH_MODE": "jwt",
        "ASTROCYTE_JWT_ALGORITHMS": "HS256",
        "ASTROCYTE_JWT_SECRET": "a-long-shared-secret-for-tests-only",
        "ASTROCYTE_JWT_ISSUER": ISSUER,
        "ASTROCYTE_JWT_AUDIENCE": AUDIENCE,
    }
    good = jwt.encode(claims(), "a-long-shared-secret-for-tests-only", algorithm="HS256")
    forged = jwt.encode(claims(), "another-secret-another-secret-xx", algorithm="HS256")
    async with serve(env, brain) as (http, _):
        assert (await http.get("/v1/banks", headers=bearer(good))).status_code == 200
        assert_error(await http.get("/v1/banks", headers=bearer(forged)), 401, "jwt_invalid")
        assert_error(await http.get("/v1/banks", headers=bearer("not.a.jwt")), 401, "jwt_invalid")


async def test_claim_to_principal_mapping(
    jwks: Jwks, rsa_key: Any, brain: Astrocyte, caplog: pytest.LogCaptureFixture
) -> None:
    jwks.publish("k1", rsa_key)
    env = env_for(jwks.url, ASTROCYTE_JWT_PRINCIPAL_CLAIM="email", ASTROCYTE_JWT_PRINCIPAL_PREFIX="user:")
    plain = jwt.encode(claims(email="alice@example.com"), rsa_key, algorithm="RS256", headers={"kid": "k1"})
    typed = jwt.encode(claims(email="agent:summariser"), rsa_key, algorithm="RS256", headers={"kid": "k1"})
    with caplog.at_level(logging.INFO, logger="astrocyte_gateway.access"):
        async with serve(env, brain) as (http, _):
            assert (await http.get("/v1/banks", headers=bearer(plain))).status_code == 200
            assert (await http.get("/v1/banks", headers=bearer(typed))).status_code == 200
    principals = [
        json.loads(r.getMessage())["principal"] for r in caplog.records if r.name.endswith("access")
    ]
    # A claim that happens to start with a principal kind is still a user: kinds are not the token's to choose.
    assert principals[-2:] == ["user:alice@example.com", "user:agent:summariser"]
    assert plain not in caplog.text  # tokens never reach the log
