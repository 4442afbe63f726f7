"""MLflow: experiment set-up, per-epoch and final logging, model logging and registration.

All MLflow calls of the pipeline's training runs live here; `pipeline.train` knows nothing of
MLflow. The tracking URI always comes from the settings (never the cwd default), and every
experiment is created with an artifact location under `settings.mlflow_artifacts`.
"""
from __future__ import annotations

import json
import math
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.settings import Settings

EXPERIMENT = "miga"
STATE_ARTIFACT = "model_state/model_state.pt"   # state_dict + how to rebuild the model
EPOCH_KEYS = ("train_loss", "train_ic", "valid_ic", "valid_rank_ic", "epoch_seconds",
              "expert_entropy")
ROOT = Path(__file__).resolve().parent.parent


def setup(settings: Settings, experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the settings' store; get or create `experiment`. Returns its id."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    loc = (Path(settings.mlflow_artifacts) / experiment).resolve().as_uri()
    try:
        return mlflow.create_experiment(experiment, artifact_location=loc)
    except Exception:  # created concurrently by another worker
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            raise
        return exp.experiment_id


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


def log_epoch(record: dict) -> None:
    """Per-epoch curves (step = epoch, 1-based)."""
    import mlflow

    mlflow.log_metrics(_finite({k: record[k] for k in EPOCH_KEYS if k in record}),
                       step=int(record["epoch"]))


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics(_finite(metrics), step=step)


def log_json(obj: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(json.dumps(obj, indent=2, default=str, sort_keys=True), artifact_file)


def find_run(settings: Settings, run_id: str):
    from mlflow import MlflowClient

    return MlflowClient(settings.mlflow_uri).get_run(run_id)


def find_cell_run(settings: Settings, model: str, stockset: str, seed: int,
                  data_fp: str | None = None, experiment: str = EXPERIMENT) -> dict:
    """The latest finished run of a (model, stockset, seed) cell: {run_id, experiment_id, metrics}.

    data_fp: restrict to runs on that data fingerprint (tag `data_fingerprint`)."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no MLflow experiment {experiment!r} at {settings.mlflow_uri}")
    filt = (f"tags.model = '{_q(model)}' and tags.stockset = '{_q(stockset)}' "
            f"and tags.seed = '{int(seed)}' and attributes.status = 'FINISHED'")
    if data_fp:
        filt += f" and tags.data_fingerprint = '{_q(data_fp)}'"
    runs = client.search_runs([exp.experiment_id], filt, order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs:
        raise LookupError(f"no finished run for {model}/{stockset}/seed {seed} in {experiment!r}")
    r = runs[0]
    return {"run_id": r.info.run_id, "experiment_id": r.info.experiment_id,
            "metrics": dict(r.data.metrics)}


def _q(s: str) -> str:
    """Quote a value for an MLflow filter string (names come from our own registry/config)."""
    return str(s).replace("'", "")


def pip_requirements() -> list[str]:
    """Explicit requirements for the logged model (inferring them costs ~6 s)."""
    from importlib.metadata import version

    return [f"torch=={version('torch').split('+')[0]}", f"mlflow=={version('mlflow')}",
            f"numpy=={version('numpy')}", f"cloudpickle=={version('cloudpickle')}",
            f"pandas=={version('pandas')}"]


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


def log_model(model, model_name: str, d_feat: int, d_market: int, overrides: dict,
              window: int, example: np.ndarray, register: bool = True) -> str | None:
    """Log the trained model twice: as an MLflow model (pickled, with an input example and
    explicit pip requirements, registered under `model_name`) and as a plain state_dict
    artifact that `load_state_model` rebuilds without pickles. Returns the model URI.

    The pickle format is used because torch.export (MLflow's pt2 default) cannot trace the
    data-dependent top-k routing and masking of several models."""
    import mlflow
    import torch

    model = model.cpu().eval()
    state = {"model_name": model_name, "d_feat": d_feat, "d_market": d_market,
             "overrides": overrides, "window": window,
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / Path(STATE_ARTIFACT).name
        torch.save(state, p)
        mlflow.log_artifact(str(p), artifact_path=str(Path(STATE_ARTIFACT).parent))
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    serving = _serving_model()(model, d_feat).eval()
    # Any number of days and stocks: only T and D + M are fixed (inference would fix N too).
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, window, d_feat + d_market))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]))
    info = mlflow.pytorch.log_model(
        serving, name="model", input_example=example, signature=signature,
        pip_requirements=pip_requirements(),
        serialization_format="pickle",
        registered_model_name=model_name if register else None)
    return info.model_uri


def load_state_model(settings: Settings, run_id: str):
    """Rebuild a run's model from its state_dict artifact (eval mode, CPU)."""
    import mlflow
    import torch

    from pipeline.models import create_model

    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=STATE_ARTIFACT,
                                               tracking_uri=settings.mlflow_uri)
    st = torch.load(path, map_location="cpu", weights_only=False)
    model = create_model(st["model_name"], d_feat=st["d_feat"], d_market=st["d_market"],
                         **st["overrides"])
    model.load_state_dict(st["state_dict"])
    return model.eval()
