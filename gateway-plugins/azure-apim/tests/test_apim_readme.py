"""The README walkthrough: what it names exists, and each path defines every variable before use."""

from __future__ import annotations

import re

import pytest
from apim_files import API_POLICY, PLUGIN, RECALL, REPO, RETAIN, used_named_values

README = (PLUGIN / "README.md").read_text()
SCRIPT = (PLUGIN / "deploy" / "deploy.sh").read_text()
CHECK = (PLUGIN / "examples" / "check_memory.py").read_text()
SHELL_DEFAULTS = {"HOME", "PATH", "PWD", "RANDOM"}
USER_FILES = {"astrocyte.yaml"}  # the gateway's own configuration, which the operator writes


def section(title: str) -> str:
    """The text under a heading, up to the next heading of the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(title)}\n", README, re.MULTILINE)
    assert match, title
    level = len(match.group(1))
    rest = README[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def bash_blocks(text: str) -> list[str]:
    blocks = re.findall(r"^( *)```bash\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL)
    return [re.sub(rf"^{indent}", "", block, flags=re.MULTILINE) for indent, block in blocks]


def without_heredocs(block: str) -> str:
    return re.sub(r"<<'(\w+)'.*?^\1$", "", block, flags=re.MULTILINE | re.DOTALL)


def assigned(block: str) -> set[str]:
    names = set(re.findall(r"(?:^|[\s;(])(?:export\s+)?([A-Z][A-Z0-9_]*)=", block, re.MULTILINE))
    for exports in re.findall(r"^export ((?:[A-Z][A-Z0-9_]*=\S+\s*)+)", block, re.MULTILINE):
        names |= set(re.findall(r"([A-Z][A-Z0-9_]*)=", exports))
    return names


def referenced(block: str) -> list[str]:
    return re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", without_heredocs(block))


def required_by_script(tool: str) -> set[str]:
    names = set(re.findall(r"^need ([A-Z_ ]+)$", SCRIPT, re.MULTILINE)[0].split())
    branch = re.search(rf"^{tool}\)\n(.*?)^  ;;", SCRIPT, re.MULTILINE | re.DOTALL)
    assert branch, tool
    for line in re.findall(r"^\s+need ([A-Z_ ]+)$", branch.group(1), re.MULTILINE):
        names |= set(line.split())
    return names | {"MODEL_API_KEY", "ASTROCYTE_API_KEY"}


WALKTHROUGHS = ["With Bicep", "With Terraform", "With APIOps"]


@pytest.mark.parametrize("tool_section", WALKTHROUGHS)
def test_each_walkthrough_defines_every_variable_before_it_is_used(tool_section: str) -> None:
    steps = bash_blocks(section("Before you start (all three tools)"))
    steps += bash_blocks(section(tool_section)) + bash_blocks(section("Check that it works"))
    assert len(steps) >= 6
    known = set(SHELL_DEFAULTS)
    for block in steps:
        for line in without_heredocs(block).splitlines():
            for name in referenced(line):
                assert name in known or name in assigned(line), (
                    f"{tool_section}: ${name} used before it is set"
                )
            known |= assigned(line)
        if "deploy.sh" in block:
            tool = re.search(r"deploy\.sh (\w+)", block)
            assert tool
            missing = required_by_script(tool.group(1)) - known
            assert not missing, f"{tool_section}: deploy.sh {tool.group(1)} needs {missing}"
    needed = set(re.findall(r'os\.environ\["([A-Z_]+)"\]', CHECK))
    assert needed == {"CHAT_BASE_URL", "APIM_SUBSCRIPTION_KEY", "MODEL"}
    assert needed <= known, f"{tool_section}: check_memory.py needs {needed - known}"


@pytest.mark.parametrize("tool_section", WALKTHROUGHS)
def test_each_walkthrough_deploys_with_its_tool_and_fetches_a_subscription_key(tool_section: str) -> None:
    blocks = "\n".join(bash_blocks(section(tool_section)))
    tool = tool_section.split()[-1].lower()
    assert f"gateway-plugins/azure-apim/deploy/deploy.sh {tool}" in blocks
    assert "export APIM_SUBSCRIPTION_KEY=" in blocks


def test_the_walkthrough_starts_from_an_empty_resource_group() -> None:
    first = bash_blocks(section("Before you start (all three tools)"))[0]
    assert "az login" in first and 'az group create --name "$RESOURCE_GROUP"' in first


def test_no_walkthrough_command_carries_a_secret() -> None:
    for block in bash_blocks(README):
        for line in without_heredocs(block).splitlines():
            for secret in ("ASTROCYTE_API_KEY", "MODEL_API_KEY", "APIM_SUBSCRIPTION_KEY"):
                if f"${secret}" in line or f"${{{secret}}}" in line:
                    pytest.fail(f"a command line would show {secret}: {line}")


def test_every_file_the_readme_names_exists() -> None:
    named = set(
        re.findall(
            r"`((?:gateway-plugins/azure-apim/|docs/)?[\w./-]+\.(?:xml|bicep|tf|json|yaml|sh|py|md|example))`",
            README,
        )
    )
    named |= set(
        re.findall(r"`((?:policy-fragments|api-policy|deploy|apiops|examples|tests)/[\w./-]*)`", README)
    )
    assert len(named) >= 12
    for name in named - USER_FILES:
        if "/" not in name:  # a file name the README uses generically, e.g. policy.xml
            assert next(PLUGIN.rglob(name), None), name
            continue
        candidates = [
            REPO / name,
            PLUGIN / name,
            PLUGIN / "deploy" / "terraform" / name,
            PLUGIN / "deploy" / "bicep" / name,
        ]
        assert any(path.exists() for path in candidates), name


def test_the_named_value_table_lists_exactly_the_named_values_used() -> None:
    table = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section("Named values"), re.MULTILINE))
    assert table == used_named_values([RECALL, RETAIN, API_POLICY])


def test_the_readme_covers_what_the_issue_asks_for() -> None:
    for heading in ("What the fragments do", "Attaching the fragments to your own API", "Failure behaviour",
                    "Streaming limitation", "Deploy from an empty resource group"):  # fmt: skip
        assert section(heading).strip(), heading
    headers = section("What the fragments do")
    for value in ("hit", "miss", "skipped", "error", "queued", "skipped-streamed"):
        assert f"`{value}`" in headers, value
