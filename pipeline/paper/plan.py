"""Which cells `miga paper` needs, at a scale, and the config each one trains under.

Three studies, each a list of cells (model x stock set x seed) with model settings over the
config's ([paper] in configs/default.toml):
  grid       the paper's nine models and the anchors: Tables 1 and 2, Figure 3's curves, the
             significance test, and Figures 5-6 (the specialists' trained models);
  attention  each MIGA variant of `ablation` with inner-group attention off: Table 3 (beside the
             grid's cells, attention on);
  experts    `sweep_model` at each groups x experts, top-k setting of the scale: Figure 4.
A cell whose settings are the config's own is the grid's cell (same run key), so the sweep's
7x9k8 and Table 3's "on" rows reuse the grid's runs instead of training them twice.

The scale ([paper.smoke] / [paper.full]) sets the stock sets, seeds, the epoch limit and how many
days of each segment are kept: `scale_config` shortens the segments (train keeps its last days,
valid and test their first), which makes a store of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from pipeline.config import PAPER_SCALES, SWEEP_SETTING, Config, PaperScale
from pipeline.errors import MigaError
from pipeline.grid import Cell

STUDIES = ("grid", "attention", "experts")
ATTENTION_OFF = "attention=off"


@dataclass(frozen=True)
class PaperCell:
    study: str                               # one of STUDIES
    variant: str                             # "" (the config's settings), ATTENTION_OFF, "7x9k8"
    cell: Cell
    overrides: tuple[tuple[str, object], ...] = ()   # model settings over the config's


def scale_of(config: Config, scale: str) -> PaperScale:
    if scale not in PAPER_SCALES:
        raise MigaError(f"unknown scale {scale!r}; the scales are {', '.join(PAPER_SCALES)} "
                        "([paper.<scale>] in the config)")
    return getattr(config.paper, scale)


def scale_config(config: Config, scale: str) -> Config:
    """The config the scale's cells train under: its epoch limit, its segments (shortened), and
    the stock sets it needs in the store."""
    sc = scale_of(config, scale)
    seg = config.segments
    (t0, t1), (v0, v1), (s0, s1) = seg.train, seg.valid, seg.test

    def last(a, b, days):
        return (max(a, b - timedelta(days=days - 1)), b) if days else (a, b)

    def first(a, b, days):
        return (a, min(b, a + timedelta(days=days - 1))) if days else (a, b)

    shortened = replace(seg, train=last(t0, t1, sc.train_days), valid=first(v0, v1, sc.valid_days),
                        test=first(s0, s1, sc.test_days),
                        preset=seg.preset if seg.preset and not (sc.train_days or sc.valid_days
                                                                 or sc.test_days) else "")
    stocksets = tuple(dict.fromkeys(config.data.stocksets + sc.stocksets))
    out = replace(config, segments=shortened, data=replace(config.data, stocksets=stocksets))
    return out.with_train(max_epochs=sc.max_epochs)


def sweep_settings(setting: str) -> dict[str, int]:
    g, e, k = map(int, SWEEP_SETTING.fullmatch(setting).groups())
    return {"groups": g, "experts": e, "top_k": k}


def plan(config: Config, scale: str) -> list[PaperCell]:
    """Every cell of the three studies at `scale` (config: the scale's, `scale_config`)."""
    from pipeline.models import model_config

    sc, p = scale_of(config, scale), config.paper
    cells = [PaperCell("grid", "", Cell(m, s, seed))
             for m in p.models for s in sc.stocksets for seed in sc.seeds]
    cells += [PaperCell("attention", ATTENTION_OFF, Cell(m, s, seed), (("group_attention", False),))
              for m in p.ablation for s in sc.stocksets for seed in sc.seeds]
    seed = sc.seeds[0]                         # Figure 4: one seed per setting (the paper shows one)
    for setting in sc.sweep:
        want = sweep_settings(setting)
        for s in sc.stocksets:
            own = model_config(p.sweep_model, **config.model_overrides(p.sweep_model, s))
            differ = tuple((k, v) for k, v in want.items() if getattr(own, k) != v)
            cells.append(PaperCell("experts", setting, Cell(p.sweep_model, s, seed), differ))
    return cells


def cell_config(config: Config, pc: PaperCell) -> Config:
    """The config `pc` trains under: the config with its model settings over [models.<name>]."""
    if not pc.overrides:
        return config
    model = pc.cell.model
    return replace(config, models={**config.models,
                                   model: {**config.models.get(model, {}), **dict(pc.overrides)}})
