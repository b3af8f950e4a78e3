"""Reading the plugin's policies, deployment files and the gateway's OpenAPI snapshot, for the tests."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
from lxml import etree
from pycep import BicepParser

PLUGIN = Path(__file__).resolve().parents[1]
REPO = PLUGIN.parents[1]
FRAGMENTS = PLUGIN / "policy-fragments"
API_POLICY = PLUGIN / "api-policy" / "chat-completions.xml"
APIOPS = PLUGIN / "apiops" / "artifacts"
BICEP = PLUGIN / "deploy" / "bicep" / "main.bicep"
TERRAFORM = PLUGIN / "deploy" / "terraform"
OPENAPI = REPO / "packages" / "astrocyte-gateway-py" / "tests" / "openapi_snapshot.json"

RECALL = FRAGMENTS / "astrocyte-recall.xml"
RETAIN = FRAGMENTS / "astrocyte-retain.xml"
SECRETS = {"astrocyte-api-key", "model-api-key"}
NAMED_VALUE = re.compile(r"\{\{([A-Za-z0-9._-]+)\}\}")


def policy_files() -> list[Path]:
    """Every policy XML this plugin ships: the fragments, the API policy and their APIOps copies."""
    return sorted([*FRAGMENTS.glob("*.xml"), API_POLICY, *APIOPS.rglob("*.xml")])


def parse(path: Path) -> etree._Element:
    return etree.parse(str(path), etree.XMLParser(remove_comments=True)).getroot()


@dataclass(frozen=True)
class Expression:
    """One C# policy expression: where it is and its code (XML entities already decoded)."""

    path: Path
    where: str
    code: str

    @property
    def multi_statement(self) -> bool:
        return self.code.startswith("@{")


def expressions(path: Path) -> Iterator[Expression]:
    for element in parse(path).iter():
        for name, value in element.attrib.items():
            if value.lstrip().startswith("@"):
                yield Expression(path, f"{element.tag}@{name}", value.strip())
        text = (element.text or "").strip()
        if text.startswith("@"):
            yield Expression(path, element.tag, text)


def used_named_values(paths: list[Path]) -> set[str]:
    return {name for path in paths for name in NAMED_VALUE.findall(path.read_text())}


# --- deployment definitions -------------------------------------------------------------------


@cache
def bicep() -> dict[str, Any]:
    return BicepParser().parse(file_path=BICEP)


def bicep_named_values() -> dict[str, dict[str, Any]]:
    """Named value name -> {"secret": bool, "param": the parameter a plain value comes from}."""
    parsed = bicep()
    found: dict[str, dict[str, Any]] = {}
    for resource in parsed["resources"].values():
        if resource["type"] != "Microsoft.ApiManagement/service/namedValues":
            continue
        config = resource["config"]
        loop = config.get("loop_type")
        if loop:  # one resource per item of a variable array
            assert config["config"]["properties"]["secret"] is False
            for item in parsed["variables"][loop["detail"]["array_name"]]["value"]:
                found[item["name"]] = {"secret": False, "param": item["value"]}
            continue
        found[config["name"]] = {"secret": _bicep_secret(config["properties"]), "param": None}
    return found


def _bicep_secret(properties: dict[str, Any]) -> bool:
    if "operator" in properties:  # a conditional: both branches must agree
        operands = properties["operator"]["operands"]
        return _bicep_secret(operands["true_value"]) and _bicep_secret(operands["false_value"])
    return properties.get("secret") is True


def unquote(key: str) -> str:
    return key.strip('"')


@cache
def terraform() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as handle:
            for key, value in hcl2.load(handle).items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
    return merged


def terraform_resources(kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for block in terraform().get("resource", []):
        for resource_type, instances in block.items():
            if unquote(resource_type) == kind:
                found.update({unquote(name): body for name, body in instances.items()})
    return found


def terraform_named_values() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for local in terraform()["locals"]:
        for name, value in local.get("settings", {}).items():
            found[unquote(name)] = {"secret": False, "var": value}
    for label, body in terraform_resources("azurerm_api_management_named_value").items():
        if "for_each" in body:
            continue
        found[unquote(body["name"])] = {"secret": body.get("secret") is True, "var": label}
    return found


def terraform_variables() -> dict[str, dict[str, Any]]:
    return {unquote(name): body for block in terraform()["variable"] for name, body in block.items()}


def apiops_named_values() -> dict[str, dict[str, Any]]:
    found = {}
    for info in sorted((APIOPS / "named values").glob("*/namedValueInformation.json")):
        found[info.parent.name] = json.loads(info.read_text())["properties"]
    return found


# --- the gateway's API ------------------------------------------------------------------------


@cache
def openapi() -> dict[str, Any]:
    return json.loads(OPENAPI.read_text())


def schema(name: str) -> dict[str, Any]:
    found: dict[str, Any] = openapi()["components"]["schemas"][name]
    return found


def request_schema(path: str) -> dict[str, Any]:
    ref = openapi()["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return schema(ref.rsplit("/", 1)[1])


def response_schema(path: str) -> dict[str, Any]:
    ref = openapi()["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"][
        "$ref"
    ]
    return schema(ref.rsplit("/", 1)[1])


def json_types(property_schema: dict[str, Any]) -> set[str]:
    """The JSON types a property schema admits (``anyOf`` flattened, ``$ref`` as object)."""
    if "anyOf" in property_schema:
        return set().union(*(json_types(option) for option in property_schema["anyOf"]))
    if "$ref" in property_schema:
        return {"object"}
    kind = property_schema.get("type")
    return {kind} if isinstance(kind, str) else set()
