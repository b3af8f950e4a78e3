"""The GitHub issues poll driver (entry point ``github`` in ``astrocyte.ingest_poll_drivers``).

Every ``interval_seconds`` the driver syncs each configured repository it holds the lease of
(:mod:`astrocyte_ingestion_github.sync`). Leases live in the engine's store (one per repository,
``lease_seconds`` long, renewed every third of that by a keeper task), so of several replicas
running the same source exactly one polls a repository, and another takes over once the holder
has been gone for a lease time. A stopping driver releases its leases at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from astrocyte.ingest.driver import DriverHealth, DriverState, validate_model
from astrocyte.ingest.sink import Sink
from astrocyte.ingest.state import SourceState

from astrocyte_ingestion_github.app_auth import InstallationTokens
from astrocyte_ingestion_github.client import GitHubClient, GitHubError, TransportDown
from astrocyte_ingestion_github.config import GitHubSourceConfig
from astrocyte_ingestion_github.mapping import Repo
from astrocyte_ingestion_github.sync import LeaseLost, RepoSync

log = logging.getLogger("astrocyte_ingestion_github")


class _Stopped(Exception):
    """The driver is stopping: leave whatever wait was in progress."""


class GitHubIssuesDriver:
    """Polls GitHub issues, pull requests and comments into an Astrocyte sink."""

    source_type: ClassVar[Literal["stream", "poll"]] = "poll"

    def __init__(
        self, source_id: str, config: GitHubSourceConfig, *, sink: Sink, state: SourceState | None = None
    ) -> None:
        self.source_id = source_id
        self.config = config
        self.sink = sink
        self.state = state or SourceState.for_sink(sink, source_id)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = asyncio.Event()
        self._client = GitHubClient(
            config.api_url,
            config.resolved_token(),
            ca_bundle=config.ca_bundle,
            timeout=config.request_timeout_seconds,
            user_agent=config.user_agent,
            max_wait=config.max_retry_seconds,
            sleep=self._sleep,
            on_down=self._down,
            app_tokens=InstallationTokens(config.app, config.api_url) if config.app else None,
        )
        self.repos = [Repo.parse(name) for name in config.repositories]
        self.syncs = {
            repo.full_name: RepoSync(
                repo,
                config,
                self._client,
                sink,
                self.state,
                sleep=self._sleep,
                still_held=functools.partial(self._holds, repo.full_name),
                on_trouble=self._down,
            )
            for repo in self.repos
        }
        self.held: set[str] = set()
        self._state: DriverState = "starting"
        self._detail: str | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._loop: asyncio.Task[None] | None = None

    @classmethod
    def validate_config(cls, mapping: Mapping[str, Any]) -> GitHubSourceConfig:
        """Validate the driver keys of a source; raises :class:`ConfigError` naming the bad key."""
        return validate_model(GitHubSourceConfig, mapping)

    @classmethod
    def contract_harness(cls) -> Any:
        """The core contract kit's harness: a local GitHub-API-compatible server (needs aiohttp,
        a test extra), or None when aiohttp is not installed."""
        try:
            from astrocyte_ingestion_github.testing import GitHubHarness
        except ImportError:
            return None
        return GitHubHarness()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Poll until :meth:`stop`."""
        self._keeper = asyncio.create_task(self._keep_leases())
        self._loop = asyncio.create_task(self._run())
        try:
            await asyncio.shield(self._loop)  # stop() decides when the loop ends, not our caller
        except asyncio.CancelledError:
            if self._stopping.is_set() and self._loop.cancelled():
                return  # stop() abandoned a page at its deadline: a normal end
            self._loop.cancel()
            self._keeper.cancel()
            raise
        finally:
            self._state = "stopped"

    async def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                await self._poll_held()
                await self._sleep(self.config.interval_seconds)
        except _Stopped:
            pass

    async def stop(self, deadline: float) -> None:
        """Stop polling; a page being settled finishes (and its cursor is saved) within
        ``deadline``, else it is abandoned unsaved (read again next time); then the leases are
        released."""
        self._stopping.set()
        for task in (self._loop, self._keeper):
            if task is None:
                continue
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(
                    asyncio.shield(task), timeout=max(0.0, deadline) if task is self._loop else 0
                )
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for name in list(self.held):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.state.release(_lease_name(name), self.holder), max(0.1, deadline))
        self.held.clear()
        await self._client.close()
        self._state = "stopped"

    async def health(self) -> DriverHealth:
        detail = self._detail
        if self._state == "running" and not self.held:
            detail = "standby: another replica holds the lease of every repository"
        return DriverHealth(self._state, detail=detail)

    # -- polling ---------------------------------------------------------------------------------

    async def poll_once(self) -> None:
        """One pass over every repository whose lease this replica takes (tests, one-shot jobs)."""
        await self._poll_held()

    async def _poll_held(self) -> None:
        await self._renew()
        for repo in self.repos:
            if self._stopping.is_set():
                return
            if repo.full_name not in self.held:
                continue
            try:
                await self.syncs[repo.full_name].poll()
            except LeaseLost:
                log.info("lease of %s lost to another replica", repo.full_name)
                continue
            except GitHubError as exc:
                # A token without access or a missing repository: say so, keep polling the others.
                self._state, self._detail = "degraded", f"{repo.full_name}: {exc}"
                continue
            except TransportDown as exc:
                self._down(str(exc))
                continue
            self._state, self._detail = "running", None
        if self._state == "starting":
            self._state = "running"

    async def _keep_leases(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self.config.lease_seconds / 3)
            with contextlib.suppress(Exception):
                await self._renew()

    async def _renew(self) -> None:
        """Take or renew the lease of every repository; a store error counts as not holding."""
        for repo in self.repos:
            try:
                held = await self.state.lease(
                    _lease_name(repo.full_name), self.holder, self.config.lease_seconds
                )
            except Exception as exc:  # the store is down: never poll without a lease
                held = False
                self._state, self._detail = "degraded", f"lease store: {type(exc).__name__}"
            if held:
                self.held.add(repo.full_name)
            else:
                self.held.discard(repo.full_name)

    def _holds(self, repo: str) -> bool:
        return repo in self.held and not self._stopping.is_set()

    def _down(self, why: str) -> None:
        if not self._stopping.is_set():
            self._state, self._detail = "degraded", why

    async def _sleep(self, seconds: float) -> None:
        """Sleep, or raise :class:`_Stopped` as soon as the driver is stopping."""
        if self._stopping.is_set():
            raise _Stopped
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, seconds))
        if self._stopping.is_set():
            raise _Stopped


def _lease_name(repo: str) -> str:
    return f"repo:{repo}"
