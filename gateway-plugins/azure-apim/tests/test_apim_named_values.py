"""Named values: everything the policies read is defined by each of the three tools, and nothing more."""

from __future__ import annotations

import re

from apim_files import (
    API_POLICY,
    RECALL,
    RETAIN,
    SECRETS,
    apiops_named_values,
    bicep,
    bicep_named_values,
    terraform_named_values,
    terraform_variables,
    unquote,
    used_named_values,
)

USED = used_named_values([RECALL, RETAIN, API_POLICY])


def test_the_policies_use_the_documented_named_values() -> None:
    assert {"astrocyte-url", "astrocyte-api-key", "astrocyte-bank-template", "astrocyte-max-results"} <= USED
    assert {"astrocyte-timeout-seconds", "astrocyte-max-chars", "astrocyte-min-score"} <= USED


def test_bicep_defines_exactly_the_named_values_used() -> None:
    assert set(bicep_named_values()) == USED


def test_terraform_defines_exactly_the_named_values_used() -> None:
    assert set(terraform_named_values()) == USED


def test_apiops_defines_exactly_the_named_values_used() -> None:
    found = apiops_named_values()
    assert set(found) == USED
    for name, properties in found.items():
        assert properties["displayName"] == name


def test_keys_are_secret_named_values_everywhere_and_only_keys_are() -> None:
    for tool in (bicep_named_values(), terraform_named_values()):
        assert {name for name, info in tool.items() if info["secret"]} == SECRETS
    apiops = apiops_named_values()
    assert {name for name, properties in apiops.items() if properties["secret"]} == SECRETS
    for name in SECRETS:
        assert "value" not in apiops[name], "no secret value is committed"


def test_secret_inputs_are_marked_secret_in_bicep_and_terraform() -> None:
    parameters = bicep()["parameters"]
    for name in ("astrocyteApiKey", "modelApiKey"):
        assert {"type": "secure"} in parameters[name]["decorators"]
    variables = terraform_variables()
    for name in ("astrocyte_api_key", "model_api_key"):
        assert variables[name]["sensitive"] is True


def test_the_three_tools_ship_the_same_defaults() -> None:
    parameters = bicep()["parameters"]
    variables = terraform_variables()
    apiops = apiops_named_values()
    terraform = terraform_named_values()
    for name, info in bicep_named_values().items():
        if info["secret"]:
            continue
        bicep_default = parameters[info["param"]].get("default")
        variable = re.fullmatch(r"\$\{var\.(\w+)\}", terraform[name]["var"])
        assert variable, terraform[name]
        terraform_default = variables[variable.group(1)].get("default")
        if isinstance(terraform_default, str):
            terraform_default = unquote(terraform_default)
        if bicep_default is None:  # required input: each tool asks for it
            assert terraform_default is None, name
            continue
        assert bicep_default == terraform_default == apiops[name]["value"], name


def test_every_terraform_variable_is_documented() -> None:
    for name, body in terraform_variables().items():
        assert body.get("description"), name
