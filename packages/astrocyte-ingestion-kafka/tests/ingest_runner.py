"""Test-only: a real consumer process. Runs the core's ingest supervisor (with the ``kafka`` driver
found by entry point) over an engine on a SQLite file until SIGTERM, then drains and exits.

    python ingest_runner.py CONFIG.json

The JSON holds an engine config mapping under ``engine`` and the ``sources`` section under
``sources``. The chaos tests SIGKILL this process to prove nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from astrocyte.brain import Astrocyte
from astrocyte.ingest.supervisor import IngestSupervisor, RestartPolicy
from prometheus_client import CollectorRegistry


async def run(config: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with Astrocyte.from_dict(config["engine"]) as brain:
        supervisor = IngestSupervisor.from_mapping(
            brain,
            config["sources"],
            restart=RestartPolicy(initial_delay=0.2, max_delay=2.0),
            poll_interval=0.5,
            registry=CollectorRegistry(),
        )
        await supervisor.start()
        print("ready", flush=True)
        await stop.wait()
        await supervisor.stop(deadline=10.0)
        print(json.dumps(supervisor.health().to_dict(), default=str), flush=True)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("astrocyte_ingestion_kafka").setLevel(logging.INFO)
    asyncio.run(run(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
