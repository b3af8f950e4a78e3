"""Development entry point: `nox` runs every session; `nox -l` lists them.

Each package is tested in its own venv holding only that package (and, for packages built on the
core, the core) with its test extras. That proves the dependency boundaries: an adapter that
imported the gateway would fail here.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _packages() -> dict[str, Path]:
    """Distribution name -> folder, for every package in `packages/`."""
    found = {}
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        name = tomllib.loads(pyproject.read_text())["project"]["name"]
        found[name] = pyproject.parent
    return found


PACKAGES = _packages()
CORE = PACKAGES["astrocyte-core"]


def _install_package(session: nox.Session, name: str) -> None:
    """Install one package with its test extras, plus the core when it builds on it."""
    folder = PACKAGES[name]
    targets = [f"{folder}[test]"]
    if name != "astrocyte-core":
        targets.insert(0, str(CORE))
    session.install(*targets)


def _pytest(session: nox.Session, folder: Path, target: Path, *args: str) -> None:
    """pytest on ``target`` with ``folder``'s pytest settings."""
    session.run(
        "python",
        "-m",
        "pytest",
        str(target),
        f"--rootdir={folder}",
        "-c",
        str(folder / "pyproject.toml"),
        "-p",
        "no:cacheprovider",
        "--timeout=600",
        "-ra",
        *args,
        *session.posargs,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )


@nox.session(python="3.11")
@nox.parametrize("package", list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """A package's own test suite, in a venv holding only that package."""
    _install_package(session, package)
    folder = PACKAGES[package]
    # Contract suites run once, in the `contracts` session, against everything installed together.
    _pytest(session, folder, folder / "tests", "--ignore", str(folder / "tests" / "contract"))


@nox.session(python="3.11")
def contracts(session: nox.Session) -> None:
    """Every installed store and ingest driver against the core's contract kits."""
    session.install(*(f"{folder}[test]" for folder in PACKAGES.values()))
    for folder in PACKAGES.values():
        if (folder / "tests" / "contract").is_dir():
            _pytest(session, folder, folder / "tests" / "contract")


PLUGINS = ROOT / "gateway-plugins"


def _tool(session: nox.Session, env_var: str, name: str) -> str:
    """A test tool from its ASTROCYTE_TEST_* variable (set by `scripts/services env`) or PATH."""
    found = os.environ.get(env_var) or shutil.which(name)
    if not found:
        session.error(f"{name} not found: run `scripts/services up` (it installs and checks it)")
    return found


@nox.session(python="3.11")
def plugins(session: nox.Session) -> None:
    """API-gateway plugin tests. Kong and APISIX: luacheck, busted, then end to end in real nginx
    (gateway-plugins/lua-shared/tests). Azure APIM: policy XML, named values, OpenAPI contract,
    deploy files."""
    with session.chdir(PLUGINS):
        session.run(_tool(session, "ASTROCYTE_TEST_LUACHECK_BIN", "luacheck"), ".", external=True)
    busted = _tool(session, "ASTROCYTE_TEST_BUSTED_BIN", "busted")
    for config in sorted(PLUGINS.glob("*/tests/.busted")):
        with session.chdir(config.parent):
            session.run(busted, external=True)
    session.install(
        "pytest>=8", "pytest-timeout>=2.3", "lxml>=5", "pycep-parser>=0.7", "python-hcl2>=7", "PyYAML>=6",
        "openai>=1.40",
    )  # fmt: skip
    # The APIM policies and the Lua plugins are run against a real gateway.
    session.install(str(CORE), str(PACKAGES["astrocyte-gateway-py"]))
    apim = PLUGINS / "azure-apim"
    session.run(
        "python", "-m", "pytest", str(apim / "tests"), f"--rootdir={apim}", "-p", "no:cacheprovider", "-ra",
        *session.posargs,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    lua_tests = PLUGINS / "lua-shared" / "tests"
    _pytest(session, lua_tests, lua_tests)


@nox.session(python="3.11")
def scripts(session: nox.Session) -> None:
    """The set-up scripts and the READMEs' commands, each run in a copy of this checkout."""
    session.install("pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5")
    session.run(
        "python",
        "-m",
        "pytest",
        str(ROOT / "scripts" / "tests"),
        f"--rootdir={ROOT / 'scripts'}",
        "-p",
        "no:cacheprovider",
        "--timeout=900",
        # Three at a time on two cores: the set-ups and walks mostly wait on PyPI; walks on the
        # same port share a group.
        "-n",
        "3",
        "--dist",
        "loadgroup",
        "-ra",
        *session.posargs,
    )


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff (lint and format) over the repository; mypy over every package's public code."""
    session.install(
        "ruff>=0.6", "mypy>=1.10", "types-PyYAML", *(f"{folder}[test]" for folder in PACKAGES.values())
    )
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", *(str(next((folder / "src").iterdir())) for folder in PACKAGES.values()))


@nox.session(python="3.11")
def build(session: nox.Session) -> None:
    """Build every wheel and sdist, then install each wheel alone in a clean venv and import it."""
    session.install("build>=1.2", "uv>=0.4")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)  # a stale wheel of an older version must not be tested
    for name, folder in PACKAGES.items():
        out = dist / name
        session.run("python", "-m", "build", "--installer", "uv", "--outdir", str(out), str(folder))
        _check_wheel_alone(session, name, out)


def _check_wheel_alone(session: nox.Session, name: str, out: Path) -> None:
    wheel = next(out.glob("*.whl"))
    venv = Path(session.create_tmp()) / f"alone-{name}"
    session.run("uv", "venv", "--quiet", "--clear", "--python", "3.11", str(venv))
    python = str(venv / "bin" / "python")
    # A package built on the core may pull the core only from the wheel built here, never PyPI.
    core_wheel = next((ROOT / "dist" / "astrocyte-core").glob("*.whl"))
    extra = [] if name == "astrocyte-core" else [str(core_wheel)]
    session.run("uv", "pip", "install", "--quiet", "--python", python, str(wheel), *extra)
    module = _import_name(name)
    session.run(python, "-c", f"import {module}; print({module}.__name__, 'imports alone')")


def _import_name(dist_name: str) -> str:
    special = {"astrocyte-core": "astrocyte", "astrocyte-gateway-py": "astrocyte_gateway"}
    return special.get(dist_name, dist_name.replace("-", "_"))
