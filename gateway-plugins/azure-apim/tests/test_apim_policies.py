"""The policy XML: well-formed, and the lint rules that keep a chat call from failing or stalling."""

from __future__ import annotations

from pathlib import Path

import pytest
from apim_files import API_POLICY, RECALL, RETAIN, expressions, parse, policy_files
from lxml import etree


@pytest.mark.parametrize("path", policy_files(), ids=lambda path: path.name)
def test_every_policy_file_is_well_formed_xml(path: Path) -> None:
    root = etree.parse(str(path)).getroot()
    assert root.tag in {"fragment", "policies"}


def test_fragments_have_a_fragment_root_without_anything_before_it() -> None:
    for path in (RECALL, RETAIN):
        assert path.read_text().startswith("<fragment>"), path


def test_every_send_request_has_a_timeout_ignores_errors_and_names_its_response() -> None:
    requests = [element for path in policy_files() for element in parse(path).iter("send-request")]
    assert requests, "the recall fragment sends a request"
    for element in requests:
        assert element.get("timeout", "").startswith("{{"), "timeout comes from a named value"
        assert element.get("ignore-error") == "true"
        assert element.get("response-variable-name")
        assert element.get("mode") == "new", "a copy would carry the client's headers to Astrocyte"


def test_outbound_makes_no_call_that_waits() -> None:
    outbound = parse(RETAIN)
    assert list(outbound.iter("send-request")) == []
    assert [element.tag for element in outbound.iter("send-one-way-request")] == ["send-one-way-request"]
    api_outbound = parse(API_POLICY).find("outbound")
    assert api_outbound is not None
    assert [element.tag for element in api_outbound] == ["base", "include-fragment"]
    blocking = {"send-request", "wait", "retry", "cache-lookup-value", "limit-concurrency"}
    assert not blocking & {element.tag for element in api_outbound.iter()}


def test_no_url_or_key_is_written_into_a_policy() -> None:
    for path in policy_files():
        for element in parse(path).iter("set-url"):
            assert (element.text or "").startswith("{{astrocyte-url}}/v1/"), path
        for element in parse(path).iter("set-header"):
            values = [value.text or "" for value in element.iter("value")]
            if element.get("name", "").lower() in {"x-api-key", "authorization"} or "key" in element.get(
                "name", ""
            ):
                assert all(value.startswith("{{") for value in values), (path, element.get("name"))
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, path


def test_calls_to_astrocyte_carry_the_key_the_principal_and_the_request_id() -> None:
    for path, tag in ((RECALL, "send-request"), (RETAIN, "send-one-way-request")):
        (call,) = parse(path).iter(tag)
        headers = {element.get("name"): element.findtext("value") for element in call.iter("set-header")}
        assert headers["X-API-Key"] == "{{astrocyte-api-key}}"
        assert headers["X-Astrocyte-Principal"] == '@((string)context.Variables["astrocyte-principal"])'
        assert headers["X-Request-ID"] == "@(context.RequestId.ToString())"
        assert call.findtext("set-method") == "POST"


def test_retain_uses_the_request_id_as_idempotency_key() -> None:
    (call,) = parse(RETAIN).iter("send-one-way-request")
    headers = {element.get("name"): element.findtext("value") for element in call.iter("set-header")}
    assert headers["Idempotency-Key"] == "@(context.RequestId.ToString())"


def test_client_astrocyte_headers_are_stripped_before_anything_else() -> None:
    root = parse(RECALL)
    deleted = [e.get("name") for e in root if e.tag == "set-header" and e.get("exists-action") == "delete"]
    for name in (
        "X-Astrocyte-Principal",
        "X-Astrocyte-Signature",
        "X-Astrocyte-Timestamp",
        "X-Astrocyte-Delivery",
    ):
        assert name in deleted
    assert root[0].tag == "set-header", "stripping comes first"
    assert "X-Memory-Bank" in deleted, "the client's bank choice is not forwarded to the model"


def test_response_headers_report_memory_and_retain_and_override_the_backend() -> None:
    headers = {e.get("name"): e for e in parse(RETAIN) if e.tag == "set-header"}
    for name in ("X-Astrocyte-Memory", "X-Astrocyte-Retain"):
        assert headers[name].get("exists-action") == "override"


def test_bodies_are_read_without_taking_them_from_the_client_or_the_model() -> None:
    for path in (RECALL, RETAIN):
        for expression in expressions(path):
            for target in ("context.Request.Body", "context.Response.Body"):
                for piece in expression.code.split(target)[1:]:
                    assert "preserveContent: true" in piece.split(")")[0] + ")", (
                        expression.where,
                        piece[:60],
                    )


def test_a_streamed_answer_is_never_read() -> None:
    (decision,) = [e for e in expressions(RETAIN) if e.where == "set-variable@value" and "pending" in e.code]
    assert "context.Response.Body" not in decision.code
    assert "text/event-stream" in decision.code and "astrocyte-streamed" in decision.code
    (pending,) = [e for e in parse(RETAIN).iter("when") if "pending" in e.get("condition", "")]
    assert pending.find("set-variable").get("name") == "astrocyte-answer", (
        "the body is read only when pending"
    )


def test_recall_runs_only_with_a_query_a_bank_and_a_principal() -> None:
    (when,) = [e for e in parse(RECALL).iter("when") if e.find("send-request") is not None]
    for variable in ("astrocyte-query", "astrocyte-bank", "astrocyte-principal"):
        assert f'context.Variables["{variable}"]' in when.get("condition", "")


def test_the_memory_block_is_delimited_and_escaped() -> None:
    (lines,) = [e for e in expressions(RECALL) if e.where == "set-variable@value" and '"hits"' in e.code]
    assert "WebUtility.HtmlEncode(" in lines.code, "memory text cannot close the delimiter"
    assert "maxChars" in lines.code and "minScore" in lines.code
    (insert,) = [e for e in expressions(RECALL) if e.where == "set-body" and "messages.Insert" in e.code]
    assert '"<memory source=\\"astrocyte\\">\\n"' in insert.code and '"</memory>"' in insert.code
    assert 'new JProperty("role", "system")' in insert.code
