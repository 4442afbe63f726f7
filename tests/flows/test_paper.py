"""`miga paper`, as a user runs it: the `miga-paper` flow in-process on a temporary Prefect API,
a real DuckDB warehouse and a real MLflow store in a fresh home folder, on a tiny synthetic
data folder. A config keeps the studies small (five models, one ablated, two sweep settings);
the smoke scale's rules (one stock set, one seed, 2 epochs, shortened segments) are the shipped
ones. Then the same command again: everything is reused, nothing trained.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.config import load_config
from pipeline.settings import Settings

MIGA = str(Path(sys.executable).parent / "miga")
pytestmark = [pytest.mark.slow, pytest.mark.server]

CONFIG = """
[segments]
preset = "synthetic"
[data]
stocksets = ["csi300"]
[train]
batch_days = 8
[paper]
models = ["miga-conv", "miga-rec", "tcn", "lstm", "linear"]
pairs = ["miga-conv:tcn", "miga-rec:lstm"]
ablation = ["miga-conv"]
[paper.smoke]
sweep = ["2x3k2", "7x9k8"]
"""


def _miga(home: Path, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MIGA_", "MLFLOW_TRACKING"))}
    env["HOME"] = str(tmp_path / "user")
    return subprocess.run([MIGA, "--home", str(home), *args], env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, tiny_data):
    tmp = tmp_path_factory.mktemp("paper")
    cfg = tmp / "paper-test.toml"
    cfg.write_text(CONFIG)
    home = tmp / "home"
    first = _miga(home, "paper", "--data", str(tiny_data), "--config", str(cfg), tmp_path=tmp)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    client = MlflowClient(Settings.from_env(str(home)).mlflow_uri)
    exp = client.get_experiment_by_name("miga-paper")
    runs_before = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    second = _miga(home, "paper", "--data", str(tiny_data), "--config", str(cfg), tmp_path=tmp)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return {"home": home, "config": cfg, "first": first, "second": second, "client": client,
            "exp": exp, "runs_before": runs_before, "folder": home / "reports" / "paper-smoke"}


def _cells(client, exp) -> list:
    return [r for r in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
            if "run_key" in r.data.tags]


def test_every_study_is_run_once_and_nested_under_the_report_run(paper_run):
    client, exp = paper_run["client"], paper_run["exp"]
    cells = _cells(client, exp)
    # 5 grid cells + 1 without attention + 1 sweep setting (7x9k8 is the grid's own miga-conv)
    names = sorted(r.info.run_name for r in cells)
    assert names == sorted(["miga-conv/csi300/seed0", "miga-rec/csi300/seed0", "tcn/csi300/seed0",
                            "lstm/csi300/seed0", "linear/csi300/seed0",
                            "miga-conv/csi300/seed0 [attention=off]",
                            "miga-conv/csi300/seed0 [2x3k2]"]), names
    parents = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == "paper smoke"]
    assert len(parents) == 1
    assert {r.data.tags.get("mlflow.parentRunId") for r in cells} == {parents[0].info.run_id}
    arts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"paper.html", "table1.csv", "figure5.png", "figure6.png"} <= arts
    off = next(r for r in cells if "attention=off" in r.info.run_name)
    assert off.data.params["model.group_attention"] == "False"
    sweep = next(r for r in cells if "2x3k2" in r.info.run_name)
    assert (sweep.data.params["model.groups"], sweep.data.params["model.experts"],
            sweep.data.params["model.top_k"]) == ("2", "3", "2")
    # the smoke scale: 2 epochs at most, the train segment cut to its last 365 days
    assert all(r.data.params["train.max_epochs"] == "2" for r in cells)
    assert all(r.data.params["segments.train"] == "2016-07-01..2017-06-30" for r in cells)


def test_a_rerun_reuses_every_cell_and_updates_the_same_report_run(paper_run):
    client, exp = paper_run["client"], paper_run["exp"]
    after = {r.info.run_id for r in client.search_runs([exp.experiment_id])}
    assert after == set(paper_run["runs_before"])                 # no new run, the parent reused
    assert "7 cells (0 trained, 7 reused)" in paper_run["second"].stdout
    assert "7 cells (7 trained, 0 reused)" in paper_run["first"].stdout


def test_tables_hold_the_runs_metrics_beside_the_papers(paper_run):
    client, exp, folder = paper_run["client"], paper_run["exp"], paper_run["folder"]
    cells = {r.info.run_name: r for r in _cells(client, exp)}
    t1 = pd.read_csv(folder / "table1.csv")
    mine = t1[(t1["model"] == "miga-conv") & (t1["stockset"] == "csi300") & (t1["metric"] == "test_ic")]
    assert mine["ours_mean"].iloc[0] == pytest.approx(cells["miga-conv/csi300/seed0"].data.metrics["test/ic"])
    assert mine["paper_mean"].iloc[0] == pytest.approx(0.052)          # the paper's Table 1
    assert mine["diff"].iloc[0] == pytest.approx(mine["ours_mean"].iloc[0] - 0.052)
    t2 = pd.read_csv(folder / "table2.csv")
    lin = t2[(t2["model"] == "linear") & (t2["metric"] == "long_only_ar") & (t2["stockset"] == "csi300")]
    assert lin["ours_mean"].iloc[0] == pytest.approx(
        cells["linear/csi300/seed0"].data.metrics["backtest/long_only_ar"])
    assert lin["paper_mean"].isna().all()                              # not a model of the paper

    t3 = pd.read_csv(folder / "table3.csv", dtype=str)
    assert list(t3["inner-group attention"]) == ["on", "off"]
    off = cells["miga-conv/csi300/seed0 [attention=off]"].data.metrics["backtest/long_only_ar"]
    assert t3.loc[1, "csi300 LO AR"].startswith(f"{off:.2f} ")

    f4 = pd.read_csv(folder / "figure4.csv")
    assert sorted(f4["setting"]) == ["2x3k2", "7x9k8"]
    assert f4.set_index("setting").loc["7x9k8", "run_id"] == cells["miga-conv/csi300/seed0"].info.run_id


def test_figures_and_the_significance_test_are_in_the_html_report(paper_run):
    folder = paper_run["folder"]
    page = (folder / "paper.html").read_text()
    for title in ("Table 1", "Table 2", "Table 3", "Figure 3", "Figure 4", "Figure 5", "Figure 6",
                  "Is the difference real?"):
        assert title in page
    assert page.count("data:image/png;base64,") == 4
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["data_fingerprint"] and meta["git_commit"] and meta["store_fingerprint"]
    # Figures 5 and 6: every one of the 63 experts of each specialist backtested on its own
    for n in (5, 6):
        spec = pd.read_csv(folder / f"figure{n}.csv")
        assert sorted(spec["expert"]) == list(range(1, 64))
        assert spec[["long_only", "short"]].notna().all().all()
        assert spec["long_only"].nunique() > 50                        # 63 different forecasts
    # MIGA-Conv against its best baseline (the better of tcn and lstm by test IC)
    sig = pd.read_csv(folder / "significance.csv")
    row = sig[sig["seed"] == "0"].iloc[0]
    assert row["days"] > 50 and abs(row["NW t"]) > 0 and row["NW se"] > 0
    assert "vs its best baseline (tcn)" in page or "vs its best baseline (lstm)" in page


def test_expert_predictions_are_what_the_router_mixes():
    """y = sum over experts of routing weight x the expert's own prediction (eq. 9)."""
    import torch

    from pipeline.models import create_model

    torch.manual_seed(0)
    model = create_model("miga-conv", d_feat=6).eval()
    x, mask = torch.randn(2, 11, 5, 6), torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        y, _ = model(x, mask)
        preds = model.expert_predictions(x, mask)                       # (B, N, G, E)
    w = model.last_routing                                              # (B, N, G, E)
    assert preds.shape == (2, 11, 7, 9)
    assert torch.allclose((w * preds).sum((-1, -2)), y, atol=1e-5)
    assert (preds[1, 7:] == 0).all()


def test_a_bad_scale_or_sweep_is_one_line(tmp_path):
    from pipeline.errors import ConfigError

    bad = tmp_path / "bad.toml"
    bad.write_text('[paper.smoke]\nsweep = ["7x9k99"]\n')
    with pytest.raises(ConfigError, match=r"paper.smoke.sweep setting '7x9k99' needs .*top_k <= groups\*experts"):
        load_config(bad)
    bad.write_text('[paper.smoke]\nsweep = ["seven"]\n')
    with pytest.raises(ConfigError, match="paper.smoke.sweep must be"):
        load_config(bad)
    out = subprocess.run([MIGA, "paper", "--scale", "huge"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "invalid choice: 'huge'" in out.stderr
