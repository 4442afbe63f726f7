"""The paper-style tables built from runs in a real (sqlite) MLflow store with known metrics."""
from __future__ import annotations

import re

import pytest

from pipeline.errors import MigaError

IC = {("tcn", "csi300"): (0.040, 0.042), ("tcn", "csi500"): (0.030, 0.036),
      ("miga-conv", "csi300"): (0.050, 0.054), ("miga-conv", "csi500"): (0.022, 0.030)}


def _log_run(exp_id, model, stockset, seed, ic, fp="fpA", status="FINISHED"):
    import mlflow

    with mlflow.start_run(experiment_id=exp_id, run_name=f"{model}/{stockset}/seed{seed}") as r:
        mlflow.set_tags({"model": model, "stockset": stockset, "seed": str(seed), "store_fingerprint": fp})
        mlflow.log_metrics({"test_ic": ic, "test_icir": 10 * ic, "test_rank_ic": ic + 0.01,
                            "test_rank_icir": 10 * ic + 0.1, "long_only_ar": 3 * ic,
                            "long_only_ir": 30 * ic, "long_short_ar": 20 * ic, "long_short_ir": 100 * ic,
                            "topk_excess_ar_net": 2 * ic, "topk_turnover": 10 * ic})
    if status != "FINISHED":
        mlflow.MlflowClient().set_terminated(r.info.run_id, status)


@pytest.fixture
def store_with_runs(settings):
    from pipeline import tracking

    exp_id = tracking.setup(settings)
    _log_run(exp_id, "tcn", "csi300", 0, 0.9)          # superseded by the later seed-0 run below
    _log_run(exp_id, "miga-conv", "csi300", 0, 0.9, status="FAILED")
    for (model, s), (a, b) in IC.items():
        _log_run(exp_id, model, s, 0, a)
        _log_run(exp_id, model, s, 1, b)
    _log_run(exp_id, "lstm", "csi300", 0, 0.5, fp="fpOLD")  # other data: left out
    # the newest run decides the data fingerprint
    _log_run(exp_id, "tcn", "csi300", 1, IC[("tcn", "csi300")][1])
    return settings


def _row(md_table: str, model: str) -> list[str]:
    for line in md_table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 1 and cells[1] == model:
            return cells
    raise AssertionError(f"no row {model}")


def test_tables_mean_std_over_seeds_average_and_bold(store_with_runs):
    from pipeline.report import build_report

    rep = build_report(store_with_runs)
    t1 = rep.markdown.split("## Table 1")[1].split("## Table 2")[0]
    header = [c.strip() for c in t1.splitlines()[2].strip("|").split("|")]
    assert header[:2] == ["Type", "Model"]
    assert header[2:6] == ["csi300 IC", "csi300 ICIR", "csi300 RankIC", "csi300 RankICIR"]
    assert header[10] == "Average IC"
    tcn, miga = _row(t1, "TCN"), _row(t1, "MIGA-Conv")
    assert tcn[0] == "Baselines" and miga[0] == "MIGA"
    # csi300 IC: tcn 0.040/0.042 -> 0.041 (0.001); miga 0.050/0.054 -> 0.052 (0.003), best -> bold
    assert tcn[2] == "0.041 (0.001)"
    assert miga[2] == "**0.052 (0.003)**"
    # csi500: tcn is best
    assert tcn[6] == "**0.033 (0.004)**" and miga[6] == "0.026 (0.006)"
    # the average pools both stock sets and both seeds (std over the 4 values)
    assert tcn[10] == "0.037 (0.005)" and miga[10] == "**0.039 (0.015)**"
    assert "LSTM" not in t1 and "0.900" not in rep.markdown     # other fingerprint, superseded, failed
    t2 = rep.markdown.split("## Table 2")[1]
    assert _row(t2, "MIGA-Conv")[2] == "**0.16 (0.01)**"         # long-only AR = 3 x IC
    # the TopkDropout table: the most excess is bold, and the least turnover (not the most)
    tk = rep.markdown.split("## TopkDropout")[1]
    header = [c.strip() for c in tk.splitlines()[2].strip("|").split("|")]
    excess, turnover = header.index("csi300 TK excess"), header.index("csi300 TK turnover")
    assert _row(tk, "MIGA-Conv")[excess] == "**0.10 (0.01)**"   # 2 x 0.052
    assert _row(tk, "TCN")[turnover] == "**0.41 (0.01)**"       # 10 x 0.041 < 10 x 0.052
    assert _row(tk, "MIGA-Conv")[turnover] == "0.52 (0.03)"
    assert rep.store_fingerprint == "fpA" and len(rep.runs) == 8
    # HTML (pandas' Styler): the same cells, the best ones of class `best`, which is bold
    assert re.search(r'<td [^>]*class="data row\d+ col2 best" >0\.052 \(0\.003\)</td>', rep.html)
    assert re.search(r'<td [^>]*class="data row\d+ col2" >0\.041 \(0\.001\)</td>', rep.html)
    assert "td.best {\n  font-weight: bold;" in rep.html
    assert [t.title for t in rep.tables] == ["Table 1: ranking metrics (test)",
                                             "Table 2: portfolios (test)", "TopkDropout, net of costs (test)"]


def test_report_is_saved_and_logged(store_with_runs):
    from mlflow import MlflowClient

    from pipeline.report import build_report
    from pipeline.tracking import find_cell_run

    settings = store_with_runs
    rep = build_report(settings)
    assert (settings.reports_dir / "report.md").read_text() == rep.markdown
    assert (settings.reports_dir / "report.html").read_text() == rep.html
    client = MlflowClient(settings.mlflow_uri)
    run = client.get_run(rep.run_id)
    assert run.info.run_name == "report miga"
    assert {a.path for a in client.list_artifacts(rep.run_id)} >= {"report.md", "report.html"}
    # the report is not a training run: its own experiment, not in the training table
    assert client.get_experiment(run.info.experiment_id).name == "miga-reports"
    training = client.get_experiment_by_name("miga").experiment_id
    assert rep.run_id not in {r.info.run_id for r in client.search_runs([training])}
    assert find_cell_run(settings, "tcn", "csi300", 1)["run_id"] != rep.run_id
    assert len(build_report(settings, log=False).runs) == 8
    # a second report updates the one report run
    again = build_report(settings)
    assert again.run_id == rep.run_id
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_report_without_runs_says_what_to_do(settings):
    from pipeline.report import build_report

    with pytest.raises(MigaError, match="miga train"):
        build_report(settings)


def test_cli_report_prints_the_tables(store_with_runs, capsys):
    from flows.cli import main

    assert main(["--home", str(store_with_runs.home), "report"]) == 0
    out = capsys.readouterr().out
    assert "## Table 1" in out and "**0.052 (0.003)**" in out


def test_cli_report_in_a_terminal_prints_aligned_tables_that_fit(store_with_runs, capsys, monkeypatch):
    import flows.cli

    monkeypatch.setattr(flows.cli, "_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "80")
    assert flows.cli.main(["report", "--home", str(store_with_runs.home)]) == 0
    out = capsys.readouterr().out
    assert "**" not in out and "| " not in out and "## Table 1" not in out   # not markdown
    tables, saved = out.split("\nsaved: ")
    assert max(len(ln.rstrip()) for ln in tables.splitlines()) <= 80
    assert "Table 1: ranking metrics (test)" in out and "Table 2: portfolios (test)" in out
    t1 = out[out.index("Table 1"):out.index("\nTable 2")]     # with its continued parts
    # a model per row (its type a section), a stock set's four metrics side by side
    assert re.search(r"^TCN +0\.041 \(0\.001\) +0\.410 \(0\.014\) +0\.051 \(0\.001\) +0\.510", t1, re.M)
    assert re.search(r"^MIGA-Conv +0\.052 \(0\.003\) +0\.520", t1, re.M)
    assert "csi500" in t1 and "RankICIR" in t1 and "Average" in t1
    # the files are saved as before, markdown and HTML
    assert (store_with_runs.reports_dir / "report.md").read_text().count("**0.052 (0.003)**") == 1
    assert saved.startswith(str(store_with_runs.reports_dir / "report.md")) and "report.html" in saved
