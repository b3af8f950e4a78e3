"""Astrocyte: long-term memory for AI agents.

from astrocyte import Astrocyte, AstrocyteContext

async with Astrocyte.from_config("astrocyte.yaml") as brain:
    await brain.retain("Alice prefers tea", bank_id="user:alice")
    result = await brain.recall("what does Alice drink?", bank_id="user:alice")
"""

from typing import TYPE_CHECKING

from astrocyte.errors import AstrocyteError
from astrocyte.types import (
    AstrocyteContext,
    BankStats,
    ForgetResult,
    HealthReport,
    MemoryHit,
    RecallResult,
    ReflectResult,
    RetainResult,
)

if TYPE_CHECKING:
    from astrocyte.brain import Astrocyte

__version__ = "0.1.0"

__all__ = [
    "Astrocyte",
    "AstrocyteContext",
    "AstrocyteError",
    "BankStats",
    "ForgetResult",
    "HealthReport",
    "MemoryHit",
    "RecallResult",
    "ReflectResult",
    "RetainResult",
]


def __getattr__(name: str) -> object:  # lazy: keeps `import astrocyte` light
    if name == "Astrocyte":
        from astrocyte.brain import Astrocyte

        return Astrocyte
    raise AttributeError(name)
