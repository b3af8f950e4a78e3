"""Every README's commands, run in order in a fresh copy of this checkout, work as written.

Each README is walked in its own copy of the checkout with its own new venv activated (so its
`pip install` lines install where a reader's would), the test services' environment
(`scripts/services env`) and nothing else of this checkout's state. What a block means for the
walk is written next to it in the README (see `readme_walk`); blocks that need what cannot run
here (an Azure subscription, a Kong node) say so there, and are listed in the test's output.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from checkout import REPO, copy_checkout, outside_nox
from readme_walk import Walk, WalkError, parse

READMES = sorted(
    Path(os.fsdecode(raw))
    for raw in subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "*README.md"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    if raw and not raw.startswith(b"scripts/tests/")
)


def walk_env(tmp: Path) -> dict[str, str]:
    """This environment with a new venv activated in place of nox's, as a reader's shell would be."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = outside_nox()
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != Path(sys.executable).parent]
    # A Kafka operator has the distribution's bin/ on PATH; scripts/services writes the same tools.
    kafka_bin = env.get("ASTROCYTE_TEST_KAFKA_BIN")
    if kafka_bin:
        path.append(kafka_bin)
    elif os.environ.get("CI"):
        pytest.fail(
            "ASTROCYTE_TEST_KAFKA_BIN is not set: run under scripts/test (or scripts/services up kafka)"
        )
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), *path]),
        VIRTUAL_ENV=str(venv),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONDONTWRITEBYTECODE="1",
        WALK_ID=uuid.uuid4().hex[:8],  # for names on the shared test services (a Kafka topic)
        WALK_SECRET=secrets.token_urlsafe(32),  # where a README says "<long random key>"
    )
    return env


def test_every_readme_is_found() -> None:
    assert Path("README.md") in READMES
    assert len(READMES) >= 9, READMES


def _param(readme: Path) -> object:
    """Walks that serve on the same fixed port (the READMEs' 127.0.0.1:8080) share an xdist group,
    so they never run at once."""
    fixed = "127.0.0.1:8080" in (REPO / readme).read_text()
    return pytest.param(readme, marks=[pytest.mark.xdist_group("port-8080")] if fixed else [], id=str(readme))


@pytest.mark.parametrize("readme", [_param(readme) for readme in READMES])
@pytest.mark.timeout(900)
def test_readme_works_as_written(readme: Path, tmp_path: Path) -> None:
    steps = parse(readme, (REPO / readme).read_text())
    if not any(step.action in {"run", "background"} for step in steps):
        return  # nothing to run: parse() already refused any shell block without a verdict
    root = copy_checkout(tmp_path / "repo")
    with Walk(root, walk_env(tmp_path), tmp_path / "walk.log") as walk:
        walk.run(steps)
    for step in walk.skipped:
        print(f"not run here: {step.where}: {step.reason}")


# The walker itself: a README it cannot check, or one that does not work, fails with its place.


def _walk(tmp_path: Path, text: str, **env: str) -> Walk:
    readme = tmp_path / "README.md"
    readme.write_text(text)
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    walk = Walk(root, dict(os.environ, **env), tmp_path / "walk.log", step_timeout=30)
    try:
        walk.run(parse(readme))
    finally:
        walk.close()
    return walk


def test_a_shell_block_without_a_verdict_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WalkError, match=r"README.md:3: a sh block without"):
        _walk(tmp_path, "# x\n\n```sh\necho hi\n```\n")


def test_a_skip_must_say_why(tmp_path: Path) -> None:
    with pytest.raises(WalkError, match="must say why"):
        _walk(tmp_path, "<!-- readme-check: skip -->\n```bash\necho hi\n```\n")


def test_a_failing_command_fails_the_walk_at_its_line(tmp_path: Path) -> None:
    text = "<!-- readme-check: run -->\n```sh\ntrue\n```\n\n<!-- readme-check: run -->\n```sh\nfalse | cat\n```\n"
    with pytest.raises(WalkError, match=r"README.md:7: exit 1"):
        _walk(tmp_path, text)


def test_output_must_match_what_the_readme_promises(tmp_path: Path) -> None:
    text = '<!-- readme-check: run expect="stored" -->\n```sh\necho rejected\n```\n'
    with pytest.raises(WalkError, match="does not match 'stored'"):
        _walk(tmp_path, text)


def test_files_placeholders_and_indented_blocks_are_what_a_reader_uses(tmp_path: Path) -> None:
    text = (
        '1. Save this:\n\n   <!-- readme-check: file path=conf/a.yaml sub="<your key>=>$USER_KEY" -->\n'
        "   ```yaml\n   key: <your key>\n   ```\n\n"
        '   <!-- readme-check: run expect="^key: k-1" -->\n'
        "   ```bash\n   cat conf/a.yaml\n   ```\n"
    )
    walk = _walk(tmp_path, text, USER_KEY="k-1")
    assert (tmp_path / "root" / "conf" / "a.yaml").read_text() == "key: k-1\n"
    assert walk.skipped == []


def test_a_server_that_exits_before_it_answers_fails(tmp_path: Path) -> None:
    text = '<!-- readme-check: background ready=http://127.0.0.1:9/ -->\n```sh\necho "port in use" >&2; exit 2\n```\n'
    with pytest.raises(WalkError, match=r"(?s)exited 2 before .*port in use"):
        _walk(tmp_path, text)


def test_a_background_server_is_stopped_after_the_walk(tmp_path: Path) -> None:
    text = (
        "<!-- readme-check: background ready=http://127.0.0.1:$WALK_PORT/ -->\n"
        '```sh\nexec python3 -m http.server --bind 127.0.0.1 "$WALK_PORT"\n```\n'
        '<!-- readme-check: run expect="200" -->\n'
        "```sh\ncurl -s -o /dev/null -w '%{http_code}' \"http://127.0.0.1:$WALK_PORT/\"\n```\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    walk = _walk(tmp_path, text, WALK_PORT=str(port))
    assert walk.background == []
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the README's server outlived the walk"
