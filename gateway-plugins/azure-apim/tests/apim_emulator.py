"""Runs the plugin's policies the way APIM runs them, for the policy elements they use.

APIM cannot run here, so this plays its part: named values are pasted into the policy text, the
elements (set-header, set-variable, choose, send-request, send-one-way-request, set-body,
include-fragment, set-backend-service, forward-request) are carried out in order, and every C#
expression is compiled as written (Mono's C# compiler, the Newtonsoft.Json APIM exposes) and run
against a context holding only the members APIM documents (`expression_host.cs`). HTTP calls are
real: `send-request` and `send-one-way-request` go to whatever URL the policy names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from apim_files import API_POLICY, FRAGMENTS
from lxml import etree

HOST_SOURCE = Path(__file__).with_name("expression_host.cs")
NEWTONSOFT = [
    "/usr/lib/cli/Newtonsoft.Json-5.0/Newtonsoft.Json.dll",
    "/usr/lib/mono/gac/Newtonsoft.Json/6.0.0.0__b9a188c8922137c6/Newtonsoft.Json.dll",
]
USINGS_END = "public interface IMessageBody"


def toolchain() -> tuple[str, str, str] | None:
    """(mcs, mono, Newtonsoft.Json.dll): from `scripts/services env`, else wherever Debian puts them."""
    mcs = os.environ.get("ASTROCYTE_TEST_MCS_BIN") or shutil.which("mcs")
    mono = os.environ.get("ASTROCYTE_TEST_MONO_BIN") or shutil.which("mono")
    dlls = [os.environ.get("ASTROCYTE_TEST_NEWTONSOFT_DLL", ""), *NEWTONSOFT]
    dll = next((path for path in dlls if path and Path(path).is_file()), None)
    return (mcs, mono, dll) if mcs and mono and dll else None


def policy_text(path: Path, named_values: dict[str, str]) -> str:
    """The policy as APIM compiles it: every {{name}} replaced by its value (XML-escaped)."""
    text = path.read_text()
    for name, value in named_values.items():
        text = text.replace("{{" + name + "}}", escape(value, {'"': "&quot;", "'": "&apos;"}))
    assert "{{" not in text, f"{path.name}: a named value has no value"
    return text


class ExpressionHost:
    """All expressions of some policies compiled into one Mono program that evaluates them on request."""

    def __init__(self, codes: list[str], workdir: Path) -> None:
        mcs, mono, dll = toolchain() or (None, None, None)
        assert mcs and mono and dll, "Mono (mcs) and Newtonsoft.Json are needed: scripts/services up mono"
        self.index = {code: n for n, code in enumerate(dict.fromkeys(codes))}
        source = HOST_SOURCE.read_text() + self._methods()
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        exe = workdir / f"expressions-{digest}.exe"
        if not exe.exists():
            (workdir / f"expressions-{digest}.cs").write_text(source)
            build = subprocess.run(
                [mcs, "-nologo", "-langversion:experimental", f"-r:{dll}", "-r:System.dll", "-r:System.Core.dll",
                 f"-out:{exe}", str(workdir / f"expressions-{digest}.cs")],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert build.returncode == 0, build.stdout + build.stderr
            shutil.copy(dll, workdir / "Newtonsoft.Json.dll")
        env = {**os.environ, "MONO_PATH": str(Path(dll).parent)}
        self.process = subprocess.Popen(
            [mono, str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=workdir
        )
        self.lock = threading.Lock()

    def _methods(self) -> str:
        lines = ["public static class Expressions", "{"]
        for code, n in self.index.items():
            body = code[2:-1] if code.startswith("@{") else f"return (object)({code[2:-1]});"
            lines.append(f"    static object E{n}(Context context)\n    {{\n{body}\n    }}")
        lines.append(
            "    public static object Run(int n, Context context)\n    {\n        switch (n)\n        {"
        )
        lines += [f"            case {n}: return E{n}(context);" for n in self.index.values()]
        lines.append(
            '            default: throw new ArgumentException("no expression " + n);\n        }\n    }\n}'
        )
        return "\n".join(lines) + "\n"

    def evaluate(self, code: str, state: dict[str, Any]) -> tuple[Any, list[str]]:
        """The expression's value (or an ExpressionError) and which bodies it read without preserving."""
        with self.lock:
            assert self.process.stdin and self.process.stdout
            self.process.stdin.write(json.dumps({"n": self.index[code], "state": state}) + "\n")
            self.process.stdin.flush()
            reply = json.loads(self.process.stdout.readline())
        if not reply["ok"]:
            raise ExpressionError(f"{reply['error']} in {code[:80]}")
        return reply["value"], reply["consumed"]

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=30)


class ExpressionError(RuntimeError):
    """A policy expression threw: in APIM the request would end in the on-error section (a 500)."""


@dataclass
class Message:
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: str | None = None
    consumed: bool = False

    def set_header(self, name: str, values: list[str] | None) -> None:
        for existing in [key for key in self.headers if key.lower() == name.lower()]:
            del self.headers[existing]
        if values is not None:
            self.headers[name] = values

    def header(self, name: str) -> str | None:
        for key, values in self.headers.items():
            if key.lower() == name.lower():
                return ",".join(values)
        return None


@dataclass
class Exchange:
    """One call through the gateway: what the client sent, what the model got, what came back."""

    request: Message
    response: Message | None = None
    status: int = 0
    variables: dict[str, Any] = field(default_factory=dict)
    backend_url: str | None = None
    upstream: Message | None = None
    one_way: list[threading.Thread] = field(default_factory=list)
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def wait_for_one_way_requests(self) -> None:
        for thread in self.one_way:
            thread.join(timeout=30)


Model = Callable[[Message], tuple[int, dict[str, list[str]], str]]


class Gateway:
    """The chat API of `api-policy/chat-completions.xml`, with both fragments, and a model behind it."""

    def __init__(self, named_values: dict[str, str], model: Model, workdir: Path) -> None:
        texts = {
            "api": policy_text(API_POLICY, named_values),
            "astrocyte-recall": policy_text(FRAGMENTS / "astrocyte-recall.xml", named_values),
            "astrocyte-retain": policy_text(FRAGMENTS / "astrocyte-retain.xml", named_values),
        }
        parser = etree.XMLParser(remove_comments=True)
        self.policies = {name: etree.fromstring(text.encode(), parser) for name, text in texts.items()}
        codes = [code for root in self.policies.values() for code in _expressions(root)]
        self.host = ExpressionHost(codes, workdir)
        self.model = model

    def close(self) -> None:
        self.host.close()

    # --- one call ----------------------------------------------------------------------------

    def chat(
        self,
        body: str | None,
        headers: dict[str, str] | None = None,
        subscription: str | None = "sub-alice",
        product: str | None = "starter",
        variables: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> Exchange:
        request = Message({name: [value] for name, value in (headers or {}).items()}, body)
        exchange = Exchange(request=request, variables=dict(variables or {}))
        if request_id:
            exchange.request_id = request_id
        self.subscription, self.product = subscription, product
        root = self.policies["api"]
        self._run(root.find("inbound"), exchange, exchange.request)
        self._run(root.find("backend"), exchange, exchange.request)
        assert exchange.response is not None, "forward-request ran"
        self._run(root.find("outbound"), exchange, exchange.response)
        return exchange

    def evaluate(self, code: str, exchange: Exchange) -> Any:
        value, consumed = self.host.evaluate(code, self._state(exchange))
        for owner in consumed:
            if owner == "request":
                exchange.request.consumed = True
            elif owner == "response" and exchange.response:
                exchange.response.consumed = True
            elif owner.startswith("var:"):
                exchange.variables[owner[4:]]["$response"]["consumed"] = True
        return value

    def _state(self, exchange: Exchange) -> dict[str, Any]:
        def message(msg: Message | None, status: int = 0) -> dict[str, Any] | None:
            if msg is None:
                return None
            return {"headers": msg.headers, "body": msg.body, "status": status, "consumed": msg.consumed}

        return {
            "api": {"id": "astrocyte-chat", "name": "astrocyte-chat"},
            "product": {"id": self.product, "name": self.product} if self.product else None,
            "subscription": {"id": self.subscription, "name": self.subscription}
            if self.subscription
            else None,
            "requestId": exchange.request_id,
            "request": {**(message(exchange.request) or {}), "method": "POST"},
            "response": message(exchange.response, exchange.status),
            "variables": exchange.variables,
        }

    def _value(self, text: str | None, exchange: Exchange) -> Any:
        text = (text or "").strip()
        return self.evaluate(text, exchange) if text.startswith("@") else text

    # --- the policy elements ------------------------------------------------------------------

    def _run(self, section: etree._Element | None, exchange: Exchange, message: Message) -> None:
        for element in section if section is not None else []:
            handler = getattr(self, "_" + element.tag.replace("-", "_"), None)
            assert handler, f"the emulator does not know <{element.tag}>"
            handler(element, exchange, message)

    def _base(self, element: etree._Element, exchange: Exchange, message: Message) -> None:
        """Nothing above the API scope in this emulation."""

    def _include_fragment(self, element: etree._Element, exchange: Exchange, message: Message) -> None:
        self._run(self.policies[element.get("fragment-id")], exchange, message)

    def _set_backend_service(self, element: etree._Element, exchange: Exchange, message: Message) -> None:
        exchange.backend_url = element.get("base-url")

    def _set_header(self, element: etree._Element, exchange: Exchange, message: Message) -> None:
        name = element.get("name")
        if element.get("exists-action") == "delete":
            message.set_header(name, None)
            return
        assert element.get("exists-action") == "override"
        message.set_header(name, [str(self._value(value.text, exchange)) for value in element.iter("value")])

    def _set_variable(self, element: etree._Element, exchange: Exchange, message: Message) -> None:
        exchange.variables[element.get("name")] = self._value(element.get("value"), exchange)

    def _set_body(self, element: etree._Element, exchange: Exchange, message: Message) -> None:
        message.body = str(self._value(element.text, exchange))
        message.consumed = False

    def _choose(self, element: etree._Element, exchange: Exchange, message: Message) -> None:
        for branch in element:
            if branch.tag == "otherwise" or self._value(branch.get("condition"), exchange) is True:
                self._run(branch, exchange, message)
                return

    def _forward_request(self, element: etree._Element, exchange: Exchange, message: Message) -> None:
        assert exchange.backend_url and not message.consumed, "the model gets the request body"
        exchange.upstream = Message(dict(message.headers), message.body)
        status, headers, body = self.model(exchange.upstream)
        exchange.status, exchange.response = status, Message(headers, body)

    def _outgoing(self, element: etree._Element, exchange: Exchange) -> urllib.request.Request:
        call = Message()
        for child in element:
            if child.tag == "set-header":
                self._set_header(child, exchange, call)
            elif child.tag == "set-body":
                self._set_body(child, exchange, call)
        url = str(self._value(element.findtext("set-url"), exchange))
        data = call.body.encode() if call.body is not None else None
        request = urllib.request.Request(url, data=data, method=element.findtext("set-method"))
        for name, values in call.headers.items():
            request.add_header(name, ",".join(values))
        return request

    def _send_request(self, element: etree._Element, exchange: Exchange, message: Message) -> None:
        assert element.get("mode") == "new"
        request = self._outgoing(element, exchange)
        try:
            with urllib.request.urlopen(request, timeout=int(element.get("timeout", "60"))) as reply:
                status, headers, body = reply.status, reply.headers, reply.read().decode()
        except urllib.error.HTTPError as reply:  # any status is a response, as in APIM
            status, headers, body = reply.code, reply.headers, reply.read().decode()
        except OSError:
            if element.get("ignore-error") != "true":
                raise
            exchange.variables[element.get("response-variable-name")] = {"$response": None}
            return
        response = {"status": status, "headers": {k: [v] for k, v in headers.items()}, "body": body}
        exchange.variables[element.get("response-variable-name")] = {"$response": response}

    def _send_one_way_request(self, element: etree._Element, exchange: Exchange, message: Message) -> None:
        request = self._outgoing(element, exchange)
        timeout = int(element.get("timeout", "60"))

        def send() -> None:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as reply:
                    reply.read()
            except OSError:
                pass  # nobody waits for a one-way request, so nobody hears it failed

        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        exchange.one_way.append(thread)


def _expressions(root: etree._Element) -> list[str]:
    found = []
    for element in root.iter():
        found += [value.strip() for value in element.attrib.values() if value.lstrip().startswith("@")]
        if (element.text or "").strip().startswith("@"):
            found.append(element.text.strip())
    return found
