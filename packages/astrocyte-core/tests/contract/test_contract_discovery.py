"""Runs the store contract kit against every store installed in the ``astrocyte.stores``
entry-point group, third-party ones included.

A store supplies its test configuration through the ``contract_config`` classmethod (and may
clean up with ``contract_cleanup``); see :mod:`astrocyte.testing.store_contract`. A store that is
installed but cannot be imported, or whose config needs a service that is not configured, skips
locally and fails under ``CI``; a store without the hook fails
``test_installed_store_supplies_a_contract_config``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pytest
from astrocyte.providers import STORES, Store
from astrocyte.testing.store_contract import (
    StoreContract,
    contract_cleanup_for,
    contract_config_for,
    missing_service,
)


def _installed_stores() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in sorted(entry_points(group=STORES), key=lambda ep: ep.name)}


INSTALLED = _installed_stores()


def _load(name: str) -> type[Any]:
    try:
        return INSTALLED[name].load()  # type: ignore[no-any-return]
    except ImportError as exc:
        missing_service(f"store {name!r} is installed but cannot be imported ({exc}); missing extra?")


@pytest.mark.parametrize("name", list(INSTALLED))
def test_installed_store_supplies_a_contract_config(name: str) -> None:
    cls = _load(name)
    assert callable(getattr(cls, "contract_config", None)), (
        f"store {name!r} ({cls.__module__}.{cls.__qualname__}) has no `contract_config(tmp_path)` "
        "classmethod, so the contract kit cannot test it; see astrocyte.testing.store_contract"
    )


@pytest.fixture(scope="session", params=list(INSTALLED))
async def discovered(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[type[Any], Mapping[str, Any]]]:
    """(store class, store_config) for one installed store, shared by the session's checks."""
    name: str = request.param
    cls = _load(name)
    if not callable(getattr(cls, "contract_config", None)):
        pytest.skip(f"store {name!r} has no contract_config hook (reported by its own test)")
    config = await contract_config_for(cls, tmp_path_factory.mktemp(f"store-{name}"))
    yield cls, config
    await contract_cleanup_for(cls, config)


class TestDiscoveredStoreContract(StoreContract):
    @pytest.fixture
    async def store(self, discovered: tuple[type[Any], Mapping[str, Any]]) -> AsyncIterator[Store]:
        cls, config = discovered
        validate = getattr(cls, "validate_config", None)
        if callable(validate):
            validate(dict(config))
        store = cls(dict(config))
        await store.open()
        yield store
        await store.close()


# -- the hook machinery itself ---------------------------------------------------------------------


class _AsyncHooks:
    cleaned: list[Mapping[str, Any]] = []

    @classmethod
    async def contract_config(cls, tmp_path: Path) -> Mapping[str, Any]:
        return {"path": str(tmp_path / "db")}

    @classmethod
    async def contract_cleanup(cls, config: Mapping[str, Any]) -> None:
        cls.cleaned.append(config)


class _NeedsAService:
    @classmethod
    def contract_config(cls, tmp_path: Path) -> None:
        return None


async def test_async_hooks_are_awaited(tmp_path: Path) -> None:
    config = await contract_config_for(_AsyncHooks, tmp_path)
    assert config == {"path": str(tmp_path / "db")}
    await contract_cleanup_for(_AsyncHooks, config)
    assert _AsyncHooks.cleaned == [config]


async def test_a_store_without_the_hook_fails(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="contract_config"):
        await contract_config_for(object, tmp_path)


async def test_a_missing_service_skips_locally_and_fails_in_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        await contract_config_for(_NeedsAService, tmp_path)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        await contract_config_for(_NeedsAService, tmp_path)
