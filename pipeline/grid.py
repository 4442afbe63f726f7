"""The training grid: models x stock sets x seeds, as `Cell`s in a stable order."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

from pipeline.config import Config


@dataclass(frozen=True)
class Cell:
    model: str
    stockset: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model}/{self.stockset}/seed{self.seed}"

    def as_dict(self) -> dict:
        """JSON-able form (flow parameters and task results)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        return cls(d["model"], d["stockset"], int(d["seed"]))


def grid_cells(config: Config, models: Iterable[str] | None = None,
               stocksets: Iterable[str] | None = None, seeds: Iterable[int] | None = None) -> list[Cell]:
    """Cells in a stable order; arguments override the config's [run]/[data] lists."""
    models = list(models or config.run.models)
    stocksets = list(stocksets or config.data.stocksets)
    seeds = list(seeds if seeds is not None else config.run.seeds)
    if not (models and stocksets and seeds):
        raise ValueError("the training grid is empty: give at least one model, stock set and seed")
    return [Cell(m, s, int(k)) for m in models for s in stocksets for k in seeds]
