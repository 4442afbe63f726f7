"""Configuration as values: frozen dataclasses built from TOML files at the edge.

`load_config(path)` reads `configs/default.toml`, merges the given file over it (tables merge,
values replace) and returns a `Config`. Nothing here reads the environment.

Every default lives in one place, `configs/default.toml` (with its source: the paper or
Qlib). The dataclasses below declare the keys and their types only, so a value cannot drift
between the code and the documented file; `tests/code/test_config.py` checks that the file
sets every field and nothing else. Model hyper-parameters are the exception: their defaults
are the fields of each model's config dataclass (`pipeline/models/<name>.py`), overridden in
`[models.<name>]`.

A model's training recipe is `[train]` with its `[models.<name>.train]` keys over it
(`Config.train_for`), and its hyper-parameters may differ per stock set
(`[models.<name>.stockset.<set>]`, `Config.model_overrides(name, stockset)`).
"""
from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.toml"
SEGMENT_NAMES = ("train", "valid", "test")
EMBARGOED = ("train", "valid")  # segments followed by another one: their last labels look ahead
DEMO_CONFIG = "quick"           # the embedded default that `miga demo` and the flow run


@dataclass(frozen=True)
class Segments:
    """Named date segments (inclusive) and the embargo between them."""

    train: tuple[date, date]
    valid: tuple[date, date]
    test: tuple[date, date]
    embargo_days: int
    preset: str = ""   # the [presets] name the dates came from ("" = given explicitly)

    def get(self, name: str) -> tuple[date, date]:
        if name not in SEGMENT_NAMES:
            raise ValueError(f"unknown segment {name!r}; expected one of {SEGMENT_NAMES}")
        return getattr(self, name)

    def to_json(self) -> dict:
        """{"train": ["YYYY-MM-DD", "YYYY-MM-DD"], ..., "embargo_days": k} (the store's meta.json)."""
        out: dict[str, Any] = {s: [d.isoformat() for d in self.get(s)] for s in SEGMENT_NAMES}
        out["embargo_days"] = self.embargo_days
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Segments":
        """The inverse of `to_json` (dates may be any ISO-like value, e.g. numpy datetime64)."""
        seg = {s: tuple(_as_date(v, f"segments.{s}") for v in d[s]) for s in SEGMENT_NAMES}
        return cls(**seg, embargo_days=int(d["embargo_days"]), preset=str(d.get("preset", "")))


@dataclass(frozen=True)
class DataConfig:
    window: int
    stocksets: tuple[str, ...]
    clip: float


@dataclass(frozen=True)
class TrainConfig:
    batch_days: int
    max_epochs: int
    lr: float
    patience: int
    alpha: float
    beta: float
    loss: str
    device: str
    bf16: bool
    weight_decay: float
    grad_clip: float
    clip_mode: str           # "norm" (clip_grad_norm_) or "value" (clip_grad_value_) at grad_clip
    label_transform: str     # what the training loss sees: one of LABEL_TRANSFORMS
    drop_extreme: float      # fraction of a day's labelled stocks dropped per tail, in training


LABEL_TRANSFORMS = ("none", "cszscore", "csrank")   # Qlib's CSZScoreNorm, CSRankNorm
CLIP_MODES = ("norm", "value")
MODEL_TABLES = ("train", "stockset")   # sub-tables of [models.<name>], not hyper-parameters


def _check_train(tc: TrainConfig, where: str) -> TrainConfig:
    if tc.label_transform not in LABEL_TRANSFORMS:
        raise ValueError(f"{where}.label_transform must be one of {LABEL_TRANSFORMS}, "
                         f"got {tc.label_transform!r}")
    if tc.clip_mode not in CLIP_MODES:
        raise ValueError(f"{where}.clip_mode must be one of {CLIP_MODES}, got {tc.clip_mode!r}")
    if not 0.0 <= tc.drop_extreme < 0.5:
        raise ValueError(f"{where}.drop_extreme must be in [0, 0.5) (a fraction per tail), "
                         f"got {tc.drop_extreme!r}")
    return tc


@dataclass(frozen=True)
class BacktestConfig:
    top_frac: float
    buy_cost: float
    sell_cost: float
    days_per_year: int
    untradable: str          # "cash" or "next": where a pick that cannot be bought goes
    topk: int                # TopkDropout (pipeline/evaluation/topk.py): names held
    n_drop: int              # names replaced at most a day
    risk_degree: float       # share of the cash spent on a day's buys
    account: float           # starting cash (CNY)
    min_cost: float          # minimum commission per order (CNY)
    forbid_all_trade_at_limit: bool
    champion_metric: str     # one of CHAMPION_METRICS


CHAMPION_METRICS = ("ic", "topk_excess_net")


def _check_backtest(bc: BacktestConfig) -> BacktestConfig:
    if not 1 <= bc.n_drop <= bc.topk:
        raise ValueError(f"backtest.n_drop must be in [1, topk = {bc.topk}], got {bc.n_drop}")
    if not 0.0 < bc.risk_degree <= 1.0:
        raise ValueError(f"backtest.risk_degree must be in (0, 1], got {bc.risk_degree}")
    if bc.champion_metric not in CHAMPION_METRICS:
        raise ValueError(f"backtest.champion_metric must be one of {CHAMPION_METRICS}, "
                         f"got {bc.champion_metric!r}")
    return bc


@dataclass(frozen=True)
class EngineConfig:
    """How cells are trained (pipeline/engine), never what they learn: not part of a cell's
    identity (`Config.cell_fingerprint`)."""
    stack_size: int
    parallel_stacks: int
    cuda_graph: bool
    deterministic: bool


@dataclass(frozen=True)
class RunConfig:
    models: tuple[str, ...]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Config:
    segments: Segments
    data: DataConfig
    train: TrainConfig
    backtest: BacktestConfig
    run: RunConfig
    engine: EngineConfig
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # [models.<name>] hyper-parameters
    source: str = ""  # the file it was loaded from (for logging)
    # [models.<name>.train]: the keys of a model's training recipe that differ from [train]
    model_train: dict[str, dict[str, Any]] = field(default_factory=dict)
    # [models.<name>.stockset.<set>]: hyper-parameters of a model on one stock set
    model_stocksets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def model_overrides(self, name: str, stockset: str | None = None) -> dict[str, Any]:
        """Hyper-parameter overrides of model `name`: [models.<name>], with
        [models.<name>.stockset.<stockset>] over it when a stock set is given."""
        out = dict(self.models.get(name, {}))
        if stockset is not None:
            out.update(self.model_stocksets.get(name, {}).get(stockset, {}))
        return out

    def train_for(self, name: str) -> TrainConfig:
        """Model `name`'s training recipe: [train] with [models.<name>.train] over it."""
        where = f"models.{name}.train"
        over = self.model_train.get(name, {})
        return _check_train(_build(TrainConfig, {**asdict(self.train), **over}, where, over), where)

    def with_train(self, **changes) -> "Config":
        """[train] changed for every model (a command-line --epochs or --device): the keys are
        also replaced in each model's own recipe, so the change wins over [models.<name>.train]."""
        model_train = {m: {**t, **{k: v for k, v in changes.items() if k in t}}
                       for m, t in self.model_train.items()}
        return replace(self, train=replace(self.train, **changes), model_train=model_train)

    def flat(self) -> dict[str, Any]:
        """Flattened `section.key` -> value, for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, obj: Any) -> None:
            if isinstance(obj, dict):
                for k, v in obj.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            elif isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], date):
                out[prefix] = "..".join(d.isoformat() for d in obj)
            elif isinstance(obj, (list, tuple)):
                out[prefix] = ",".join(map(str, obj))
            else:
                out[prefix] = obj

        walk("", asdict(self))
        return out

    def cell_fingerprint(self) -> str:
        """The sections that decide what a cell learns: all but [engine] (a cell trains to the
        same result alone or in a stack of any size)."""
        return self.fingerprint(*[f.name for f in fields(self) if f.name not in ("engine", "source")])

    def fingerprint(self, *sections: str) -> str:
        """Hash of the given sections (all when none), for cache keys."""
        d = asdict(self)
        d.pop("source", None)
        if sections:
            d = {k: d[k] for k in sections}
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _as_date(v: Any, where: str) -> date:
    if isinstance(v, date):
        return v
    try:
        return date.fromisoformat(str(v)[:10])
    except ValueError as e:
        raise ValueError(f"{where}: {v!r} is not an ISO date (YYYY-MM-DD)") from e


_KINDS = {"int": int, "float": float, "str": str, "bool": bool}


def _fits(value: Any, kind: type) -> bool:
    """TOML gives int/float/str/bool: an int is fine for a float; a bool is never a number."""
    if kind is bool or isinstance(value, bool):
        return isinstance(value, bool) and kind is bool
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _build(cls, raw: dict, where: str, check: dict | None = None):
    """`cls` from `raw`, which must set every field and nothing else. The values of `check`
    (default: all of `raw`) must have their field's type (int, float, str or bool)."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    missing = sorted(set(known) - set(raw))
    if missing:
        raise ValueError(f"{where}: keys {missing} are not set (configs/default.toml sets them all)")
    for k, v in (raw if check is None else check).items():
        kind = _KINDS.get(str(known[k].type))
        if kind is not None and not _fits(v, kind):
            raise ValueError(f"{where}.{k} must be {kind.__name__}, got {v!r}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return cls(**kw)


def _model_tables(raw: dict, source: str) -> tuple[dict, dict, dict]:
    """[models.<name>] split into hyper-parameters, [models.<name>.train] and
    [models.<name>.stockset.<set>] (a sub-table is never a hyper-parameter)."""
    models, train, stocksets = {}, {}, {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ValueError(f"{source}: [models.{name}] must be a table of settings, got {table!r}")
        models[name] = {k: v for k, v in table.items() if k not in MODEL_TABLES}
        if "train" in table:
            train[name] = dict(table["train"])
        if "stockset" in table:
            stocksets[name] = {s: dict(t) for s, t in table["stockset"].items()}
    return models, train, stocksets


def config_from_dict(raw: dict, source: str = "") -> Config:
    seg_raw = dict(raw.get("segments", {}))
    presets = raw.get("presets", {})
    preset = seg_raw.pop("preset", "")
    if "embargo_days" not in seg_raw:
        raise ValueError(f"{source}: segments.embargo_days is not set (configs/default.toml sets it)")
    embargo = int(seg_raw.pop("embargo_days"))
    chosen: dict[str, Any] = {}
    if preset:
        if preset not in presets:
            raise ValueError(f"{source}: segments.preset {preset!r} is not one of {sorted(presets)}")
        chosen.update(presets[preset])
    chosen.update(seg_raw)
    missing = [s for s in SEGMENT_NAMES if s not in chosen]
    if missing:
        raise ValueError(f"{source}: segments {missing} are not set (give a preset or dates)")
    seg = {}
    for s in SEGMENT_NAMES:
        a, b = chosen[s]
        seg[s] = (_as_date(a, f"segments.{s}"), _as_date(b, f"segments.{s}"))
        if seg[s][0] > seg[s][1]:
            raise ValueError(f"{source}: segment {s} starts after it ends: {seg[s]}")
    if not (seg["train"][1] <= seg["valid"][0] and seg["valid"][1] <= seg["test"][0]):
        raise ValueError(f"{source}: segments must be ordered train < valid < test, got {seg}")
    models, model_train, model_stocksets = _model_tables(raw.get("models", {}), source)
    cfg = Config(
        segments=Segments(**seg, embargo_days=embargo, preset=preset),
        data=_build(DataConfig, raw.get("data", {}), "data"),
        train=_check_train(_build(TrainConfig, raw.get("train", {}), "train"), "train"),
        backtest=_check_backtest(_build(BacktestConfig, raw.get("backtest", {}), "backtest")),
        run=_build(RunConfig, raw.get("run", {}), "run"),
        engine=_build(EngineConfig, raw.get("engine", {}), "engine"),
        models=models,
        source=source,
        model_train=model_train,
        model_stocksets=model_stocksets,
    )
    for name in model_train:
        cfg.train_for(name)          # a bad [models.<name>.train] fails at load, naming the key
    return cfg


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Default config, with `path` (a TOML file or a name in configs/, e.g. "quick") merged over it."""
    raw = tomllib.loads(DEFAULT_CONFIG.read_text())
    source = str(DEFAULT_CONFIG)
    if path:
        p = Path(path)
        if not p.exists() and (CONFIG_DIR / f"{path}.toml").exists():
            p = CONFIG_DIR / f"{path}.toml"
        if not p.exists():
            raise FileNotFoundError(f"config file {path} not found (nor configs/{path}.toml)")
        raw = _merge(raw, tomllib.loads(p.read_text()))
        source = str(p)
    if overrides:
        raw = _merge(raw, overrides)
    return config_from_dict(raw, source)
