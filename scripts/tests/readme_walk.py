"""Walk a README as a newcomer would: run its commands in order and see that they work as written.

Every fenced `sh`, `bash`, `shell` or `python` block in a README says what a reader does with it,
in an HTML comment on the line before it (invisible on GitHub):

    <!-- readme-check: run -->                          run it; it must exit 0
    <!-- readme-check: run expect="stored" -->          ...and its output must match the regex
    <!-- readme-check: run expect="lag 0" retry=30 -->   ...within 30 s of running it again and again
    <!-- readme-check: background ready=URL -->         start it (a server) and wait for URL to answer 2xx
    <!-- readme-check: file path=astrocyte.yaml -->     (any block) the reader saves it as this file
    <!-- readme-check: skip needs an Azure subscription -->   not run here, and why

A `sub="OLD=>NEW"` key (repeatable) replaces text a reader fills in (a placeholder, a host of
their own) before the block runs; `$NAME` in NEW is taken from the walk's environment. A shell or
python block with no comment is an error, so a new command in a README is either checked or
excused in writing. Blocks run with bash (`set -euo pipefail`) or the walk's python from the
checkout's root, each in a fresh shell: a block that sets a variable for later ones exports it in
its own text, as a reader's terminal would keep it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from checkout import stop

CHECKED_LANGUAGES = {"sh", "bash", "shell", "python"}
ACTIONS = {"run", "background", "file", "skip"}
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
_NOTE = re.compile(r"<!--\s*readme-check:\s*(?P<spec>.*?)\s*-->\s*$", re.S)


class WalkError(AssertionError):
    """A README block that is unannotated, badly annotated, or does not work as written."""


@dataclass(frozen=True)
class Step:
    readme: Path
    line: int
    language: str
    body: str
    action: str
    options: dict[str, str] = field(default_factory=dict)
    subs: tuple[tuple[str, str], ...] = ()
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.readme}:{self.line}"


def parse(readme: Path, text: str | None = None) -> list[Step]:
    """The README's blocks in order, each with what the reader does with it."""
    text = readme.read_text() if text is None else text
    steps: list[Step] = []
    for fence in _FENCE.finditer(text):
        line = text.count("\n", 0, fence.start()) + 1
        language = fence["lang"].lower()
        before = text[: fence.start()].rstrip().rsplit("\n", 1)[-1]
        note = _NOTE.search(before)
        if note is None:
            if language in CHECKED_LANGUAGES:
                raise WalkError(
                    f"{readme}:{line}: a {language} block without a <!-- readme-check: ... --> comment "
                    "(run, background, file or skip with a reason)"
                )
            continue
        body = _dedent(fence["body"], len(fence["indent"]))
        steps.append(_step(readme, line, language, body, note["spec"]))
    return steps


def _dedent(body: str, indent: int) -> str:
    return "".join(row[indent:] if row[:indent].strip() == "" else row for row in body.splitlines(True))


def _step(readme: Path, line: int, language: str, body: str, spec: str) -> Step:
    action, _, rest = spec.partition(" ")
    where = f"{readme}:{line}"
    if action not in ACTIONS:
        raise WalkError(f"{where}: unknown readme-check action {action!r} (one of {sorted(ACTIONS)})")
    if action == "skip":
        if not rest.strip():
            raise WalkError(f"{where}: a skipped block must say why")
        return Step(readme, line, language, body, action, reason=rest.strip())
    options: dict[str, str] = {}
    subs: list[tuple[str, str]] = []
    for token in shlex.split(rest):
        key, sep, value = token.partition("=")
        if not sep:
            raise WalkError(f"{where}: readme-check option {token!r} is not key=value")
        if key == "sub":
            old, arrow, new = value.partition("=>")
            if not arrow or not old:
                raise WalkError(f"{where}: sub must be OLD=>NEW, got {value!r}")
            subs.append((old, new))
        else:
            options[key] = value
    required = {"background": "ready", "file": "path"}.get(action)
    if required and required not in options:
        raise WalkError(f"{where}: a {action} block needs {required}=...")
    if action in {"run", "background"} and language not in CHECKED_LANGUAGES:
        raise WalkError(f"{where}: cannot {action} a {language or 'plain'} block")
    return Step(readme, line, language, body, action, options, tuple(subs))


class Walk:
    """Runs one README's steps in ``root`` (a copy of the checkout) with ``env``; background
    processes live until :meth:`close`."""

    def __init__(self, root: Path, env: dict[str, str], log: Path, step_timeout: float = 600) -> None:
        self.root, self.env, self.log, self.step_timeout = root, env, log, step_timeout
        self.background: list[subprocess.Popen[bytes]] = []
        self.skipped: list[Step] = []

    def __enter__(self) -> Walk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, steps: list[Step]) -> None:
        for step in steps:
            getattr(self, f"_{step.action}")(step)

    def _text(self, step: Step) -> str:
        body = step.body
        for old, new in step.subs:
            if old not in body:
                raise WalkError(f"{step.where}: sub target {old!r} is not in the block")
            body = body.replace(old, _expand(new, self.env))
        return body

    def _command(self, step: Step) -> list[str]:
        script = self.log.parent / f"step-{step.line}.{'py' if step.language == 'python' else 'sh'}"
        script.write_text(self._text(step))
        if step.language == "python":
            return ["python", str(script)]
        return ["bash", "-euo", "pipefail", str(script)]

    def _file(self, step: Step) -> None:
        target = self.root / step.options["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self._text(step))

    def _skip(self, step: Step) -> None:
        self.skipped.append(step)

    def _run(self, step: Step) -> None:
        """Run the block; with ``retry``, again once a second until it works or that many seconds
        are up (what a reader does waiting for a worker to catch up)."""
        deadline = time.monotonic() + float(step.options.get("retry", 0))
        while True:
            problem = self._attempt(step)
            if problem is None:
                return
            if time.monotonic() >= deadline:
                raise WalkError(f"{step.where}: {problem}")
            time.sleep(1)

    def _attempt(self, step: Step) -> str | None:
        try:
            done = subprocess.run(
                self._command(step),
                cwd=self.root,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=float(step.options.get("timeout", self.step_timeout)),
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            return f"still running after {exc.timeout} s\n{self._tail()}"
        output = done.stdout + done.stderr
        with self.log.open("a") as log:
            log.write(f"\n### {step.where} (exit {done.returncode})\n{output}")
        if done.returncode != 0:
            return f"exit {done.returncode}\n{_last(output)}\n{self._tail()}"
        expect = step.options.get("expect")
        if expect and not re.search(expect, output, re.M):
            return f"output does not match {expect!r}:\n{_last(output)}"
        return None

    def _background(self, step: Step) -> None:
        out = (self.log.parent / f"background-{step.line}.log").open("ab")
        process = subprocess.Popen(
            self._command(step), cwd=self.root, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.background.append(process)
        url = _expand(step.options["ready"], self.env)
        deadline = time.monotonic() + float(step.options.get("timeout", self.step_timeout))
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise WalkError(
                    f"{step.where}: exited {process.returncode} before {url} answered\n{self._tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if 200 <= response.status < 300:
                        return
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.25)
        raise WalkError(f"{step.where}: {url} did not answer within the time allowed\n{self._tail()}")

    def _tail(self) -> str:
        logs = sorted(self.log.parent.glob("background-*.log"))
        return "".join(f"--- {path.name}:\n{_last(path.read_text(errors='replace'))}\n" for path in logs)

    def close(self) -> None:
        for process in reversed(self.background):
            stop(process)
        self.background.clear()


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda match: env.get(match[1], match[0]), value)


def _last(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
