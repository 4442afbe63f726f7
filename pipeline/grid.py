"""The training grid (models x stock sets x seeds) and its results table. No Prefect here."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from pipeline.config import Config

DATA_FILES = ("daily.parquet", "membership.parquet", "index.parquet", "features.parquet")
TABLE_METRICS = ("test_ic", "test_icir", "test_rank_ic", "test_rank_icir",
                 "long_only_ar", "long_only_ir", "long_short_ar", "long_short_ir")


@dataclass(frozen=True)
class Cell:
    model: str
    stockset: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model}/{self.stockset}/seed{self.seed}"


def grid_cells(config: Config, models: Iterable[str] | None = None,
               stocksets: Iterable[str] | None = None, seeds: Iterable[int] | None = None) -> list[Cell]:
    """Cells in a stable order; arguments override the config's [run]/[data] lists."""
    models = list(models or config.run.models)
    stocksets = list(stocksets or config.data.stocksets)
    seeds = list(seeds if seeds is not None else config.run.seeds)
    if not (models and stocksets and seeds):
        raise ValueError("the training grid is empty: give at least one model, stock set and seed")
    return [Cell(m, s, int(k)) for m in models for s in stocksets for k in seeds]


def stable_key(*parts: Any) -> str:
    """A short hash of JSON-able parts: cache keys for the flow's steps."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def folder_signature(data_dir: str | Path) -> list:
    """Name, size and mtime of each input file: changes whenever a file is replaced or grows."""
    out = []
    for name in DATA_FILES:
        p = Path(data_dir) / name
        if p.exists():
            st = p.stat()
            out.append([name, st.st_size, st.st_mtime_ns])
    return out


def results_table(rows: list[dict], mlflow_ui: str | None = None) -> str:
    """Markdown table of finished cells: one row per cell, the paper's headline metrics.

    Each row is {"cell": Cell-as-dict, "run_id": str, "metrics": {...}} or {"cell", "error"}.
    """
    head = ["model", "stockset", "seed", *TABLE_METRICS, "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        c = r["cell"]
        if "error" in r:
            vals = ["failed"] + [""] * (len(TABLE_METRICS) - 1)
            link = r["error"][:80].replace("|", "/")
        else:
            m = r.get("metrics", {})
            vals = [f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else "" for k in TABLE_METRICS]
            run_id = r.get("run_id", "")
            exp = r.get("experiment_id", "")
            link = (f"[{run_id[:8]}]({mlflow_ui}/#/experiments/{exp}/runs/{run_id})"
                    if mlflow_ui and run_id else run_id[:8])
        lines.append("| " + " | ".join([c["model"], c["stockset"], str(c["seed"]), *vals, link]) + " |")
    return "\n".join(lines)


def mlflow_ui_url() -> str:
    return os.environ.get("MIGA_MLFLOW_UI", f"http://127.0.0.1:{os.environ.get('MIGA_MLFLOW_PORT', '5000')}")


def cell_dict(cell: Cell) -> dict:
    return asdict(cell)
