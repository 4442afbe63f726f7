"""The `miga` flow: ingest -> validate -> features/labels -> tensor store -> training grid ->
evaluation/backtest (inside each cell) -> report -> champion/challenger -> next-day predictions.

Deployed as `miga/full-pipeline` (prefect.yaml). `run_demo` runs it in-process for the README's
main command. Only wiring here: every step is a `pipeline` function (see flows/steps.py).

The task graph is the data flow: each step is submitted with the future of the step whose
output it uses (as an argument, or in `wait_for`), so Prefect records the edge (the task run's
`task_inputs`) and the UI draws it: synthesize -> ingest -> validate -> features ->
tensor-store -> each train-stack -> report -> champion -> next-day-predictions. Besides: the
ingest's data fingerprint feeds features and the tensor store, the store's fingerprint the
stacks, the champion and the next-day step, and the stacks' results the champion.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from flows import steps  # first: it sets the telemetry opt-out before Prefect is imported
from prefect import allow_failure, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from flows.stack import mlflow_ui_url
from pipeline.config import DEMO_CONFIG, load_config
from pipeline.grid import grid_cells
from pipeline.report import results_table
from pipeline.settings import Settings
from pipeline.tracking import UI_VIEW
from pipeline.warehouse import warehouse_id


def run_step(task, *args, wait_for=(), **kwargs):
    """`task` submitted after `wait_for` (the futures of the steps it follows: edges of the task
    graph, as are futures among its arguments) and run to its end: its future, or its error."""
    future = task.submit(*args, wait_for=list(wait_for), **kwargs)
    future.result()
    return future


def _train_stacks(home: str, store, stacks, config, epochs, parallel: int) -> tuple[list[dict], list]:
    """The stacks as tasks of this flow, `parallel` at a time, each fed the tensor-store step's
    future `store`. Per cell a result or an error, and the stacks' futures."""
    results, futures = [], []
    for i in range(0, len(stacks), parallel):
        wave = [(s, steps.train_stack.with_options(task_run_name=_stack_name(s)).submit(
            home, store, [c.as_dict() for c in s], config, epochs)) for s in stacks[i:i + parallel]]
        for s, f in wave:
            f.wait()
            futures.append(f)
            state = f.state
            if state.is_completed():
                results += f.result()
            else:  # a failed stack fails each of its cells visibly; the other stacks go on
                results += [{"cell": c.as_dict(), "error": str(state.message or state.name)} for c in s]
    return results, futures


def _results_rows(results: list[dict]) -> list[dict]:
    """The results table artifact's rows: one per cell, its test metrics (4 decimals) and the
    link to its MLflow run, or its error."""
    rows = []
    for r in results:
        c, m = r["cell"], r.get("metrics", {})
        rows.append({"model": c["model"], "stockset": c["stockset"], "seed": c["seed"],
                     **{k: round(m[k], 4) if isinstance(m.get(k), (int, float)) else None
                        for k in steps.CELL_METRICS},
                     "mlflow_run": steps.run_url(r) or None, "error": r.get("error")})
    return rows


def _stack_name(stack) -> str:
    return f"train {stack[0].model} x{len(stack)}: " + ", ".join(f"{c.stockset}/s{c.seed}" for c in stack)


def _launch_stacks_on_pool(home: str, store_fp: str, stacks, config, epochs) -> list[dict]:
    """Fan the grid out over the work pool: one `miga-stack/stack` flow run per stack."""
    from prefect.deployments import run_deployment
    from prefect.states import StateType

    from pipeline.tracking import find_cell_run

    launched = [(s, run_deployment("miga-stack/stack", timeout=0, as_subflow=True,
                                   flow_run_name=_stack_name(s),
                                   parameters={"home": home, "store_fp": store_fp,
                                               "cells": [c.as_dict() for c in s],
                                               "config": config, "epochs": epochs}))
                for s in stacks]
    from prefect.client.orchestration import get_client

    results = []
    with get_client(sync_client=True) as client:
        for s, fr in launched:
            while True:
                state = client.read_flow_run(fr.id).state
                if state is not None and state.is_final():
                    break
                time.sleep(2)
            ok = state.type == StateType.COMPLETED
            for c in s:
                if not ok:
                    results.append({"cell": c.as_dict(), "error": f"flow run {fr.name}: {state.name}"})
                    continue
                run = find_cell_run(Settings.from_env(home), c.model, c.stockset, c.seed, store_fp)
                results.append({"cell": c.as_dict(), **run})
    return results


# Stacks run `engine.parallel_stacks` at a time (several fit on one GPU); the pool's size caps it.
@flow(name="miga", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=8))
def miga(data: str | None = None, models: list[str] | None = None, stocksets: list[str] | None = None,
         seeds: list[int] | None = None, config: str | None = DEMO_CONFIG, epochs: int | None = None,
         home: str | None = None, fan_out: bool = False) -> dict:
    """Run the whole pipeline.

    data: a data folder (daily/membership/index parquet [+ features]); None = synthetic data in
    the home folder. models/stocksets/seeds: the training grid (default: the config's).
    config: a TOML file or a name in configs/. epochs: override train.max_epochs.
    fan_out: run each training stack (`engine.stack_size` cells of one model) as a
    `miga-stack/stack` deployment run on the work pool.
    """
    log = get_run_logger()
    home = str(Settings.from_env(home).ensure().home)
    cfg = load_config(config)
    data_dir = data or run_step(steps.synthesize, home)

    ing = run_step(steps.ingest, home, data_dir, warehouse_id(Settings.from_env(home)))
    data_fp = ing.result()["fingerprint"]
    checked = run_step(steps.validate, home, data_fp, config, wait_for=[ing])
    feats = run_step(steps.features, home, data_fp, config, wait_for=[checked])
    store = run_step(steps.tensor_store, home, data_fp, config, wait_for=[feats])
    store_fp = store.result()

    cells = grid_cells(cfg, models, stocksets, seeds)
    stacks = steps.plan_stacks(home, store_fp, [c.as_dict() for c in cells], config)
    log.info("training grid: %d cells in %d stacks (%s)", len(cells), len(stacks),
             "; ".join(_stack_name(s) for s in stacks))
    if fan_out:   # flow runs on the pool: no task futures, so no stack edges in this graph
        results, trained = _launch_stacks_on_pool(home, store_fp, stacks, config, epochs), []
    else:
        results, trained = _train_stacks(home, store, stacks, config, epochs,
                                         max(1, min(cfg.engine.parallel_stacks, 8)))

    ok = [r for r in results if "error" not in r]
    table = results_table(results, mlflow_ui_url())
    create_markdown_artifact(key="miga-results", markdown="# miga results\n\n" + table,
                             description="Test metrics of each grid cell, with links to the MLflow runs")
    create_table_artifact(key="miga-results-table", table=_results_rows(results),
                          description="Each grid cell's test IC, ICIR, RankIC, long-only AR and IR, "
                                      "and its MLflow run")
    decisions, preds = [], {}
    if ok:
        # the report reads every run in the store: after all stacks, the failed ones too
        rep = run_step(steps.report, home, wait_for=[allow_failure(f) for f in trained])
        create_markdown_artifact(key="miga-report", markdown=rep.result(),
                                 description="Paper-style Table 1 and Table 2 over all runs in the store")
        champ = run_step(steps.champion, home, store, ok, config, epochs,
                     wait_for=[rep, *(f for f in trained if f.state.is_completed())])
        decisions = champ.result()
        preds = run_step(steps.next_day_predictions, home, store, sorted({r["cell"]["model"] for r in ok}),
                     config, epochs, wait_for=[champ]).result()
    failed = [r for r in results if "error" in r]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(results)} grid cells failed: "
                           + "; ".join(f"{r['cell']['model']}/{r['cell']['stockset']}: {r['error']}" for r in failed))
    return {"table": table, "results": results, "champion": decisions, "predictions": preds,
            "data_fingerprint": data_fp, "store_fingerprint": store_fp}


def preload() -> None:
    """The libraries the flow's tasks import, loaded while the temporary API server starts."""
    import matplotlib.backends.backend_agg  # noqa: F401  (run plots)
    import mlflow.pytorch  # noqa: F401  (torch and MLflow: the grid cells)

    import pipeline.cell  # noqa: F401
    import pipeline.data.ingest  # noqa: F401
    import pipeline.features.build  # noqa: F401


def demo_settings(settings: Settings) -> dict:
    """Prefect settings for the demo, unless the environment sets them: its state (API database,
    cached results) inside the home folder; a startup timeout that suits a busy 2-core machine
    (Prefect's default is 20 s); no block-type registration (the flow uses no blocks, and it is
    part of the server's start) and no telemetry (these machines may have no route out): the
    server's analytics off here; the SDK's (its device id) by DO_NOT_TRACK, see flows/steps.py."""
    from prefect import settings as ps

    wanted = {ps.PREFECT_HOME: str(settings.home / "prefect"),
              ps.PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120,
              ps.PREFECT_API_BLOCKS_REGISTER_ON_START: False,
              ps.PREFECT_SERVER_ANALYTICS_ENABLED: False}
    return {k: v for k, v in wanted.items() if k.name not in os.environ}


def run_demo(data: str | None = None, config: str | None = DEMO_CONFIG, home: str | None = None,
             epochs: int | None = None) -> int:
    """The README's main command: the `miga` flow in-process, on synthetic data unless `data`."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    from flows.temporary_api import temporary_api

    settings = Settings.from_env(home).ensure()
    t0 = time.perf_counter()
    with temporary_settings(updates=demo_settings(settings)), \
            temporary_api(settings.logs_dir, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(),
                          preload=preload):
        out = miga(data=data, config=config, home=str(settings.home), epochs=epochs)
    from flows.terminal import print_table
    from pipeline import tracking
    from pipeline.evaluation import TABLE1, TABLE2
    from pipeline.report import results_frame

    # out["table"] is markdown (the Prefect artifact); the terminal gets the same rows aligned
    rows = results_frame(out["results"], mlflow_ui_url())
    print()
    print_table(rows.drop(columns="url").rename(columns=dict(TABLE1 + TABLE2)), keys=3,
                links={"run": list(rows["url"])}, title="Test metrics of each cell (run: its MLflow run)")
    decided = {d["model"] for d in out["champion"]}
    for d in out["champion"]:
        print(f"champion {d['model']}: {d['decision']} ({d['reason']})")
    # No decision for a model whose best version already is its champion (a cached rerun
    # trains nothing new): say which version that is, from the registry.
    ours = {r["run_id"] for r in out["results"] if "error" not in r}
    for model in sorted({r["cell"]["model"] for r in out["results"] if "error" not in r} - decided):
        mv = tracking.champion_version(settings, model)
        if mv is not None:
            why = (mv.tags or {}).get("champion.reason")
            print(f"champion {model}: unchanged (version {mv.version}, run {mv.run_id[:8]}"
                  + (", this run's best, is already the champion" if mv.run_id in ours
                     else ", no registered challenger in this run")
                  + (f"; promoted: {why})" if why else ")"))
    for k, v in (out["predictions"] or {}).items():
        print(f"next-day predictions: {k}: {v}")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s. Home folder: {settings.home}")
    print("Compare the runs in the MLflow UI:\n"
          f"  .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_uri} --port 5000\n"
          "  (or `miga stack start`), then open "
          f"{mlflow_ui_url()}/#/experiments{UI_VIEW} (the model-training view)")
    return 0
