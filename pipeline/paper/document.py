"""The paper report of `miga paper`: Tables 1-3, Figures 3-6 and the significance test, from
the runs of its cells (`pipeline.paper.cells`), as one HTML page (figures embedded) and markdown
in `MIGA_HOME/reports/paper-<scale>/`, logged to the MLflow run `paper <scale>` of the paper's
experiment, whose children are the cells (`tracking.PARENT_TAG`).

Tables 1 and 2: the grid study's runs; each cell "mean (std over seeds)", the best mean of a
column in bold, and under it the paper's value (`pipeline.paper.published`) and ours minus
theirs. Table 3: each ablated MIGA variant's long-only AR and IR with inner-group attention on
(the grid's run) and off. Significance: the daily test IC of `[paper] significance` minus that of
its best baseline (the non-MIGA, non-anchor model with the highest mean test IC) per stock set and
seed, with a Newey-West t (`evaluation.significance`), and the spread over seeds of the mean
difference.
"""
from __future__ import annotations

import base64
import html as html_lib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.evaluation import TABLE1, TABLE2
from pipeline.evaluation.significance import ic_difference
from pipeline.paper import beside
from pipeline.paper.cells import Found, cell_key
from pipeline.paper.plan import PaperCell, sweep_settings
from pipeline.report import AVERAGE, MODEL_ROWS, Table, models_of, stocksets_of, table
from pipeline.settings import Settings

ANCHORS = ("lgbm", "linear")
DISPLAY = {m: d for m, d, _ in MODEL_ROWS}
TABLE3 = (("long_only_ar", "LO AR"), ("long_only_ir", "LO IR"))


@dataclass
class PaperReport:
    scale: str
    folder: Path                    # reports/paper-<scale>/: paper.html, paper.md, figures, csv
    html: str
    markdown: str
    run_id: str = ""                # the parent MLflow run
    cells: int = 0
    trained: int = 0
    reused: int = 0
    tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.folder / "paper.html"


def runs_frame(config: Config, cells: list[PaperCell], found: dict[str, Found], store) -> pd.DataFrame:
    """One row per paper cell that has a run: study, variant, model, stockset, seed, run_id,
    experiment_id, trained, and the run's flat metrics."""
    rows = []
    for pc in cells:
        f = found.get(cell_key(pc, config, store))
        if f is None:
            continue
        rows.append({"study": pc.study, "variant": pc.variant, "model": pc.cell.model,
                     "stockset": pc.cell.stockset, "seed": pc.cell.seed, "run_id": f.run_id,
                     "experiment_id": f.experiment_id, "trained": f.trained, **f.metrics})
    return pd.DataFrame(rows)


def _fmt(v: float, digits: int) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def paper_table(runs: pd.DataFrame, metrics, digits: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(cells, best, long): the display frame (rows models; columns `<set> <metric>`: "ours (std)
    / paper P / diff D"), a same-shape frame marking each column's best mean, and the long frame
    (model, stockset, metric, ours_mean, ours_std, paper_mean, paper_std, diff)."""
    long = table(runs, metrics)
    ours = long.assign(stockset=long["stockset"].replace({AVERAGE: "average"}))
    both = beside(ours.drop(columns="n"))
    both = both[both["model"].isin(set(runs["model"])) & both["metric"].isin([k for k, _ in metrics])]
    sets = stocksets_of(runs) + (["average"] if len(stocksets_of(runs)) > 1 else [])
    header = ["Type", "Model"] + [f"{s} {name}" for s in sets for _, name in metrics]
    cells, best = [], []
    for m, display, kind in models_of(runs):
        row, mark = [kind, display], [False, False]
        for s in sets:
            for k, _ in metrics:
                sel = both[(both["model"] == m) & (both["stockset"] == s) & (both["metric"] == k)]
                col = both[(both["stockset"] == s) & (both["metric"] == k)]["ours_mean"]
                if sel.empty or math.isnan(sel["ours_mean"].iloc[0]):
                    txt = "" if sel.empty else f"paper {_fmt(sel['paper_mean'].iloc[0], digits)}"
                    row.append(txt)
                    mark.append(False)
                    continue
                r = sel.iloc[0]
                sd = "-" if math.isnan(r["ours_std"]) else _fmt(r["ours_std"], digits)
                txt = f"{_fmt(r['ours_mean'], digits)} ({sd})"
                if not math.isnan(r["paper_mean"]):
                    txt += f" / paper {_fmt(r['paper_mean'], digits)} / diff {r['diff']:+.{digits}f}"
                row.append(txt)
                mark.append(bool(r["ours_mean"] == col.max()))
        cells.append(row)
        best.append(mark)
    return (pd.DataFrame(cells, columns=header, dtype=object),
            pd.DataFrame(best, columns=header, dtype=bool), both.reset_index(drop=True))


def attention_table(runs: pd.DataFrame, ablation) -> pd.DataFrame:
    """Table 3: per ablated model and attention on/off, long-only AR and IR per stock set, mean
    (std over seeds)."""
    rows = []
    for m in ablation:
        for label, sel in (("on", (runs["study"] == "grid") & (runs["model"] == m)),
                           ("off", (runs["study"] == "attention") & (runs["model"] == m))):
            part = runs[sel]
            if part.empty:
                continue
            row = {"Model": DISPLAY.get(m, m), "inner-group attention": label}
            for s in stocksets_of(runs):
                for k, name in TABLE3:
                    v = part.loc[part["stockset"] == s, k].dropna() if k in part else pd.Series(dtype=float)
                    sd = v.std(ddof=1) if len(v) > 1 else math.nan
                    row[f"{s} {name}"] = (f"{v.mean():.2f} ({'-' if math.isnan(sd) else f'{sd:.2f}'})"
                                          if len(v) else "")
            rows.append(row)
    return pd.DataFrame(rows, dtype=object)


def sweep_frame(runs: pd.DataFrame, settings_list) -> pd.DataFrame:
    """Figure 4's values: setting, experts, stockset, seed, test_icir, test_rank_icir, run_id.
    (The setting of the model's own config is an experts cell too, served by the grid's run.)"""
    rows = []
    for setting in settings_list:
        sel = runs[(runs["study"] == "experts") & (runs["variant"] == setting)]
        s = sweep_settings(setting)
        for _, r in sel.iterrows():
            rows.append({"setting": setting, "experts": s["groups"] * s["experts"], "top_k": s["top_k"],
                         "stockset": r["stockset"], "seed": r["seed"],
                         "test_icir": r.get("test_icir"), "test_rank_icir": r.get("test_rank_icir"),
                         "run_id": r["run_id"]})
    return pd.DataFrame(rows)


def best_baseline(runs: pd.DataFrame, model: str) -> str | None:
    """The grid's non-MIGA, non-anchor model with the highest mean test IC (None if none)."""
    g = runs[(runs["study"] == "grid") & ~runs["model"].str.startswith("miga")
             & ~runs["model"].isin(ANCHORS + (model,))]
    if g.empty or "test_ic" not in g:
        return None
    return str(g.groupby("model")["test_ic"].mean().idxmax())


def significance(settings: Settings, runs: pd.DataFrame, model: str) -> tuple[pd.DataFrame, str | None]:
    """Per stock set and seed: the mean daily IC difference `model` - its best baseline, its
    Newey-West se and t, days; plus one row per stock set over seeds ("all seeds": mean and std
    of the per-seed mean differences)."""
    from pipeline import tracking

    base = best_baseline(runs, model)
    if base is None:
        return pd.DataFrame(), None
    g = runs[runs["study"] == "grid"]
    rows = []
    for s in stocksets_of(g):
        diffs = []
        for seed in sorted(set(g["seed"])):
            a = g[(g["model"] == model) & (g["stockset"] == s) & (g["seed"] == seed)]
            b = g[(g["model"] == base) & (g["stockset"] == s) & (g["seed"] == seed)]
            if a.empty or b.empty:
                continue
            ia, ib = (pd.read_parquet(tracking.download_artifact(settings, r, "daily_ic.parquet"))
                      .set_index("date")["ic"] for r in (a["run_id"].iloc[0], b["run_id"].iloc[0]))
            d = ic_difference(ia, ib)
            diffs.append(d["mean"])
            rows.append({"stockset": s, "seed": str(seed), "mean IC diff": d["mean"], "NW se": d["se"],
                         "NW t": d["t"], "lags": d["lags"], "days": d["n"]})
        if diffs:
            rows.append({"stockset": s, "seed": "all seeds", "mean IC diff": float(np.mean(diffs)),
                         "NW se": math.nan, "NW t": math.nan, "lags": math.nan, "days": math.nan,
                         "spread over seeds (std)": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan})
    return pd.DataFrame(rows), base


def curve_history(settings: Settings, runs: pd.DataFrame, pairs, stockset: str) -> pd.DataFrame:
    """model, seed, epoch, train_loss, valid_ic of the pairs' grid runs on `stockset`."""
    from pipeline import tracking

    models = {m for p in pairs for m in p}
    g = runs[(runs["study"] == "grid") & runs["model"].isin(models) & (runs["stockset"] == stockset)]
    rows = []
    for _, r in g.iterrows():
        loss = dict(tracking.metric_history(settings, r["run_id"], tracking.EPOCH_METRICS["train_loss"]))
        ic = dict(tracking.metric_history(settings, r["run_id"], tracking.EPOCH_METRICS["valid_ic"]))
        for epoch in sorted(set(loss) | set(ic)):
            rows.append({"model": r["model"], "seed": r["seed"], "epoch": epoch,
                         "train_loss": loss.get(epoch, math.nan), "valid_ic": ic.get(epoch, math.nan)})
    return pd.DataFrame(rows, columns=["model", "seed", "epoch", "train_loss", "valid_ic"])


def _png(fig) -> bytes:
    from pipeline.plots import pyplot

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    pyplot().close(fig)
    return buf.getvalue()


def _html_table(df: pd.DataFrame, best: pd.DataFrame | None = None) -> str:
    if df.empty:
        return "<p><i>no runs</i></p>"
    head = "".join(f"<th>{html_lib.escape(str(c))}</th>" for c in df.columns)
    body = []
    for i, row in enumerate(df.itertuples(index=False)):
        tds = []
        for j, v in enumerate(row):
            txt = html_lib.escape(_cell(v)).replace(" / ", "<br><small>", 1)
            txt = txt + "</small>" if "<small>" in txt else txt
            bold = best is not None and bool(best.iat[i, j])
            tds.append(f"<td{' class=best' if bold else ''}>{txt}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _md_table(df: pd.DataFrame, best: pd.DataFrame | None = None) -> str:
    if df.empty:
        return "_no runs_"
    shown = df.map(_cell)
    if best is None:
        best = pd.DataFrame(False, index=shown.index, columns=shown.columns)
    return Table("", shown, best).markdown()


def build(settings: Settings, config: Config, scale: str, store, cells: list[PaperCell],
          found: dict[str, Found], *, data_dir: str = "", device: str = "cpu",
          log: bool = True) -> PaperReport:
    """The report (module docstring) from the cells' runs; saved, and with `log` logged to the
    parent run. Sections whose runs are missing (a failed cell) say so instead of failing."""
    from pipeline import tracking
    from pipeline.champion import load_run_model
    from pipeline.paper import experts, figures

    p = config.paper
    sc = getattr(p, scale)
    runs = runs_frame(config, cells, found, store)
    folder = settings.reports_dir / f"paper-{scale}"
    folder.mkdir(parents=True, exist_ok=True)
    notes, sections, md, images, tables = [], [], [], {}, {}
    missing = len({cell_key(pc, config, store) for pc in cells}) - len(found)
    if missing:
        notes.append(f"{missing} cell(s) have no finished run (failed): their rows are missing")
    grid = runs[runs["study"] == "grid"] if not runs.empty else runs

    def section(title: str, html_body: str, md_body: str) -> None:
        sections.append(f"<h2>{html_lib.escape(title)}</h2>{html_body}")
        md.append(f"## {title}\n\n{md_body}\n")

    for name, title, metrics, digits in (("table1", "Table 1: ranking metrics (test)", TABLE1, 3),
                                         ("table2", "Table 2: portfolios (test)", TABLE2, 2)):
        if grid.empty:
            section(title, "<p><i>no runs</i></p>", "_no runs_")
            continue
        shown, best, long = paper_table(grid, metrics, digits)
        tables[name] = long
        long.to_csv(folder / f"{name}.csv", index=False)
        section(title, _html_table(shown, best), _md_table(shown, best))

    t3 = attention_table(runs, p.ablation) if not runs.empty else pd.DataFrame()
    tables["table3"] = t3
    t3.to_csv(folder / "table3.csv", index=False)
    section("Table 3: inner-group attention on and off (long-only, test)", _html_table(t3), _md_table(t3))

    def figure(name: str, title: str, fig) -> None:
        png = _png(fig)
        (folder / f"{name}.png").write_bytes(png)
        images[name] = png
        b64 = base64.b64encode(png).decode()
        sections.append(f"<h2>{html_lib.escape(title)}</h2><img src='data:image/png;base64,{b64}' "
                        f"alt='{html_lib.escape(title)}' style='max-width:100%'>")
        md.append(f"## {title}\n\n![{title}]({name}.png)\n")

    sig, base = significance(settings, runs, p.significance) if not runs.empty else (pd.DataFrame(), None)
    tables["significance"] = sig
    sig.to_csv(folder / "significance.csv", index=False)
    section(f"Is the difference real? {p.significance} vs its best baseline ({base or 'none'}): "
            "daily test IC difference, Newey-West t", _html_table(sig), _md_table(sig))

    pairs = [tuple(x.split(":")) for x in p.pairs]
    first = sc.stocksets[0]
    hist = curve_history(settings, runs, pairs, first) if not runs.empty else pd.DataFrame()
    hist.to_csv(folder / "figure3.csv", index=False)
    if hist.empty:
        notes.append("Figure 3: no training curves")
    else:
        figure("figure3", f"Figure 3: training loss and validation IC, first {p.curve_epochs} epochs ({first})",
               figures.curves(hist, pairs, p.curve_epochs))

    sweep = sweep_frame(runs, sc.sweep) if not runs.empty else pd.DataFrame()
    tables["figure4"] = sweep
    sweep.to_csv(folder / "figure4.csv", index=False)
    if sweep.empty:
        notes.append("Figure 4: no sweep runs")
    else:
        figure("figure4", f"Figure 4: number of experts ({p.sweep_model})", figures.expert_sweep(sweep))

    for number, model in zip((5, 6), p.specialists):
        parts = []
        for s in sc.stocksets:
            sel = grid[(grid["model"] == model) & (grid["stockset"] == s)] if not grid.empty else grid
            if sel.empty:
                continue
            run = sel.sort_values("seed").iloc[0]
            net = load_run_model(settings, run["run_id"])
            parts.append(experts.specialization(net, store, s, config.backtest, device=device))
        if not parts:
            notes.append(f"Figure {number}: no {model} run")
            continue
        spec = pd.concat(parts, ignore_index=True)
        tables[f"figure{number}"] = spec
        spec.to_csv(folder / f"figure{number}.csv", index=False)
        figure(f"figure{number}", f"Figure {number}: expert specialization of {model} "
               f"(each expert's own test predictions backtested)", figures.specialization(spec, model))
        beat = spec.groupby("stockset")["long_only"].apply(lambda v: int((v > 0).sum()))
        notes.append(f"Figure {number}: experts of {model} with a positive long-only excess return: "
                     + ", ".join(f"{s} {n} of {len(spec[spec['stockset'] == s])}" for s, n in beat.items()))

    # a run serving several studies (the grid's MIGA-Conv is also the sweep's 7x9k8) counts once
    unique = runs.drop_duplicates("run_id") if not runs.empty else runs
    n_cells = len(unique)
    trained = int(unique["trained"].sum()) if not runs.empty else 0
    meta = {"scale": scale, "data": data_dir, "data_fingerprint": store.meta.get("data_fingerprint"),
            "store_fingerprint": store.fingerprint, "git_commit": tracking.git_commit(),
            "config": config.source, "segments": store.segments.to_json(),
            "cells": n_cells, "trained": trained, "reused": n_cells - trained,
            "stocksets": list(sc.stocksets), "seeds": list(sc.seeds), "max_epochs": config.train.max_epochs}
    runs.to_csv(folder / "runs.csv", index=False)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    intro = (f"`miga paper --scale {scale}`: {n_cells} cells ({trained} trained by this run, "
             f"{n_cells - trained} reused) on tensor store `{store.fingerprint}` (data "
             f"`{meta['data_fingerprint']}`), commit `{meta['git_commit']}`, config "
             f"`{config.source}`. Stock sets {', '.join(sc.stocksets)}; seeds "
             f"{', '.join(map(str, sc.seeds))}; at most {config.train.max_epochs} epochs. Cells: mean (std "
             "over seeds), the best mean of a column in bold; under it the paper's value and ours "
             "minus the paper's.")
    notes_html = "".join(f"<li>{html_lib.escape(n)}</li>" for n in notes)
    meta_html = html_lib.escape(json.dumps(meta, indent=2, default=str))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>MIGA paper, "
            f"{scale}</title><style>body{{font:14px sans-serif;margin:20px}}table{{border-collapse:"
            "collapse;font:12px sans-serif;margin-bottom:14px}}td,th{border:1px solid #ccc;padding:3px"
            " 6px;text-align:right}td.best{font-weight:bold}small{color:#666}</style></head><body>"
            f"<h1>MIGA, reproduced ({scale} scale)</h1><p>{html_lib.escape(intro)}</p>"
            + (f"<ul>{notes_html}</ul>" if notes else "") + "".join(sections)
            + f"<h2>Data, config and commit</h2><pre>{meta_html}</pre></body></html>")
    markdown = "\n".join([f"# MIGA, reproduced ({scale} scale)\n\n{intro}\n"]
                         + [f"- {n}" for n in notes] + [""] + md)
    (folder / "paper.html").write_text(page)
    (folder / "paper.md").write_text(markdown)
    report = PaperReport(scale, folder, page, markdown, cells=n_cells, trained=trained,
                         reused=n_cells - trained, tables=tables, figures=sorted(images), notes=notes)
    if log:
        metrics = {"cells": n_cells, "trained": trained}
        if not sig.empty:
            pooled = sig[sig["seed"] != "all seeds"]
            metrics["ic_diff_mean"] = float(pooled["mean IC diff"].mean())
        report.run_id = tracking.log_parent_run(
            settings, p.experiment, f"paper {scale}",
            {"kind": "paper", "scale": scale, "store_fingerprint": store.fingerprint,
             "data_fingerprint": str(meta["data_fingerprint"]), "git_commit": meta["git_commit"]},
            metrics, sorted(folder.iterdir()))
        exp_id = tracking.setup(settings, p.experiment)
        for _, r in runs.iterrows():
            if str(r["experiment_id"]) == exp_id:
                tracking.set_run_tags(settings, r["run_id"], {tracking.PARENT_TAG: report.run_id})
    return report

