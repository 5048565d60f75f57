"""Executors: where the per-object work of a run happens, behind one small contract.

The pipeline (the driver) cuts the listing into batches and hands each to `Executor.migrate_batch`, which
returns the batch's outcomes and who finished them. `local` runs them in this process (one object per
batch, `[run] concurrency` batches at once: today's single process); `ray` sends them to Ray actors on a
cluster (engine/executor/ray.py, imported only when `[run] executor = "ray"`). The local executor is the
test double for Ray's: same batches in, same outcomes out.
"""

from __future__ import annotations

from engine.executor.base import Batch, Executor, ExecutorStats, Finished, Item
from engine.executor.items import ItemContext, WorkerContext, migrate_item, process_one

__all__ = ["Batch", "Executor", "ExecutorStats", "Finished", "Item", "ItemContext", "WorkerContext",
           "migrate_item", "process_one"]
