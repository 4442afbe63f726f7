"""Prefect tasks: each wraps one `pipeline` function. No logic worth testing lives here.

Values flow from step to step: the ingest returns the warehouse's data fingerprint (its report
holds it), the tensor-store step returns the store's fingerprint, and the stacks, the champion
step and the next-day step open that store by it instead of re-hashing the warehouse.

Cache keys: ingest on the data folder's file signature; features and store on the data
fingerprint plus the config; training stacks on the store fingerprint, the config (less
[engine]) and their cells, so a rerun on unchanged inputs skips them (the Prefect UI shows them
as Cached) and a daily run only pays for what is new.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.cache import folder_signature, stable_key

from pipeline.config import load_config
from pipeline.grid import Cell
from pipeline.settings import Settings

CACHE_FOR = timedelta(days=30)
# Cached steps keep their (small, JSON) results: nothing a Prefect worker reads back is unpickled.
PERSIST = dict(cache_expiration=CACHE_FOR, persist_result=True, result_serializer="json")


def _settings(home: str) -> Settings:
    return Settings.from_env(home).ensure()


def _config(config: str | None, epochs: int | None):
    cfg = load_config(config)
    return cfg.with_train(max_epochs=epochs) if epochs else cfg


def _ingest_key(ctx, p) -> str:
    return "ingest-" + stable_key(p["home"], p["warehouse_id"], str(Path(p["data_dir"]).resolve()),
                                  folder_signature(p["data_dir"]))


def _data_key(step: str):
    def key(ctx, p) -> str:
        cfg = _config(p.get("config"), p.get("epochs"))
        return f"{step}-" + stable_key(p["home"], p["data_fp"], cfg.fingerprint("segments", "data"))
    return key


def _transient(task, task_run, state) -> bool:
    """Retry only what can pass on a second try (I/O, a locked store), not a wrong input or a bug."""
    from pipeline.errors import MigaError

    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, (MigaError, ValueError, KeyError, TypeError, LookupError))


def _stack_key(ctx, p) -> str:
    cfg = _config(p.get("config"), p.get("epochs"))
    s = Settings.from_env(p["home"])
    return "stack-" + stable_key(p["home"], s.mlflow_uri, p["store_fp"], cfg.cell_fingerprint(),
                                 p["cells"])


def _store(home: str, store_fp: str):
    from pipeline.store.build import open_store

    return open_store(_settings(home), store_fp)


@task(name="synthesize", cache_policy=NO_CACHE)
def synthesize(home: str, stocks: int = 300, days: int = 750, seed: int = 0) -> str:
    from pipeline.data.synth import SynthSpec, write_synthetic

    out = _settings(home).home / "synthetic"
    if not (out / "daily.parquet").exists():
        write_synthetic(out, SynthSpec(n_stocks=stocks, n_days=days, seed=seed))
    return str(out)


@task(name="ingest", cache_key_fn=_ingest_key, **PERSIST,
      retries=2, retry_delay_seconds=[5, 20], retry_condition_fn=_transient)
def ingest(home: str, data_dir: str, warehouse_id: str) -> dict:
    from pipeline.data.ingest import ingest as do_ingest

    report = do_ingest(_settings(home), Path(data_dir))
    return {"fingerprint": report.fingerprint, "report": str(report)}


@task(name="validate", cache_key_fn=_data_key("validate"), **PERSIST)
def validate(home: str, data_fp: str, config: str | None = None, epochs: int | None = None) -> str:
    from pipeline.data.validate import validate_warehouse

    return str(validate_warehouse(_settings(home), gx="failures"))


@task(name="features", cache_key_fn=_data_key("features"), **PERSIST)
def features(home: str, data_fp: str, config: str | None = None, epochs: int | None = None) -> str:
    from pipeline.features.build import build_features

    return str(build_features(_settings(home), _config(config, epochs)))


@task(name="tensor-store", cache_key_fn=_data_key("store"), **PERSIST)
def tensor_store(home: str, data_fp: str, config: str | None = None, epochs: int | None = None) -> str:
    from pipeline.store.build import build_store

    return build_store(_settings(home), _config(config, epochs)).fingerprint


def plan_stacks(home: str, store_fp: str, cells: list[dict], config: str | None = None) -> list[list[Cell]]:
    """The grid's cells packed into training stacks (`pipeline.grid.plan_stacks`)."""
    from pipeline.grid import plan_stacks as plan

    return plan(load_config(config), [Cell.from_dict(c) for c in cells], _store(home, store_fp))


@task(name="train-stack", cache_key_fn=_stack_key, **PERSIST,
      retries=1, retry_delay_seconds=10, retry_condition_fn=_transient)
def train_stack(home: str, store_fp: str, cells: list[dict], config: str | None = None,
                epochs: int | None = None) -> list[dict]:
    """A stack of cells (one model) trained together; per cell {cell, run_id, experiment_id,
    metrics} or {cell, error}. Raises (so every cell of it fails) if training failed."""
    from pipeline.cell import run_stack

    outs = run_stack(_settings(home), _config(config, epochs), [Cell.from_dict(c) for c in cells],
                     store=_store(home, store_fp))
    return [{"cell": c, "error": f"{type(r).__name__}: {r}"} if isinstance(r, BaseException) else
            {"cell": c, "run_id": r.run_id, "experiment_id": r.experiment_id,
             "metrics": {k: float(v) for k, v in r.metrics.items()}}
            for c, r in zip(cells, outs)]


@task(name="report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 20])
def report(home: str) -> str:
    from pipeline.report import build_report

    return build_report(_settings(home)).markdown


@task(name="champion", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def champion(home: str, store_fp: str, results: list[dict], config: str | None = None,
             epochs: int | None = None) -> list[dict]:
    from pipeline.champion import challenge

    return [d.as_dict() for d in challenge(_settings(home), _config(config, epochs), results,
                                           _store(home, store_fp))]


@task(name="next-day-predictions", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def next_day_predictions(home: str, store_fp: str, models: list[str], config: str | None = None,
                         epochs: int | None = None) -> dict:
    from pipeline.next_day import predict_next_day

    return predict_next_day(_settings(home), _config(config, epochs), models, _store(home, store_fp))
