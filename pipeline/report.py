"""Reports: the paper's Table 1 (ranking metrics) and Table 2 (portfolios) from the MLflow runs,
beside them the TopkDropout account net of costs (what a trader could run), and the results
table of one grid (`results_table`).

Rows are models, columns the metrics per stock set and their average; cells are
"mean (std)" over seeds (std with ddof=1, "-" for a single seed); the best mean of each column
is in bold. The tables are pandas frames of formatted cells (`Table`): markdown by
`DataFrame.to_markdown` (tabulate), HTML by pandas' `Styler` (the best cells get the class `best`,
set in bold). The average column pools every (stock set, seed) value of a model that has runs on
all the table's stock sets. Only finished runs on one tensor store are used (by default that of
the most recent run), and for a repeated (model, stock set, seed) the latest run counts.
"""
from __future__ import annotations

import html as html_lib
import math
from dataclasses import dataclass, field

import pandas as pd

from pipeline.errors import MigaError
from pipeline.evaluation import HEADLINE, TABLE1, TABLE2, TABLE_NET
from pipeline.settings import Settings
from pipeline.tracking import ui_run_path
# Paper order and type of each model (Table 1: baselines, SoTA models, MIGA), then the anchors.
MODEL_ROWS = (("tcn", "TCN", "Baselines"), ("lstm", "LSTM", "Baselines"),
              ("transformer", "Transformer", "Baselines"), ("mamba", "Mamba", "SoTA models"),
              ("master", "MASTER", "SoTA models"),
              ("master-ref", "MASTER-ref", "SoTA models"),
              ("moderntcn", "ModernTCN", "SoTA models"),
              ("miga-conv", "MIGA-Conv", "MIGA"), ("miga-rec", "MIGA-Rec", "MIGA"),
              ("miga-attn", "MIGA-Attn", "MIGA"),
              # not in the paper: what no neural network gets on the same inputs (pipeline/anchors.py)
              ("lgbm", "LightGBM", "Anchors"), ("linear", "Linear (ridge)", "Anchors"))
STOCKSET_ORDER = ("csi300", "csi500", "csi1000", "all")
LOWER_IS_BETTER = ("topk_turnover", "topk_cost_drag")   # bold marks the column's minimum
AVERAGE = "Average"


@dataclass
class Table:
    """One table of the report: formatted cells ("mean (std)", "" where a model has no runs)
    under their header, and a frame of the same shape that marks each column's best mean."""
    title: str
    cells: pd.DataFrame
    best: pd.DataFrame

    def markdown(self) -> str:
        bold = self.best & self.cells.ne("")
        return (self.cells.mask(bold, "**" + self.cells + "**")
                .to_markdown(index=False, disable_numparse=True))

    def html(self, uuid: str = "") -> str:
        """The table as HTML (pandas' Styler): values escaped, the best cells in bold."""
        return (self.cells.style.hide(axis="index")
                .format(escape="html").format_index(escape="html", axis=1)
                .set_td_classes(self.best.replace({True: "best", False: ""}))
                .set_table_styles([{"selector": "td.best", "props": "font-weight: bold"}])
                .set_uuid(uuid or "table").to_html())


@dataclass
class Report:
    markdown: str
    html: str
    runs: pd.DataFrame = field(repr=False)       # one row per run used: model, stockset, seed, metrics
    store_fingerprint: str = ""                  # the tensor store the runs trained on
    run_id: str = ""                             # the MLflow run holding the report artifacts
    intro: str = ""                              # the paragraph above the tables
    tables: list[Table] = field(default_factory=list, repr=False)   # Table 1, Table 2, TopkDropout


def _store_tag(tags: dict) -> str:
    # Runs logged before `store_fingerprint` existed carried the store's fingerprint as
    # `data_fingerprint`; read them under the new name (no migration of old runs needed).
    return tags.get("store_fingerprint") or tags.get("data_fingerprint", "")


def collect_runs(settings: Settings, experiment: str = "miga",
                 store_fingerprint: str | None = None) -> tuple[pd.DataFrame, str]:
    """Finished runs with model/stockset/seed tags as a frame; the store fingerprint they share."""
    from pipeline import tracking

    runs = tracking.finished_runs(settings, experiment)
    if runs is None:
        raise MigaError(f"no MLflow experiment {experiment!r} at {settings.mlflow_uri}: "
                        "run `miga train` first")
    rows = [{"run_id": r["run_id"], "start": r["start"], "model": r["tags"]["model"],
             "stockset": r["tags"]["stockset"], "seed": int(r["tags"]["seed"]),
             "store_fingerprint": _store_tag(r["tags"]), **r["metrics"]}
            for r in runs if {"model", "stockset", "seed"} <= set(r["tags"])]
    if not rows:
        raise MigaError(f"experiment {experiment!r} has no finished training runs: run `miga train` first")
    df = pd.DataFrame(rows)                                        # newest first
    fp = store_fingerprint or df["store_fingerprint"].iloc[0]
    df = df[df["store_fingerprint"] == fp]
    df = df.drop_duplicates(["model", "stockset", "seed"], keep="first")
    return df.reset_index(drop=True), fp


def stocksets_of(runs: pd.DataFrame) -> list[str]:
    """The runs' stock sets in the paper's order (csi300, csi500, csi1000, all, then others)."""
    present = list(dict.fromkeys(runs["stockset"]))
    return sorted(present, key=lambda s: (STOCKSET_ORDER.index(s) if s in STOCKSET_ORDER else 99, s))


def models_of(runs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(model, display name, type) of the runs' models: the paper's rows first, then others."""
    known = [m for m in MODEL_ROWS if m[0] in set(runs["model"])]
    other = sorted(set(runs["model"]) - {m[0] for m in MODEL_ROWS})
    return known + [(m, m, "Other") for m in other]


def table(runs: pd.DataFrame, metrics) -> pd.DataFrame:
    """Long frame: model, stockset (incl. Average), metric, mean, std, n (seeds or pooled values)."""
    sets = stocksets_of(runs)
    out = []
    for model, _, _ in models_of(runs):
        mr = runs[runs["model"] == model]
        for key, _ in metrics:
            pooled = []
            for s in sets:
                v = mr.loc[mr["stockset"] == s, key].dropna() if key in mr else pd.Series(dtype=float)
                if len(v):
                    out.append((model, s, key, v.mean(), v.std(ddof=1) if len(v) > 1 else math.nan, len(v)))
                    pooled.append(v)
            if len(sets) > 1 and len(pooled) == len(sets):
                v = pd.concat(pooled)
                out.append((model, AVERAGE, key, v.mean(), v.std(ddof=1) if len(v) > 1 else math.nan, len(v)))
    return pd.DataFrame(out, columns=["model", "stockset", "metric", "mean", "std", "n"])


def _cells(long: pd.DataFrame, runs: pd.DataFrame, metrics, digits: int, title: str = "") -> Table:
    """The formatted cells, with the best mean of each column marked."""
    sets = stocksets_of(runs) + ([AVERAGE] if len(stocksets_of(runs)) > 1 else [])
    cols = [(s, k, name) for s in sets for k, name in metrics]
    best = {}
    for s, k, _ in cols:
        sel = long[(long["stockset"] == s) & (long["metric"] == k)]
        # turnover and costs: less is better
        best[(s, k)] = ((sel["mean"].min() if k in LOWER_IS_BETTER else sel["mean"].max())
                        if len(sel) else None)
    header = ["Type", "Model"] + [f"{s} {name}" for s, _, name in cols]
    rows = []
    for model, display, kind in models_of(runs):
        cells = [(kind, False), (display, False)]
        for s, k, _ in cols:
            sel = long[(long["model"] == model) & (long["stockset"] == s) & (long["metric"] == k)]
            if sel.empty:
                cells.append(("", False))
                continue
            m, sd = sel["mean"].iloc[0], sel["std"].iloc[0]
            txt = f"{m:.{digits}f} ({'-' if math.isnan(sd) else f'{sd:.{digits}f}'})"
            cells.append((txt, best[(s, k)] is not None and m == best[(s, k)]))
        rows.append(cells)
    return Table(title, pd.DataFrame([[t for t, _ in r] for r in rows], columns=header, dtype=object),
                 pd.DataFrame([[b for _, b in r] for r in rows], columns=header, dtype=bool))


def build_report(settings: Settings, experiment: str = "miga", store_fingerprint: str | None = None,
                 log: bool = True) -> Report:
    """Tables 1 and 2 as markdown and HTML; saved to `settings.reports_dir` and, with `log`,
    as artifacts of an MLflow run named `report` in `experiment`."""
    runs, fp = collect_runs(settings, experiment, store_fingerprint)
    seeds = runs.groupby(["model", "stockset"])["seed"].nunique()
    intro = (f"{len(runs)} runs of experiment `{experiment}` on tensor store `{fp}`: "
             f"{runs['model'].nunique()} models x {runs['stockset'].nunique()} stock sets, "
             f"{seeds.min()}-{seeds.max()} seeds per cell. Cells: mean (std over seeds); "
             "best mean of each column in bold (the lowest for turnover and costs). "
             "AR = annualised excess return (mean daily x [backtest] days_per_year), "
             "IR = mean / std x sqrt(days_per_year); long-only (LO) against the "
             "equal-weighted members, long-short (LS) as is. TK = the TopkDropout "
             "account ([backtest] topk, n_drop; Qlib's strategy and costs): excess over the "
             "equal-weighted members and IR net of costs, its own AR, the excess before costs, "
             "mean weight bought a day, costs a year.")
    parts_md, parts_html = [f"# MIGA results\n\n{intro}\n"], [f"<h1>MIGA results</h1><p>{html_lib.escape(intro)}</p>"]
    tables = []
    for i, (title, metrics, digits) in enumerate((("Table 1: ranking metrics (test)", TABLE1, 3),
                                                  ("Table 2: portfolios (test)", TABLE2, 2),
                                                  ("TopkDropout, net of costs (test)", TABLE_NET, 2))):
        t = _cells(table(runs, metrics), runs, metrics, digits, title)
        tables.append(t)
        parts_md.append(f"## {title}\n\n{t.markdown()}\n")
        parts_html.append(f"<h2>{html_lib.escape(title)}</h2>{t.html(f'table{i + 1}')}")
    md = "\n".join(parts_md)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>MIGA results</title>"
            "<style>table{border-collapse:collapse;font:13px sans-serif}td,th{border:1px solid #ccc;"
            "padding:3px 6px;text-align:right}</style></head><body>"
            + "".join(parts_html) + "</body></html>")
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    (settings.reports_dir / "report.md").write_text(md)
    (settings.reports_dir / "report.html").write_text(page)
    runs.to_csv(settings.reports_dir / "report_runs.csv", index=False)
    run_id = ""
    if log:
        from pipeline import tracking

        run_id = tracking.log_report(
            settings, experiment, {"store_fingerprint": fp}, {"runs": len(runs)},
            [settings.reports_dir / n for n in ("report.md", "report.html", "report_runs.csv")])
    return Report(markdown=md, html=page, runs=runs, store_fingerprint=fp, run_id=run_id,
                  intro=intro, tables=tables)


def results_frame(rows: list[dict], mlflow_ui: str | None = None) -> pd.DataFrame:
    """One grid's cells as a frame of display strings: model, stockset, seed, the headline
    metrics (4 decimals; "failed" under the first for a failed cell), `run` (the run id's first 8
    characters, or a failed cell's error) and `url` (the run's page in the MLflow UI, or "").

    Each row is {"cell": Cell-as-dict, "run_id": str, "metrics": {...}} or {"cell", "error"}.
    """
    out = []
    for r in rows:
        c = r["cell"]
        if "error" in r:
            vals = ["failed"] + [""] * (len(HEADLINE) - 1)
            run, url = r["error"][:80], ""
        else:
            m = r.get("metrics", {})
            vals = [f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else "" for k in HEADLINE]
            run_id = r.get("run_id", "")
            run = run_id[:8]
            url = (mlflow_ui + ui_run_path(r.get("experiment_id", ""), run_id)
                   if mlflow_ui and run_id else "")
        out.append([c["model"], c["stockset"], str(c["seed"]), *vals, run, url])
    return pd.DataFrame(out, columns=["model", "stockset", "seed", *HEADLINE, "run", "url"], dtype=object)


def results_table(rows: list[dict], mlflow_ui: str | None = None) -> str:
    """Markdown table of one grid's cells (`results_frame`): one row per cell, the headline
    metrics, a link to each cell's MLflow run. Rows are not padded (to_markdown would pad
    every row to the longest link): the Prefect artifact renders it, and it stays short raw."""
    df = results_frame(rows, mlflow_ui)
    link = [f"[{run}]({url})" if url else run.replace("|", "/") for run, url in zip(df["run"], df["url"])]
    body = df.drop(columns=["run", "url"]).assign(run=link)
    return "\n".join(["| " + " | ".join(body.columns) + " |", "|" + "---|" * body.shape[1]]
                     + ["| " + " | ".join(r) + " |" for r in body.itertuples(index=False)])
