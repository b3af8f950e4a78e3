"""APIOps copies, and the Bicep and Terraform files that load the policies."""

from __future__ import annotations

import json
import os
import re

from apim_files import (
    API_POLICY,
    APIOPS,
    BICEP,
    FRAGMENTS,
    PLUGIN,
    TERRAFORM,
    bicep,
    terraform,
    terraform_resources,
    unquote,
)


def test_nothing_in_the_plugin_is_a_symlink() -> None:
    links = [path for path in PLUGIN.rglob("*") if path.is_symlink()]
    assert links == []


def test_apiops_fragments_are_real_copies_of_the_fragments() -> None:
    fragments = sorted(FRAGMENTS.glob("*.xml"))
    assert [path.stem for path in fragments] == ["astrocyte-recall", "astrocyte-retain"]
    for source in fragments:
        folder = APIOPS / "policy fragments" / source.stem
        copy = folder / "policy.xml"
        assert copy.is_file() and not copy.is_symlink()
        assert os.stat(copy).st_ino != os.stat(source).st_ino, "a copy, not a hard link"
        assert copy.read_bytes() == source.read_bytes()
        info = json.loads((folder / "policyFragmentInformation.json").read_text())
        assert info["properties"]["description"]


def test_apiops_api_policy_is_a_real_copy_and_the_api_is_complete() -> None:
    api = APIOPS / "apis" / "astrocyte-chat"
    assert (api / "policy.xml").read_bytes() == API_POLICY.read_bytes()
    assert not (api / "policy.xml").is_symlink()
    info = json.loads((api / "apiInformation.json").read_text())["properties"]
    assert info["subscriptionRequired"] is True and info["path"] == "memory-chat"
    assert "/chat/completions:" in (api / "specification.yaml").read_text()
    subscription = json.loads(
        (APIOPS / "subscriptions" / "astrocyte-demo" / "subscriptionInformation.json").read_text()
    )
    assert subscription["properties"]["scope"] == "/apis/astrocyte-chat"


def test_apiops_folders_are_the_ones_the_publisher_reads() -> None:
    assert sorted(path.name for path in APIOPS.iterdir()) == [
        "apis",
        "named values",
        "policy fragments",
        "subscriptions",
    ]


def test_bicep_loads_the_policy_files_themselves() -> None:
    loaded = {}
    for name, resource in bicep()["resources"].items():
        config = resource["config"].get("config", resource["config"])
        value = config.get("properties", {}).get("value")
        if isinstance(value, dict) and "function" in value:
            path = value["function"]["parameters"]["file_path"]
            loaded[name] = (BICEP.parent / path).resolve()
            assert config["properties"]["format"] == "rawxml"
    assert loaded == {
        "recallFragment": FRAGMENTS.resolve() / "astrocyte-recall.xml",
        "retainFragment": FRAGMENTS.resolve() / "astrocyte-retain.xml",
        "chatPolicy": API_POLICY.resolve(),
    }


def test_bicep_creates_fragments_after_the_named_values_they_read() -> None:
    resources = bicep()["resources"]
    for name in ("recallFragment", "retainFragment"):
        assert set(resources[name]["config"]["dependsOn"]) == {"setting", "astrocyteKey"}
    assert {"recallFragment", "retainFragment", "modelKey"} <= set(
        resources["chatPolicy"]["config"]["config"]["dependsOn"]
    )


def _terraform_file(expression: str, key: str = "") -> str:
    match = re.fullmatch(r'\$\{file\("\$\{path\.module\}/([^"]+)"\)\}', expression)
    assert match, expression
    return str((TERRAFORM / match.group(1).replace("${each.key}", key)).resolve())


def test_terraform_loads_the_policy_files_themselves() -> None:
    (fragment,) = terraform_resources("azurerm_api_management_policy_fragment").values()
    assert fragment["for_each"] == "${local.fragments}" and fragment["name"] == "${each.key}"
    (fragments,) = [local["fragments"] for local in terraform()["locals"] if "fragments" in local]
    loaded = {unquote(key): _terraform_file(fragment["value"], unquote(key)) for key in fragments}
    assert loaded == {
        "astrocyte-recall": str(FRAGMENTS.resolve() / "astrocyte-recall.xml"),
        "astrocyte-retain": str(FRAGMENTS.resolve() / "astrocyte-retain.xml"),
    }
    assert unquote(fragment["format"]) == "rawxml"
    assert len(fragment["depends_on"]) == 2, "after the named values"
    (policy,) = terraform_resources("azurerm_api_management_api_policy").values()
    assert _terraform_file(policy["xml_content"]) == str(API_POLICY.resolve())


def test_the_chat_api_is_the_same_in_every_tool() -> None:
    (api,) = terraform_resources("azurerm_api_management_api").values()
    (operation,) = terraform_resources("azurerm_api_management_api_operation").values()
    assert unquote(api["name"]) == "astrocyte-chat"
    assert unquote(operation["url_template"]) == "/chat/completions"
    resources = bicep()["resources"]
    assert resources["chatApi"]["config"]["config"]["name"] == "astrocyte-chat"
    assert resources["chatOperation"]["config"]["config"]["properties"]["urlTemplate"] == "/chat/completions"
