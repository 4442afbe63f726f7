"""Next-day predictions: each model's champion scores the latest market day.

The prediction for signal date t (the latest market day in the store) scores every member of
each stock set on t from its features over the store's window ending at t; the position it
implies is taken at t+1's average price, as in training (label y_t = p_{t+2}/p_{t+1} - 1).
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.settings import Settings


def latest_day(store, stockset: str) -> int:
    """The last store day on which the stock set has members."""
    has = np.flatnonzero(store.members[stockset].any(axis=1))
    if not len(has):
        raise ValueError(f"stock set {stockset!r} has no members in the store")
    return int(has[-1])


def write_predictions(settings: Settings, frame: pd.DataFrame) -> int:
    """Replace the (date, model, stockset) slices of `frame` in the warehouse `predictions` table."""
    from pipeline.warehouse import run_sql, warehouse

    with warehouse(settings) as con:
        con.execute("BEGIN")
        try:
            run_sql(con, "predictions/create")
            for (d, m, s), _ in frame.groupby(["date", "model", "stockset"]):
                run_sql(con, "predictions/replace_day",
                        {"date": pd.Timestamp(d).date(), "model": m, "stockset": s})
            con.register("staged_predictions", frame)
            run_sql(con, "predictions/insert")
            con.unregister("staged_predictions")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return len(frame)


def predict_next_day(settings: Settings, config: Config, models: list[str], store) -> dict[str, int]:
    """Score the latest market day of `store` with each model's champion, for every stock set.

    Writes the warehouse `predictions` table and logs the same rows as an MLflow artifact
    (experiment `miga-predictions`, one run per signal date, tagged with each champion's
    version and run). Returns "model/stockset" -> rows written.
    """
    from pipeline import tracking
    from pipeline.champion import load_run_model
    from pipeline.train import resolve_device, score_days

    device = resolve_device(config.train.device)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    frames = []
    for model_name in models:
        mv = tracking.champion_version(settings, model_name)
        if mv is None:
            continue
        model = load_run_model(settings, mv.run_id)
        for stockset in config.data.stocksets:
            if stockset not in store.members:
                continue
            df = score_days(model, store, stockset, [latest_day(store, stockset)], device)
            frames.append(df.drop(columns="label").assign(
                model=model_name, stockset=stockset, run_id=mv.run_id,
                model_version=str(mv.version), created_at=now))
    if not frames:
        return {}
    out = pd.concat(frames, ignore_index=True)
    out["date"] = pd.to_datetime(out["date"])
    write_predictions(settings, out)
    path = settings.reports_dir / "next_day_predictions.parquet"
    out.to_parquet(path, index=False)
    champions = {m: f"version {v} (run {r})" for (m, v, r), _ in
                 out.groupby(["model", "model_version", "run_id"])}
    tracking.log_next_day(settings, path, str(out["date"].max().date()), champions)
    return {f"{m}/{s}": int(n) for (m, s), n in out.groupby(["model", "stockset"]).size().items()}
