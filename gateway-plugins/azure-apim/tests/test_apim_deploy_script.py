"""deploy/deploy.sh with stand-ins for az, terraform and the APIOps publisher (Azure cannot run here).

Each stand-in records its command line and what it was handed (the parameters file, the TF_VAR_
environment, the publisher's configuration file), so the tests can show that the secrets reach each
tool and never appear on a command line.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from apim_files import APIOPS, PLUGIN

SCRIPT = PLUGIN / "deploy" / "deploy.sh"
ASTROCYTE_KEY = "astro-secret-Zq1!$x 'quoted\" value"
MODEL_KEY = "model-secret-9d8f"

RECORDER = r"""#!/usr/bin/env bash
# Stand-in for {name}: records argv, then whatever file or environment it was given.
log="$STUB_LOG/{name}.$$"
printf '%s\n' "$@" > "$log.argv"
env > "$log.env"
for arg in "$@"; do
  case "$arg" in
    @*) cp "${{arg#@}}" "$log.parameters.json"; stat -c %a "${{arg#@}}" > "$log.mode"; echo "${{arg#@}}" > "$log.path" ;;
  esac
done
if [[ -n "${{CONFIGURATION_YAML_PATH:-}}" ]]; then
  cp "$CONFIGURATION_YAML_PATH" "$log.configuration.yaml"
  stat -c %a "$CONFIGURATION_YAML_PATH" > "$log.mode"
  echo "$CONFIGURATION_YAML_PATH" > "$log.path"
fi
if [[ "${{1:-}}" == account ]]; then echo 00000000-1111-2222-3333-444444444444; fi
"""


@pytest.fixture
def stubs(tmp_path: Path) -> dict[str, str]:
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    for name in ("az", "terraform", "publisher"):
        tool = bin_dir / name
        tool.write_text(RECORDER.format(name=name))
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "STUB_LOG": str(log),
        "RESOURCE_GROUP": "rg-astrocyte",
        "APIM_NAME": "astrocyte-apim-test",
        "ASTROCYTE_URL": "https://memory.example.com/",
        "MODEL_BASE_URL": "https://model.example.com/openai/v1",
        "PUBLISHER_EMAIL": "ops@example.com",
        "PUBLISHER_NAME": "Ops",
        "ASTROCYTE_API_KEY": ASTROCYTE_KEY,
        "MODEL_API_KEY": MODEL_KEY,
        "APIOPS_PUBLISHER": str(bin_dir / "publisher"),
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def records(env: dict[str, str], suffix: str) -> list[Path]:
    return sorted(Path(env["STUB_LOG"]).glob(f"*.{suffix}"))


def assert_no_secret_on_a_command_line(env: dict[str, str]) -> None:
    argvs = records(env, "argv")
    assert argvs, "a tool ran"
    for argv in argvs:
        text = argv.read_text()
        assert ASTROCYTE_KEY not in text and MODEL_KEY not in text, argv.name


def assert_private_file_removed(env: dict[str, str]) -> None:
    for mode in records(env, "mode"):
        assert mode.read_text().strip() == "600"
    for path in records(env, "path"):
        assert not Path(path.read_text().strip()).exists(), "the temporary file is removed on exit"


def test_bicep_gets_the_secrets_in_a_private_parameters_file(stubs: dict[str, str]) -> None:
    result = run(stubs, "bicep")
    assert result.returncode == 0, result.stderr
    assert_no_secret_on_a_command_line(stubs)
    (argv,) = records(stubs, "argv")
    args = argv.read_text().splitlines()
    assert args[:3] == ["deployment", "group", "create"]
    assert args[args.index("--template-file") + 1] == str(PLUGIN / "deploy" / "bicep" / "main.bicep")
    (parameters,) = records(stubs, "parameters.json")
    values = {name: item["value"] for name, item in json.loads(parameters.read_text())["parameters"].items()}
    assert values["astrocyteApiKey"] == ASTROCYTE_KEY and values["modelApiKey"] == MODEL_KEY
    assert values["astrocyteUrl"] == "https://memory.example.com", "the trailing slash is dropped"
    assert "astrocyteApiKeySecretId" not in values
    assert_private_file_removed(stubs)


def test_bicep_with_key_vault_sends_the_secret_reference_not_a_key(stubs: dict[str, str]) -> None:
    del stubs["ASTROCYTE_API_KEY"]
    stubs["ASTROCYTE_API_KEY_SECRET_ID"] = "https://vault.vault.azure.net/secrets/astrocyte-api-key"
    stubs["KEY_VAULT_IDENTITY_NAME"] = "id-apim-astrocyte"
    result = run(stubs, "bicep")
    assert result.returncode == 0, result.stderr
    (parameters,) = records(stubs, "parameters.json")
    values = {name: item["value"] for name, item in json.loads(parameters.read_text())["parameters"].items()}
    assert values["astrocyteApiKeySecretId"] == stubs["ASTROCYTE_API_KEY_SECRET_ID"]
    assert values["keyVaultIdentityName"] == "id-apim-astrocyte"
    assert "astrocyteApiKey" not in values


def test_terraform_gets_the_secrets_in_its_environment(stubs: dict[str, str]) -> None:
    result = run(stubs, "terraform", "-auto-approve")
    assert result.returncode == 0, result.stderr
    assert_no_secret_on_a_command_line(stubs)
    argvs = [path.read_text().splitlines() for path in records(stubs, "argv")]
    chdir = f"-chdir={PLUGIN / 'deploy' / 'terraform'}"
    assert sorted(argvs) == sorted(
        [[chdir, "init", "-input=false"], [chdir, "apply", "-input=false", "-auto-approve"]]
    )
    for env_file in records(stubs, "env"):
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        assert env["TF_VAR_astrocyte_api_key"] == ASTROCYTE_KEY
        assert env["TF_VAR_model_api_key"] == MODEL_KEY
        assert env["TF_VAR_astrocyte_url"] == "https://memory.example.com"
        assert env["TF_VAR_resource_group_name"] == "rg-astrocyte"


def test_apiops_gets_the_secrets_in_a_private_configuration_file(stubs: dict[str, str]) -> None:
    result = run(stubs, "apiops")
    assert result.returncode == 0, result.stderr
    assert_no_secret_on_a_command_line(stubs)
    (configuration,) = records(stubs, "configuration.yaml")
    loaded = yaml.safe_load(configuration.read_text())
    assert loaded["apimServiceName"] == "astrocyte-apim-test"
    values = {item["name"]: item["properties"] for item in loaded["namedValues"]}
    assert values["astrocyte-api-key"] == {
        "displayName": "astrocyte-api-key",
        "value": ASTROCYTE_KEY,
        "secret": True,
    }
    assert values["model-api-key"]["value"] == MODEL_KEY
    assert values["astrocyte-url"]["value"] == "https://memory.example.com"
    assert set(values) <= {path.name for path in (APIOPS / "named values").iterdir()}
    publisher = [p for p in records(stubs, "env") if p.name.startswith("publisher.")]
    env = dict(line.split("=", 1) for line in publisher[0].read_text().splitlines() if "=" in line)
    assert env["API_MANAGEMENT_SERVICE_OUTPUT_FOLDER_PATH"] == str(APIOPS)
    assert env["AZURE_SUBSCRIPTION_ID"] == "00000000-1111-2222-3333-444444444444", "asked of az account show"
    assert env["AZURE_RESOURCE_GROUP_NAME"] == "rg-astrocyte"
    assert_private_file_removed(stubs)


@pytest.mark.parametrize("missing", ["RESOURCE_GROUP", "ASTROCYTE_URL", "MODEL_API_KEY", "PUBLISHER_EMAIL"])
def test_a_missing_setting_stops_before_any_tool_runs(stubs: dict[str, str], missing: str) -> None:
    del stubs[missing]
    result = run(stubs, "bicep")
    assert result.returncode == 2
    assert missing in result.stderr
    assert records(stubs, "argv") == []


def test_a_plain_http_astrocyte_url_is_refused(stubs: dict[str, str]) -> None:
    stubs["ASTROCYTE_URL"] = "http://memory.example.com"
    result = run(stubs, "terraform")
    assert result.returncode == 2 and "https://" in result.stderr
    assert records(stubs, "argv") == []


def test_an_unknown_tool_is_refused_with_the_usage(stubs: dict[str, str]) -> None:
    result = run(stubs, "pulumi")
    assert result.returncode == 2 and "usage" in result.stderr


def test_bicep_passes_extra_arguments_to_the_deployment(stubs: dict[str, str]) -> None:
    result = run(stubs, "bicep", "--parameters", "maxResults=8")
    assert result.returncode == 0, result.stderr
    (argv,) = records(stubs, "argv")
    assert argv.read_text().splitlines()[-2:] == ["--parameters", "maxResults=8"]
