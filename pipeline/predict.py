"""Scoring with a trained model: any days of the store, and next-day predictions from the champion.

The next-day prediction for signal date t (the latest market day in the warehouse) scores every
member of each stock set on t from its features over t-4..t; the position it implies is taken
at t+1's average price, as in training (label y_t = p_{t+2}/p_{t+1} - 1).
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.settings import Settings

CHAMPION = "champion"


def score_days(model, store, stockset: str, days, window: int, device="cpu",
               batch_days: int = 16) -> pd.DataFrame:
    """Scores of `model` for the members of `stockset` on the given store day indices.

    Returns date, instrument, score, label (NaN where the label is not known yet).
    """
    from pipeline.loader import DayLoader
    from pipeline.train import predict

    loader = DayLoader(store, "test", stockset, batch_days=batch_days, window=window,
                       device=device, days=np.asarray(days, dtype=np.int64))
    df = predict(model.to(device), loader, device, store=store)
    return df[["date", "instrument", "score", "label"]]


def latest_day(store, stockset: str) -> int:
    """The last store day on which the stock set has members."""
    has = np.flatnonzero(store.members[stockset].any(axis=1))
    if not len(has):
        raise ValueError(f"stock set {stockset!r} has no members in the store")
    return int(has[-1])


def champion_version(client, model: str):
    """The registered model version carrying the `champion` alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model, CHAMPION)
    except MlflowException:
        return None


def write_predictions(settings: Settings, frame: pd.DataFrame) -> int:
    """Replace the (date, model, stockset) slices of `frame` in the warehouse `predictions` table."""
    from pipeline.warehouse import connect, run_sql

    con = connect(settings.warehouse)
    try:
        con.execute("BEGIN")
        run_sql(con, "predictions/create")
        for (d, m, s), _ in frame.groupby(["date", "model", "stockset"]):
            run_sql(con, "predictions/replace_day", {"date": pd.Timestamp(d).date(), "model": m, "stockset": s})
        con.register("staged_predictions", frame)
        run_sql(con, "predictions/insert")
        con.unregister("staged_predictions")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()
    return len(frame)


def predict_next_day(settings: Settings, config: Config, models: list[str]) -> dict[str, int]:
    """Score the latest market day with each model's champion, for every stock set.

    Writes the warehouse `predictions` table and logs the same rows as an MLflow artifact
    (experiment `miga-predictions`). Returns "model/stockset" -> rows written.
    """
    import mlflow
    from mlflow import MlflowClient

    from pipeline.experiment import load_run_model
    from pipeline.store import open_store
    from pipeline.train import resolve_device

    store = open_store(settings, config)
    client = MlflowClient(settings.mlflow_uri)
    device = resolve_device(config.train.device)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    frames = []
    for model_name in models:
        mv = champion_version(client, model_name)
        if mv is None:
            continue
        model = load_run_model(settings, mv.run_id)
        for stockset in config.data.stocksets:
            if stockset not in store.members:
                continue
            day = latest_day(store, stockset)
            df = score_days(model, store, stockset, [day], config.data.window, device)
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
    mlflow.set_tracking_uri(settings.mlflow_uri)
    exp = mlflow.get_experiment_by_name("miga-predictions")
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(
        "miga-predictions", artifact_location=(settings.mlflow_artifacts / "miga-predictions").as_uri())
    with mlflow.start_run(experiment_id=exp_id, run_name=f"next-day {out['date'].max().date()}"):
        mlflow.set_tags({"kind": "next-day-predictions", "signal_date": str(out["date"].max().date())})
        mlflow.log_artifact(str(path))
    return {f"{m}/{s}": int(n) for (m, s), n in out.groupby(["model", "stockset"]).size().items()}
