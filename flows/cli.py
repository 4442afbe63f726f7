"""`miga` command line: each command parses its arguments and calls one function.

The library (`pipeline/`) does the work; `miga demo` runs the flow and `miga stack` the local
servers, both of flows/. The user-facing description is DESCRIPTION below (`miga --help`).

Heavy libraries (torch, GX, MLflow, Prefect) are imported inside the commands, so
`miga --help` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import DEMO_CONFIG, PAPER_SCALES
from pipeline.models import MODELS     # the registry by name (no torch import)
from pipeline.settings import Settings


DESCRIPTION = """\
miga trains stock-return prediction models on a daily panel of stocks: MIGA (a mixture of
experts with group aggregation), the paper's baselines and two anchors (ridge, LightGBM).
It scores every model by IC and RankIC on the test days, backtests the portfolios its
predictions pick, and reports the results as the paper's Table 1 and Table 2.

The usual order (each step reuses what the one before it wrote):
  miga synth --out DIR    a synthetic data folder (or bring your own: daily, membership,
                          index parquet files)
  miga ingest --data DIR  check the folder and load it into the home folder
  miga store              compute the features and labels and build the training arrays
  miga train --model M    train and test one model; one MLflow run per stock set x seed
  miga report             the results tables over every run
or `miga demo`, which does all of it on synthetic data (and picks champions, predicts the
next day) in one command, and `miga paper`, which reruns the paper's studies (Tables 1-3,
Figures 3-6) and puts our numbers beside the published ones.

Everything is kept in the home folder (--home DIR, else $MIGA_HOME, else ./.miga): the data
warehouse (warehouse.duckdb), the training arrays (store/), the MLflow runs and models
(mlflow.db, mlartifacts/), reports (reports/) and logs (logs/). Deleting it starts afresh.
"""

EPILOG = """\
examples:
  miga demo                       everything, on synthetic data, in ./.miga
  miga synth --out data && miga ingest --data data && miga store --config quick
  miga train --model miga-conv --stockset csi300 csi1000 --seed 0 1 --home ./.miga
  miga report
  miga paper --data ../shared/data --scale smoke

`miga COMMAND --help` tells a command's options; --home goes before or after COMMAND.
"""


def _settings(args) -> Settings:
    return Settings.from_env(getattr(args, "home", None)).ensure()


def _int_at_least(low: int):
    """An argparse type: an integer >= low (the message says what was given and what is allowed)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


POSITIVE, NON_NEGATIVE = _int_at_least(1), _int_at_least(0)


def DEVICE(text: str) -> str:
    """An argparse type: a device name as [train] device allows it (pipeline.config)."""
    from pipeline.config import is_device

    if not is_device(text):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}: use auto, cpu, cuda or cuda:<index>")
    return text


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake said in one line (exit 2) instead of usage + error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def cmd_synth(args) -> int:
    from pipeline.data.synth import SynthSpec, write_synthetic

    spec = SynthSpec(n_stocks=args.stocks, n_days=args.days, seed=args.seed,
                     n_features=args.features, start=args.start, panel_files=args.panel_files,
                     price_files=args.price_files)
    out = write_synthetic(Path(args.out), spec)
    print(f"synthetic data folder written: {out}")
    return 0


def cmd_ingest(args) -> int:
    from pipeline.data.ingest import ingest

    report = ingest(_settings(args), Path(args.data))
    print(report)
    return 0


def cmd_validate(args) -> int:
    from pipeline.data.validate import validate_warehouse

    print(validate_warehouse(_settings(args)))
    return 0


def cmd_features(args) -> int:
    from pipeline.config import load_config
    from pipeline.features.build import build_features

    print(build_features(_settings(args), load_config(args.config), force=args.force))
    return 0


def cmd_store(args) -> int:
    from pipeline.config import load_config
    from pipeline.store.build import build_store

    store = build_store(_settings(args), load_config(args.config), force=args.force)
    print(store.describe())
    return 0


def _train_config(args, config: str | None):
    """The config `miga train` runs: `config` with the command line's overrides."""
    from dataclasses import replace

    from pipeline.config import load_config
    from pipeline.train import resolve_device

    cfg = load_config(config)
    if args.epochs is not None:
        cfg = cfg.with_train(max_epochs=args.epochs)
    if args.batch_days is not None:
        cfg = cfg.with_train(batch_days=args.batch_days)
    if args.device:
        cfg = cfg.with_train(device=args.device)
    if args.stack_size is not None:
        cfg = replace(cfg, engine=replace(cfg.engine, stack_size=args.stack_size))
    resolve_device(cfg.train_for(args.model).device)   # a missing GPU is refused before any work
    return cfg


def _config_of_store(settings, missing: Exception) -> str:
    """No --config and no store of the default config: the config in configs/ that the home's
    newest store (of the current warehouse) was built with, or a one-line MigaError naming
    the --config to pass. A store records its config's segments and data tables, not the
    config's name, so each config in configs/ is tried for a built store."""
    from pipeline.config import CONFIG_DIR, load_config
    from pipeline.errors import MigaError
    from pipeline.store import built_stores

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.toml") if p.stem != "default")
    try:
        roots = built_stores(settings, {name: load_config(name) for name in names})
    except MigaError:       # no warehouse yet: the default config's error says what to do
        raise missing from None
    found: dict[Path, list[str]] = {}
    for name, root in roots.items():
        found.setdefault(root, []).append(name)
    if not found:
        if any(settings.store_dir.glob("*/meta.json")):
            raise MigaError(
                f"no tensor store for this warehouse and the default config in {settings.home}, "
                f"nor for {', '.join(names)}: pass the --config that `miga store` was given, or "
                "run `miga store` to build the default config's store") from None
        raise missing
    newest = max(found, key=lambda root: (root / "meta.json").stat().st_mtime)
    if len(found[newest]) > 1:
        raise MigaError("no tensor store for the default config; this home's store was built "
                        f"with one of --config {' / '.join(found[newest])}: pass it") from None
    return found[newest][0]


def cmd_train(args) -> int:
    from pipeline.cell import run_stack
    from pipeline.errors import MigaError
    from pipeline.grid import grid_cells, plan_stacks
    from pipeline.store import current_store

    cfg = _train_config(args, args.config)
    settings = _settings(args)
    try:
        store = current_store(settings, cfg)
    except MigaError as missing:
        if args.config:
            raise
        name = _config_of_store(settings, missing)
        print(f"using --config {name} (the config this home's store was built with)")
        cfg = _train_config(args, name)
        store = current_store(settings, cfg)
    cells = grid_cells(cfg, [args.model], args.stockset, args.seed)
    failed = 0
    for stack in plan_stacks(cfg, cells, store):
        if len(stack) > 1:
            print(f"training {len(stack)} cells as one stack: " + ", ".join(c.name for c in stack))
        for cell, out in zip(stack, run_stack(settings, cfg, stack, store=store,
                                              register=args.register)):
            if isinstance(out, BaseException):
                failed += 1
                print(f"{cell.name}: failed: {type(out).__name__}: {out}", file=sys.stderr)
            else:
                print(out.summary())
    return 1 if failed else 0


def _terminal() -> bool:
    return sys.stdout.isatty()


def cmd_report(args) -> int:
    from pipeline.report import build_report

    settings = _settings(args)
    rep = build_report(settings, experiment=args.experiment)
    if not _terminal():             # piped or redirected: the markdown, as saved
        print(rep.markdown)
        return 0
    from rich.console import Console

    from flows.terminal import print_table

    console = Console()
    console.print("MIGA results", style="bold")
    console.print(rep.intro, markup=False, highlight=False)
    for t in rep.tables:
        console.print()
        # the model types as sections (a row above their models), not a column; a column per
        # stock set and metric, the stock set above the metric's name, a stock set's together
        metric_cols = [c for c in t.cells.columns if c not in ("Type", "Model")]
        header = {c: c.replace(" ", "\n", 1) for c in metric_cols}
        groups = {}
        for c in metric_cols:
            groups.setdefault(c.split(" ", 1)[0], []).append(header[c])
        print_table(t.cells.drop(columns="Type").rename(columns=header),
                    bold=t.best.drop(columns="Type"), groups=list(groups.values()),
                    sections=list(t.cells["Type"]), title=t.title, console=console)
    print(f"\nsaved: {settings.reports_dir / 'report.md'} and report.html"
          + (f" (also in MLflow run {rep.run_id})" if rep.run_id else ""))
    return 0


def cmd_demo(args) -> int:
    # The embedded default runs the Prefect flow in-process (flows/ wires pipeline/).
    from flows.miga import run_demo

    return run_demo(data=args.data, config=args.config, home=args.home, epochs=args.epochs)


def cmd_paper(args) -> int:
    # The paper's tables and figures: the `miga-paper` flow in-process (flows/paper.py).
    from flows.paper import run_paper

    return run_paper(data=args.data, scale=args.scale, config=args.config, home=args.home,
                     epochs=args.epochs, device=args.device)


def cmd_stack(args) -> int:
    from flows import stack

    s = _settings(args)
    if args.action == "start":
        stack.start(s, workers=args.workers)
    elif args.action == "stop":
        stack.stop(s)
    else:
        stack.status(s)
    return 0


HOME_HELP = "home folder for data, runs and reports (default: $MIGA_HOME, else ./.miga)"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="miga", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", help=HOME_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser,
                           title="commands")

    def add(name, fn, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        # --home after the command too; SUPPRESS keeps the value given before it otherwise
        sp.add_argument("--home", default=argparse.SUPPRESS, help=HOME_HELP)
        return sp

    sp = add("synth", cmd_synth, "write a synthetic data folder to try miga on (same seed, same data)")
    sp.add_argument("--out", required=True, help="folder to write daily/membership/index parquet into")
    sp.add_argument("--stocks", type=POSITIVE, default=300, help="number of stocks (default 300)")
    sp.add_argument("--days", type=POSITIVE, default=750, help="number of trading days (default 750)")
    sp.add_argument("--seed", type=NON_NEGATIVE, default=0)
    sp.add_argument("--features", type=NON_NEGATIVE, default=0,
                    help="also write features.parquet with this many columns (0 = none; the paper has 626)")
    sp.add_argument("--panel-files", choices=["single", "day", "month", "year"], default="single",
                    help="the feature panel as one features.parquet (single, the default) or as a "
                    "features/ folder of one file per day, month or year (year: hive folders "
                    "features/year=2019/part-0.parquet)")
    sp.add_argument("--price-files", choices=["single", "day", "month", "year"], default="single",
                    help="the prices as one daily.parquet (single, the default) or as a daily/ "
                    "folder of one file per day, month or year, as a vendor delivers them")
    sp.add_argument("--start", default="2016-01-04", help="first trading day")

    sp = add("ingest", cmd_ingest, "check a data folder and load it into the home folder "
             "(all or nothing; new days are added)")
    sp.add_argument("--data", required=True, help="folder with daily.parquet (or a daily/ folder "
                    "of parquet files), membership.parquet, index.parquet [, features.parquet or "
                    "a features/ folder]; of a folder only new and changed files are read")

    add("validate", cmd_validate, "check the loaded data again (reports in the home folder's reports/)")

    for name, fn, help_ in (
        ("features", cmd_features, "compute the features and labels (`miga store` does it too)"),
        ("store", cmd_store, "build the training arrays from the loaded data (a no-op when nothing changed)"),
    ):
        sp = add(name, fn, help_)
        sp.add_argument("--config", help="config file or name in configs/ (default: configs/default.toml)")
        sp.add_argument("--force", action="store_true", help="rebuild even if inputs are unchanged")

    sp = add("train", cmd_train, "train, test and backtest one model on stock sets x seeds "
             "(an MLflow run each)")
    sp.add_argument("--model", required=True, choices=list(MODELS), metavar="MODEL",
                    help="the model to train: " + ", ".join(MODELS))
    sp.add_argument("--stockset", nargs="+", default=["csi300"],
                    help="one or more of csi300, csi500, csi1000, all (default csi300)")
    sp.add_argument("--seed", type=NON_NEGATIVE, nargs="+", default=[0], help="one or more seeds (default 0)")
    sp.add_argument("--stack-size", type=POSITIVE,
                    help="override engine.stack_size: cells trained together in one step (1 = one at a time)")
    sp.add_argument("--epochs", type=POSITIVE, help="override train.max_epochs (every model's recipe)")
    sp.add_argument("--batch-days", type=POSITIVE, help="override train.batch_days")
    sp.add_argument("--device", type=DEVICE, help="cpu, cuda or auto (default from config)")
    sp.add_argument("--config", help="config file or name in configs/ (default: configs/default.toml, "
                    "else the one this home's store was built with)")
    sp.add_argument("--register", action="store_true",
                    help="also register the trained models in the MLflow model registry "
                    "(the flow always does; champions are chosen among registered versions)")

    sp = add("report", cmd_report, "print the results tables (the paper's Table 1 and Table 2) "
             "over every run, and save them")
    sp.add_argument("--experiment", default="miga")

    sp = add("demo", cmd_demo, "run everything, from synthetic data (or --data) to results and "
             "next-day predictions")
    sp.add_argument("--data", help="a data folder (default: synthesise one in the home folder)")
    sp.add_argument("--config", default=DEMO_CONFIG,
                    help=f"config file or name in configs/ (default: {DEMO_CONFIG})")
    sp.add_argument("--epochs", type=POSITIVE, help="override train.max_epochs")

    sp = add("paper", cmd_paper, "reproduce the paper: Tables 1-3 and Figures 3-6 from real runs "
             "(cells already run are reused), as an HTML report and an MLflow run")
    sp.add_argument("--data", help="a data folder (default: synthesise one in the home folder)")
    sp.add_argument("--scale", choices=list(PAPER_SCALES), default="smoke",
                    help="smoke: one stock set, one seed, 2 epochs, a year of training days "
                    "(proves the path; minutes on a CPU); full: the paper's protocol (3 seeds, "
                    "60 epochs at most, csi300/500/1000; for GPU workers). [paper.<scale>] in "
                    "the config (default smoke)")
    sp.add_argument("--config", help="config file or name in configs/ (default: configs/default.toml)")
    sp.add_argument("--epochs", type=POSITIVE, help="override the scale's epoch limit")
    sp.add_argument("--device", type=DEVICE, help="cpu, cuda or auto (default from config)")

    sp = add("stack", cmd_stack, "start, stop or check the local servers: Prefect (scheduled "
             "runs) and the MLflow UI")
    sp.add_argument("action", choices=["start", "stop", "status"])
    sp.add_argument("--workers", type=POSITIVE, default=1, help="process workers to start on the pool")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except (KeyboardInterrupt, Exception) as e:  # user-facing errors: one line, no traceback
        from pipeline.errors import MigaError, interrupted

        if interrupted(e):
            return _interrupted(args)
        if isinstance(e, MigaError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


def _interrupted(args) -> int:
    """Ctrl-C: one line, exit 130. Each step is atomic or resumable, so nothing is lost."""
    print(f"interrupted: `miga {args.command}` stopped; what it finished is kept and its "
          "unfinished step left nothing behind (run it again to go on)", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
