"""What `miga` prints for a user: the help, --home on either side of the command, `miga train`
after `miga demo`'s store (no --config), `--register`, and aligned tables that fit the terminal."""
from __future__ import annotations

import contextlib
import re
from types import SimpleNamespace

import pandas as pd
import pytest

from flows.cli import build_parser, main
from flows.terminal import print_table

COMMANDS = ("synth", "ingest", "validate", "features", "store", "train", "report", "demo", "stack")


def test_help_describes_the_product_names_every_command_and_shows_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "stock-return prediction" in out and "home folder" in out
    for name in COMMANDS:
        assert re.search(rf"^    {name} +\S", out, re.M), name          # each with its one line
    assert "examples:" in out and re.search(r"^  miga train --model \S+", out, re.M)
    assert "miga demo" in out.split("examples:")[1]


@pytest.mark.parametrize("argv, home", [
    (["--home", "H", "train", "--model", "tcn"], "H"),
    (["train", "--home", "H", "--model", "tcn"], "H"),
    (["train", "--model", "tcn", "--home", "H"], "H"),
    (["--home", "A", "train", "--model", "tcn", "--home", "B"], "B"),   # the later one wins
    (["train", "--model", "tcn"], None),
    (["report", "--home", "H"], "H"),
    (["stack", "status", "--home", "H"], "H"),
])
def test_home_before_or_after_the_command(argv, home):
    assert build_parser().parse_args(argv).home == home


def _registered(home) -> list[str]:
    from mlflow import MlflowClient

    from pipeline.settings import Settings

    return sorted(m.name for m in MlflowClient(Settings.from_env(str(home)).mlflow_uri)
                  .search_registered_models())


def test_train_after_a_quick_store_without_config_and_register_only_when_asked(
        tiny_data, tmp_path, capsys, monkeypatch):
    """`miga store --config quick` (what `miga demo` builds), then `miga train` with no --config:
    the home's store tells the config, said in one line. --home before and after the command.
    A manual `miga train` registers its model only with --register."""
    home = str(tmp_path / "home")
    assert main(["ingest", "--data", str(tiny_data), "--home", home]) == 0
    assert main(["--home", home, "store", "--config", "quick"]) == 0
    capsys.readouterr()

    assert main(["--home", home, "train", "--model", "linear"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "using --config quick (the config this home's store was built with)"
    assert out.count("MLflow run") == 1
    assert _registered(home) == []

    assert main(["train", "--model", "linear", "--home", home, "--register"]) == 0
    assert "using --config quick" in capsys.readouterr().out
    assert _registered(home) == ["linear"]

    # a config named explicitly is not second-guessed: its store is missing, so it says so
    assert main(["--home", home, "train", "--model", "linear", "--config", "paper"]) == 2
    err = capsys.readouterr().err
    assert "no tensor store" in err and "run `miga store` first" in err

    # a store built from a file outside configs/: one line naming what to pass
    import pipeline.config

    monkeypatch.setattr(pipeline.config, "CONFIG_DIR", tmp_path / "no-configs")
    assert main(["--home", home, "train", "--model", "linear"]) == 2
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pass the --config that `miga store` was given" in lines[0]
    assert "using --config" not in captured.out


def test_train_without_config_in_an_empty_home_says_run_store(tmp_path, tiny_data, capsys):
    home = str(tmp_path / "home")
    assert main(["--home", home, "ingest", "--data", str(tiny_data)]) == 0
    capsys.readouterr()
    assert main(["--home", home, "train", "--model", "linear"]) == 2
    err = capsys.readouterr().err
    assert "run `miga store` first" in err and "Traceback" not in err


def test_print_table_fits_the_width_and_repeats_the_key_columns(capsys):
    from rich.console import Console

    frame = pd.DataFrame([[f"model{i}"] + [f"{0.1 * j:.4f}" for j in range(12)] for i in range(3)],
                         columns=["model"] + [f"metric{j}" for j in range(12)])
    bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    bold.iat[1, 3] = True
    print_table(frame, bold=bold, title="wide", console=Console(width=60))
    out = capsys.readouterr().out
    assert max(len(ln) for ln in out.splitlines()) <= 60
    assert out.count("model1") >= 2 and "wide (continued)" in out      # split, the key repeated
    for j in range(12):
        assert f"metric{j}" in out
    assert "**" not in out and "|" not in out


def test_demo_prints_an_aligned_table_and_the_champion_of_a_cached_rerun(
        tmp_path, capsys, monkeypatch):
    """run_demo's printout, the flow replaced by its output on a cached rerun: no champion
    decision (the champion is already this run's best), so the registry says which it is."""
    import flows.miga
    import flows.temporary_api
    from pipeline import tracking

    results = [{"cell": {"model": m, "stockset": s, "seed": 0}, "run_id": f"{m[:3]}{s}0123456789",
                "experiment_id": "1", "metrics": {"test_ic": 0.05, "test_icir": 0.5,
                                                  "long_short_ir": -1.25}}
               for m in ("miga-conv", "tcn") for s in ("csi300", "csi1000")]
    out = {"table": "| markdown |", "results": results, "predictions": {},
           "champion": [{"model": "miga-conv", "decision": "kept", "reason": "window IC 0.01 <= champion 0.02"}]}
    monkeypatch.setattr(flows.miga, "miga", lambda **kw: out)
    monkeypatch.setattr(flows.temporary_api, "temporary_api", lambda *a, **k: contextlib.nullcontext())
    champ = SimpleNamespace(version="3", run_id="tcncsi3000123456789", tags={"champion.reason": "no champion yet"})
    monkeypatch.setattr(tracking, "champion_version", lambda settings, model: champ)
    monkeypatch.setenv("COLUMNS", "100")

    assert flows.miga.run_demo(home=str(tmp_path / "home")) == 0
    text = capsys.readouterr().out
    assert "| markdown |" not in text
    assert re.search(r"^ *tcn +csi300 +0 +0\.0500 +0\.5000 ", text, re.M)
    assert re.search(r"^ *miga-conv +csi1000 +0 +0\.0500 ", text, re.M)
    assert "-1.2500" in text and "tcncsi30" in text          # the run ids, shortened
    table = text.split("champion")[0]
    assert max(len(ln) for ln in table.splitlines()) <= 100
    assert "champion miga-conv: kept (window IC 0.01 <= champion 0.02)" in text
    assert ("champion tcn: unchanged (version 3, run tcncsi30, this run's best, is already the "
            "champion; promoted: no champion yet)") in text
