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

Every value is checked once, when the config is loaded: its type (the field's), its range
(`_ALLOWS`) and the names it refers to (sections, keys, presets, registered models). A mistake
raises `ConfigError`, one line naming the file that set the key, the key, and what it allows.
Hyper-parameter names and types of `[models.<name>]` are checked by
`pipeline.models.model_config` (its config dataclass lives beside its torch code) when a stack
starts, before any MLflow run opens (`pipeline.cell.run_stack`).
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.toml"
SEGMENT_NAMES = ("train", "valid", "test")
EMBARGOED = ("train", "valid")  # segments followed by another one: their last labels look ahead
DEMO_CONFIG = "quick"           # the embedded default that `miga demo` and the flow run
SECTIONS = ("segments", "presets", "data", "train", "backtest", "run", "engine", "models", "paper")
# The names of pipeline.models.MODELS, the registry (a layer above this one, so it cannot be
# imported here; tests/code/test_config.py checks the two agree).
MODEL_NAMES = ("miga-conv", "miga-rec", "miga-attn", "tcn", "lstm", "transformer", "moderntcn",
               "mamba", "master", "master-ref", "lgbm", "linear")


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


SEGMENT_KEYS = ("preset", "embargo_days", *SEGMENT_NAMES)   # the keys of [segments]


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
LOSS_NAMES = ("ic", "mse")   # the keys of pipeline.losses.LOSSES (torch; test_config checks they agree)
MODEL_TABLES = ("train", "stockset")   # sub-tables of [models.<name>], not hyper-parameters


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
UNTRADABLE = ("cash", "next")   # what a day's untradable pick does (pipeline.evaluation.portfolio)


def _check_backtest(bc: BacktestConfig, at: "_At") -> BacktestConfig:
    """What `_ALLOWS` cannot say of one key alone: n_drop <= topk."""
    if bc.n_drop > bc.topk:
        raise _error(at(("backtest", "n_drop"), ("backtest", "topk")),
                     f"backtest.n_drop must be an integer in [1, topk = {bc.topk}], got {bc.n_drop}")
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
class PaperScale:
    """One scale of `miga paper` ([paper.smoke], [paper.full]): which cells, how long."""
    stocksets: tuple[str, ...]
    seeds: tuple[int, ...]
    max_epochs: int
    train_days: int      # calendar days: keep the train segment's last N (0 = all of it)
    valid_days: int      # keep the valid segment's first N (0 = all of it)
    test_days: int       # keep the test segment's first N (0 = all of it)
    sweep: tuple[str, ...]   # Figure 4's settings, "<groups>x<experts>k<top_k>"


@dataclass(frozen=True)
class PaperConfig:
    """`miga paper` (pipeline/paper): the studies behind the paper's tables and figures. Not
    part of a cell's identity: a cell is the same whichever study asked for it."""
    experiment: str
    models: tuple[str, ...]          # Tables 1 and 2 (with the anchors)
    pairs: tuple[str, ...]           # Figure 3: "<MIGA variant>:<its end-to-end counterpart>"
    curve_epochs: int                # Figure 3: the first N epochs
    ablation: tuple[str, ...]        # Table 3: these with inner-group attention off
    sweep_model: str                 # Figure 4's model
    specialists: tuple[str, ...]     # Figures 5 and 6: each expert's own predictions backtested
    significance: str                # its daily IC against its best baseline's (Newey-West t)
    smoke: PaperScale
    full: PaperScale


_SECTION_OF = {DataConfig: "data", TrainConfig: "train", BacktestConfig: "backtest",
               EngineConfig: "engine", RunConfig: "run", PaperConfig: "paper",
               PaperScale: "paper.scale"}
PAPER_SCALES = ("smoke", "full")
SWEEP_SETTING = re.compile(r"(\d+)x(\d+)k(\d+)")   # Figure 4: groups x experts, top k


@dataclass(frozen=True)
class Config:
    segments: Segments
    data: DataConfig
    train: TrainConfig
    backtest: BacktestConfig
    run: RunConfig
    engine: EngineConfig
    paper: PaperConfig
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
        over = self.model_train.get(name, {})
        return _build(TrainConfig, {**asdict(self.train), **over}, ("models", name, "train"),
                      _nowhere, over)

    def with_train(self, **changes) -> "Config":
        """[train] changed for every model (a command-line --epochs or --device): the keys are
        also replaced in each model's own recipe, so the change wins over [models.<name>.train].
        The values are checked as in a file: a bad one raises ConfigError naming `train.<key>`."""
        train = _build(TrainConfig, {**asdict(self.train), **changes}, ("train",), _nowhere, changes)
        model_train = {m: {**t, **{k: v for k, v in changes.items() if k in t}}
                       for m, t in self.model_train.items()}
        return replace(self, train=train, model_train=model_train)

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

        d = asdict(self)
        d.pop("paper")        # what `miga paper` runs, not what a cell learns
        walk("", d)
        return out

    def cell_fingerprint(self) -> str:
        """The sections that decide what a cell learns: all but [engine] (a cell trains to the
        same result alone or in a stack of any size)."""
        return self.fingerprint(*[f.name for f in fields(self)
                                  if f.name not in ("engine", "paper", "source")])

    def fingerprint(self, *sections: str) -> str:
        """Hash of the given sections (all when none), for cache keys."""
        d = asdict(self)
        d.pop("source", None)
        if sections:
            d = {k: d[k] for k in sections}
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --- what each key allows -------------------------------------------------------------------

@dataclass(frozen=True)
class _Allows:
    """What a key allows beyond its field's type: `ok(value)` and `says`, the words for it
    ("> 0"); with `noun`, the words name the values ("one of 'ic', 'mse'") instead of the type."""
    ok: Callable[[Any], bool]
    says: str
    noun: bool = False


def _min(lo: float, strict: bool = False) -> _Allows:
    return _Allows((lambda v: v > lo) if strict else (lambda v: v >= lo),
                   f"{'>' if strict else '>='} {lo}")


def _between(lo: float, hi: float, open_lo: bool = False, open_hi: bool = False) -> _Allows:
    def ok(v):
        return (lo < v if open_lo else lo <= v) and (v < hi if open_hi else v <= hi)
    return _Allows(ok, f"in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}")


def _one_of(choices: tuple, says: str | None = None) -> _Allows:
    return _Allows(lambda v: v in choices, says or "one of " + ", ".join(map(repr, choices)), noun=True)


def is_device(v: str) -> bool:   # what pipeline.train.resolve_device accepts
    return v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v) is not None


# Stock sets are the index names of the membership data (pipeline/store/build.py) plus "all"
# (every traded stock); the store names its files after them.
_STOCKSET_NAME = _Allows(lambda v: re.fullmatch(r"\w+", v, re.ASCII) is not None,
                         "stock set names (letters, digits, _: an index of the membership data, "
                         "e.g. csi300, csi500, csi1000, or all)", noun=True)

# "section.key" -> what it allows beyond its type (the same rule for [models.<name>.train]).
_ALLOWS: dict[str, _Allows] = {
    "segments.embargo_days": _min(0),
    "data.window": _min(1),
    "data.stocksets": _STOCKSET_NAME,
    "data.clip": _min(0, strict=True),
    "train.batch_days": _min(1),
    "train.max_epochs": _min(1),
    "train.lr": _min(0, strict=True),
    "train.patience": _min(1),       # stop after this many epochs without a better valid IC (>= 1)
    "train.alpha": _min(0),
    "train.beta": _min(0, strict=True),
    "train.loss": _one_of(LOSS_NAMES),
    "train.device": _Allows(is_device, "one of 'auto', 'cpu', 'cuda', 'cuda:<index>'", noun=True),
    "train.weight_decay": _min(0),
    "train.grad_clip": _min(0),
    "train.clip_mode": _one_of(CLIP_MODES),
    "train.label_transform": _one_of(LABEL_TRANSFORMS),
    "train.drop_extreme": _between(0, 0.5, open_hi=True),
    "backtest.top_frac": _between(0, 0.5, open_lo=True),
    "backtest.buy_cost": _min(0),
    "backtest.sell_cost": _min(0),
    "backtest.days_per_year": _min(0, strict=True),
    "backtest.untradable": _one_of(UNTRADABLE),
    "backtest.topk": _min(1),
    "backtest.n_drop": _min(1),      # and <= topk: _check_backtest
    "backtest.risk_degree": _between(0, 1, open_lo=True),
    "backtest.account": _min(0, strict=True),
    "backtest.min_cost": _min(0),
    "backtest.champion_metric": _one_of(CHAMPION_METRICS),
    "engine.stack_size": _min(1),
    "engine.parallel_stacks": _min(1),
    "run.models": _one_of(MODEL_NAMES, f"registered models ({', '.join(MODEL_NAMES)})"),
    "run.seeds": _between(0, 2**32 - 1),   # numpy's seed range
    "paper.models": _one_of(MODEL_NAMES, f"registered models ({', '.join(MODEL_NAMES)})"),
    "paper.ablation": _one_of(("miga-conv", "miga-rec", "miga-attn"), "MIGA variants"),
    "paper.sweep_model": _one_of(("miga-conv", "miga-rec", "miga-attn"), "MIGA variants"),
    "paper.specialists": _one_of(("miga-conv", "miga-rec", "miga-attn"), "MIGA variants"),
    "paper.significance": _one_of(MODEL_NAMES, f"registered models ({', '.join(MODEL_NAMES)})"),
    "paper.pairs": _Allows(lambda v: len(v.split(":")) == 2
                           and all(m in MODEL_NAMES for m in v.split(":")),
                           "pairs of registered models, \"<miga variant>:<baseline>\"", noun=True),
    "paper.curve_epochs": _min(1),
    "paper.scale.stocksets": _STOCKSET_NAME,
    "paper.scale.seeds": _between(0, 2**32 - 1),
    "paper.scale.max_epochs": _min(1),
    "paper.scale.train_days": _min(0),
    "paper.scale.valid_days": _min(0),
    "paper.scale.test_days": _min(0),
    "paper.scale.sweep": _Allows(lambda v: SWEEP_SETTING.fullmatch(v) is not None,
                                 "settings \"<groups>x<experts>k<top_k>\", e.g. \"7x9k8\"",
                                 noun=True),
}

_KINDS = {"int": int, "float": float, "str": str, "bool": bool}
_WORDS = {"int": ("an integer", "integers"), "float": ("a number", "numbers"),
          "str": ("a string", "strings"), "bool": ("true or false", "booleans")}


def _fits(value: Any, kind: type) -> bool:
    """TOML gives int/float/str/bool: an int is fine for a float; a bool is never a number."""
    if kind is bool or isinstance(value, bool):
        return isinstance(value, bool) and kind is bool
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _kind(annotation: str) -> tuple[str, bool]:
    """A field's type (a string under `from __future__ import annotations`) as (kind, is a list):
    "float" -> ("float", False); "tuple[str, ...]" -> ("str", True)."""
    m = re.fullmatch(r"tuple\[(\w+), \.\.\.\]", annotation)
    return (m.group(1), True) if m else (annotation, False)


def _what(rule: str, annotation: str) -> str:
    """The words for what key `rule` ("train.lr") of type `annotation` allows."""
    kind, many = _kind(annotation)
    allows = _ALLOWS.get(rule)
    one, plural = _WORDS[kind]
    if not many:
        return allows.says if allows and allows.noun else f"{one} {allows.says}" if allows else one
    items = allows.says if allows and allows.noun else f"{plural} {allows.says}" if allows else plural
    return f"a non-empty list of distinct {items}"


def _good(rule: str, annotation: str, value: Any) -> bool:
    kind, many = _kind(annotation)
    allows = _ALLOWS.get(rule)

    def one(v: Any) -> bool:
        return _fits(v, _KINDS[kind]) and (allows is None or allows.ok(v))

    if not many:
        return one(value)
    return (isinstance(value, (list, tuple)) and len(value) > 0 and all(one(v) for v in value)
            and len(set(value)) == len(value))


# --- errors that name the file and the key --------------------------------------------------

_At = Callable[..., "str | None"]   # key paths -> the file that set the last of them (or None)


def _nowhere(*paths: tuple) -> None:
    """A value given in code (`Config.with_train`): there is no file to name."""
    return None


class _Origin:
    """The file to name for a key: the last of the merged layers ((name, table): default.toml,
    the user's file, overrides) that sets one of the key paths; else the first (default.toml,
    which sets every key)."""

    def __init__(self, layers: list[tuple[str, dict]]):
        self.layers = layers

    def __call__(self, *paths: tuple) -> str:
        for name, table in reversed(self.layers):
            for path in paths:
                node = table
                for k in path:
                    if not isinstance(node, dict) or k not in node:
                        break
                    node = node[k]
                else:
                    return name
        return self.layers[0][0]


def _error(file: str | None, message: str) -> ConfigError:
    message = message.replace("\n", "\\n")   # one line, whatever a key or value holds
    return ConfigError(f"{file}: {message}" if file else message)


def _key(*path: str) -> str:
    return ".".join(map(str, path))


def _did_you_mean(word: Any, known, shown: str = "{}") -> str:
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return f" (did you mean {shown.format(close[0])}?)" if close else ""


def _no_unknown(table: dict, known, path: tuple[str, ...], at: _At) -> None:
    unknown = [k for k in table if k not in known]
    if unknown:
        keys = ", ".join(_key(*path, k) for k in unknown)
        raise _error(at(*[(*path, k) for k in unknown]),
                     f"unknown key{'s' * (len(unknown) > 1)} {keys}{_did_you_mean(unknown[0], known)}; "
                     f"the keys of [{_key(*path)}] are {', '.join(sorted(known))}")


def _check(path: tuple[str, ...], rule: str, annotation: str, value: Any, at: _At) -> None:
    """`value` of key `path` has its type and is in its range, or ConfigError."""
    if _kind(annotation)[0] in _WORDS and not _good(rule, annotation, value):
        raise _error(at(path), f"{_key(*path)} must be {_what(rule, annotation)}, got {value!r}")


def _build(cls, raw: dict, path: tuple[str, ...], at: _At, check: dict | None = None):
    """`cls` from `raw`, which must set every field and nothing else. The values of `check`
    (default: all of `raw`) must have their field's type and be in its range (`_ALLOWS`)."""
    known = {f.name: f for f in fields(cls)}
    _no_unknown(raw, known, path, at)
    missing = [k for k in known if k not in raw]
    if missing:
        raise _error(at(path), f"{', '.join(_key(*path, k) for k in missing)} "
                               f"{'is' if len(missing) == 1 else 'are'} not set "
                               f"(configs/default.toml sets every key)")
    section = _SECTION_OF[cls]
    for k, v in (raw if check is None else check).items():
        _check((*path, k), f"{section}.{k}", str(known[k].type), v, at)
    out = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    return out


# --- segments --------------------------------------------------------------------------------

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date(v: Any) -> date | None:
    """A TOML date or a "YYYY-MM-DD" string as a date; None if it is neither."""
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    if isinstance(v, str) and _DATE.fullmatch(v):
        try:
            return date.fromisoformat(v)
        except ValueError:
            return None
    return None


def _date_pair(v: Any, path: tuple[str, ...], at: _At) -> tuple[date, date]:
    what = f'{_key(*path)} must be a pair of dates ["YYYY-MM-DD", "YYYY-MM-DD"] (first and last day)'
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise _error(at(path), f"{what}, got {v!r}")
    pair = tuple(_date(x) for x in v)
    for x, d in zip(v, pair):
        if d is None:
            raise _error(at(path), f"{what}, got {list(v)!r}: {x!r} is not a date")
    if pair[0] > pair[1]:
        raise _error(at(path), f"{_key(*path)} starts after it ends: {pair[0]} > {pair[1]}")
    return pair


def _as_date(v: Any, where: str) -> date:
    """A date from the store's meta.json (any ISO-like value, e.g. numpy datetime64)."""
    if isinstance(v, date):
        return v
    try:
        return date.fromisoformat(str(v)[:10])
    except ValueError as e:
        raise ValueError(f"{where}: {v!r} is not an ISO date (YYYY-MM-DD)") from e


def _segments(raw: dict, at: _At) -> Segments:
    """[segments] (a preset's dates, explicit dates over them) and every [presets.<name>]."""
    seg_raw, presets = raw.get("segments", {}), raw.get("presets", {})
    _no_unknown(seg_raw, SEGMENT_KEYS, ("segments",), at)
    for name, table in presets.items():
        if not isinstance(table, dict):
            raise _error(at(("presets", name)), f"presets.{name} must be a table [presets.{name}] "
                                                f"of train, valid and test dates, got {table!r}")
        _no_unknown(table, SEGMENT_NAMES, ("presets", name), at)
        for s, v in table.items():
            _date_pair(v, ("presets", name, s), at)
    preset = seg_raw.get("preset", "")
    if preset != "" and (not isinstance(preset, str) or preset not in presets):
        raise _error(at(("segments", "preset")),
                     f'segments.preset must be "" (dates in [segments]) or a preset, one of '
                     f"{', '.join(map(repr, presets))}{_did_you_mean(preset, presets)}, got {preset!r}")
    if "embargo_days" not in seg_raw:
        raise _error(at(("segments",)),
                     "segments.embargo_days is not set (configs/default.toml sets it)")
    embargo = seg_raw["embargo_days"]
    _check(("segments", "embargo_days"), "segments.embargo_days", "int", embargo, at)
    paths = {}
    for s in SEGMENT_NAMES:
        if s in seg_raw:
            paths[s] = ("segments", s)
        elif preset and s in presets[preset]:
            paths[s] = ("presets", preset, s)
        else:
            raise _error(at(("segments", "preset"), ("segments",)),
                         f"segments.{s} is not set (give segments.preset or the dates of every segment)")
    seg = {s: _date_pair(_value(raw, p), p, at) for s, p in paths.items()}
    if not (seg["train"][1] <= seg["valid"][0] and seg["valid"][1] <= seg["test"][0]):
        shown = ", ".join(f"{s} {a}..{b}" for s, (a, b) in seg.items())
        raise _error(at(("segments", "preset"), *paths.values()),
                     f"segments must be ordered train < valid < test (each ends on or before the "
                     f"next starts), got {shown}")
    return Segments(**seg, embargo_days=embargo, preset=preset)


def _value(raw: dict, path: tuple[str, ...]) -> Any:
    for k in path:
        raw = raw[k]
    return raw


# --- [models.<name>] -------------------------------------------------------------------------

def _is_table(v: Any) -> bool:
    return isinstance(v, dict) or isinstance(v, list) and any(isinstance(x, dict) for x in v)


def _hyper(table: dict, path: tuple[str, ...], at: _At) -> dict[str, Any]:
    """Hyper-parameters: plain values (their names and types: `pipeline.models.model_config`)."""
    for k, v in table.items():
        if _is_table(v):
            raise _error(at((*path, k)), f"{_key(*path, k)} must be a hyper-parameter value, got a "
                                         f"table {v!r}")
    return dict(table)


def _model_tables(raw: dict, train: dict, at: _At) -> tuple[dict, dict, dict]:
    """[models.<name>] split into hyper-parameters, [models.<name>.train] (each key checked as
    in [train]) and [models.<name>.stockset.<set>] (a sub-table is never a hyper-parameter)."""
    models, recipes, stocksets = {}, {}, {}
    for name, table in raw.items():
        path = ("models", name)
        if name not in MODEL_NAMES:
            raise _error(at(path), f"unknown model [models.{name}]"
                                   f"{_did_you_mean(name, MODEL_NAMES, '[models.{}]')}; "
                                   f"the registered models are {', '.join(MODEL_NAMES)}")
        if not isinstance(table, dict):
            raise _error(at(path), f"models.{name} must be a table [models.{name}] of hyper-parameters, "
                                   f"got {table!r}")
        for k, v in table.items():
            if _is_table(v) and k not in MODEL_TABLES:
                hint = _did_you_mean(k, MODEL_TABLES, f"[models.{name}.{{}}]")
                raise _error(at((*path, k)), f"unknown table [models.{name}.{k}]{hint}; "
                                             f"[models.{name}] has "
                                             f"[models.{name}.train] (its training recipe) and "
                                             f"[models.{name}.stockset.<set>] (its hyper-parameters on "
                                             f"one stock set), other keys are hyper-parameters")
        models[name] = _hyper({k: v for k, v in table.items() if k not in MODEL_TABLES}, path, at)
        if "train" in table:
            over = table["train"]
            if not isinstance(over, dict):
                raise _error(at((*path, "train")), f"models.{name}.train must be a table [models."
                                                   f"{name}.train] of [train] keys, got {over!r}")
            _build(TrainConfig, {**train, **over}, (*path, "train"), at, over)
            recipes[name] = dict(over)
        if "stockset" in table:
            sets = table["stockset"]
            if not isinstance(sets, dict):
                raise _error(at((*path, "stockset")), f"models.{name}.stockset must hold tables "
                                                      f"[models.{name}.stockset.<set>], got {sets!r}")
            for s, t in sets.items():
                where = (*path, "stockset", s)
                if not _STOCKSET_NAME.ok(str(s)):
                    raise _error(at(where), f"{_key(*where)}: {s!r} is not a stock set name "
                                            f"(letters, digits, _)")
                if not isinstance(t, dict):
                    raise _error(at(where), f"{_key(*where)} must be a table [{_key(*where)}] of "
                                            f"hyper-parameters, got {t!r}")
            stocksets[name] = {s: _hyper(t, (*path, "stockset", s), at) for s, t in sets.items()}
    return models, recipes, stocksets


# --- loading ---------------------------------------------------------------------------------

def _check_sections(raw: dict, at: _At) -> None:
    known = ", ".join(f"[{s}]" for s in SECTIONS)
    for k, v in raw.items():
        if k in SECTIONS and not isinstance(v, dict):
            raise _error(at((k,)), f"{k} must be a table [{k}], got {v!r}")
        if k not in SECTIONS and isinstance(v, dict):
            raise _error(at((k,)), f"unknown section [{k}]{_did_you_mean(k, SECTIONS, '[{}]')}; "
                                   f"the sections are {known}")
        if k not in SECTIONS:
            homes = [f"[{s}]" for c, s in _SECTION_OF.items() if k in {f.name for f in fields(c)}]
            homes += ["[segments]"] if k in SEGMENT_KEYS else []
            hint = f" (it belongs under {' or '.join(homes)})" if homes else ""
            raise _error(at((k,)), f"key {k} is outside any section{hint}; the sections are {known}")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def config_from_dict(raw: dict, source: str = "", *,
                     layers: list[tuple[str, dict]] | None = None) -> Config:
    """The `Config` of the merged tables `raw`, every value checked. A mistake raises ConfigError
    naming the file that set the key (the last of `layers`, (name, table) in merge order, that
    sets it; `source` when no layers are given), the key and what it allows."""
    at = _Origin(layers or [(source or "config", raw)])
    _check_sections(raw, at)
    segments = _segments(raw, at)
    data = _build(DataConfig, raw.get("data", {}), ("data",), at)
    train = _build(TrainConfig, raw.get("train", {}), ("train",), at)
    backtest = _check_backtest(_build(BacktestConfig, raw.get("backtest", {}), ("backtest",), at), at)
    run = _build(RunConfig, raw.get("run", {}), ("run",), at)
    engine = _build(EngineConfig, raw.get("engine", {}), ("engine",), at)
    paper = _paper(raw.get("paper", {}), at)
    models, model_train, model_stocksets = _model_tables(raw.get("models", {}), asdict(train), at)
    return Config(
        segments=segments, data=data, train=train, backtest=backtest, run=run, engine=engine,
        paper=paper, models=models,
        source=source,
        model_train=model_train,
        model_stocksets=model_stocksets,
    )


def _paper(raw: dict, at: _At) -> PaperConfig:
    """[paper] with its scale tables [paper.smoke] and [paper.full]."""
    flat = {k: v for k, v in raw.items() if k not in PAPER_SCALES}
    scales = {}
    for name in PAPER_SCALES:
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise _error(at(("paper", name)), f"paper.{name} must be a table [paper.{name}], got {table!r}")
        scales[name] = _build(PaperScale, table, ("paper", name), at)
    # A setting's top_k must fit its experts (the model would refuse it later, mid-run).
    for name, sc in scales.items():
        for s in sc.sweep:
            g, e, k = map(int, SWEEP_SETTING.fullmatch(s).groups())
            if not (g >= 1 and e >= 1 and 1 <= k <= g * e):
                raise _error(at(("paper", name, "sweep")),
                             f"paper.{name}.sweep setting {s!r} needs groups, experts >= 1 and "
                             f"1 <= top_k <= groups*experts")
    return _build(PaperConfig, {**flat, **scales}, ("paper",), at, check=flat)


def _config_names() -> str:
    return ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))


def _config_file(path: str | Path) -> Path:
    """The file `path` names: a TOML file, or a config in configs/ by name ("quick",
    "quick.toml"); "configs/quick.toml" also from outside the repository."""
    p = Path(path)
    if p.is_file():
        return p
    bare = not p.is_absolute() and len(p.parts) == 1
    named = CONFIG_DIR / (p.name if p.suffix == ".toml" else f"{p.name}.toml")
    if bare and named.is_file():
        return named
    in_repo = CONFIG_DIR.parent / p
    if not p.is_absolute() and p.parts and p.parts[0] == CONFIG_DIR.name and in_repo.is_file():
        return in_repo
    if p.exists():
        raise ConfigError(f"config file {p.absolute()} is not a file")
    if bare and p.suffix != ".toml":
        raise ConfigError(f"no config named {str(path)!r}: give a TOML file path or one of "
                          f"{_config_names()} (in {CONFIG_DIR})")
    nor = f" (nor {named}; the configs there: {_config_names()})" if bare else ""
    raise ConfigError(f"config file {p.absolute()} not found{nor}")


def _toml_position(e: tomllib.TOMLDecodeError, text: str) -> tuple[str, int, int]:
    """(what, line, column) of a TOML error: its attributes (Python 3.14), else its message
    ("Invalid value (at line 3, column 7)", or "... (at end of document)")."""
    if hasattr(e, "lineno") and hasattr(e, "colno"):
        return getattr(e, "msg", str(e)), e.lineno, e.colno
    m = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(e), re.S)
    if m:
        return m.group(1), int(m.group(2)), int(m.group(3))
    what = re.sub(r" \(at end of document\)$", "", str(e))
    return f"{what} (at the end of the file)", text.count("\n") + 1, len(text.rsplit("\n", 1)[-1]) + 1


def _read_toml(p: Path) -> dict:
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a TOML file (not UTF-8 text)") from e
    except OSError as e:
        raise ConfigError(f"config file {p} cannot be read: {e.strerror or e}") from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        what, line, col = _toml_position(e, text)
        raise _error(str(p), f"not valid TOML at line {line}, column {col}: {what}") from e


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Default config, with `path` (a TOML file or a name in configs/, e.g. "quick") merged over
    it, then `overrides` (tables as in a file). Every mistake raises ConfigError (one line)."""
    layers = [(str(DEFAULT_CONFIG), _read_toml(DEFAULT_CONFIG))]
    if path:
        p = _config_file(path)
        layers.append((str(p), _read_toml(p)))
    if overrides:
        layers.append(("overrides", overrides))
    raw: dict = {}
    for _, table in layers:
        raw = _merge(raw, table)
    return config_from_dict(raw, layers[1][0] if path else layers[0][0], layers=layers)
