"""C# policy expressions: balanced, well-shaped, and using only what APIM allows.

APIM compiles expressions only at run time, so a typo or a disallowed type would fail every chat call
it touches. This checks what can be checked without a C# compiler: brackets and string literals
balance, multi-statement expressions return, every local is declared, every type named (statics,
`new`, casts, generic arguments) is on the documented allow-list, restricted types use only their
listed members, and every `context` member is one the context reference lists. Members called on
locals are not checked (that needs type inference).
"""

from __future__ import annotations

import re

import pytest
from apim_files import Expression, expressions, policy_files

# From "API Management policy expressions", section ".NET Framework types allowed in policy
# expressions": type -> members ("All" when every member is allowed). Only the part these policies
# could plausibly use is kept; anything else is refused by the test.
ALLOWED_TYPES: dict[str, set[str] | str] = {
    "Newtonsoft.Json.Formatting": "All",
    "Newtonsoft.Json.JsonConvert": {"SerializeObject", "DeserializeObject"},
    "Newtonsoft.Json.Linq.JArray": "All",
    "Newtonsoft.Json.Linq.JObject": "All",
    "Newtonsoft.Json.Linq.JProperty": "All",
    "Newtonsoft.Json.Linq.JToken": "All",
    "Newtonsoft.Json.Linq.JTokenType": "All",
    "Newtonsoft.Json.Linq.JValue": "All",
    "System.Array": "All",
    "System.Boolean": "All",
    "System.Collections.Generic.Dictionary": "All",
    "System.Collections.Generic.HashSet": "All",
    "System.Collections.Generic.IEnumerable": "All",
    "System.Collections.Generic.List": "All",
    "System.Convert": "All",
    "System.DateTime": {"UtcNow", "Now", "Parse", "ToString", "AddSeconds"},
    "System.Double": "All",
    "System.Exception": "All",
    "System.Guid": "All",
    "System.Int32": "All",
    "System.Int64": "All",
    "System.Linq.Enumerable": "All",
    "System.Math": "All",
    "System.Net.WebUtility": "All",
    "System.String": "All",
    "System.StringComparison": "All",
    "System.StringSplitOptions": "All",
    "System.Text.Encoding": "All",
    "System.Text.RegularExpressions.Regex": {"IsMatch", "Match", "Matches", "Replace", "Unescape", "Split"},
    "System.Text.StringBuilder": "All",
    "System.TimeSpan": "All",
    "System.Uri": "All",
}
# The context types the same page documents (context.Response, a send-request response, a Jwt).
CONTEXT_TYPES = {"IResponse", "Jwt"}
CONTEXT_MEMBERS: dict[str, set[str]] = {
    "context": {
        "Api",
        "Product",
        "Request",
        "RequestId",
        "Response",
        "Subscription",
        "Variables",
        "User",
        "Operation",
    },
    "Api": {"Id", "Name", "Path", "Revision", "Version"},
    "Product": {"Id", "Name"},
    "Subscription": {"Id", "Name", "Key"},
    "Request": {"Body", "Headers", "Method", "Url", "IpAddress"},
    "Response": {"Body", "Headers", "StatusCode", "StatusReason"},
    "Body": {"As"},
    "Headers": {"GetValueOrDefault", "TryGetValue", "ContainsKey"},
    "Variables": {"GetValueOrDefault", "TryGetValue", "ContainsKey"},
    "RequestId": {"ToString"},
}
KEYWORDS = {
    "as", "bool", "break", "catch", "continue", "double", "else", "false", "for", "foreach", "if", "in",
    "int", "is", "new", "null", "object", "out", "return", "string", "true", "try", "var", "while",
    "preserveContent",
}  # fmt: skip
ALIASES = {"string": "String", "int": "Int32", "double": "Double", "bool": "Boolean"}
SHORT = {name.rsplit(".", 1)[1]: name for name in ALLOWED_TYPES}

ALL = [expression for path in policy_files() for expression in expressions(path)]


def without_literals(code: str) -> str:
    """The code with every string and char literal emptied (so brackets inside them do not count)."""
    out, i = [], 0
    while i < len(code):
        char = code[i]
        if code.startswith('@"', i):
            end = i + 2
            while True:
                end = code.index('"', end)
                if code.startswith('""', end):
                    end += 2
                    continue
                break
            out.append('""')
            i = end + 1
        elif char == '"' or char == "'":
            end = i + 1
            while code[end] != char:
                end += 2 if code[end] == "\\" else 1
            out.append(char * 2)
            i = end + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def body(expression: Expression) -> str:
    return without_literals(expression.code)[2:-1]


def ids(expression: Expression) -> str:
    return f"{expression.path.name}:{expression.where}"


@pytest.mark.parametrize("expression", ALL, ids=ids)
def test_brackets_and_literals_balance(expression: Expression) -> None:
    code = without_literals(expression.code)
    closing = {")": "(", "}": "{", "]": "["}
    stack: list[str] = []
    for char in code[1:]:
        if char in "({[":
            stack.append(char)
        elif char in closing:
            assert stack and stack.pop() == closing[char], code
    assert stack == [], code
    opener, closer = code[1], code[-1]
    assert (opener, closer) in {("(", ")"), ("{", "}")}, "one expression fills the whole value"


@pytest.mark.parametrize("expression", ALL, ids=ids)
def test_expressions_have_the_shape_apim_compiles(expression: Expression) -> None:
    code = body(expression)
    if expression.multi_statement:
        assert re.search(r"\breturn\b", code), "every path of a multi-statement expression returns"
        assert code.rstrip().endswith("}") or code.rstrip().endswith(";")
    else:
        assert ";" not in code, "a single-statement expression is one C# expression"


def declared_locals(code: str) -> set[str]:
    declarations = re.findall(
        r"\b(?:var|string|int|double|bool|object|[A-Z]\w*(?:<\w+>)?)(?:\[\])?\s+([a-z]\w*)\s*(?:=|;|\bin\b)",
        code,
    )
    lambdas = re.findall(r"\b([a-z]\w*)\s*=>", code)
    outs = re.findall(r"\bout\s+([a-z]\w*)", code)
    return {*declarations, *lambdas, *outs}


def chains(code: str) -> list[list[str]]:
    """Dotted identifier chains (``a.b?.c``), each starting at an identifier not after a dot."""
    found = []
    for match in re.finditer(r"(?<![\w.?])[A-Za-z_]\w*(?:\s*\??\.\s*[A-Za-z_]\w*)*", code):
        found.append(re.split(r"\s*\??\.\s*", match.group(0)))
    return found


def resolve(chain: list[str]) -> tuple[str, list[str]] | None:
    """The allowed type a chain starts with (short or full name) and the members after it."""
    for length in range(len(chain), 0, -1):
        name = ".".join(chain[:length])
        if name in ALLOWED_TYPES:
            return name, chain[length:]
    if chain[0] in SHORT:
        return SHORT[chain[0]], chain[1:]
    if chain[0] in ALIASES:
        return SHORT[ALIASES[chain[0]]], chain[1:]
    return None


@pytest.mark.parametrize("expression", ALL, ids=ids)
def test_only_allowed_types_and_members_are_used(expression: Expression) -> None:
    code = body(expression)
    local = declared_locals(code)
    named_types = re.findall(r"\bnew\s+([A-Z][\w.]*)", code)
    named_types += re.findall(r"<([A-Z]\w*)>", code)
    named_types += re.findall(r"\(\(?([A-Z]\w*)\)\s*[\w(]", code)
    named_types += re.findall(r"\bcatch\s*\(\s*([A-Z]\w*)", code)
    named_types += re.findall(r"\bis\s+([A-Z]\w*)", code)
    named_types += re.findall(r"\bas\s+([A-Z]\w*)", code)
    for name in named_types:
        assert name in SHORT or name in ALLOWED_TYPES or name in CONTEXT_TYPES, f"type {name} is not allowed"
    for chain in chains(code):
        head = chain[0]
        if head in KEYWORDS - set(ALIASES) or head in local:
            continue
        if head == "context":
            parent = "context"
            for member in chain[1:]:
                assert member in CONTEXT_MEMBERS.get(parent, set()), f"context member {parent}.{member}"
                parent = member
                if member not in CONTEXT_MEMBERS:
                    break
            continue
        if head in CONTEXT_TYPES:
            continue
        resolved = resolve(chain)
        assert resolved, f"{'.'.join(chain)}: neither a local, a keyword, context nor an allowed type"
        name, members = resolved
        allowed = ALLOWED_TYPES[name]
        if members and allowed != "All":
            assert members[0] in allowed, f"{name}.{members[0]} is not an allowed member"


def test_the_checker_refuses_what_apim_refuses() -> None:
    """The checks above are not vacuous: a disallowed type, member, context member or local fails."""
    cases = {
        '@(System.IO.File.ReadAllText("x"))': "neither a local",
        '@(Regex.Escape("x"))': "not an allowed member",
        "@(context.Deployment.Region)": "context member",
        "@(undeclared.Length)": "neither a local",
        "@(new WebClient())": "type WebClient",
    }
    for code, message in cases.items():
        with pytest.raises(AssertionError, match=message):
            test_only_allowed_types_and_members_are_used(Expression(policy_files()[0], "test", code))


def test_every_policy_has_expressions_to_check() -> None:
    assert {expression.path.name for expression in ALL} >= {"astrocyte-recall.xml", "astrocyte-retain.xml"}
    assert len(ALL) >= 20


@pytest.mark.parametrize("expression", ALL, ids=ids)
def test_no_line_comment_can_swallow_code(expression: Expression) -> None:
    """XML turns the new lines of an attribute into spaces, so a `//` comment would run to the end."""
    assert "//" not in without_literals(expression.code), "use an XML comment beside the policy"
