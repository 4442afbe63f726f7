"""Nothing a user could swap is unpickled: a run's logged model state and a cell's training
checkpoint are read with `torch.load(weights_only=True)`. A file that would run code when
unpickled is refused (MigaError for a run's state; a warning line and a fresh start for a
checkpoint) and its code never runs; a real logged model loads so and scores as it did."""
from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import dataclass, replace
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import tracking
from pipeline.errors import MigaError
from pipeline.tracking import STATE_ARTIFACT
from tests.code.test_tracking import _config
from tests.code.test_train import _cfg, _loaders, _model
from tests.synthetic_store import make_store

SMALL_LGBM = {"num_leaves": 8, "max_depth": 3, "lambda_l1": 0.0, "lambda_l2": 1.0,
              "num_boost_round": 50, "early_stopping_rounds": 5, "num_threads": 1}


class RunsCode:
    """Unpickling this runs a shell command that creates `marker` (what a swapped artifact does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class WritesFile:
    """Unpickling this writes `marker` from Python (no shell)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@dataclass
class OldConfig:                 # a non-plain object, as an older state could hold
    hidden: int = 8


def _write(kind: str, path, marker) -> None:
    """A file at `path` whose unpickling would create `marker`."""
    if kind == "torch-os-system":
        torch.save({"model_name": "tcn", "state_dict": {}, "hook": RunsCode(marker)}, path)
    elif kind == "torch-exec":
        torch.save(WritesFile(marker), path)
    elif kind == "raw-pickle":                   # not a torch zip: torch's legacy loader
        with open(path, "wb") as f:
            pickle.dump(RunsCode(marker), f, protocol=2)
    else:
        raise ValueError(kind)


def _code_would_run(path, marker) -> bool:
    """The payload is live: an unsafe load does run it (so its absence above means something)."""
    assert not marker.exists()
    try:
        torch.load(path, weights_only=False)
    except Exception:
        pass
    return marker.exists()


def _fake_run(settings, state_file, tags=None) -> str:
    """A finished run in the test home's real MLflow store, `state_file` as its model state."""
    import mlflow

    exp = tracking.setup(settings)
    with mlflow.start_run(experiment_id=exp, run_name="swapped") as run:
        mlflow.set_tags(tags or {"model": "tcn", "stockset": "large", "seed": "0"})
        mlflow.log_artifact(str(state_file), artifact_path=os.path.dirname(STATE_ARTIFACT))
        return run.info.run_id


def _swap_state(settings, run_id, src) -> None:
    """Replace a logged run's state artifact in the artifact store with `src`."""
    from mlflow import MlflowClient

    uri = urlparse(MlflowClient(settings.mlflow_uri).get_run(run_id).info.artifact_uri)
    assert uri.scheme == "file"
    target = os.path.join(unquote(uri.path), STATE_ARTIFACT)
    assert os.path.exists(target)
    shutil.copyfile(src, target)


@pytest.mark.parametrize("kind", ["torch-os-system", "torch-exec", "raw-pickle"])
def test_swapped_state_artifact_is_refused_and_never_runs(kind, settings, tmp_path):
    from pipeline.champion import load_run_model

    marker = tmp_path / "pwned_marker"
    evil = tmp_path / "model_state.pt"
    _write(kind, evil, marker)
    run_id = _fake_run(settings, evil)
    for load in (tracking.load_model_state, load_run_model):   # the champion and next-day path
        with pytest.raises(MigaError) as e:
            load(settings, run_id)
        msg = str(e.value)
        assert "\n" not in msg and run_id in msg and "cannot be loaded safely" in msg
        assert "miga train --model tcn --stockset large --seed 0" in msg
        assert not marker.exists()
    assert _code_would_run(evil, marker)


def test_an_old_state_with_objects_is_refused_with_one_line(settings, tmp_path):
    state = {"model_name": "tcn", "d_feat": 6, "d_market": 3, "window": 5,
             "overrides": {"hidden": np.int64(8)}, "config": OldConfig(),
             "state_dict": {"w": torch.zeros(2)}}
    path = tmp_path / "model_state.pt"
    torch.save(state, path)
    run_id = _fake_run(settings, path)
    with pytest.raises(MigaError, match="cannot be loaded safely") as e:
        tracking.load_model_state(settings, run_id)
    assert "\n" not in str(e.value) and "delete this run" in str(e.value)


def test_a_plain_dict_that_is_not_a_state_is_refused(settings, tmp_path):
    path = tmp_path / "model_state.pt"
    torch.save({"model_name": "tcn", "state_dict": {"w": "not a tensor"}}, path)
    run_id = _fake_run(settings, path, tags={})
    with pytest.raises(MigaError, match="not a model state"):
        tracking.load_model_state(settings, run_id)


def test_logging_a_state_that_is_not_plain_data_fails_at_once(tmp_path):
    from pipeline.models import create_model, model_state

    model = create_model("linear", d_feat=6)
    state = model_state(model, "linear", np.int64(6), 0, {"alphas": np.array([0.1, 1.0])}, 5)
    torch.save(state, tmp_path / "s.pt")
    again = torch.load(tmp_path / "s.pt", weights_only=True)         # numpy made plain
    assert again["overrides"] == {"alphas": [0.1, 1.0]} and type(again["d_feat"]) is int
    state["overrides"]["config"] = OldConfig()
    with pytest.raises(TypeError, match="not plain data"):
        tracking.log_model(model, state, np.zeros((1, 1, 5, 6), np.float32), name="tcn-bad-state", register=False)


def _plain(x) -> bool:
    if isinstance(x, dict):
        return all(type(k) is str and _plain(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return all(_plain(v) for v in x)
    return x is None or type(x) in (bool, int, float, str) or type(x) is torch.Tensor


@pytest.mark.parametrize("name, overrides", [("tcn", {}), ("linear", {}), ("lgbm", SMALL_LGBM)])
def test_a_logged_model_loads_weights_only_and_scores_as_before(name, overrides, settings):
    from pipeline.cell import run_cell
    from pipeline.champion import load_run_model
    from pipeline.grid import Cell
    from pipeline.loader import DayLoader
    from pipeline.train import score_loader

    store = make_store(settings.home / "synthetic_store")
    cfg = _config(epochs=2)
    cfg = replace(cfg, models={**cfg.models, name: {**cfg.models.get(name, {}), **overrides}})
    res = run_cell(settings, cfg, Cell(name, "all", 0), store=store, register=True, progress=False)
    state = torch.load(tracking.download_artifact(settings, res.run_id, STATE_ARTIFACT),
                       map_location="cpu", weights_only=True)
    assert state["model_name"] == name and _plain(state)
    model = load_run_model(settings, res.run_id)
    again = score_loader(model, DayLoader(store, "test", "all", batch_days=8), store=store)
    pred = pd.read_parquet(tracking.download_artifact(settings, res.run_id, "predictions.parquet"))
    pred = pred[pred.score.notna() & (pred.segment == "test")]
    np.testing.assert_allclose(again["score"].to_numpy(), pred["score"].to_numpy(),
                               rtol=1e-5, atol=1e-6)
    # the same run with its state artifact swapped in the artifact store: refused, never run
    marker = settings.home / "pwned_marker"
    _write("torch-os-system", settings.home / "evil.pt", marker)
    _swap_state(settings, res.run_id, settings.home / "evil.pt")
    with pytest.raises(MigaError, match=f"--model {name} --stockset all --seed 0"):
        load_run_model(settings, res.run_id)
    assert not marker.exists()


# ------------------------------------------------------------------ trainer checkpoints
def _strip(history: list[dict]) -> list[dict]:
    """Epoch records without their timings."""
    return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "train_seconds")}
            for r in history]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store") / "s")


@pytest.mark.parametrize("kind", ["torch-os-system", "torch-exec", "raw-pickle"])
def test_swapped_checkpoint_is_not_unpickled_and_the_cell_starts_over(kind, store, tmp_path,
                                                                      capfd):
    from pipeline.train import CHECKPOINT, fit, load_checkpoint

    marker = tmp_path / "pwned_marker"
    run = tmp_path / "run"
    run.mkdir()
    _write(kind, run / CHECKPOINT, marker)
    cfg = _cfg(max_epochs=2)
    tr, va = _loaders(store)
    res = fit(_model(2), tr, va, cfg, seed=2, checkpoint_dir=run, progress=False)
    assert not marker.exists()
    err = [line for line in capfd.readouterr().err.splitlines() if "checkpoint" in line]
    assert len(err) == 1 and err[0].startswith("warning: checkpoint ")
    assert "cannot be used" in err[0] and "starts over" in err[0]
    assert res.resumed_from == 0 and res.epochs_run == 2
    tr, va = _loaders(store)
    fresh = fit(_model(2), tr, va, cfg, seed=2, checkpoint_dir=tmp_path / "fresh", progress=False)
    assert _strip(res.history) == _strip(fresh.history)
    assert load_checkpoint(run / CHECKPOINT, "cpu")["epoch"] == 2      # overwritten with a good one
    _write(kind, tmp_path / "again.pt", marker)
    assert load_checkpoint(tmp_path / "again.pt", "cpu") is None and not marker.exists()
    assert _code_would_run(tmp_path / "again.pt", marker)


def test_a_checkpoint_is_plain_data(store, tmp_path):
    """Everything the trainer saves (RNG state, history, Adam moments) is tensors and plain data."""
    from pipeline.train import CHECKPOINT, fit

    tr, va = _loaders(store)
    fit(_model(2), tr, va, _cfg(max_epochs=1), seed=2, checkpoint_dir=tmp_path, progress=False)
    ck = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert _plain(ck) and isinstance(ck["torch_rng"], torch.Tensor) and ck["history"]


_KILLED_CHILD = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.code.test_train import _cfg, _loaders, _model
from tests.synthetic_store import make_store
from pipeline.train import fit

def die(rec):
    if rec["epoch"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)      # after epoch 1's checkpoint: no cleanup at all

tr, va = _loaders(make_store(Path({store!r})))
fit(_model(2), tr, va, _cfg(max_epochs=3), seed=2, checkpoint_dir={ckpt!r}, on_epoch=die,
    progress=False)
"""


def test_resume_after_kill_9_loads_weights_only_and_ends_as_an_uninterrupted_run(tmp_path):
    """A process killed with SIGKILL after its first epoch; a new process resumes from the
    checkpoint (read with weights_only=True) and ends with the uninterrupted run's history and
    weights."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from pipeline.train import CHECKPOINT, fit, load_checkpoint

    root = str(Path(__file__).resolve().parents[2])
    ckpt = tmp_path / "run"
    child = subprocess.run([sys.executable, "-c", _KILLED_CHILD.format(
        root=root, store=str(tmp_path / "s"), ckpt=str(ckpt))], cwd=root, capture_output=True,
        text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert load_checkpoint(ckpt / CHECKPOINT, "cpu")["epoch"] == 1
    store = make_store(tmp_path / "s")             # the same store, opened by this process
    tr, va = _loaders(store)
    ref_model = _model(2)
    ref = fit(ref_model, tr, va, _cfg(max_epochs=3), seed=2, progress=False)
    tr, va = _loaders(store)
    model = _model(99)
    res = fit(model, tr, va, _cfg(max_epochs=3), seed=2, checkpoint_dir=ckpt, progress=False)
    assert res.resumed_from == 1 and _strip(res.history) == _strip(ref.history)
    assert res.best_epoch == ref.best_epoch
    for k, v in ref_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
