"""One training-grid cell as its own flow, so a pool of workers can share a grid.

Deployed as `miga-cell/cell` (prefect.yaml); the `miga` flow launches it with
`run_deployment` when `fan_out=True`. The result is found again through MLflow tags.
"""
from __future__ import annotations

from prefect import flow

from flows import steps


@flow(name="miga-cell", flow_run_name="cell {model} {stockset} seed {seed}", log_prints=True)
def miga_cell(home: str, store_fp: str, model: str, stockset: str, seed: int = 0,
              config: str | None = None, epochs: int | None = None) -> dict:
    cell = {"model": model, "stockset": stockset, "seed": int(seed)}
    return steps.train_cell(home, store_fp, cell, config=config, epochs=epochs)
