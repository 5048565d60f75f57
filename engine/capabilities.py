"""The engine's store of what the endpoint can do: one `Capabilities` record, loaded from and persisted to
the checkpoint (meta `capabilities`, in the record's stored form), told new facts by the workers."""

from __future__ import annotations

import logging

from engine.checkpoint import Checkpoint
from engine.journal import AsyncCheckpoint
from workers.capabilities import Capabilities, Fact

log = logging.getLogger("rekey.capabilities")
META = "capabilities"


def load(cp: Checkpoint) -> Capabilities:
    """What earlier runs learned (`rekey plan` reads it too, so it decides as the next run will)."""
    return Capabilities.from_flags(cp.get_json(META) or {})


class CapabilityStore:
    """Implements the workers' `CapabilityHook`: the record as known now; a fact is folded in and
    persisted once (the same fact learned again by other workers costs nothing)."""

    def __init__(self, acp: AsyncCheckpoint) -> None:
        self._acp = acp
        self._caps = load(acp.sync)

    @property
    def current(self) -> Capabilities:
        return self._caps

    async def learn(self, fact: Fact) -> None:
        if self._caps.knows(fact):
            return
        log.info("learned about this endpoint: %s = %s", fact.name, fact.value)
        self._caps = self._caps.learned(fact)
        await self._acp.run(self._acp.sync.set_json, META, self._caps.to_flags())

    @property
    def flags(self) -> dict[str, bool]:
        """The stored form, as the report shows it."""
        return self._caps.to_flags()
