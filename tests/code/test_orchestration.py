"""Orchestration logic that needs no Prefect: the grid, cache signatures, champion decisions."""
import math

import pytest

from pipeline.champion import decide
from pipeline.config import load_config
from flows.cache import folder_signature, stable_key
from pipeline.grid import Cell, grid_cells
from pipeline.report import results_table


def test_grid_is_the_product_in_stable_order():
    cells = grid_cells(load_config("quick"), ["a", "b"], ["csi300"], [0, 1])
    assert cells == [Cell("a", "csi300", 0), Cell("a", "csi300", 1), Cell("b", "csi300", 0), Cell("b", "csi300", 1)]
    cfg = load_config("quick")  # no arguments: the config's [run] models/seeds and [data] stock sets
    assert len(grid_cells(cfg)) == len(cfg.run.models) * len(cfg.data.stocksets) * len(cfg.run.seeds)


def test_folder_signature_changes_when_a_file_changes(tmp_path):
    (tmp_path / "daily.parquet").write_bytes(b"x")
    a = stable_key(folder_signature(tmp_path))
    assert stable_key(folder_signature(tmp_path)) == a
    (tmp_path / "daily.parquet").write_bytes(b"xy")
    assert stable_key(folder_signature(tmp_path)) != a


@pytest.mark.parametrize("challenger,champion,promote", [
    (0.05, None, True), (0.05, 0.04, True), (0.04, 0.05, False), (0.05, 0.05, False),
    (float("nan"), 0.01, False), (0.01, float("nan"), True),
])
def test_champion_decision(challenger, champion, promote):
    assert decide(challenger, champion)[0] is promote


def test_results_table_links_runs_and_shows_failures():
    rows = [{"cell": {"model": "tcn", "stockset": "csi300", "seed": 0}, "run_id": "abcdef123456",
             "experiment_id": "1", "metrics": {"test_ic": 0.05}},
            {"cell": {"model": "lstm", "stockset": "csi300", "seed": 0}, "error": "boom"}]
    md = results_table(rows, "http://127.0.0.1:5000")
    assert "[abcdef12](http://127.0.0.1:5000/#/experiments/1/runs/abcdef123456?workflowType=machine_learning)" in md
    assert "| lstm | csi300 | 0 | failed" in md and "0.0500" in md
