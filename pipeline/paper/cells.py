"""Find or train the cells of `miga paper`.

A cell is found when a finished run with its run key (`cell.run_key`: the cell, its config's
cell fingerprint and the tensor store) exists in the paper's experiment or the training
experiment: same cell, same config, same data, so a rerun only trains what is missing, and a
`miga train` run of the same cell counts. The missing ones are trained in stacks (`Job`: cells of
one model under one config, `grid.plan_stacks`) into the paper's experiment, tagged with their
study and variant, not registered (the paper's cells are not candidates for the champion).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.cell import run_key, run_stack
from pipeline.config import Config
from pipeline.grid import Cell, plan_stacks
from pipeline.paper.plan import PaperCell, cell_config
from pipeline.settings import Settings

STUDY_TAG, VARIANT_TAG = "paper_study", "paper_variant"


@dataclass
class Found:
    """A finished run serving a paper cell."""
    cell: PaperCell
    run_id: str
    experiment_id: str
    metrics: dict
    trained: bool = False    # trained by this call (else reused)


@dataclass
class Job:
    """Cells to train together: one model, one config (a study's variant)."""
    study: str
    variant: str
    overrides: tuple
    cells: list[Cell]

    def as_dict(self) -> dict:
        return {"study": self.study, "variant": self.variant,
                "overrides": [list(o) for o in self.overrides],
                "cells": [c.as_dict() for c in self.cells]}

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        return cls(d["study"], d["variant"], tuple(tuple(o) for o in d["overrides"]),
                   [Cell.from_dict(c) for c in d["cells"]])

    @property
    def name(self) -> str:
        v = f" [{self.variant}]" if self.variant else ""
        return f"{self.cells[0].model}{v} x{len(self.cells)}"


def cell_key(pc: PaperCell, config: Config, store) -> str:
    """The run key of a paper cell (its cell, the config it trains under, the store)."""
    return run_key(pc.cell, cell_config(config, pc), store.fingerprint)


def find(settings: Settings, config: Config, cells: list[PaperCell], store) -> dict[str, Found]:
    """run key -> the finished run of each cell that has one."""
    from pipeline import tracking

    out, asked = {}, set()
    for pc in cells:
        key = cell_key(pc, config, store)
        if key in asked:            # the same cell asked for by another study
            continue
        asked.add(key)
        hit = tracking.find_keyed_run(settings, key, [config.paper.experiment, tracking.EXPERIMENT])
        if hit:
            out[key] = Found(pc, hit["run_id"], hit["experiment_id"], hit["metrics"])
    return out


def jobs(config: Config, cells: list[PaperCell], found: dict[str, Found], store) -> list[Job]:
    """The stacks that train the cells without a run (each cell once, whatever study asked)."""
    todo: dict[tuple, list[Cell]] = {}
    seen = set(found)
    for pc in cells:
        key = cell_key(pc, config, store)
        if key in seen:
            continue
        seen.add(key)
        todo.setdefault((pc.study, pc.variant, pc.overrides), []).append(pc.cell)
    out = []
    for (study, variant, overrides), group in todo.items():
        cfg = cell_config(config, PaperCell(study, variant, group[0], overrides))
        out += [Job(study, variant, overrides, stack) for stack in plan_stacks(cfg, group, store)]
    return out


def train(settings: Settings, config: Config, job: Job, store, progress: bool = True) -> list[dict]:
    """Train one job's stack into the paper's experiment. Returns per cell {cell, run_id,
    experiment_id, metrics} or {cell, error}."""
    cfg = cell_config(config, PaperCell(job.study, job.variant, job.cells[0], job.overrides))
    results = run_stack(settings, cfg, job.cells, store=store, register=False, progress=progress,
                        experiment=config.paper.experiment,
                        tags={STUDY_TAG: job.study, VARIANT_TAG: job.variant or "default"},
                        run_suffix=f" [{job.variant}]" if job.variant else "")
    out = []
    for cell, r in zip(job.cells, results):
        if isinstance(r, BaseException):
            out.append({"cell": cell.as_dict(), "error": f"{type(r).__name__}: {r}"})
        else:
            out.append({"cell": cell.as_dict(), "run_id": r.run_id, "experiment_id": r.experiment_id,
                        "metrics": r.metrics})
    return out
