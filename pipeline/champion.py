"""Champion/challenger: move the registered-model alias `champion` only to a better model.

For each model name, this run's registered versions are the challengers. Every challenger and
the current champion are scored on the same data: the most recent `window` market days that
have labels, over the primary stock set (the first of `config.data.stocksets`). The best
challenger takes the alias only if its score there beats the champion's: the mean daily IC
(`[backtest] champion_metric = "ic"`, the default) or the TopkDropout account's annualised
excess over the members' mean net of costs over the window ("topk_excess_net",
pipeline/evaluation/topk.py). The decision is recorded as tags on the challenger's run and model
version, and appended to `MIGA_HOME/reports/champion_log.jsonl`.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np

from pipeline.config import Config
from pipeline.evaluation import (portfolio_returns, topk_account, topk_metrics, topk_params,
                                 with_execution)
from pipeline.evaluation.ic import ic_metrics
from pipeline.settings import Settings

WINDOW_DAYS = 60


@dataclass
class Decision:
    model: str
    decision: str            # "promoted" or "kept"
    reason: str
    challenger_run: str
    challenger_version: str
    challenger_ic: float     # the window score of `metric` (the name predates the choice)
    champion_version: str | None
    champion_ic: float | None
    stockset: str
    window: tuple[str, str]
    metric: str = "ic"

    def as_dict(self) -> dict:
        return asdict(self)


def decide(challenger_ic: float, champion_ic: float | None, metric: str = "ic") -> tuple[bool, str]:
    """Promote when there is no champion yet, or the challenger's window score is strictly higher."""
    name = "IC" if metric == "ic" else metric
    if champion_ic is None:
        return True, "no champion yet"
    if not math.isfinite(challenger_ic):
        return False, f"challenger has no valid {name} on the window"
    if not math.isfinite(champion_ic) or challenger_ic > champion_ic:
        return True, f"window {name} {challenger_ic:.4f} > champion {champion_ic:.4f}"
    return False, f"window {name} {challenger_ic:.4f} <= champion {champion_ic:.4f}"


def recent_window(store, stockset: str, n_days: int = WINDOW_DAYS) -> np.ndarray:
    """The last `n_days` store days on which some member of `stockset` has a label."""
    members = store.members[stockset]
    labelled = (members & np.isfinite(store.labels)).any(axis=1)
    labelled[: store.window - 1] = False  # a sample needs window-1 days of history
    days = np.flatnonzero(labelled)
    if not len(days):
        raise ValueError(f"no labelled day for stock set {stockset!r} in the store")
    return days[-n_days:]


def load_run_model(settings: Settings, run_id: str):
    """The trained model of a cell's run, rebuilt from its logged state (eval mode, CPU)."""
    from pipeline.models import model_from_state
    from pipeline.tracking import load_model_state

    return model_from_state(load_model_state(settings, run_id))


def window_ic(settings: Settings, config: Config, store, run_id: str, stockset: str, days) -> float:
    """The run's score on the window: `[backtest] champion_metric` (module docstring)."""
    from pipeline.train import resolve_device, score_days

    model = load_run_model(settings, run_id)
    df = score_days(model, store, stockset, days, resolve_device(config.train.device))
    bt = config.backtest
    if bt.champion_metric == "ic":
        return float(ic_metrics(df)["ic"])
    return window_topk(df, store, bt)["topk_excess_ar_net"]


def window_topk(df, store, bt) -> dict[str, float]:
    """The TopkDropout metrics of scores (date, instrument, score, label) on store days."""
    pos = {s: j for j, s in enumerate(store.instruments)}
    df = df.assign(day_idx=np.searchsorted(store.dates, df["date"].to_numpy().astype("datetime64[D]")),
                   inst_idx=df["instrument"].map(pos).to_numpy(), segment="window")
    pred = with_execution(df, store)
    bench = portfolio_returns(pred, top_frac=bt.top_frac, buy_cost=bt.buy_cost,
                              sell_cost=bt.sell_cost, untradable=bt.untradable)["bench"]
    return topk_metrics(topk_account(pred, **topk_params(bt)), bench, None, bt.days_per_year)


def challenge(settings: Settings, config: Config, results: list[dict], store,
              window_days: int = WINDOW_DAYS) -> list[Decision]:
    """Run the champion/challenger comparison for every model among `results` (grid-cell
    results), on the open TensorStore the cells trained on."""
    from pipeline import tracking

    stockset = config.data.stocksets[0]
    days = recent_window(store, stockset, window_days)
    window = (str(store.dates[days[0]]), str(store.dates[days[-1]]))
    decisions = []
    for model in sorted({r["cell"]["model"] for r in results}):
        challengers = []
        versions = tracking.registered_versions(settings, model)
        for r in results:
            if r["cell"]["model"] != model:
                continue
            mv = versions.get(r["run_id"])
            if mv is not None:
                challengers.append((window_ic(settings, config, store, r["run_id"], stockset, days), mv))
        if not challengers:
            continue
        best_ic, best = max(challengers, key=lambda t: t[0] if math.isfinite(t[0]) else -math.inf)
        on = {"champion.metric": config.backtest.champion_metric,
              "champion.window": f"{window[0]}..{window[1]}"}
        for ic, mv in challengers:      # the challengers that lost to `best` say so too
            if mv.version != best.version:
                tracking.tag_version(settings, model, mv.version, mv.run_id, {
                    "champion.decision": "lost", **on, "champion.window_ic": f"{ic:.6f}",
                    "champion.reason": f"window IC {ic:.4f} below version {best.version}'s {best_ic:.4f}"})
        current = tracking.champion_version(settings, model)
        if current is not None and current.version == best.version:
            continue
        champ_ic = (window_ic(settings, config, store, current.run_id, stockset, days)
                    if current is not None else None)
        promote, reason = decide(best_ic, champ_ic, config.backtest.champion_metric)
        if promote:
            tracking.set_champion(settings, model, best.version)
        d = Decision(model, "promoted" if promote else "kept", reason, best.run_id, str(best.version),
                     best_ic, str(current.version) if current else None, champ_ic, stockset, window,
                     config.backtest.champion_metric)
        tags = {"champion.decision": d.decision, "champion.reason": reason, **on,
                "champion.window_ic": f"{best_ic:.6f}"}
        tracking.tag_version(settings, model, best.version, best.run_id, tags)
        with open(settings.reports_dir / "champion_log.jsonl", "a") as f:
            f.write(json.dumps({"at": datetime.now(timezone.utc).isoformat(), **d.as_dict()}) + "\n")
        decisions.append(d)
    return decisions
