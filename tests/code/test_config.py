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
        if f.name in ("segments", "models", "source"):
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
