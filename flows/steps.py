"""Prefect tasks: each wraps one `pipeline` function and logs (`get_run_logger`) what it did,
from what that function returns. No logic worth testing lives here.

Values flow from step to step: the ingest returns the warehouse's data fingerprint (its report
holds it), the tensor-store step returns the store's fingerprint, and the stacks, the champion
step and the next-day step open that store by it instead of re-hashing the warehouse.

Cache keys: ingest on the data folder's file signature; features and store on the data
fingerprint plus the config; training stacks on the store fingerprint, the config (less
[engine]) and their cells, so a rerun on unchanged inputs skips them (the Prefect UI shows them
as Cached) and a daily run only pays for what is new.

Telemetry: the project's opt-out (`pipeline.settings.QUIET_ENV`, DO_NOT_TRACK=1 unless the
environment says otherwise) is in the environment before Prefect's import reads it (the flows
package applies it, flows/__init__.py); this module keeps Prefect's SDK milestones from writing
a device id while the opt-out holds (`_quiet_sdk_milestones`).
"""
from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.cache import folder_signature, stable_key
from pipeline.config import load_config
from pipeline.grid import Cell
from pipeline.settings import Settings

CACHE_FOR = timedelta(days=30)
# Cached steps keep their (small, JSON) results: nothing a Prefect worker reads back is unpickled.
PERSIST = dict(cache_expiration=CACHE_FOR, persist_result=True, result_serializer="json")
# What a cell's log line and the results table artifact show (keys of a cell result's metrics).
CELL_METRICS = ("test_ic", "test_icir", "test_rank_ic", "long_only_ar", "long_only_ir")


def _quiet_sdk_milestones() -> None:
    """Honour the telemetry opt-out in Prefect's SDK milestones too. Prefect 3.8 marks a
    milestone (first flow defined: every `@flow`; first flow run: a flow run's end; first
    deployment) whenever stdout or stderr is a terminal, and for a new one writes an anonymous
    device id to $PREFECT_HOME/.sdk_telemetry/device_id (and milestones.json) before it looks
    at DO_NOT_TRACK or PREFECT_SERVER_ANALYTICS_ENABLED: only the sending checks them
    (prefect/_internal/analytics/milestones.py, emit.py). No setting turns that off, so while
    either opt-out holds, marking a milestone does nothing. Installed before the flows' `@flow`."""
    try:
        import prefect._internal.analytics as analytics
        from prefect.settings import get_current_settings

        mark = analytics.try_mark_milestone
        enabled = analytics.is_telemetry_enabled
    except (ImportError, AttributeError):   # another Prefect: nothing of this to quiet
        return
    if getattr(mark, "miga_quiet", False):
        return

    def try_mark_milestone(milestone) -> bool:
        if not enabled() or not get_current_settings().server.analytics_enabled:
            return False
        return mark(milestone)

    try_mark_milestone.miga_quiet = True
    analytics.try_mark_milestone = try_mark_milestone   # Prefect imports it from here at each call


_quiet_sdk_milestones()


def settings_of(home: str) -> Settings:
    return Settings.from_env(home).ensure()


def _config(config: str | None, epochs: int | None):
    cfg = load_config(config)
    return cfg.with_train(max_epochs=epochs) if epochs else cfg


def run_url(result: dict) -> str:
    """A cell result's page in the MLflow UI (flows/stack.py's `mlflow_ui_url`), "" without a run."""
    from flows.stack import mlflow_ui_url

    run_id = result.get("run_id")
    from pipeline.tracking import ui_run_path

    return mlflow_ui_url() + ui_run_path(result.get("experiment_id", ""), run_id) if run_id else ""


def _ingest_key(ctx, p) -> str:
    return "ingest-" + stable_key(p["home"], p["warehouse_id"], str(Path(p["data_dir"]).resolve()),
                                  folder_signature(p["data_dir"]))


def _data_key(step: str):
    def key(ctx, p) -> str:
        cfg = _config(p.get("config"), p.get("epochs"))
        return f"{step}-" + stable_key(p["home"], p["data_fp"], cfg.fingerprint("segments", "data"))
    return key


def transient(task, task_run, state) -> bool:
    """Retry only what can pass on a second try (I/O, a locked store), not a wrong input or a bug."""
    from pipeline.errors import MigaError

    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, (MigaError, ValueError, KeyError, TypeError, LookupError))


def _stack_key(ctx, p) -> str:
    cfg = _config(p.get("config"), p.get("epochs"))
    s = Settings.from_env(p["home"])
    return "stack-" + stable_key(p["home"], s.mlflow_uri, p["store_fp"], cfg.cell_fingerprint(),
                                 p["cells"])


def store_of(home: str, store_fp: str):
    from pipeline.store.build import open_store

    return open_store(settings_of(home), store_fp)


@task(name="synthesize", cache_policy=NO_CACHE)
def synthesize(home: str, stocks: int = 300, days: int = 750, seed: int = 0) -> str:
    from pipeline.data.synth import SynthSpec, write_synthetic

    out = settings_of(home).home / "synthetic"
    if (out / "daily.parquet").exists():
        get_run_logger().info("synthetic data: reusing %s", out)
    else:
        write_synthetic(out, SynthSpec(n_stocks=stocks, n_days=days, seed=seed))
        get_run_logger().info("synthetic data: %d stocks x %d days written to %s", stocks, days, out)
    return str(out)


@task(name="ingest", cache_key_fn=_ingest_key, **PERSIST,
      retries=2, retry_delay_seconds=[5, 20], retry_condition_fn=transient)
def ingest(home: str, data_dir: str, warehouse_id: str) -> dict:
    from pipeline.data.ingest import ingest as do_ingest

    report = do_ingest(settings_of(home), Path(data_dir))
    get_run_logger().info("%s", report)    # rows per table: in the file -> in the warehouse
    return {"fingerprint": report.fingerprint, "report": str(report)}


@task(name="validate", cache_key_fn=_data_key("validate"), **PERSIST)
def validate(home: str, data_fp: str, config: str | None = None, epochs: int | None = None) -> str:
    from pipeline.data.validate import validate_warehouse

    # the rows the ingest just wrote (it validated them as files); `miga validate`: every row
    text = str(validate_warehouse(settings_of(home), gx="failures", latest=True))
    get_run_logger().info("data %s: %s", data_fp, text)
    return text


@task(name="features", cache_key_fn=_data_key("features"), **PERSIST)
def features(home: str, data_fp: str, config: str | None = None, epochs: int | None = None) -> str:
    from pipeline.features.build import build_features

    summary = build_features(settings_of(home), _config(config, epochs))
    get_run_logger().info("%s (data %s): %s", "features built" if summary.changed else
                          "features reused, all tables current", data_fp, summary)
    return str(summary)


@task(name="tensor-store", cache_key_fn=_data_key("store"), **PERSIST)
def tensor_store(home: str, data_fp: str, config: str | None = None, epochs: int | None = None) -> str:
    from pipeline.store.build import build_store

    t0 = time.time()
    store = build_store(settings_of(home), _config(config, epochs))
    days, stocks, feats = store.shape
    built = (store.root / "meta.json").stat().st_mtime >= t0
    extended = store.meta.get("extended_from")
    get_run_logger().info(
        "tensor store %s %s: %d days (%s..%s) x %d stocks x %d features, from data %s%s; in %s",
        store.fingerprint, "built" if built else "reused", days, store.dates[0], store.dates[-1],
        stocks, feats, data_fp, f", extending store {extended}" if built and extended else "",
        store.root)
    return store.fingerprint


def plan_stacks(home: str, store_fp: str, cells: list[dict], config: str | None = None) -> list[list[Cell]]:
    """The grid's cells packed into training stacks (`pipeline.grid.plan_stacks`)."""
    from pipeline.grid import plan_stacks as plan

    return plan(load_config(config), [Cell.from_dict(c) for c in cells], store_of(home, store_fp))


@task(name="train-stack", cache_key_fn=_stack_key, **PERSIST,
      retries=1, retry_delay_seconds=10, retry_condition_fn=transient)
def train_stack(home: str, store_fp: str, cells: list[dict], config: str | None = None,
                epochs: int | None = None) -> list[dict]:
    """A stack of cells (one model) trained together; per cell {cell, run_id, experiment_id,
    metrics} or {cell, error}, each logged with its test metrics and MLflow run. Raises (so every
    cell of it fails) if training failed."""
    from pipeline.cell import run_stack

    outs = run_stack(settings_of(home), _config(config, epochs), [Cell.from_dict(c) for c in cells],
                     store=store_of(home, store_fp))
    results = [{"cell": c, "error": f"{type(r).__name__}: {r}"} if isinstance(r, BaseException) else
               {"cell": c, "run_id": r.run_id, "experiment_id": r.experiment_id,
                "metrics": {k: float(v) for k, v in r.metrics.items()}}
               for c, r in zip(cells, outs)]
    log = get_run_logger()
    for r in results:
        if "error" in r:
            log.error("%s failed: %s", Cell.from_dict(r["cell"]).name, r["error"])
            continue
        m = r["metrics"]
        log.info("%s: %s; MLflow run %s: %s", Cell.from_dict(r["cell"]).name,
                 ", ".join(f"{k} {m[k]:.4f}" for k in CELL_METRICS if k in m), r["run_id"], run_url(r))
    return results


@task(name="report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 20])
def report(home: str) -> str:
    from pipeline.report import build_report

    settings = settings_of(home)
    rep = build_report(settings)
    get_run_logger().info("paper tables over %d runs on tensor store %s: %s; MLflow run %s",
                          len(rep.runs), rep.store_fingerprint, settings.reports_dir / "report.md",
                          rep.run_id or "(not logged)")
    return rep.markdown


@task(name="champion", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def champion(home: str, store_fp: str, results: list[dict], config: str | None = None,
             epochs: int | None = None) -> list[dict]:
    from pipeline.champion import challenge

    decisions = [d.as_dict() for d in challenge(settings_of(home), _config(config, epochs), results,
                                                store_of(home, store_fp))]
    log = get_run_logger()
    for d in decisions:
        log.info("champion %s: %s version %s (run %s): %s (metric %s over %s..%s on %s)",
                 d["model"], d["decision"], d["challenger_version"], d["challenger_run"], d["reason"],
                 d["metric"], *d["window"], d["stockset"])
    for model in sorted({r["cell"]["model"] for r in results} - {d["model"] for d in decisions}):
        log.info("champion %s: no change (no registered challenger, or the best one already is "
                 "the champion)", model)
    return decisions


@task(name="next-day-predictions", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def next_day_predictions(home: str, store_fp: str, models: list[str], config: str | None = None,
                         epochs: int | None = None) -> dict:
    from pipeline.next_day import predict_next_day

    written = predict_next_day(settings_of(home), _config(config, epochs), models, store_of(home, store_fp))
    log = get_run_logger()
    for key, n in written.items():
        log.info("next-day predictions %s: %d rows written to the warehouse table `predictions`",
                 key, n)
    if not written:
        log.info("next-day predictions: none (no champion among %s)", ", ".join(models))
    return written
