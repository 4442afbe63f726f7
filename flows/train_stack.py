"""One training stack (K cells of one model, trained together) as its own flow, so a pool of
workers can share a grid: a worker takes a stack, not a cell.

Deployed as `miga-stack/stack` (prefect.yaml); the `miga` flow launches it with
`run_deployment` when `fan_out=True`. Each cell's result is found again through MLflow tags.
"""
from __future__ import annotations

from prefect import flow

from flows import steps


def _name(cells: list[dict]) -> str:
    c0 = cells[0]
    return f"stack {c0['model']} x{len(cells)} " + ",".join(f"{c['stockset']}/s{c['seed']}" for c in cells)


@flow(name="miga-stack", log_prints=True)
def miga_stack(home: str, store_fp: str, cells: list[dict], config: str | None = None,
               epochs: int | None = None) -> list[dict]:
    """cells: [{"model", "stockset", "seed"}, ...], one model. Fails (after logging the others)
    if any cell failed, naming each."""
    results = steps.train_stack.with_options(task_run_name=_name(cells))(
        home, store_fp, cells, config=config, epochs=epochs)
    failed = [r for r in results if "error" in r]
    if failed:
        raise RuntimeError("; ".join(f"{r['cell']['model']}/{r['cell']['stockset']}/seed "
                                     f"{r['cell']['seed']}: {r['error']}" for r in failed))
    return results
