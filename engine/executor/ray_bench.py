"""`rekey bench --executor ray`: every actor runs the same benchmark at once against the endpoint (each under its
own scratch prefix), like MinIO's warp in client mode; the results are summed, and reported per actor too.

Summed: objects, failures, objects/s and MiB/s (the actors run at the same time); `seconds` is the longest
actor's; latency percentiles are the worst actor's (percentiles of different actors do not add up).
Nothing secret travels: the settings name the endpoint and keys by id, and each actor makes its own random
SSE-C and client-side keys, as a local `rekey bench` does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import ray

from engine.benchcmd import BenchSettings, ModeResult, Phase, run_bench
from workers.errors import EndpointError


@ray.remote(num_cpus=1, max_restarts=0)
class BenchActor:
    """One benchmark client."""

    def node(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    async def run(self, settings: BenchSettings) -> list[ModeResult]:
        from engine.logs import configure_logging
        configure_logging(verbose=False)
        return await run_bench(settings)


@dataclass(frozen=True, slots=True)
class ClusterBench:
    """The summed results and each actor's own."""

    total: list[ModeResult]
    per_actor: list[tuple[str, list[ModeResult]]]


def _sum_phases(phases: Sequence[Phase]) -> Phase:
    def worst(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None
    errors = [p.first_error for p in phases if p.first_error]
    return Phase(op=phases[0].op, ok=sum(p.ok for p in phases), failed=sum(p.failed for p in phases),
                 seconds=max(p.seconds for p in phases), objects_per_s=sum(p.objects_per_s for p in phases),
                 mib_per_s=sum(p.mib_per_s for p in phases), p50_ms=worst([p.p50_ms for p in phases]),
                 p90_ms=worst([p.p90_ms for p in phases]), p99_ms=worst([p.p99_ms for p in phases]),
                 first_error=errors[0] if errors else None)


def sum_results(per_actor: Sequence[Sequence[ModeResult]]) -> list[ModeResult]:
    """Mode by mode, phase by phase, across actors (modes come in the same order from each)."""
    total = []
    for results in zip(*per_actor, strict=True):
        applied = [r.applied for r in results if r.applied is not None]
        phases = [_sum_phases(ps) for ps in zip(*(r.phases for r in results), strict=False)] if all(
            r.phases for r in results) else []
        notes = [r.note for r in results if r.note]
        total.append(ModeResult(results[0].mode, all(applied) if applied else None, notes[0] if notes else None,
                                tuple(phases)))
    return total


def run_on_ray(settings: BenchSettings, *, address: str | None, actors: int | None) -> ClusterBench:
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address or "local", namespace="rekey", log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=False, **({"include_dashboard": False} if address is None else {}))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EndpointError(f"--ray-address: cannot connect to Ray at {address or 'a new local instance'}: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        started = True
    handles: list[Any] = []
    try:
        count = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        handles = [BenchActor.options(scheduling_strategy="SPREAD").remote()  # type: ignore[attr-defined]
                   for _ in range(count)]
        nodes = ray.get([h.node.remote() for h in handles])   # every actor up before any starts
        runs = [h.run.remote(replace(settings, prefix=f"{settings.prefix}actor-{i}/"))
                for i, h in enumerate(handles)]
        per_actor = ray.get(runs)
        names = [f"actor-{i}@{node[:8]}" for i, node in enumerate(nodes)]
        return ClusterBench(sum_results(per_actor), list(zip(names, per_actor, strict=True)))
    finally:
        for h in handles:
            with contextlib.suppress(Exception):
                ray.kill(h)
        if started:
            ray.shutdown()

