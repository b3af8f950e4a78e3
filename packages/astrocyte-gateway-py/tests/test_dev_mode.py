"""dev mode: allowed only when the sockets actually bound are loopback, however the server started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from astrocyte import Astrocyte
from astrocyte_gateway.cli import main
from conftest import assert_error, serve


async def test_dev_mode_in_process_uses_the_principal_header(brain: Astrocyte) -> None:
    async with serve({}, brain) as (http, _):
        response = await http.post(
            "/v1/retain",
            json={"content": "x", "bank_id": "b"},
            headers={"X-Astrocyte-Principal": "user:carol"},
        )
        assert response.status_code == 200


def test_dev_mode_on_loopback_uvicorn_is_allowed(gateway_process: Any, memory_config: Path) -> None:
    gateway = gateway_process({"ASTROCYTE_CONFIG_PATH": str(memory_config), "ASTROCYTE_AUTH_MODE": "dev"})
    response = httpx.post(f"{gateway.url}/v1/retain", json={"content": "x", "bank_id": "b"})
    assert response.status_code == 200, response.text


def test_dev_mode_refused_under_uvicorn_on_all_interfaces(gateway_process: Any, memory_config: Path) -> None:
    # Plain `uvicorn ... --host 0.0.0.0`: the request arrives over loopback, yet the socket bound is not.
    gateway = gateway_process(
        {"ASTROCYTE_CONFIG_PATH": str(memory_config), "ASTROCYTE_AUTH_MODE": "dev"}, host="0.0.0.0"
    )
    response = httpx.post(f"{gateway.url}/v1/retain", json={"content": "x", "bank_id": "b"})
    assert_error(response, 403, "dev_mode_not_loopback")
    assert httpx.get(f"{gateway.url}/live").status_code == 200


def test_cli_refuses_dev_mode_on_a_public_host(capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("ASTROCYTE_AUTH_MODE", "dev")
    assert main(["--host", "0.0.0.0", "--port", "8099"]) == 2
    assert "ASTROCYTE_AUTH_MODE" in capsys.readouterr().err


def test_cli_reports_incomplete_auth_config(capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("ASTROCYTE_AUTH_MODE", "jwt")
    monkeypatch.delenv("ASTROCYTE_JWT_ISSUER", raising=False)
    assert main(["--port", "8099"]) == 2
    assert "ASTROCYTE_JWT_ISSUER" in capsys.readouterr().err
