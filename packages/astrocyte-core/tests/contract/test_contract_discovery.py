"""Runs the store contract kit against every store installed in the ``astrocyte.stores``
entry-point group, third-party ones included.

A store supplies its test configuration through the ``contract_config`` classmethod (and may
clean up with ``contract_cleanup``); see :mod:`astrocyte.testing.store_contract`. A store that is
installed but cannot be imported, or whose config needs a service that is not configured, skips
locally and fails under ``CI``; a store without the hook fails
``test_store_supplies_a_contract_config``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pytest
from astrocyte.providers import STORES, Store
from astrocyte.testing._helpers import missing_service
from astrocyte.testing.store_contract import StoreContract


def _installed_stores() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in sorted(entry_points(group=STORES), key=lambda ep: ep.name)}


INSTALLED = _installed_stores()


def _load(name: str) -> type[Any]:
    try:
        return INSTALLED[name].load()  # type: ignore[no-any-return]
    except ImportError as exc:
        missing_service(f"store {name!r} is installed but cannot be imported ({exc}); missing extra?")


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@pytest.mark.parametrize("name", list(INSTALLED))
def test_store_supplies_a_contract_config(name: str) -> None:
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
    hook = getattr(cls, "contract_config", None)
    if not callable(hook):
        pytest.skip(f"store {name!r} has no contract_config hook (reported by its own test)")
    config = await _maybe_await(hook(tmp_path_factory.mktemp(f"store-{name}")))
    if config is None:
        missing_service(f"store {name!r} needs a service that is not configured here")
    yield cls, config
    cleanup = getattr(cls, "contract_cleanup", None)
    if callable(cleanup):
        await _maybe_await(cleanup(config))


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
