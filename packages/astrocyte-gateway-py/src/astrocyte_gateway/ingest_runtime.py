"""Run the ingest sources of ``astrocyte.yaml`` inside the gateway process, through the core's
supervisor (which restarts crashed drivers and reports per-source health)."""

from __future__ import annotations

from contextlib import AsyncExitStack

from astrocyte_gateway.runtime import GatewayRuntime


async def start_ingest(runtime: GatewayRuntime, stack: AsyncExitStack) -> None:
    """Start every configured source (none configured: nothing to do). Stopped with the stack."""
    brain = runtime.brain
    if brain is None or not brain.config.sources:
        return
    from astrocyte.ingest.supervisor import IngestSupervisor

    supervisor = IngestSupervisor.from_mapping(brain, brain.config.sources, registry=runtime.metrics.registry)
    await stack.enter_async_context(supervisor)
    runtime.supervisor = supervisor
    stack.callback(setattr, runtime, "supervisor", None)
