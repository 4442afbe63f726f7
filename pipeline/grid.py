"""The training grid: models x stock sets x seeds, as `Cell`s in a stable order."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable, Hashable, Iterable

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


def pack_stacks(cells: Iterable[Cell], stack_size: int, widths: dict[str, int] | None = None,
                group: Callable[[Cell], Hashable] | None = None) -> list[list[Cell]]:
    """The cells packed into training stacks (pipeline/engine): a stack holds cells of one model
    (one architecture, so their parameters stack; `group`, default the model name, may split a
    model further), at most `stack_size` of them. Within a group the cells are ordered by their
    stock set's width (`widths`: stock set -> static member count; a stack pads every cell to
    its widest), so a stack mixes similar widths. Stacks come in the order of their groups'
    first cells."""
    if stack_size < 1:
        raise ValueError(f"engine.stack_size must be at least 1, got {stack_size}")
    group = group or (lambda c: c.model)
    by_model: dict[Hashable, list[Cell]] = {}
    for c in cells:
        by_model.setdefault(group(c), []).append(c)
    widths = widths or {}
    out = []
    for group in by_model.values():
        group = sorted(group, key=lambda c: widths.get(c.stockset, 0))     # stable: keeps seed order
        out += [group[i:i + stack_size] for i in range(0, len(group), stack_size)]
    return out


def plan_stacks(config: Config, cells: Iterable[Cell], store) -> list[list[Cell]]:
    """`pack_stacks` with `config.engine.stack_size` and the store's stock-set widths. Cells of a
    model whose hyper-parameters differ by stock set ([models.<name>.stockset.<set>], e.g.
    master-ref's beta) go to separate stacks: a stack runs one module's code and attributes."""
    from pipeline.engine import stockset_width

    cells = list(cells)
    widths = {s: stockset_width(store, s) for s in {c.stockset for c in cells} if s in store.members}

    def group(c: Cell) -> tuple[str, str]:
        return c.model, json.dumps(config.model_overrides(c.model, c.stockset), sort_keys=True)

    return pack_stacks(cells, config.engine.stack_size, widths, group)
