"""`miga paper`'s plan: which cells each study needs at a scale, the config each trains under,
and which of them one run serves (fast: no servers; the end-to-end run is tests/flows/test_paper.py)."""
from __future__ import annotations

from datetime import date

import pytest

from pipeline.config import load_config
from pipeline.paper.cells import Found, cell_key, jobs
from pipeline.paper.plan import ATTENTION_OFF, cell_config, plan, scale_config
from tests.synthetic_store import make_store


def test_the_smoke_scale_shortens_the_segments_and_the_epochs():
    base = load_config()
    cfg = scale_config(base, "smoke")
    assert cfg.segments.train == (date(2017, 1, 1), date(2017, 12, 31))    # its last 365 days
    assert cfg.segments.valid == (date(2018, 1, 1), date(2018, 7, 1))      # first 182
    assert cfg.segments.test == (date(2019, 1, 1), date(2019, 7, 1))
    assert cfg.train.max_epochs == 2 and cfg.train_for("master-ref").max_epochs == 2
    full = scale_config(base, "full")
    assert full.segments.train == base.segments.train and full.train.max_epochs == 60
    # what a cell learns changes with the scale; [paper] itself is not part of a cell
    assert cfg.cell_fingerprint() != base.cell_fingerprint()
    other = load_config(overrides={"paper": {"curve_epochs": 3}})
    assert other.cell_fingerprint() == base.cell_fingerprint()


def test_studies_share_the_cells_they_have_in_common(tmp_path):
    cfg = scale_config(load_config(), "full")
    cells = plan(cfg, "full")
    by = {}
    for pc in cells:
        by.setdefault(pc.study, []).append(pc)
    assert len(by["grid"]) == 11 * 3 * 3                 # models x stock sets x seeds
    assert len(by["attention"]) == 3 * 3 * 3
    assert {pc.overrides for pc in by["attention"]} == {(("group_attention", False),)}
    assert len(by["experts"]) == 5 * 3                    # settings x stock sets, seed 0
    own = [pc for pc in by["experts"] if pc.variant == "7x9k8"]
    assert all(pc.overrides == () for pc in own)          # the model's own setting: no override
    store = make_store(tmp_path / "s")
    grid_conv = next(pc for pc in by["grid"] if pc.cell.model == "miga-conv" and pc.cell.seed == 0
                     and pc.cell.stockset == "csi300")
    own300 = next(pc for pc in own if pc.cell.stockset == "csi300")
    assert cell_key(own300, cfg, store) == cell_key(grid_conv, cfg, store)
    off = next(pc for pc in by["attention"] if pc.cell == grid_conv.cell)
    assert cell_key(off, cfg, store) != cell_key(grid_conv, cfg, store)
    assert cell_config(cfg, off).models["miga-conv"]["group_attention"] is False
    wide = next(pc for pc in by["experts"] if pc.variant == "9x11k10")
    assert dict(wide.overrides) == {"groups": 9, "experts": 11, "top_k": 10}
    assert ATTENTION_OFF == off.variant


def test_jobs_train_only_the_cells_without_a_run(tmp_path):
    cfg = scale_config(load_config(overrides={
        "data": {"stocksets": ["small", "large"]},
        "paper": {"models": ["miga-conv", "tcn"], "ablation": ["miga-conv"],
                  "smoke": {"stocksets": ["small", "large"], "sweep": ["2x3k2", "7x9k8"]}}}), "smoke")
    store = make_store(tmp_path / "s")
    cells = plan(cfg, "smoke")
    todo = jobs(cfg, cells, {}, store)
    keys = {cell_key(pc, cfg, store) for pc in cells}
    assert sum(len(j.cells) for j in todo) == len(keys) == 2 * 2 + 2 + 2   # 7x9k8 is the grid's
    done = next(pc for pc in cells if pc.study == "grid" and pc.cell.model == "tcn")
    found = {cell_key(done, cfg, store): Found(done, "r1", "1", {})}
    left = jobs(cfg, cells, found, store)
    assert sum(len(j.cells) for j in left) == len(keys) - 1
    assert done.cell not in [c for j in left if j.study == "grid" and j.cells[0].model == "tcn" for c in j.cells]
    for j in left:                                    # a job is one model under one config
        assert len({c.model for c in j.cells}) == 1
        assert type(j).from_dict(j.as_dict()) == j


@pytest.mark.parametrize("text,words", [
    ('[paper.full]\nsweep = ["7x9k0"]\n', "1 <= top_k"),
    ('[paper]\npairs = ["miga-conv"]\n', "paper.pairs must be"),
    ('[paper]\nablation = ["tcn"]\n', "paper.ablation must be"),
    ('[paper.smoke]\nmax_epochs = 0\n', "paper.smoke.max_epochs must be"),
    ('[paper.smoke]\nepochs = 2\n', "unknown key paper.smoke.epochs"),
])
def test_a_bad_paper_setting_is_refused_naming_it(tmp_path, text, words):
    from pipeline.errors import ConfigError

    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        load_config(p)
