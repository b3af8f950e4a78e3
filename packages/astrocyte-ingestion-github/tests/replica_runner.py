"""One poller replica in a process of its own (the two-replica test starts two and SIGKILLs one).

Usage: python replica_runner.py '<engine config JSON>' '<driver config JSON>'
Prints "ready" once the driver runs; runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

from astrocyte import Astrocyte
from astrocyte.ingest.sink import IngestSink
from astrocyte_ingestion_github.driver import GitHubIssuesDriver


async def main(engine_config: dict, driver_config: dict) -> None:
    async with Astrocyte.from_dict(engine_config) as engine:
        sink = IngestSink(engine, source_id="github-replicas")
        driver = GitHubIssuesDriver(
            "github-replicas", GitHubIssuesDriver.validate_config(driver_config), sink=sink
        )
        task = asyncio.create_task(driver.start())
        print("ready", flush=True)
        await task


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), json.loads(sys.argv[2])))
