"""`miga` command line: each command parses its arguments and calls one function.

The library (`pipeline/`) does the work; `miga demo` runs the flow and `miga stack` the local
servers, both of flows/.

Heavy libraries (torch, GX, MLflow, Prefect) are imported inside the commands, so
`miga --help` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import DEMO_CONFIG
from pipeline.models import MODELS     # the registry by name (no torch import)
from pipeline.settings import Settings


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
                     n_features=args.features, start=args.start)
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


def cmd_train(args) -> int:
    from dataclasses import replace

    from pipeline.cell import run_stack
    from pipeline.config import load_config
    from pipeline.grid import grid_cells, plan_stacks
    from pipeline.store import current_store

    cfg = load_config(args.config)
    if args.epochs is not None:
        cfg = cfg.with_train(max_epochs=args.epochs)
    if args.batch_days is not None:
        cfg = cfg.with_train(batch_days=args.batch_days)
    if args.device:
        cfg = cfg.with_train(device=args.device)
    if args.stack_size is not None:
        cfg = replace(cfg, engine=replace(cfg.engine, stack_size=args.stack_size))
    from pipeline.train import resolve_device

    resolve_device(cfg.train_for(args.model).device)   # a missing GPU is refused before any work
    settings = _settings(args)
    store = current_store(settings, cfg)
    cells = grid_cells(cfg, [args.model], args.stockset, args.seed)
    failed = 0
    for stack in plan_stacks(cfg, cells, store):
        if len(stack) > 1:
            print(f"training {len(stack)} cells as one stack: " + ", ".join(c.name for c in stack))
        for cell, out in zip(stack, run_stack(settings, cfg, stack, store=store)):
            if isinstance(out, BaseException):
                failed += 1
                print(f"{cell.name}: failed: {type(out).__name__}: {out}", file=sys.stderr)
            else:
                print(out.summary())
    return 1 if failed else 0


def cmd_report(args) -> int:
    from pipeline.report import build_report

    print(build_report(_settings(args), experiment=args.experiment).markdown)
    return 0


def cmd_demo(args) -> int:
    # The embedded default runs the Prefect flow in-process (flows/ wires pipeline/).
    from flows.miga import run_demo

    return run_demo(data=args.data, config=args.config, home=args.home, epochs=args.epochs)


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


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="miga", description=__doc__.splitlines()[0])
    p.add_argument("--home", help="home folder (default: $MIGA_HOME or ./.miga)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(name, fn, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("synth", cmd_synth, "write a deterministic synthetic data folder")
    sp.add_argument("--out", required=True, help="folder to write daily/membership/index parquet into")
    sp.add_argument("--stocks", type=POSITIVE, default=300, help="number of stocks (default 300)")
    sp.add_argument("--days", type=POSITIVE, default=750, help="number of trading days (default 750)")
    sp.add_argument("--seed", type=NON_NEGATIVE, default=0)
    sp.add_argument("--features", type=NON_NEGATIVE, default=0,
                    help="also write features.parquet with this many columns (0 = none; the paper has 626)")
    sp.add_argument("--start", default="2016-01-04", help="first trading day")

    sp = add("ingest", cmd_ingest, "validate a data folder and load it into the DuckDB warehouse (atomic, incremental)")
    sp.add_argument("--data", required=True, help="folder with daily.parquet, membership.parquet, index.parquet [, features.parquet]")

    add("validate", cmd_validate, "run the Great Expectations suites over every warehouse table")

    for name, fn, help_ in (
        ("features", cmd_features, "build features (Alpha158 or the feature panel), market_features and labels"),
        ("store", cmd_store, "build the memory-mapped tensor store used for training"),
    ):
        sp = add(name, fn, help_)
        sp.add_argument("--config", help="config file or name in configs/ (default: configs/default.toml)")
        sp.add_argument("--force", action="store_true", help="rebuild even if inputs are unchanged")

    sp = add("train", cmd_train, "train and evaluate one model on stock sets x seeds (one MLflow "
             "run per cell; the cells train together as stacks)")
    sp.add_argument("--model", required=True, choices=list(MODELS), metavar="MODEL",
                    help="a registered model: " + ", ".join(MODELS))
    sp.add_argument("--stockset", nargs="+", default=["csi300"],
                    help="one or more of csi300, csi500, csi1000, all (default csi300)")
    sp.add_argument("--seed", type=NON_NEGATIVE, nargs="+", default=[0], help="one or more seeds (default 0)")
    sp.add_argument("--stack-size", type=POSITIVE,
                    help="override engine.stack_size: cells trained together in one step (1 = one at a time)")
    sp.add_argument("--epochs", type=POSITIVE, help="override train.max_epochs (every model's recipe)")
    sp.add_argument("--batch-days", type=POSITIVE, help="override train.batch_days")
    sp.add_argument("--device", type=DEVICE, help="cpu, cuda or auto (default from config)")
    sp.add_argument("--config", help="config file or name in configs/")

    sp = add("report", cmd_report, "build the paper's Table 1 and Table 2 from the MLflow runs")
    sp.add_argument("--experiment", default="miga")

    sp = add("demo", cmd_demo, "run the whole `miga` flow in-process (synthetic data unless --data)")
    sp.add_argument("--data", help="a data folder (default: synthesise one in the home folder)")
    sp.add_argument("--config", default=DEMO_CONFIG,
                    help=f"config file or name in configs/ (default: {DEMO_CONFIG})")
    sp.add_argument("--epochs", type=POSITIVE, help="override train.max_epochs")

    sp = add("stack", cmd_stack, "start/stop the local Prefect server, worker and MLflow server")
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
