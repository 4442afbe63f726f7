"""The `miga-paper` flow: the paper's Tables 1-3 and Figures 3-6 from real runs.

ingest -> validate -> features -> paper-store (the scale's segments) -> paper-stack x the
stacks of cells without a finished run -> paper-report (tables, figures, significance, HTML,
the MLflow parent run) -> artifact `miga-paper-<scale>`. Deployed as `miga-paper/paper`
(prefect.yaml); `run_paper` runs it in-process for `miga paper`. Only wiring: the work is in
`pipeline.paper`.

Reuse: a cell with a finished run of the same run key (cell, config, store) is not trained again
(`pipeline.paper.cells.find`), whoever trained it, so a rerun only adds what is missing.
"""
from __future__ import annotations

import time

from flows import steps  # first: it sets the telemetry opt-out before Prefect is imported
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.miga import demo_settings, preload, run_step
from flows.stack import mlflow_ui_url
from pipeline.config import load_config
from pipeline.settings import Settings
from pipeline.warehouse import warehouse_id


def _scale_config(config: str | None, scale: str, epochs: int | None = None, device: str | None = None):
    from pipeline.paper.plan import scale_config

    cfg = scale_config(load_config(config), scale)
    changes = {k: v for k, v in (("max_epochs", epochs), ("device", device)) if v}
    return cfg.with_train(**changes) if changes else cfg


@task(name="paper-store", cache_policy=NO_CACHE)
def paper_store(home: str, data_fp: str, config: str | None, scale: str) -> str:
    from pipeline.store.build import build_store

    store = build_store(steps.settings_of(home), _scale_config(config, scale))
    days, stocks, feats = store.shape
    get_run_logger().info("tensor store %s for the %s scale: %d days x %d stocks x %d features "
                          "(data %s), segments %s", store.fingerprint, scale, days, stocks, feats,
                          data_fp, store.segments.to_json())
    return store.fingerprint


@task(name="paper-stack", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10,
      retry_condition_fn=steps.transient)
def paper_stack(home: str, store_fp: str, job: dict, config: str | None, scale: str,
                epochs: int | None = None, device: str | None = None) -> list[dict]:
    from pipeline.paper.cells import Job, train

    j = Job.from_dict(job)
    results = train(steps.settings_of(home), _scale_config(config, scale, epochs, device), j,
                    steps.store_of(home, store_fp), progress=False)
    log = get_run_logger()
    for r in results:
        cell = f"{r['cell']['model']}/{r['cell']['stockset']}/seed{r['cell']['seed']}"
        if "error" in r:
            log.error("%s [%s] failed: %s", cell, j.variant or j.study, r["error"])
        else:
            m = r["metrics"]
            log.info("%s [%s]: test IC %.4f, long-only AR %.4f; MLflow run %s", cell,
                     j.variant or j.study, m.get("test_ic", float("nan")),
                     m.get("long_only_ar", float("nan")), r["run_id"])
    return [{**r, "metrics": {k: float(v) for k, v in r.get("metrics", {}).items()}} for r in results]


@task(name="paper-report", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def paper_report(home: str, store_fp: str, config: str | None, scale: str, trained: list[str],
                 data: str, epochs: int | None = None, device: str | None = None) -> dict:
    from pipeline.paper import cells as paper_cells
    from pipeline.paper import document
    from pipeline.paper.plan import plan
    from pipeline.train import resolve_device

    settings, store = steps.settings_of(home), steps.store_of(home, store_fp)
    cfg = _scale_config(config, scale, epochs, device)
    wanted = plan(cfg, scale)
    found = paper_cells.find(settings, cfg, wanted, store)
    for f in found.values():
        f.trained = f.run_id in set(trained)
    rep = document.build(settings, cfg, scale, store, wanted, found, data_dir=data,
                         device=str(resolve_device(cfg.train.device)))
    get_run_logger().info("paper report (%s scale): %d cells (%d trained, %d reused), %s; "
                          "MLflow run %s", scale, rep.cells, rep.trained, rep.reused, rep.path,
                          rep.run_id)
    return {"path": str(rep.path), "markdown": rep.markdown, "run_id": rep.run_id,
            "cells": rep.cells, "trained": rep.trained, "reused": rep.reused, "notes": rep.notes}


@flow(name="miga-paper", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4))
def miga_paper(data: str | None = None, scale: str = "smoke", config: str | None = None,
               home: str | None = None, epochs: int | None = None, device: str | None = None) -> dict:
    """Regenerate the paper's tables and figures.

    data: a data folder (None = synthetic data in the home folder). scale: "smoke" (proves the
    path: minutes on a CPU) or "full" (the paper's protocol, for GPU workers); [paper.<scale>] in
    the config. config: a TOML file or a name in configs/ (default: configs/default.toml).
    epochs / device: override the scale's epoch limit and [train] device."""
    from pipeline.paper import cells as paper_cells
    from pipeline.paper.plan import plan

    log = get_run_logger()
    settings = Settings.from_env(home).ensure()
    home = str(settings.home)
    cfg = _scale_config(config, scale, epochs, device)      # a bad scale or config: refused here
    data_dir = data or run_step(steps.synthesize, home)
    ing = run_step(steps.ingest, home, data_dir, warehouse_id(settings))
    data_fp = ing.result()["fingerprint"]
    checked = run_step(steps.validate, home, data_fp, config, wait_for=[ing])
    feats = run_step(steps.features, home, data_fp, config, wait_for=[checked])
    store = run_step(paper_store, home, data_fp, config, scale, wait_for=[feats])
    store_fp = store.result()

    wanted = plan(cfg, scale)
    st = steps.store_of(home, store_fp)
    found = paper_cells.find(settings, cfg, wanted, st)
    jobs = paper_cells.jobs(cfg, wanted, found, st)
    log.info("paper (%s scale): %d cells, %d with a finished run, %d to train in %d stacks",
             scale, len({paper_cells.cell_key(pc, cfg, st) for pc in wanted}), len(found),
             sum(len(j.cells) for j in jobs), len(jobs))
    trained, futures, failed = [], [], []
    for job in jobs:
        f = paper_stack.with_options(task_run_name=f"train {job.name}").submit(
            home, store, job.as_dict(), config, scale, epochs, device)
        f.wait()
        futures.append(f)
        if f.state.is_completed():
            for r in f.result():
                (failed if "error" in r else trained).append(r)
        else:
            failed += [{"cell": c.as_dict(), "error": str(f.state.message or f.state.name)} for c in job.cells]
    rep = run_step(paper_report, home, store, config, scale, [r["run_id"] for r in trained],
               str(data_dir), epochs, device, wait_for=futures)
    out = rep.result()
    create_markdown_artifact(
        key=f"miga-paper-{scale}", markdown=out["markdown"].split("\n## Figure 3")[0]
        + f"\n\nFull report with figures: `{out['path']}`; MLflow run "
        f"{mlflow_ui_url()}/#/experiments (experiment {cfg.paper.experiment}, run `paper {scale}`)",
        description=f"The paper's Tables 1-3 and the significance test ({scale} scale); figures "
                    "in the HTML report")
    out["failed"] = failed
    if failed:
        log.error("%d paper cells failed: %s", len(failed),
                  "; ".join(f"{r['cell']['model']}/{r['cell']['stockset']}: {r['error']}" for r in failed))
    return out


def run_paper(data: str | None = None, scale: str = "smoke", config: str | None = None,
              home: str | None = None, epochs: int | None = None, device: str | None = None) -> int:
    """`miga paper`: the flow in-process (a temporary Prefect API, as `miga demo`)."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    from flows.temporary_api import temporary_api

    settings = Settings.from_env(home).ensure()
    t0 = time.perf_counter()
    with temporary_settings(updates=demo_settings(settings)), \
            temporary_api(settings.logs_dir, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(),
                          preload=preload):
        out = miga_paper(data=data, scale=scale, config=config, home=str(settings.home),
                         epochs=epochs, device=device)
    print()
    print(out["markdown"].split("\n## Figure 3")[0])
    for n in out["notes"]:
        print(f"note: {n}")
    print(f"\n{out['cells']} cells ({out['trained']} trained, {out['reused']} reused)"
          + (f", {len(out['failed'])} failed" if out["failed"] else "")
          + f" in {time.perf_counter() - t0:.0f} s.")
    print(f"Report: {out['path']}\nMLflow: experiment {load_config(config).paper.experiment}, "
          f"run `paper {scale}` ({out['run_id']})")
    return 1 if out["failed"] else 0
