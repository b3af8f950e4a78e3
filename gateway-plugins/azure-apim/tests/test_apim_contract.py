"""The fragments against the gateway's checked-in OpenAPI schema: fields sent and read, headers, ids."""

from __future__ import annotations

import re

import pytest
from apim_files import (
    RECALL,
    RETAIN,
    expressions,
    json_types,
    openapi,
    parse,
    request_schema,
    response_schema,
    schema,
)

# How the fragments write a JSON property's value, and the JSON type that gives.
VALUE_TYPES = [
    (re.compile(r'^\(string\)|^"'), "string"),
    (re.compile(r"^int\.Parse\("), "integer"),
    (re.compile(r"^context\.RequestId\.ToString\(\)|^context\.Api\.Name"), "string"),
    (re.compile(r"^new JObject\("), "object"),
    (re.compile(r"^new JArray\("), "array"),
]


def top_level_properties(code: str) -> dict[str, str]:
    """``new JProperty("name", value)`` pairs directly inside the outermost ``new JObject(...)``."""
    start = code.index("new JObject(") + len("new JObject(")
    found: dict[str, str] = {}
    depth = 0
    i = start
    while i < len(code) and depth >= 0:
        if depth == 0 and code.startswith("new JProperty(", i):
            match = re.match(r'new JProperty\("(\w+)",\s*', code[i:])
            assert match, code[i : i + 60]
            found[match.group(1)] = _json_type(code[i + match.end() :])
        char = code[i]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        i += 1
    return found


def _json_type(value: str) -> str:
    for pattern, kind in VALUE_TYPES:
        if pattern.search(value):
            return kind
    raise AssertionError(f"cannot tell the JSON type of {value[:60]!r}")


def call_body(path, tag: str) -> str:
    (call,) = parse(path).iter(tag)
    body = call.findtext("set-body")
    assert body
    return body


@pytest.mark.parametrize(
    ("path", "tag", "route"),
    [(RECALL, "send-request", "/v1/recall"), (RETAIN, "send-one-way-request", "/v1/retain")],
)
def test_request_fields_exist_in_the_gateway_schema_with_their_types(path, tag, route) -> None:
    (call,) = parse(path).iter(tag)
    assert call.findtext("set-url") == "{{astrocyte-url}}" + route
    assert "post" in openapi()["paths"][route]
    body = request_schema(route)
    sent = top_level_properties(call_body(path, tag))
    assert set(body["required"]) <= set(sent), "every required field is sent"
    for name, kind in sent.items():
        assert name in body["properties"], f"{route} has no field {name}"
        assert kind in json_types(body["properties"][name]), (name, kind)


def test_recall_response_fields_read_exist_with_their_types() -> None:
    (reader,) = [
        e for e in expressions(RECALL) if "astrocyte-recall-response" in e.code and '"hits"' in e.code
    ]
    result = response_schema("/v1/recall")
    hit = schema(result["properties"]["hits"]["items"]["$ref"].rsplit("/", 1)[1])
    read = re.findall(r'\["(\w+)"\] as (JArray|JObject)', reader.code)
    assert read == [("hits", "JArray")]
    assert "array" in json_types(result["properties"]["hits"])
    kinds = {"double": "number", "string": "string", "int": "integer", "bool": "boolean"}
    fields = re.findall(r'hit\.Value<(\w+)>\("(\w+)"\)', reader.code)
    assert {name for _, name in fields} == {"score", "text"}
    for kind, name in fields:
        assert name in hit["required"], name
        assert kinds[kind] in json_types(hit["properties"][name]), (name, kind)


def test_retain_sends_the_idempotency_key_header_the_gateway_declares() -> None:
    parameters = openapi()["paths"]["/v1/retain"]["post"]["parameters"]
    declared = {p["name"] for p in parameters if p["in"] == "header"}
    (call,) = parse(RETAIN).iter("send-one-way-request")
    sent = {element.get("name") for element in call.iter("set-header")}
    assert "Idempotency-Key" in declared & sent
    (key,) = [p for p in parameters if p["name"] == "Idempotency-Key"]
    assert {"maxLength": 255, "type": "string"} in key["schema"]["anyOf"], "a GUID (36 characters) fits"


def test_the_key_header_is_the_gateway_api_key_scheme() -> None:
    scheme = openapi()["components"]["securitySchemes"]["ApiKeyAuth"]
    assert scheme["in"] == "header"
    for path, tag in ((RECALL, "send-request"), (RETAIN, "send-one-way-request")):
        (call,) = parse(path).iter(tag)
        assert scheme["name"] in {element.get("name") for element in call.iter("set-header")}
    for route in ("/v1/recall", "/v1/retain"):
        assert {"ApiKeyAuth": []} in openapi()["paths"][route]["post"]["security"]


def _fragment_regex(variable: str) -> re.Pattern[str]:
    """The id check at the end of the recall expression that fills ``variable``."""
    (expression,) = [e for e in expressions(RECALL) if f"Regex.IsMatch({variable}, " in e.code]
    match = re.search(rf'Regex\.IsMatch\({variable}, @"([^"]+)"\)', expression.code)
    assert match, expression.code
    return re.compile(match.group(1))


# Accepted and refused by the gateway's own rules (bank ids: DESIGN 3.1; principals: the auth module).
BANKS = {
    "user:sub-1": True,
    "team.a@b": True,
    "a" * 255: True,
    "a" * 256: False,
    "-x": False,
    "a b": False,
    "": False,
}
PRINCIPALS = {
    "user:alice": True,
    "service:chat": True,
    "agent:x.y@z": True,
    "bob": False,
    "user:": False,
    "user:a b": False,
}


def test_the_bank_check_matches_the_gateway_bank_id_rule() -> None:
    pattern = _fragment_regex("filled")
    for bank, valid in BANKS.items():
        assert bool(pattern.match(bank)) is valid, bank


def test_the_principal_check_matches_the_gateway_principal_rule() -> None:
    pattern = _fragment_regex("principal")
    for principal, valid in PRINCIPALS.items():
        assert bool(pattern.match(principal)) is valid, principal


def test_the_recall_statuses_the_fragment_tells_apart_are_declared() -> None:
    (status,) = [e for e in expressions(RECALL) if e.where == "set-variable@value" and '"miss"' in e.code]
    handled = {int(code) for code in re.findall(r"StatusCode [!=]= (\d+)", status.code)}
    assert handled == {200, 404}
    assert {str(code) for code in handled} <= set(openapi()["paths"]["/v1/recall"]["post"]["responses"])
