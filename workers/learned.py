"""Named facts about the endpoint that carry, readback and stream learn, through the job's capability hook.

The one place those modules touch the capability record: each fact is a flat name -> bool, stored in the
checkpoint with the others (`keeps_tags_<route>`, `readback_<path>`, `if_match_unquoted`). None means not
known yet. A job without a record (unit use) knows nothing and remembers nothing.
"""

from __future__ import annotations

import logging

from workers.capabilities import named
from workers.job import Job

log = logging.getLogger("rekey.learned")


def known(job: Job, name: str) -> bool | None:
    return job.caps.current.get(name)


async def learn(job: Job, name: str, value: bool) -> None:
    if job.caps.current.get(name) is value:
        return
    log.info("learned about this endpoint: %s = %s", name, value)
    await job.caps.learn(named(name, value))
