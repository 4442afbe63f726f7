"""Command-line mistakes: one line on stderr, exit 2, no traceback, nothing written.

Config-file mistakes are tested where the config is loaded (tests/code/test_config.py); here
the command line itself: arguments, the home folder, the device, Ctrl-C.
"""
from __future__ import annotations

import pytest

from flows.cli import main


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv, says", [
    (["train", "--model", "tcn", "--epochs", "0"], "--epochs: must be an integer >= 1, got 0"),
    (["train", "--model", "tcn", "--epochs", "-3"], "--epochs: must be an integer >= 1, got -3"),
    (["train", "--model", "tcn", "--epochs", "many"], "--epochs: must be an integer >= 1, got 'many'"),
    (["train", "--model", "tcn", "--batch-days", "-1"], "--batch-days: must be an integer >= 1"),
    (["train", "--model", "tcn", "--seed", "-1"], "--seed: must be an integer >= 0, got -1"),
    (["train", "--model", "tcn", "--stack-size", "0"], "--stack-size: must be an integer >= 1"),
    (["train", "--model", "nosuch"], "argument --model: invalid choice: 'nosuch'"),
    (["synth", "--out", "x", "--stocks", "0"], "--stocks: must be an integer >= 1, got 0"),
    (["synth", "--out", "x", "--days", "-5"], "--days: must be an integer >= 1, got -5"),
    (["synth", "--out", "x", "--features", "-1"], "--features: must be an integer >= 0"),
    (["demo", "--epochs", "0"], "--epochs: must be an integer >= 1"),
    (["stack", "start", "--workers", "0"], "--workers: must be an integer >= 1"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, says, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["--home", str(tmp_path / "home"), *argv])
    assert e.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert says in line and f"--help" in line
    assert not (tmp_path / "home").exists() and not (tmp_path / "x").exists()


def test_home_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("not a folder")
    assert main(["--home", str(f), "validate"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"home {f} is a file" in line
    assert f.read_text() == "not a folder"


def test_home_that_cannot_be_written(tmp_path, capsys):
    # /proc refuses new folders even to root (a chmod 000 folder does not stop root).
    assert main(["--home", "/proc/miga-home", "validate"]) == 2
    assert "cannot write the home folder /proc/miga-home" in _one_line(capsys.readouterr().err)


def test_lock_wait_from_the_environment_is_checked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MIGA_LOCK_WAIT", "soon")
    assert main(["--home", str(tmp_path / "home"), "validate"]) == 2
    assert "MIGA_LOCK_WAIT must be a number of seconds" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("device, says", [
    ("tpu", "unknown device 'tpu'"),
    ("banana", "unknown device 'banana'"),
    ("cuda", "CUDA is not available"),
])
def test_bad_device_is_refused_before_any_work(device, says, tmp_path, capsys):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    home = tmp_path / "home"
    try:
        code = main(["--home", str(home), "train", "--model", "tcn", "--device", device])
    except SystemExit as e:      # a malformed name is refused by the argument parser
        code = e.code
    assert code == 2
    assert says in _one_line(capsys.readouterr().err)
    assert not (home / "mlflow.db").exists()          # no MLflow run, not even a store


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    import flows.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_validate", interrupted)
    assert main(["--home", str(tmp_path / "home"), "validate"]) == 130
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("interrupted: `miga validate` stopped")
