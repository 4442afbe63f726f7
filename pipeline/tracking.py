"""The one door to MLflow: experiments, runs, metrics, artifacts, models and the registry.

Every MLflow call of the pipeline lives here: the cell (`pipeline.cell`), the report, the
champion step and the next-day predictions call these functions and never import MLflow.
`pipeline.train` knows nothing of MLflow. The tracking URI always comes from the settings
(never the cwd default), and every experiment is created here, with an artifact location
under `settings.mlflow_artifacts`.

Tags of a training run: `model`, `stockset`, `seed`, `store_fingerprint` (the tensor store it
trained on), `data_fingerprint` (the warehouse inputs that store was built from), `git_commit`,
`device`, `run_key`, MLflow's source tags and its description (`mlflow.note.content`); its input
dataset is the tensor store (digest = its fingerprint). Per-epoch curves: `EPOCH_METRICS`.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.errors import MigaError
from pipeline.settings import Settings

EXPERIMENT = "miga"
PREDICTIONS_EXPERIMENT = "miga-predictions"
REPORTS_SUFFIX = "-reports"                     # `miga report` of experiment X logs to X-reports
# MLflow 3 marks an experiment's kind with this tag (its experiment page shows it). The UI of
# 3.17 opens on its global GenAI/Model-training switch (default GenAI, kept in the browser) and
# not on the tag, so every UI link the project prints also carries UI_VIEW.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
UI_VIEW = "?workflowType=machine_learning"     # the UI's "Model training" view
# Per-epoch curves, named in sections as MLflow groups its charts (the prefix before "/").
EPOCH_METRICS = {"train_loss": "train/loss", "train_ic": "train/ic", "valid_ic": "valid/ic",
                 "valid_rank_ic": "valid/rank_ic", "valid_loss": "valid/loss",
                 "expert_entropy": "train/expert_entropy", "epoch_seconds": "time/epoch_seconds",
                 "train_seconds": "time/train_seconds",
                 "best_iteration": "train/best_iteration", "ridge_alpha": "train/ridge_alpha"}
CHAMPION = "champion"                           # the registered-model alias of the champion
STATE_ARTIFACT = "model_state/model_state.pt"   # state_dict + how to rebuild the model
ROOT = Path(__file__).resolve().parent.parent


def ui_run_path(experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI, after the UI's base URL, in the model-training view."""
    return f"/#/experiments/{experiment_id}/runs/{run_id}{UI_VIEW}"


def _client(settings: Settings):
    from mlflow import MlflowClient

    return MlflowClient(settings.mlflow_uri)


def setup(settings: Settings, experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the settings' store; get or create `experiment`. Returns its id."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_uri)
    # Two processes starting on a new home would both create MLflow's tables in the one SQLite
    # file (the second fails: "duplicate column name"): the first use of the store is serialised.
    with _home_lock(settings, "mlflow-setup"):
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is not None:
            if exp.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:     # made by an earlier version
                _client(settings).set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
            return exp.experiment_id
        loc = (Path(settings.mlflow_artifacts) / experiment).resolve().as_uri()
        return mlflow.create_experiment(experiment, artifact_location=loc,
                                        tags={EXPERIMENT_KIND: MODEL_TRAINING})


@contextmanager
def _home_lock(settings: Settings, name: str) -> Iterator[None]:
    """An exclusive lock between the processes of one home (a `flock` on home/<name>.lock)."""
    import fcntl

    settings.ensure()
    with open(Path(settings.home) / f"{name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def git_commit() -> str:
    """HEAD of the project's repository, with `-dirty` if tracked files changed; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _finite(d: dict[str, Any]) -> dict[str, float]:
    """MLflow rejects nothing, but NaN metrics make tables noisy: keep finite numbers only."""
    return {k: float(v) for k, v in d.items()
            if isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))}


# ---------------------------------------------------------------- training runs
# A stack trains K cells at once, each its own run: while it trains, the runs are written by
# id (`open_cell_run`, `start_cell`, `log_epoch`); each is then made the active run in turn
# (`active_run`) for its evaluation and artifacts, and ends FINISHED, or FAILED on an error.
def open_cell_run(settings: Settings, run_name: str, resume_id: str | None = None,
                  experiment: str = EXPERIMENT) -> tuple[str, str, bool]:
    """A run of the training experiment, created (or reopened) without making it active:
    (run_id, experiment_id, resumed). resume_id: a killed cell's run; a finished or unknown one
    starts anew."""
    exp_id = setup(settings, experiment)
    client = _client(settings)
    if resume_id:
        try:
            run = client.get_run(resume_id)
            if run.info.status != "FINISHED":
                client.update_run(resume_id, status="RUNNING")
                return resume_id, run.info.experiment_id, True
        except Exception:  # deleted, or from another tracking store
            pass
    run = client.create_run(exp_id, run_name=run_name)
    return run.info.run_id, exp_id, False


@contextmanager
def active_run(settings: Settings, run_id: str) -> Iterator[str]:
    """`run_id` as the active run inside: FINISHED on exit, FAILED if an exception leaves."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_uri)
    with mlflow.start_run(run_id=run_id) as run:
        yield run.info.run_id


def fail_run(settings: Settings, run_id: str, status: str = "FAILED") -> None:
    """Mark a run that will not be finished now as FAILED (its stack failed) or KILLED (Ctrl-C;
    the same command resumes it from its checkpoint)."""
    _client(settings).set_terminated(run_id, status=status)


def start_cell(settings: Settings, run_id: str, tags: dict[str, str], params: dict[str, Any],
               dataset: dict[str, str] | None = None) -> None:
    """Tags and params of a new training run; `dataset` {name, digest, path}: the tensor store
    it trains on, as the run's input (MLflow's Dataset column, filterable by `dataset.digest`)."""
    from mlflow.entities import Param, RunTag

    client = _client(settings)
    items = [Param(k, "" if v is None else str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):                  # MLflow takes 100 params a batch
        client.log_batch(run_id, params=items[i:i + 100])
    source = source_tags(tags.get("git_commit"))
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in {**source, **tags}.items()])
    if dataset:
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        ds = MetaDataset(source=LocalArtifactDatasetSource(dataset["path"]), name=dataset["name"],
                         digest=dataset["digest"])
        client.log_inputs(run_id, datasets=[DatasetInput(
            ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])])


def source_tags(commit: str | None = None) -> dict[str, str]:
    """MLflow's own source tags (its auto-detection finds no git repository under the console
    script): the commit (`git_commit()` unless given), the repository and what ran."""
    import sys

    from mlflow.utils.mlflow_tags import (MLFLOW_GIT_COMMIT, MLFLOW_GIT_REPO_URL, MLFLOW_SOURCE_NAME,
                                          MLFLOW_SOURCE_TYPE)

    commit = commit or git_commit()
    args = [a for a in sys.argv[1:] if not a.startswith("--home")]
    if "--home" in sys.argv[1:-1]:            # `miga --home H train`: what ran is `miga train`
        args.remove(sys.argv[sys.argv.index("--home") + 1])
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    command = next((a for a in args if not a.startswith("-")), "")
    out = {MLFLOW_SOURCE_NAME: f"{prog} {command}".strip() if prog == "miga" else prog,
           MLFLOW_SOURCE_TYPE: "LOCAL", MLFLOW_GIT_REPO_URL: str(ROOT)}
    if commit != "unknown":
        out[MLFLOW_GIT_COMMIT] = commit.removesuffix("-dirty")
    return out


def describe_run(settings: Settings, run_id: str, text: str) -> None:
    """The run's description (what the MLflow run page shows on top): a fenced block of `text`."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    _client(settings).set_tag(run_id, MLFLOW_RUN_NOTE, f"```\n{text}\n```")


def set_tag(key: str, value: str) -> None:
    import mlflow

    mlflow.set_tag(key, value)


def log_epoch(settings: Settings, run_id: str, record: dict) -> None:
    """Per-epoch curves of a training run (step = epoch, 1-based)."""
    import time

    from mlflow.entities import Metric

    ts, step = int(time.time() * 1000), int(record["epoch"])
    vals = _finite({name: record[k] for k, name in EPOCH_METRICS.items() if k in record})
    _client(settings).log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v in vals.items()])


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics(_finite(metrics), step=step)


_BACKTEST = ("long_only", "long_short", "topk", "turnover")


def metric_name(key: str) -> str:
    """A cell's summary metric (`pipeline.evaluation`'s flat key) as MLflow shows it, in the
    section MLflow groups its charts by: test_ic -> test/ic, valid_ic (the best epoch's, scored
    again) -> valid/best_ic, long_only_ar -> backtest/long_only_ar, the rest run/<key>."""
    if key.startswith("test_"):
        return "test/" + key[5:]
    if key.startswith("valid_"):
        return "valid/best_" + key[6:]
    return ("backtest/" if key.startswith(_BACKTEST) else "run/") + key


def metric_key(name: str) -> str:
    """The flat key of a logged metric name: the inverse of `metric_name`; names of runs logged
    before the sections (flat already) and the per-epoch curves are returned unchanged."""
    section, _, rest = name.partition("/")
    if section == "test" and rest:
        return "test_" + rest
    if section == "valid" and rest.startswith("best_"):
        return "valid_" + rest[5:]
    if section in ("backtest", "run") and rest:
        return rest
    return name


def log_cell_metrics(metrics: dict[str, float]) -> None:
    """A cell's summary metrics to the active run, one value each, under `metric_name`."""
    log_metrics({metric_name(k): v for k, v in metrics.items()})


def _flat(metrics: dict[str, float]) -> dict[str, float]:
    """A run's metrics under their flat keys (sectioned and earlier runs read alike)."""
    return {metric_key(k): v for k, v in metrics.items()}


def log_figure(fig, artifact_file: str) -> None:
    """A matplotlib figure to the active run (MLflow shows it in the run's artifacts), then closed."""
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(fig, artifact_file)
    plt.close(fig)


def log_json(obj: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(json.dumps(obj, indent=2, default=str, sort_keys=True), artifact_file)


def log_files(paths, artifact_path: str | None = None) -> None:
    """Each file as an artifact of the active run."""
    import mlflow

    for p in paths:
        mlflow.log_artifact(str(p), artifact_path=artifact_path)


def find_cell_run(settings: Settings, model: str, stockset: str, seed: int,
                  store_fp: str | None = None, experiment: str = EXPERIMENT) -> dict:
    """The latest finished run of a (model, stockset, seed) cell: {run_id, experiment_id, metrics}.

    store_fp: restrict to runs on that tensor store (tag `store_fingerprint`)."""
    client = _client(settings)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no MLflow experiment {experiment!r} at {settings.mlflow_uri}")
    filt = (f"tags.model = '{_q(model)}' and tags.stockset = '{_q(stockset)}' "
            f"and tags.seed = '{int(seed)}' and attributes.status = 'FINISHED'")
    if store_fp:
        filt += f" and tags.store_fingerprint = '{_q(store_fp)}'"
    runs = client.search_runs([exp.experiment_id], filt, order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs:
        raise LookupError(f"no finished run for {model}/{stockset}/seed {seed} in {experiment!r}")
    r = runs[0]
    return {"run_id": r.info.run_id, "experiment_id": r.info.experiment_id,
            "metrics": _flat(r.data.metrics)}


def finished_runs(settings: Settings, experiment: str = EXPERIMENT) -> list[dict] | None:
    """Finished runs of `experiment`, newest first, as {run_id, start, tags, metrics}; None when
    the experiment does not exist."""
    client = _client(settings)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=5000)
    return [{"run_id": r.info.run_id, "start": r.info.start_time, "tags": dict(r.data.tags),
             "metrics": _flat(r.data.metrics)} for r in runs]


def find_keyed_run(settings: Settings, run_key: str, experiments) -> dict | None:
    """The latest finished run with tag `run_key` (same cell, config and tensor store) in any of
    `experiments` (names; missing ones are skipped): {run_id, experiment_id, tags, metrics}."""
    client = _client(settings)
    ids = [e.experiment_id for e in map(client.get_experiment_by_name, experiments) if e is not None]
    if not ids:
        return None
    runs = client.search_runs(ids, f"tags.run_key = '{_q(run_key)}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    r = runs[0]
    return {"run_id": r.info.run_id, "experiment_id": r.info.experiment_id,
            "tags": dict(r.data.tags), "metrics": _flat(r.data.metrics)}


def metric_history(settings: Settings, run_id: str, name: str) -> list[tuple[int, float]]:
    """(step, value) of a logged metric (e.g. an `EPOCH_METRICS` curve), by step."""
    return sorted((m.step, m.value) for m in _client(settings).get_metric_history(run_id, name))


def set_run_tags(settings: Settings, run_id: str, tags: dict[str, str]) -> None:
    """Tags on a run, whatever its status (a parent link: `PARENT_TAG`)."""
    client = _client(settings)
    for k, v in tags.items():
        client.set_tag(run_id, k, v)


PARENT_TAG = "mlflow.parentRunId"   # the MLflow UI nests a run under the run this tag names


def log_parent_run(settings: Settings, experiment: str, run_name: str, tags: dict[str, str],
                   metrics: dict[str, float], files) -> str:
    """A finished run of `experiment` named `run_name` holding `files` (created, or updated by a
    rerun: files replaced); children nest under it by `PARENT_TAG`. Returns its id."""
    return _upsert_run(settings, experiment, run_name, tags, metrics, files)


def log_report(settings: Settings, experiment: str, tags: dict[str, str],
               metrics: dict[str, float], files) -> str:
    """The report's files in a run named `report <experiment>` of its own experiment
    (`<experiment>-reports`), not among the training runs. One run per reported experiment:
    a second `miga report` updates it (files replaced, metrics a new step). Returns its id."""
    return _upsert_run(settings, experiment + REPORTS_SUFFIX, f"report {experiment}",
                       {"kind": "report", "report_of": experiment, **tags}, metrics, files)


def log_next_day(settings: Settings, path: Path, signal_date: str,
                 champions: dict[str, str] | None = None) -> str:
    """The next-day predictions file as a run of `PREDICTIONS_EXPERIMENT`, one per signal date
    (a rerun for the same date updates it); `champions`: model -> "version N (run ID)" of the
    champion that scored it, as tags. Returns the run id."""
    tags = {"kind": "next-day-predictions", "signal_date": signal_date,
            **{f"champion.{m}": v for m, v in (champions or {}).items()}}
    return _upsert_run(settings, PREDICTIONS_EXPERIMENT, f"next-day {signal_date}", tags, {}, [path])


def _upsert_run(settings: Settings, experiment: str, run_name: str, tags: dict[str, str],
                metrics: dict[str, float], files) -> str:
    """The finished run of `experiment` named `run_name`, created or reopened, with `tags`,
    `metrics` and `files` (same names replace the old ones)."""
    import mlflow

    exp_id = setup(settings, experiment)
    found = _client(settings).search_runs(
        [exp_id], f"attributes.run_name = '{_q(run_name)}'", max_results=1,
        order_by=["attributes.start_time DESC"])
    run_id = found[0].info.run_id if found else None
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp_id,
                          run_name=None if run_id else run_name) as run:
        mlflow.set_tags(tags)
        log_metrics(metrics)    # a rerun's values are the latest (MLflow orders one step by time)
        log_files(files)
        return run.info.run_id


# ---------------------------------------------------------------- the model registry
def registered_versions(settings: Settings, model: str) -> dict:
    """run_id -> registered version of `model` (one registry query)."""
    return {mv.run_id: mv for mv in _client(settings).search_model_versions(f"name='{_q(model)}'")}


def champion_version(settings: Settings, model: str):
    """The registered model version carrying the `champion` alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return _client(settings).get_model_version_by_alias(model, CHAMPION)
    except MlflowException:
        return None


def set_champion(settings: Settings, model: str, version: str) -> None:
    _client(settings).set_registered_model_alias(model, CHAMPION, version)


def tag_version(settings: Settings, model: str, version: str, run_id: str,
                tags: dict[str, str]) -> None:
    """The same tags on a registered version and on the run that made it."""
    client = _client(settings)
    for k, v in tags.items():
        client.set_tag(run_id, k, v)
        client.set_model_version_tag(model, version, k, v)


def _q(s: str) -> str:
    """Quote a value for an MLflow filter string (names come from our own registry/config)."""
    return str(s).replace("'", "")


def pip_requirements() -> list[str]:
    """Explicit requirements for the logged model (MLflow's inference of them takes seconds)."""
    from importlib.metadata import version

    # lightgbm: the lgbm anchor's logged model rebuilds its booster when it scores
    return [f"torch=={version('torch').split('+')[0]}", f"mlflow=={version('mlflow')}",
            f"numpy=={version('numpy')}", f"cloudpickle=={version('cloudpickle')}",
            f"pandas=={version('pandas')}", f"lightgbm=={version('lightgbm')}"]


def _serving_model():
    import torch

    class ServingModel(torch.nn.Module):
        """Single-array interface for MLflow's pyfunc: packed (B, N, T, D + M) -> scores (B, N).

        The last M channels hold the market features (same for every stock, the first stock's
        are read); every row is a member (mask all True)."""

        def __init__(self, model: torch.nn.Module, d_feat: int):
            super().__init__()
            self.model, self.d_feat = model, d_feat

        def forward(self, packed: torch.Tensor) -> torch.Tensor:
            x = packed[..., : self.d_feat]                               # (B, N, T, D)
            market = packed[:, 0, :, self.d_feat:]                       # (B, T, M)
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            use_market = market if getattr(self.model, "needs_market", False) else None
            return self.model(x, mask, use_market)[0]

    return ServingModel


def pack_input(x: np.ndarray, market: np.ndarray) -> np.ndarray:
    """x (B, N, T, D), market (B, T, M) -> (B, N, T, D + M) float32 for `ServingModel`."""
    b, n, t, _ = x.shape
    m = np.broadcast_to(market[:, None, :, :], (b, n, t, market.shape[-1]))
    return np.concatenate([x, m], axis=-1).astype(np.float32)


def log_model(model, state: dict, example: np.ndarray, name: str, register: bool = True) -> str | None:
    """Log the trained model twice: as an MLflow model named `name` (the cell's name; pickled,
    with an input example and explicit pip requirements, registered under its model name when
    `register`) and as the plain state (`pipeline.models.model_state`) that `load_model_state`
    reads back without pickles. Returns the registered version, or None.

    The pickle format is used because torch.export (MLflow's pt2 default) cannot trace the
    data-dependent top-k routing and masking of several models."""
    import mlflow
    import torch

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / Path(STATE_ARTIFACT).name
        torch.save(state, p)
        try:            # what `load_model_state` will read: plain data only (fail here, not there)
            read_state_file(p)
        except ValueError as e:
            raise TypeError(f"the model state to log is not plain data ({e}); build it with "
                            "pipeline.models.model_state") from None
        mlflow.log_artifact(str(p), artifact_path=str(Path(STATE_ARTIFACT).parent))
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    d_feat, d_market = state["d_feat"], state["d_market"]
    serving = _serving_model()(model.cpu().eval(), d_feat).eval()
    # Any number of days and stocks: only T and D + M are fixed (inference would fix N too).
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, state["window"], d_feat + d_market))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]))
    info = mlflow.pytorch.log_model(
        serving, name=name, input_example=example, signature=signature,
        pip_requirements=pip_requirements(),
        serialization_format="pickle",
        registered_model_name=state["model_name"] if register else None)
    version = getattr(info, "registered_model_version", None)
    return str(version) if version is not None else None


def describe_version(settings: Settings, model: str, version: str, text: str,
                     tags: dict[str, str]) -> None:
    """A registered version says what it is: a description and tags (stock set, seed, run,
    test metrics) that the registry's version table shows and filters."""
    client = _client(settings)
    client.update_model_version(model, version, description=text)
    for k, v in tags.items():
        client.set_model_version_tag(model, version, k, str(v))


# What `pipeline.models.model_state` holds, and the type of each entry.
_STATE_KEYS = {"model_name": str, "d_feat": int, "d_market": int, "overrides": dict, "window": int,
               "state_dict": dict}


def weights_only_reason(e: Exception) -> str:
    """Why `torch.load(weights_only=True)` refused a file, in one short line (torch's message is
    several lines of advice, the last of them naming what was refused)."""
    text = str(e)
    if "Weights only load failed" in text:
        rest = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text \
            else text.split("\n\n", 1)[-1]
        lines = [ln.strip() for ln in rest.splitlines()
                 if ln.strip() and not ln.strip().startswith("Check the documentation")]
        detail = re.split(r" was not an allowed| Please use", lines[0])[0] if lines else ""
        detail = detail.rstrip(".")
        return "refused by torch's weights_only unpickler" + (f": {detail[:160]}" if detail else "")
    lines = text.strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:160]}" if lines else type(e).__name__


def read_state_file(path: Path) -> dict:
    """A model state file read with `torch.load(weights_only=True)`: tensors and plain data only,
    nothing in it can run code. Raises ValueError (the reason, one line) when the file holds
    anything else (a pickled object, as older versions saved) or is not a model state."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (a disallowed global), RuntimeError (no torch file)
        raise ValueError(weights_only_reason(e)) from None
    if not isinstance(state, dict):
        raise ValueError(f"a {type(state).__name__}, not a model state dict")
    for key, kind in _STATE_KEYS.items():
        if not isinstance(state.get(key), kind) or (kind is int and isinstance(state[key], bool)):
            raise ValueError(f"no {kind.__name__} {key!r} entry (not a model state)")
    bad = [k for k, v in state["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"state_dict entries that are not tensors: {', '.join(map(str, bad[:3]))}")
    return state


def load_model_state(settings: Settings, run_id: str) -> dict:
    """The state a run logged with `log_model` (rebuild it with `pipeline.models.model_from_state`),
    read with `torch.load(weights_only=True)`: nothing is unpickled, so a swapped artifact cannot
    run code. A state that does not load so (saved by an older version as pickled objects, or
    altered) raises MigaError naming the run and what to do."""
    path = download_artifact(settings, run_id, STATE_ARTIFACT)
    try:
        return read_state_file(path)
    except ValueError as e:
        t = _run_tags(settings, run_id)
        cell = (f"{t['model']}/{t.get('stockset', '?')}/seed {t.get('seed', '?')}" if "model" in t
                else "no cell tags")
        retrain = (f"miga train --model {t.get('model', 'MODEL')} --stockset "
                   f"{t.get('stockset', 'SET')} --seed {t.get('seed', 'SEED')}")
        msg = (f"run {run_id} ({cell}): its {STATE_ARTIFACT} cannot be loaded safely ({e}): "
               f"saved by an older miga or altered, it is not unpickled; retrain the cell "
               f"({retrain}) and delete this run and its registered model version")
        raise MigaError(" ".join(msg.split())) from None       # one line, whatever the file held


def _run_tags(settings: Settings, run_id: str) -> dict[str, str]:
    try:
        return dict(_client(settings).get_run(run_id).data.tags)
    except Exception:  # only for the message: it is built without them
        return {}


def download_artifact(settings: Settings, run_id: str, path: str) -> Path:
    """A run's artifact `path` (e.g. "predictions.parquet"), downloaded to a local file."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    tracking_uri=settings.mlflow_uri))
