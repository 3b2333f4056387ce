"""``strata serve``: deployments for scheduled generation (and training/evaluation on demand).

Overlapping scheduled runs write distinct job folders (program-made ids); the `generate`
deployment carries a concurrency limit (Prefect deployment concurrency, collision strategy
ENQUEUE) so at most ``limit`` generation jobs run at once: later runs wait for a slot.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from prefect import serve as prefect_serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from pipeline.errors import ParameterError

GENERATE_DEPLOYMENT = "strata-generate"
DEFAULT_INTERVAL = 3600.0  # seconds between scheduled generations when no schedule is given


def build_deployments(run: str, out: str, cron: str | None = None, interval: float | None = None,
                      genre: str | None = None, seconds: float | None = None, limit: int = 2) -> list:
    """The deployments ``serve`` runs: ``generate`` on a schedule, ``train``/``evaluate`` on demand."""
    # local: keeps torch out of `import flows.serve` until this runs
    from flows.generate import generate_flow

    if cron and interval:
        raise ParameterError("serve: give --cron or --interval, not both")
    if interval is not None and not interval > 0:
        raise ParameterError(f"serve: --interval must be > 0 seconds (got {interval})")
    if limit < 1:
        raise ParameterError(f"serve: --limit must be >= 1 (got {limit})")
    if not Path(run).is_dir():
        raise ParameterError(f"{run}: run folder not found")
    schedule: dict[str, Any] = {"cron": cron} if cron else {"interval": interval or DEFAULT_INTERVAL}
    params: dict[str, Any] = {"run_dir": str(Path(run).resolve()), "out_dir": str(Path(out).resolve())}
    if genre is not None:
        params["genre"] = genre
    if seconds is not None:
        params["seconds"] = seconds
    deployments = [generate_flow.to_deployment(  # a fresh seed per scheduled job
        name=GENERATE_DEPLOYMENT, parameters={"params": params, "fresh_seed": True},
        description="scheduled generation jobs",
        concurrency_limit=ConcurrencyLimitConfig(limit=limit, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        tags=["strata", "generate"], **schedule)]
    for module, attr, name in (("flows.train", "train_flow", "strata-train"),
                               ("flows.evaluate", "evaluate_flow", "strata-evaluate")):
        fl = _optional_flow(module, attr)
        if fl is not None:
            deployments.append(fl.to_deployment(name=name, parameters={"run": params["run_dir"]},
                                                description="on demand", tags=["strata"]))
    return deployments


def _optional_flow(module: str, attr: str):
    """Import a flow lazily; a missing or broken module is skipped with a warning."""
    import importlib

    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as e:  # noqa: BLE001 - serve the rest
        warnings.warn(f"serve: skipping {module}.{attr} ({type(e).__name__}: {e})", stacklevel=2)
        return None


def serve(run: str, out: str, cron: str | None = None, interval: float | None = None,
          genre: str | None = None, seconds: float | None = None, limit: int = 2) -> None:
    """Register the deployments and serve them (blocks until Ctrl-C)."""
    deployments = build_deployments(run, out, cron=cron, interval=interval, genre=genre,
                                    seconds=seconds, limit=limit)
    prefect_serve(*deployments)  # returns only when stopped: Prefect's runner takes SIGTERM itself
    print("interrupted (SIGTERM): finished job folders are kept; runs in flight were cancelled "
          "(their state in Prefect says so)", file=sys.stderr, flush=True)
