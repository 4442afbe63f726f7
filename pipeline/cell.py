"""One grid cell = one (model, stock set, seed): train, evaluate (IC and backtest), log to MLflow.

`run_stack` is what `miga train` and the flow's stacks call (`run_cell` is a stack of one). A
stack is K cells of one model (`pipeline.grid.pack_stacks`), trained together, each still its
own MLflow run with the same tags, params, metrics and artifacts as a cell trained alone:

    _train     the K models, their loaders and `pipeline.train.fit_stack` (checkpoints, early
               stopping, per cell); epoch curves go to each cell's run as they come
    _evaluate  per cell: valid/test scores, `pipeline.evaluation.evaluate`, the index
               benchmark, expert usage
    _log       per cell: metrics, plots, predictions and the model to MLflow (`pipeline.tracking`)

A cell killed mid-training resumes when called again with the same arguments, alone or in any
stack: the checkpoint folder is keyed by (model, stock set, seed, config without [engine],
store fingerprint) and remembers its MLflow run, which is reopened and continued rather than
duplicated.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import SEGMENT_NAMES, Config
from pipeline.errors import MigaError, interrupted
from pipeline.evaluation import (HEADLINE, PREDICTION_COLUMNS, SUMMARY, evaluate,
                                 index_benchmark, with_execution)
from pipeline.grid import Cell
from pipeline.settings import Settings

RUN_ID_FILE = "mlflow_run_id"
EVAL_BATCH_DAYS = 8      # days per batch when scoring (no gradients: larger batches are free)


@dataclass
class CellResult:
    run_id: str
    experiment_id: str
    model: str
    stockset: str
    seed: int
    metrics: dict[str, float]
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    predictions: pd.DataFrame | None = field(default=None, repr=False)
    returns: pd.DataFrame | None = field(default=None, repr=False)

    def summary(self) -> str:
        m = self.metrics
        lines = [f"{self.model} on {self.stockset}, seed {self.seed}: {len(self.history)} epochs, "
                 f"best epoch {self.best_epoch}, {self.seconds:.1f} s; MLflow run {self.run_id}"]
        lines += [f"  {k:<17} {m[k]: .4f}" for k in SUMMARY if k in m]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class _Trained:
    model: object
    fit: object                    # pipeline.train.FitResult
    valid: object                  # DayLoader
    test: object                   # DayLoader
    n_params: int


@dataclass
class _Evaluated:
    pred: pd.DataFrame             # date, instrument, score, label, segment
    metrics: dict[str, float]
    daily: pd.DataFrame            # test daily IC
    returns: pd.DataFrame          # test daily portfolio returns
    usage: dict[str, np.ndarray]   # stock set -> (G, E) mean routing weight (routed models)
    has_index: bool                # the stock set's index was in the warehouse
    notes: list[str]


def run_key(cell: Cell, config: Config, store_fp: str) -> str:
    """The cell's checkpoint folder name: same cell, config and store -> same folder."""
    blob = json.dumps([cell.model, cell.stockset, int(cell.seed), config.cell_fingerprint(), store_fp])
    return f"{cell.model}-{cell.stockset}-s{cell.seed}-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_cell(settings: Settings, config: Config, cell: Cell, *, store=None, register: bool = True,
             progress: bool = True) -> CellResult:
    """Train `cell.model` on `cell.stockset` with `cell.seed`, evaluate on valid/test, log everything:
    a stack of one (`run_stack`). Raises what failed.

    store: an open TensorStore (default: `current_store(settings, config)`)."""
    out = run_stack(settings, config, [cell], store=store, register=register, progress=progress)[0]
    if isinstance(out, BaseException):
        raise out
    return out


def run_stack(settings: Settings, config: Config, cells: list[Cell], *, store=None,
              register: bool = True, progress: bool = True, experiment: str | None = None,
              tags: dict[str, str] | None = None,
              run_suffix: str = "") -> list[CellResult | Exception]:
    """Train the cells (one model; `pipeline.grid.pack_stacks`) together as one stack
    (`pipeline.train.fit_stack`), then evaluate and log each in its own MLflow run, as
    `run_cell` does for one. Returns, per cell, its CellResult or the exception that failed its
    evaluation or logging (that run ends FAILED; the other cells go on). If training fails,
    every cell's run ends FAILED and the exception is raised: a failed stack fails its cells.

    Each cell keeps its own checkpoint folder and MLflow run, so a killed stack resumes (in a
    stack of any make-up, or alone) where each cell stopped.

    experiment: the MLflow experiment of the runs (default `tracking.EXPERIMENT`); tags: more
    tags on each new run; run_suffix: appended to each run's name (a study's variant in
    `miga paper`)."""
    from pipeline import tracking
    from pipeline.models import MODELS, model_config
    from pipeline.train import resolve_device

    t_start = time.perf_counter()
    settings.ensure()
    if not cells:
        raise ValueError("a stack needs at least one cell")
    if len({c.model for c in cells}) != 1:
        raise ValueError("a stack's cells must share one model: "
                         + ", ".join(sorted({c.model for c in cells})))
    if len(set(cells)) != len(cells):
        raise MigaError("a cell appears twice in one stack: " + ", ".join(c.name for c in cells))
    model = cells[0].model
    if model not in MODELS:
        raise MigaError(f"unknown model {model!r}; registered: {', '.join(sorted(MODELS))}")
    if store is None:
        from pipeline.store import current_store

        store = current_store(settings, config)
    for cell in cells:
        if cell.stockset not in store.members:
            raise MigaError(f"stock set {cell.stockset!r} is not in the tensor store; "
                            f"have {', '.join(sorted(store.members))}")
        _check_member_days(store, cell.stockset)
        model_config(model, **config.model_overrides(model, cell.stockset))  # bad settings: no run
    device = resolve_device(config.train_for(model).device)   # refused before any run opens
    slots = []
    for cell in cells:
        key = run_key(cell, config, store.fingerprint)
        ckpt_dir = Path(settings.runs_dir) / key
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        run_id_file = ckpt_dir / RUN_ID_FILE
        resume_id = run_id_file.read_text().strip() if run_id_file.exists() else None
        run_id, exp_id, resumed = tracking.open_cell_run(settings, cell.name + run_suffix, resume_id,
                                                         experiment or tracking.EXPERIMENT)
        run_id_file.write_text(run_id)
        slots.append(_Slot(cell, ckpt_dir, run_id, exp_id))
        if resumed:
            tracking.start_cell(settings, run_id, {"resumed": "true"}, {})
        else:
            run_tags = {**_tags(cell, store, device, key), **(tags or {})}
            if len(cells) > 1:
                run_tags["stack"] = ",".join(c.name for c in cells)
            tracking.start_cell(settings, run_id, run_tags, _params(config, cell, store),
                                dataset={"name": f"tensor store {store.fingerprint} / {cell.stockset}",
                                         "digest": store.fingerprint, "path": str(store.root)})
    try:
        trained = _train(settings, config, slots, store, device, progress)
    except BaseException as e:
        status = "KILLED" if interrupted(e) else "FAILED"
        for s in slots:
            tracking.fail_run(settings, s.run_id, status)
        raise
    out: list[CellResult | Exception] = []
    for s, tr in zip(slots, trained):
        try:
            with tracking.active_run(settings, s.run_id):
                evaluated = _evaluate(settings, config, s.cell, store, device, tr)
                version = _log(config, s.cell, store, tr, evaluated, register)
                seconds = time.perf_counter() - t_start
                tracking.log_cell_metrics({"run_seconds": seconds})
        except Exception as e:  # this cell's run is FAILED; the others are still logged
            out.append(e)
            continue
        # Finished and logged: the checkpoints are no longer needed (the model is in MLflow).
        shutil.rmtree(s.ckpt_dir, ignore_errors=True)
        res = tr.fit
        out.append(CellResult(run_id=s.run_id, experiment_id=s.experiment_id, model=s.cell.model,
                              stockset=s.cell.stockset, seed=s.cell.seed, metrics=evaluated.metrics,
                              history=res.history, best_epoch=res.best_epoch, seconds=seconds,
                              notes=evaluated.notes, predictions=evaluated.pred,
                              returns=evaluated.returns))
        _describe(settings, out[-1], version)
    return out


def _describe(settings: Settings, result: CellResult, version: str | None) -> None:
    """The run's description is the summary `miga train` prints; its registered version (if
    any) carries the same text and its cell and test metrics as tags."""
    from pipeline import tracking

    text = result.summary()
    tracking.describe_run(settings, result.run_id, text)
    if version is not None:
        tags = {"stockset": result.stockset, "seed": result.seed, "run_id": result.run_id,
                **{k: f"{result.metrics[k]:.4f}" for k in HEADLINE if k in result.metrics}}
        tracking.describe_version(settings, result.model, version, text, tags)


def _check_member_days(store, stockset: str) -> None:
    """A MigaError, before any MLflow run is opened, when a segment has no day with a member
    of `stockset` (a refused command leaves no run behind)."""
    members = store.members[stockset]
    have = {seg: int(members[store.segment_days(seg)].any(axis=1).sum()) for seg in SEGMENT_NAMES}
    if not all(have.values()):
        raise MigaError(f"stock set {stockset!r} has no member days in some segment "
                        f"({', '.join(f'{k} {v}' for k, v in have.items())} days): "
                        "check [segments] against the data's dates")


@dataclass
class _Slot:
    """A cell of a stack and where it keeps its state."""
    cell: Cell
    ckpt_dir: Path
    run_id: str
    experiment_id: str


def _tags(cell: Cell, store, device, key: str) -> dict[str, str]:
    from pipeline.tracking import git_commit

    return {"model": cell.model, "stockset": cell.stockset, "seed": str(cell.seed),
            "store_fingerprint": store.fingerprint,
            "data_fingerprint": str(store.meta.get("data_fingerprint") or ""),
            "git_commit": git_commit(), "device": str(device), "run_key": key}


def _params(config: Config, cell: Cell, store) -> dict:
    """The config, with `train.*` as this cell's recipe (`Config.train_for`) and `model.*` its
    hyper-parameter overrides on its stock set."""
    recipe = {f"train.{k}": v for k, v in asdict(config.train_for(cell.model)).items()}
    hyper = {f"model.{k}": v for k, v in config.model_overrides(cell.model, cell.stockset).items()}
    return {**config.flat(), **recipe, **hyper, "model.name": cell.model,
            "stockset": cell.stockset, "seed": cell.seed,     # also params: the compare view plots only these
            "model.d_feat": len(store.feature_names), "model.d_market": len(store.market_names),
            "data.n_instruments": len(store.instruments)}


def _train(settings: Settings, config: Config, slots: list[_Slot], store, device,
           progress: bool) -> list[_Trained]:
    """The stack's models trained with `fit_stack` (each resumed from its checkpoint folder when
    one is there), each initialised as it would be alone (seeded by its cell); anchors (lgbm,
    linear) fitted with `pipeline.anchors.fit_anchor` instead, one by one."""
    from pipeline import tracking
    from pipeline.anchors import fit_anchor, is_anchor
    from pipeline.loader import DayLoader
    from pipeline.models import create_model
    from pipeline.train import StackCell, fit_stack, seed_everything

    # A stack is one model, so its cells share one recipe: [train] with [models.<name>.train].
    tc, ec = config.train_for(slots[0].cell.model), config.engine
    eval_days = max(tc.batch_days, EVAL_BATCH_DAYS)
    models, stack_cells, loaders = [], [], []
    for s in slots:
        cell = s.cell
        seed_everything(cell.seed)
        models.append(create_model(cell.model, d_feat=len(store.feature_names),
                                   d_market=len(store.market_names),
                                   **config.model_overrides(cell.model, cell.stockset)))
        train_ld = DayLoader(store, "train", cell.stockset, batch_days=tc.batch_days)
        valid_ld = DayLoader(store, "valid", cell.stockset, batch_days=eval_days, device=device)
        test_ld = DayLoader(store, "test", cell.stockset, batch_days=eval_days, device=device)
        stack_cells.append(StackCell(cell.stockset, cell.seed, tc, s.ckpt_dir,
                                     train_days=train_ld.days, valid_days=valid_ld.days))
        loaders.append((valid_ld, test_ld))

    def on_epoch(k: int, record: dict) -> None:
        tracking.log_epoch(settings, slots[k].run_id, record)

    if is_anchor(models[0]):
        # LightGBM / ridge: fitted in seconds to minutes, one cell after another (no stacking, no
        # checkpoint: a killed cell refits, in the MLflow run its folder remembers)
        results = []
        for k, (m, c) in enumerate(zip(models, stack_cells)):
            results.append(fit_anchor(m, c, store, progress=progress))
            m.to(device)
            for record in results[-1].history:
                on_epoch(k, record)
    else:
        results = fit_stack(models, stack_cells, store, on_epoch=on_epoch, progress=progress,
                            device=device, graph=ec.cuda_graph, deterministic=ec.deterministic,
                            eval_batch_days=eval_days)
    return [_Trained(m, r, v, t, sum(p.numel() for p in m.parameters()))
            for m, r, (v, t) in zip(models, results, loaders)]


def _evaluate(settings: Settings, config: Config, cell: Cell, store, device,
              trained: _Trained) -> _Evaluated:
    """Valid and test scores of the trained model, and every metric a cell logs."""
    from pipeline.train import score_loader, score_loader_with_usage

    bf16, model = config.train_for(cell.model).bf16, trained.model
    test_pred, test_usage = score_loader_with_usage(model, trained.test, device, bf16, store)
    pred = pd.concat([score_loader(model, trained.valid, device, bf16, store).assign(segment="valid"),
                      test_pred.assign(segment="test")], ignore_index=True)
    pred = with_execution(pred, store)[list(PREDICTION_COLUMNS)]
    notes = []
    index_ret = index_benchmark(settings, cell.stockset, store.dates)
    if index_ret is None:
        notes.append(f"no index benchmark for {cell.stockset!r} (warehouse index_prices); "
                     "long-only excess is against the equal-weighted members only")
    metrics, daily, rets = evaluate(pred, config.backtest, index_ret)
    res = trained.fit
    metrics.update({"best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
                    "n_params": trained.n_params, "train_throughput": res.throughput})
    usage = (_expert_usage_by_set(model, store, cell.stockset, device, test_usage)
             if getattr(model, "last_routing", None) is not None else {})
    return _Evaluated(pred, metrics, daily, rets, usage, index_ret is not None, notes)


def _expert_usage_by_set(model, store, stockset, device,
                         own_usage: np.ndarray | None) -> dict[str, np.ndarray]:
    """Mean routing weights (G, E) over the test days of each stock set. "all" (every traded
    stock, thousands on real data) only when it is the run's own set or the only one.
    own_usage: the run's own set, already measured by its test-scoring pass."""
    from pipeline.loader import DayLoader
    from pipeline.train import expert_usage

    sets = [s for s in store.members if s != "all"]
    if stockset == "all" or not sets:
        sets.append("all")
    out = {}
    for s in sets:
        if s == stockset and own_usage is not None:
            out[s] = own_usage
            continue
        ld = DayLoader(store, "test", s, batch_days=EVAL_BATCH_DAYS)
        if len(ld):
            u = expert_usage(model, ld, device)
            if u is not None:
                out[s] = u
    return out


def _log(config: Config, cell: Cell, store, trained: _Trained, ev: _Evaluated,
         register: bool) -> str | None:
    """Metrics, plots, tables, config and the model, to the active MLflow run. Returns the
    registered model version (None when not registered)."""
    from pipeline import plots, tracking
    from pipeline.loader import DayLoader
    from pipeline.models import model_state

    res = trained.fit
    # One value each, in sections (test/, valid/best_*, backtest/, run/: tracking.metric_name);
    # the per-epoch curves are train/*, valid/* (tracking.EPOCH_METRICS).
    tracking.log_cell_metrics(ev.metrics)
    tracking.set_tag("index_benchmark", "yes" if ev.has_index else "absent")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        ev.pred.to_parquet(t / "predictions.parquet", index=False)
        ev.returns.reset_index().to_parquet(t / "portfolio_returns.parquet", index=False)
        ev.daily.reset_index().to_parquet(t / "daily_ic.parquet", index=False)
        title, bt = f"{cell.model} / {cell.stockset} / seed {cell.seed}", config.backtest
        tracking.log_figure(plots.cumulative_returns(
            ev.returns, title, universe=cell.stockset, top_frac=bt.top_frac, buy_cost=bt.buy_cost,
            sell_cost=bt.sell_cost, days_per_year=bt.days_per_year), "plots/cumulative_returns.png")
        tracking.log_figure(plots.daily_ic(ev.daily, title), "plots/daily_ic.png")
        tracking.log_figure(plots.training_curves(res.history, title, best_epoch=res.best_epoch),
                            "plots/training_curves.png")
        if ev.usage:
            tracking.log_figure(plots.expert_usage(ev.usage, title), "plots/expert_usage.png")
            np.savez(t / "expert_usage.npz", **ev.usage)
        tracking.log_files(sorted(t.iterdir()))
    tracking.log_json(asdict(config), "config/config.json")
    if config.source and Path(config.source).exists():
        tracking.log_files([config.source], artifact_path="config")
    tracking.log_json(store.norm_stats, "normalisation/norm_stats.json")
    tracking.log_json(res.history, "history.json")

    b0 = next(iter(DayLoader(store, "test", cell.stockset, batch_days=1)))
    n_ex = min(8, b0.x.shape[1])
    example = tracking.pack_input(b0.x[:, :n_ex].numpy(), b0.market.numpy())
    state = model_state(trained.model, cell.model, len(store.feature_names), len(store.market_names),
                        config.model_overrides(cell.model, cell.stockset), store.window)
    name = f"{cell.model}-{cell.stockset}-seed{cell.seed}"     # the logged model, named after its cell
    return tracking.log_model(trained.model, state, example, name=name, register=register)
