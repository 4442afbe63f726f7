from datetime import date

import pytest

from pipeline.config import load_config
from pipeline.settings import Settings


def test_default_config_uses_shared_segments():
    cfg = load_config()
    assert cfg.segments.train == (date(2010, 1, 4), date(2017, 12, 31))
    assert cfg.segments.test == (date(2019, 1, 1), date(2020, 12, 31))
    assert cfg.train.alpha == 2e-3 and cfg.train.lr == 5e-4 and cfg.data.window == 5


def test_quick_preset_merges_over_default():
    cfg = load_config("quick")
    assert cfg.segments.preset == "synthetic"
    assert cfg.train.max_epochs == 8
    assert cfg.train.alpha == 2e-3  # inherited from default
    assert cfg.fingerprint() != load_config().fingerprint()


def test_paper_preset():
    cfg = load_config("paper")
    assert cfg.segments.valid == (date(2022, 7, 25), date(2023, 7, 25))


def test_unknown_key_is_an_error(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[train]\nlearning_rate = 1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(p)


def test_unordered_segments_rejected(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[segments]\npreset = ""\ntrain = ["2019-01-01", "2019-12-31"]\n'
                 'valid = ["2018-01-01", "2018-12-31"]\ntest = ["2020-01-01", "2020-12-31"]\n')
    with pytest.raises(ValueError, match="ordered"):
        load_config(p)


def test_flat_params_are_scalars():
    flat = load_config().flat()
    assert flat["train.lr"] == 5e-4
    assert flat["segments.train"] == "2010-01-04..2017-12-31"
    assert all(not isinstance(v, (dict, list)) for v in flat.values())


def test_settings_do_nothing_until_ensure(tmp_path):
    s = Settings.from_env(tmp_path / "h")
    assert not s.home.exists()
    s.ensure()
    assert s.home.is_dir() and s.warehouse.parent == s.home
    assert s.mlflow_uri.startswith("sqlite:///") and str(s.home) in s.mlflow_uri


def test_the_documented_default_file_sets_every_field_and_nothing_else():
    """configs/default.toml is the one home of the defaults: the dataclasses declare no values,
    so the file must set every field, and `load_config` refuses a key the code does not know."""
    import dataclasses
    import tomllib

    from pipeline.config import DEFAULT_CONFIG, Config, Segments

    raw = tomllib.loads(DEFAULT_CONFIG.read_text())
    cfg = load_config()
    for f in dataclasses.fields(Config):
        if f.name in ("segments", "models", "source", "model_train", "model_stocksets"):
            continue
        cls = type(getattr(cfg, f.name))
        assert set(raw[f.name]) == {g.name for g in dataclasses.fields(cls)}, f.name
        for g in dataclasses.fields(cls):
            assert g.default is dataclasses.MISSING and g.default_factory is dataclasses.MISSING, \
                f"{cls.__name__}.{g.name} has a default in code: keep it in configs/default.toml"
    embargo = next(g for g in dataclasses.fields(Segments) if g.name == "embargo_days")
    assert embargo.default is dataclasses.MISSING
    assert raw["segments"]["embargo_days"] == cfg.segments.embargo_days
    assert raw["segments"]["preset"] in raw["presets"]


def test_a_config_missing_a_key_is_refused():
    import tomllib

    from pipeline.config import DEFAULT_CONFIG, config_from_dict

    raw = tomllib.loads(DEFAULT_CONFIG.read_text())
    del raw["train"]["lr"]
    with pytest.raises(ValueError, match="lr"):
        config_from_dict(raw)


def test_a_model_recipe_overrides_train_for_that_model_only():
    cfg = load_config()
    ref, tcn, master = cfg.train_for("master-ref"), cfg.train_for("tcn"), cfg.train_for("master")
    assert tcn == cfg.train and master == cfg.train        # the paper's recipe: [train] as is
    assert (tcn.loss, tcn.lr, tcn.label_transform, tcn.clip_mode) == ("ic", 5e-4, "none", "norm")
    assert ref.loss == "mse" and ref.lr == 8e-6 and ref.lr != tcn.lr
    assert (ref.label_transform, ref.drop_extreme, ref.clip_mode, ref.grad_clip) == \
        ("cszscore", 0.025, "value", 3.0)
    assert ref.max_epochs == 40 and ref.patience == cfg.train.patience   # the rest from [train]
    assert "train" not in cfg.model_overrides("master-ref")             # not a hyper-parameter
    # a command-line change of [train] (miga train --epochs 2) wins over every model's recipe
    quick = cfg.with_train(max_epochs=2)
    assert quick.train_for("master-ref").max_epochs == 2 and quick.train_for("master-ref").lr == 8e-6


def test_per_stockset_hyper_parameters():
    cfg = load_config()
    assert cfg.model_overrides("master-ref", "csi300") == {"beta": 10.0}
    assert cfg.model_overrides("master-ref", "csi500") == {"beta": 5.0}
    assert cfg.model_overrides("master-ref") == {"beta": 5.0}
    assert cfg.model_overrides("master", "csi300") == {}
    # the cell's model is built with its stock set's beta
    from pipeline.models import model_config
    assert model_config("master-ref", **cfg.model_overrides("master-ref", "csi300")).beta == 10.0
    assert model_config("master-ref", **cfg.model_overrides("master-ref", "csi1000")).beta == 5.0


@pytest.mark.parametrize("table, key", [("[models.tcn.train]\nlearning_rate = 1e-3\n", "learning_rate"),
                                        ("[models.tcn.train]\nlr = \"fast\"\n", "lr"),
                                        ("[models.tcn.train]\nclip_mode = \"both\"\n", "clip_mode"),
                                        ("[models.tcn.train]\nlabel_transform = \"z\"\n", "label_transform"),
                                        ("[train]\ndrop_extreme = 0.5\n", "drop_extreme"),
                                        ("[train]\nmax_epochs = 2.5\n", "max_epochs")])
def test_a_bad_model_recipe_is_refused_naming_the_key(tmp_path, table, key):
    p = tmp_path / "bad.toml"
    p.write_text(table)
    with pytest.raises(ValueError, match=key):
        load_config(p)


def test_a_model_recipe_reaches_the_cells_of_its_stack(tmp_path, monkeypatch):
    """pipeline.cell._train hands fit_stack each cell's recipe and its stock set's model."""
    import numpy as np

    import pipeline.train
    from pipeline.cell import _Slot, _train
    from pipeline.config import Segments
    from pipeline.grid import Cell
    from pipeline.store.arrays import TensorStore

    days, n = 40, 6
    dates = np.arange("2016-01-04", days, dtype="datetime64[D]")
    rng = np.random.default_rng(0)
    members = {"csi300": np.ones((days, n), bool), "all": np.ones((days, n), bool)}
    store = TensorStore.from_arrays(
        tmp_path / "store", dates, np.array([f"S{i}" for i in range(n)]), ["f0", "f1"],
        rng.normal(size=(days, n, 2)).astype(np.float32), np.ones((days, n), bool),
        rng.normal(size=(days, n)).astype(np.float32), members,
        rng.normal(size=(days, 3)).astype(np.float32), ["m0", "m1", "m2"],
        Segments(train=(date(2016, 1, 4), date(2016, 1, 25)), valid=(date(2016, 1, 28), date(2016, 2, 1)),
                 test=(date(2016, 2, 4), date(2016, 2, 12)), embargo_days=2), window=5)
    seen = {}

    def fake_fit_stack(models, cells, store, **kw):
        seen["cfg"], seen["beta"] = cells[0].cfg, models[0].cfg.beta
        return [pipeline.train.FitResult() for _ in cells]

    monkeypatch.setattr(pipeline.train, "fit_stack", fake_fit_stack)
    cfg = load_config("quick", {"models": {"master-ref": {"d_model": 8, "t_nhead": 2, "s_nhead": 2}}})
    slot = _Slot(Cell("master-ref", "csi300", 0), tmp_path / "ck", "run", "exp")
    _train(None, cfg, [slot], store, "cpu", progress=False)
    assert seen["cfg"] == cfg.train_for("master-ref") and seen["cfg"].loss == "mse"
    assert seen["beta"] == 10.0
