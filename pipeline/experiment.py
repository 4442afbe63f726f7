"""One experiment = one (model, stock set, seed): train, evaluate, backtest, log to MLflow.

`run_experiment` is what `miga train` and the flow's cells call. A run killed mid-training
resumes when called again with the same arguments: the checkpoint folder is keyed by
(model, stock set, seed, config, data fingerprint) and remembers its MLflow run, which is
reopened and continued rather than duplicated.
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

from pipeline.backtest import add_index, index_returns, portfolio_metrics, portfolio_returns
from pipeline.config import Config
from pipeline.errors import MigaError
from pipeline.metrics import daily_ic, ic_summary
from pipeline.settings import Settings

RUN_ID_FILE = "mlflow_run_id"


@dataclass
class ExperimentResult:
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
        keys = ("test_ic", "test_icir", "test_rank_ic", "test_rank_icir", "long_only_ar",
                "long_only_ir", "long_short_ar", "long_short_ir", "long_only_mdd", "turnover",
                "long_only_ar_net", "valid_ic")
        lines = [f"{self.model} on {self.stockset}, seed {self.seed}: {len(self.history)} epochs, "
                 f"best epoch {self.best_epoch}, {self.seconds:.1f} s; MLflow run {self.run_id}"]
        lines += [f"  {k:<17} {m[k]: .4f}" for k in keys if k in m]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def run_key(model: str, stockset: str, seed: int, config: Config, data_fp: str) -> str:
    blob = json.dumps([model, stockset, int(seed), config.fingerprint(), data_fp])
    return f"{model}-{stockset}-s{seed}-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def _index_series(settings: Settings, stockset: str, dates: np.ndarray) -> pd.Series | None:
    """Index returns with the label's timing from warehouse `index_prices`; None if unavailable."""
    from pipeline.warehouse import connect, run_sql, table_exists

    if not Path(settings.warehouse).exists():
        return None
    try:
        con = connect(settings.warehouse, read_only=True)
    except Exception:  # locked by a writer or unreadable: the index benchmark is optional
        return None
    try:
        if not table_exists(con, "index_prices"):
            return None
        df = run_sql(con, "backtest/index_close", {"index_name": stockset}).df()
    finally:
        con.close()
    if df.empty:
        return None
    closes = pd.Series(df["close"].to_numpy(), index=pd.to_datetime(df["date"]))
    return index_returns(closes, dates)


def evaluate(pred: pd.DataFrame, config: Config, index_ret: pd.Series | None = None):
    """Metrics from a predictions table (date, instrument, score, label, segment).

    Returns (metrics, daily IC of test, daily portfolio returns of test). Tests recompute the
    logged metrics with this function from `predictions.parquet`."""
    bt = config.backtest
    metrics: dict[str, float] = {}
    for seg in ("valid", "test"):
        part = pred[pred["segment"] == seg]
        if part.empty:
            continue
        daily = daily_ic(part)
        metrics.update({f"{seg}_{k}": v for k, v in ic_summary(daily).items()})
        if seg == "test":
            test_daily = daily
    test = pred[pred["segment"] == "test"]
    rets = add_index(portfolio_returns(test, bt.top_frac, bt.buy_cost, bt.sell_cost), index_ret)
    metrics.update(portfolio_metrics(rets, bt.days_per_year))
    return metrics, test_daily, rets


def _expert_usage_by_set(model, store, stockset, window, device,
                         own_usage: np.ndarray | None) -> dict[str, np.ndarray]:
    """Mean routing weights (G, E) over the test days of each stock set. "all" (every traded
    stock, thousands on real data) only when it is the run's own set or the only one.
    own_usage: the run's own set, already measured by its test-prediction pass."""
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
        ld = DayLoader(store, "test", s, batch_days=8, window=window)
        if len(ld):
            u = expert_usage(model, ld, device)
            if u is not None:
                out[s] = u
    return out


def run_experiment(settings: Settings, config: Config, model_name: str, stockset: str, seed: int,
                   *, store=None, register: bool = True, progress: bool = True) -> ExperimentResult:
    """Train `model_name` on `stockset` with `seed`, evaluate on valid/test, log everything.

    store: an open TensorStore (default: `open_store(settings, config)`)."""
    import mlflow

    from pipeline import plots, tracking
    from pipeline.loader import DayLoader
    from pipeline.models import MODELS, create_model
    from pipeline.train import fit, predict, predict_with_usage, resolve_device, seed_everything

    t_start = time.perf_counter()
    settings.ensure()
    if model_name not in MODELS:
        raise MigaError(f"unknown model {model_name!r}; registered: {', '.join(sorted(MODELS))}")
    if store is None:
        from pipeline.store import open_store

        store = open_store(settings, config)
    if stockset not in store.members:
        raise MigaError(f"stock set {stockset!r} is not in the tensor store; "
                        f"have {', '.join(sorted(store.members))}")
    tc, window = config.train, store.window
    device = resolve_device(tc.device)
    overrides = config.model_overrides(model_name)
    d_feat, d_market = len(store.feature_names), len(store.market_names)
    key = run_key(model_name, stockset, seed, config, store.fingerprint)
    ckpt_dir = Path(settings.runs_dir) / key
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    exp_id = tracking.setup(settings)
    run_id_file = ckpt_dir / RUN_ID_FILE
    resume_id = run_id_file.read_text().strip() if run_id_file.exists() else None
    if resume_id:
        try:
            if tracking.find_run(settings, resume_id).info.status == "FINISHED":
                resume_id = None
        except Exception:
            resume_id = None
    notes: list[str] = []
    with mlflow.start_run(run_id=resume_id, experiment_id=None if resume_id else exp_id,
                          run_name=None if resume_id else f"{model_name}/{stockset}/seed{seed}") as run:
        run_id = run.info.run_id
        run_id_file.write_text(run_id)
        if not resume_id:
            mlflow.set_tags({"model": model_name, "stockset": stockset, "seed": str(seed),
                             "data_fingerprint": store.fingerprint, "git_commit": tracking.git_commit(),
                             "device": str(device), "run_key": key})
            mlflow.log_params({k: ("" if v is None else v) for k, v in config.flat().items()})
            mlflow.log_params({"model.name": model_name, "model.d_feat": d_feat,
                               "model.d_market": d_market, "data.n_instruments": len(store.instruments)})
        else:
            mlflow.set_tag("resumed", "true")

        seed_everything(seed)
        model = create_model(model_name, d_feat=d_feat, d_market=d_market, **overrides)
        n_params = sum(p.numel() for p in model.parameters())
        train_ld = DayLoader(store, "train", stockset, batch_days=tc.batch_days, window=window,
                             shuffle=True, seed=seed, device=device)
        valid_ld = DayLoader(store, "valid", stockset, batch_days=max(tc.batch_days, 8),
                             window=window, device=device)
        test_ld = DayLoader(store, "test", stockset, batch_days=max(tc.batch_days, 8),
                            window=window, device=device)
        if not len(train_ld) or not len(valid_ld) or not len(test_ld):
            raise MigaError(f"stock set {stockset!r} has no member days in some segment "
                            f"(train {len(train_ld)}, valid {len(valid_ld)}, test {len(test_ld)} batches)")
        res = fit(model, train_ld, valid_ld, tc, seed=seed, checkpoint_dir=ckpt_dir,
                  on_epoch=tracking.log_epoch, progress=progress, device=device)

        test_pred, test_usage = predict_with_usage(model, test_ld, device, tc.bf16, store)
        pred = pd.concat([predict(model, valid_ld, device, tc.bf16, store).assign(segment="valid"),
                          test_pred.assign(segment="test")], ignore_index=True)
        pred = pred[["date", "instrument", "score", "label", "segment"]]
        index_ret = _index_series(settings, stockset, store.dates)
        if index_ret is None:
            notes.append(f"no index benchmark for {stockset!r} (warehouse index_prices); "
                         "long-only excess is against the equal-weighted members only")
        metrics, test_daily, rets = evaluate(pred, config, index_ret)
        metrics.update({"best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
                        "n_params": n_params, "train_throughput": res.throughput})
        # valid_ic / valid_rank_ic are also per-epoch curves: the final values (best epoch's
        # weights) go one step after the last epoch so that they are the run's latest values.
        tracking.log_metrics(metrics, step=res.epochs_run + 1)
        mlflow.set_tag("index_benchmark", "yes" if index_ret is not None else "absent")

        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            pred.to_parquet(t / "predictions.parquet", index=False)
            rets.reset_index().to_parquet(t / "portfolio_returns.parquet", index=False)
            test_daily.reset_index().to_parquet(t / "daily_ic.parquet", index=False)
            title = f"{model_name} / {stockset} / seed {seed}"
            plots.cumulative_returns(rets, t / "cumulative_excess_return.png", title)
            plots.daily_ic(test_daily, t / "daily_ic.png", title=title)
            plots.training_curves(res.history, t / "training_curves.png", title)
            if getattr(model, "last_routing", None) is not None:
                usage = _expert_usage_by_set(model, store, stockset, window, device, test_usage)
                if usage:
                    plots.expert_usage(usage, t / "expert_usage.png", title)
                    np.savez(t / "expert_usage.npz", **usage)
            for f in sorted(t.iterdir()):
                mlflow.log_artifact(str(f))
        tracking.log_json(asdict(config), "config/config.json")
        if config.source and Path(config.source).exists():
            mlflow.log_artifact(config.source, artifact_path="config")
        tracking.log_json(store.norm_stats, "normalisation/norm_stats.json")
        tracking.log_json(res.history, "history.json")

        b0 = next(iter(DayLoader(store, "test", stockset, batch_days=1, window=window)))
        n_ex = min(8, b0.x.shape[1])
        example = tracking.pack_input(b0.x[:, :n_ex].numpy(), b0.market.numpy())
        tracking.log_model(model, model_name, d_feat, d_market, overrides, window, example,
                           register=register)
        seconds = time.perf_counter() - t_start
        mlflow.log_metric("run_seconds", seconds)
    # Finished and logged: the checkpoints are no longer needed (the model is in MLflow).
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return ExperimentResult(run_id=run_id, experiment_id=run.info.experiment_id, model=model_name,
                            stockset=stockset, seed=seed, metrics=metrics, history=res.history,
                            best_epoch=res.best_epoch, seconds=seconds, notes=notes,
                            predictions=pred, returns=rets)


def load_run_model(settings: Settings, run_id: str):
    """The trained model of an experiment run, rebuilt from its state_dict (eval mode, CPU)."""
    from pipeline.tracking import load_state_model

    return load_state_model(settings, run_id)
