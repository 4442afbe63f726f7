from datetime import date

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
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
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(p)


def test_unordered_segments_rejected(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[segments]\npreset = ""\ntrain = ["2019-01-01", "2019-12-31"]\n'
                 'valid = ["2018-01-01", "2018-12-31"]\ntest = ["2020-01-01", "2020-12-31"]\n')
    with pytest.raises(ConfigError, match="ordered"):
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
    with pytest.raises(ConfigError, match="train.lr is not set"):
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
    with pytest.raises(ConfigError, match=key):
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


# --- a mistake in a config is one ConfigError at load: one line naming the file and the key ---

def _refused(tmp_path, text: str, *words: str) -> str:
    """The message of loading a file of `text`: a ConfigError, one line, that starts with the
    file's path and says each of `words`."""
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{p}: "), msg
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("name", ["default", "quick", "paper", "quick.toml", "configs/quick.toml"])
def test_the_shipped_configs_load_by_name_or_path(name, tmp_path, monkeypatch):
    from pipeline.config import CONFIG_DIR

    fp = load_config(name).fingerprint()
    stem = name.removeprefix("configs/").removesuffix(".toml")
    assert load_config(CONFIG_DIR / f"{stem}.toml").fingerprint() == fp      # an absolute path
    monkeypatch.chdir(tmp_path)                                               # from anywhere
    assert load_config(name).fingerprint() == fp


def test_values_at_the_edge_of_their_range_load(tmp_path):
    cfg = load_config(overrides={
        "segments": {"preset": "", "train": ["2016-01-04", "2016-06-30"],
                     "valid": ["2016-06-30", "2016-09-30"], "test": ["2016-09-30", "2016-12-30"],
                     "embargo_days": 0},
        "data": {"window": 1, "stocksets": ["all", "my_set2"]},
        "train": {"patience": 1, "lr": 1, "weight_decay": 0, "grad_clip": 0, "drop_extreme": 0.0,
                  "device": "cuda:1", "max_epochs": 1, "batch_days": 1},
        "backtest": {"top_frac": 0.5, "topk": 5, "n_drop": 5, "risk_degree": 1.0, "min_cost": 0.0},
        "engine": {"stack_size": 1, "parallel_stacks": 1},
        "run": {"models": ["tcn"], "seeds": [0, 2**32 - 1]}})
    assert cfg.train.device == "cuda:1" and cfg.run.seeds == (0, 2**32 - 1)
    p = tmp_path / "dates.toml"               # TOML dates work as well as "YYYY-MM-DD" strings
    p.write_text('[segments]\npreset = ""\ntrain = [2016-01-04, 2016-06-30]\n'
                 'valid = [2016-07-01, 2016-09-30]\ntest = [2016-10-03, 2016-12-30]\n')
    assert load_config(p).segments.train == (date(2016, 1, 4), date(2016, 6, 30))


@pytest.mark.parametrize("text, where", [("[train]\nlr = \n", "line 2, column 6: Invalid value"),
                                         ("[train]\nlr = 1\nlr = 2\n", "line 3, column 7"),
                                         ('[train]\nloss = "ic', "line 2, column 11"),
                                         ("[train\nlr = 1\n", "line 1, column 7")])
def test_a_file_that_is_not_toml_says_where(tmp_path, text, where):
    _refused(tmp_path, text, "not valid TOML at " + where)


@pytest.mark.parametrize("text, words", [
    ("[train]\nlearning_rate = 1\n", ["unknown key train.learning_rate", "the keys of [train] are alpha, "]),
    ("[segments]\nembargo = 2\n", ["segments.embargo (did you mean embargo_days?)"]),
    ("[backtest]\ntop_k = 10\n", ["backtest.top_k (did you mean topk?)"]),
    ("[trian]\nlr = 1e-3\n", ["unknown section [trian] (did you mean [train]?)"]),
    ("[foo]\nx = 1\n", ["unknown section [foo]; the sections are [segments], [presets], [data], "
                        "[train], [backtest], [run], [engine], [models]"]),
    ("lr = 1e-3\n", ["key lr is outside any section (it belongs under [train])"]),
    ("train = 5\n", ["train must be a table [train], got 5"]),
    ("[presets.mine]\ntrain = [\"2019-01-01\", \"2019-12-31\"]\nvalidation = []\n",
     ["unknown key presets.mine.validation"]),
    ("[models.tcnn]\nhidden = 8\n", ["unknown model [models.tcnn] (did you mean [models.tcn]?)",
                                      "the registered models are miga-conv, "]),
    ("[models.tcn.trian]\nlr = 1e-3\n", ["unknown table [models.tcn.trian] (did you mean [models.tcn.train]?)"]),
    ("[models.tcn.train]\nlearning_rate = 1e-3\n", ["unknown key models.tcn.train.learning_rate"]),
    ("[models.tcn]\ntrain = 5\n", ["models.tcn.train must be a table"]),
    ("[models.tcn.stockset]\ncsi300 = 5\n", ["models.tcn.stockset.csi300 must be a table"]),
    ("[models.tcn.stockset.csi300.x]\nhidden = 8\n", ["models.tcn.stockset.csi300.x must be a hyper-parameter"]),
])
def test_an_unknown_name_is_refused_naming_the_known_ones(tmp_path, text, words):
    _refused(tmp_path, text, *words)


def test_the_names_config_checks_are_those_of_the_registries():
    """config.py is layer 0: it keeps the names of registries that live above it, checked here."""
    from pipeline.config import LOSS_NAMES, MODEL_NAMES, UNTRADABLE
    from pipeline.evaluation.portfolio import UNTRADABLE as PORTFOLIO_UNTRADABLE
    from pipeline.losses import LOSSES
    from pipeline.models import MODELS

    assert MODEL_NAMES == tuple(MODELS)
    assert set(LOSS_NAMES) == set(LOSSES) and UNTRADABLE == PORTFOLIO_UNTRADABLE


def test_hyper_parameter_names_are_checked_when_the_model_is_built(tmp_path):
    """The fields of a model's config dataclass sit beside its torch code: `load_config` checks
    the model and the shape of [models.<name>], `model_config` the hyper-parameter names."""
    from pipeline.models import ModelConfigError, model_config

    p = tmp_path / "hp.toml"
    p.write_text("[models.tcn]\nhiden = 8\n")
    cfg = load_config(p)
    with pytest.raises(ModelConfigError, match="hiden"):
        model_config("tcn", **cfg.model_overrides("tcn"))


@pytest.mark.parametrize("text, key, allowed", [
    ('[train]\nlr = "fast"\n', "train.lr", "a number > 0"),
    ("[train]\nmax_epochs = 1.5\n", "train.max_epochs", "an integer >= 1"),
    ("[train]\nbf16 = 1\n", "train.bf16", "true or false"),
    ("[train]\nloss = 1\n", "train.loss", "one of 'ic', 'mse'"),
    ("[engine]\ncuda_graph = \"yes\"\n", "engine.cuda_graph", "true or false"),
    ("[backtest]\ntopk = true\n", "backtest.topk", "an integer >= 1"),
    ('[data]\nstocksets = "csi300"\n', "data.stocksets", "a non-empty list of distinct stock set names"),
    ('[data]\nstocksets = ["csi300", 500]\n', "data.stocksets", "a non-empty list of distinct stock set names"),
    ("[run]\nseeds = [1.5]\n", "run.seeds", "a non-empty list of distinct integers in [0, 4294967295]"),
    ("[run]\nseeds = 0\n", "run.seeds", "a non-empty list of distinct integers"),
    ('[run]\nmodels = "tcn"\n', "run.models", "a non-empty list of distinct registered models (miga-conv, "),
    ('[models.tcn.train]\nlr = "fast"\n', "models.tcn.train.lr", "a number > 0"),
    ("[segments]\nembargo_days = 2.0\n", "segments.embargo_days", "an integer >= 0"),
])
def test_a_value_of_the_wrong_type_is_refused(tmp_path, text, key, allowed):
    _refused(tmp_path, text, f"{key} must be {allowed}")


@pytest.mark.parametrize("section, key, value, allowed", [
    ("data", "window", 0, "an integer >= 1"),
    ("data", "clip", 0.0, "a number > 0"),
    ("data", "stocksets", ["csi 300"], "a non-empty list of distinct stock set names"),
    ("data", "stocksets", [], "a non-empty list of distinct stock set names"),
    ("data", "stocksets", ["csi300", "csi300"], "a non-empty list of distinct stock set names"),
    ("train", "batch_days", 0, "an integer >= 1"),
    ("train", "max_epochs", 0, "an integer >= 1"),
    ("train", "patience", 0, "an integer >= 1"),
    ("train", "lr", 0.0, "a number > 0"),
    ("train", "alpha", -1.0, "a number >= 0"),
    ("train", "beta", 0.0, "a number > 0"),
    ("train", "weight_decay", -0.0001, "a number >= 0"),
    ("train", "grad_clip", -1.0, "a number >= 0"),
    ("train", "loss", "mae", "one of 'ic', 'mse'"),
    ("train", "device", "gpu", "one of 'auto', 'cpu', 'cuda', 'cuda:<index>'"),
    ("train", "clip_mode", "both", "one of 'norm', 'value'"),
    ("train", "label_transform", "z", "one of 'none', 'cszscore', 'csrank'"),
    ("train", "drop_extreme", 0.5, "a number in [0, 0.5)"),
    ("segments", "embargo_days", -1, "an integer >= 0"),
    ("backtest", "top_frac", 0.0, "a number in (0, 0.5]"),
    ("backtest", "top_frac", 0.6, "a number in (0, 0.5]"),
    ("backtest", "buy_cost", -0.001, "a number >= 0"),
    ("backtest", "sell_cost", -0.001, "a number >= 0"),
    ("backtest", "days_per_year", 0, "an integer > 0"),
    ("backtest", "topk", 0, "an integer >= 1"),
    ("backtest", "n_drop", 0, "an integer >= 1"),
    ("backtest", "n_drop", 51, "an integer in [1, topk = 50]"),
    ("backtest", "risk_degree", 1.5, "a number in (0, 1]"),
    ("backtest", "account", 0.0, "a number > 0"),
    ("backtest", "min_cost", -1.0, "a number >= 0"),
    ("backtest", "untradable", "skip", "one of 'cash', 'next'"),
    ("backtest", "champion_metric", "sharpe", "one of 'ic', 'topk_excess_net'"),
    ("engine", "stack_size", 0, "an integer >= 1"),
    ("engine", "parallel_stacks", 0, "an integer >= 1"),
    ("run", "seeds", [-1], "a non-empty list of distinct integers in [0, 4294967295]"),
    ("run", "seeds", [0, 0], "a non-empty list of distinct integers in [0, 4294967295]"),
    ("run", "models", ["tcnn"], "a non-empty list of distinct registered models (miga-conv, "),
    ("run", "models", [], "a non-empty list of distinct registered models (miga-conv, "),
])
def test_a_value_out_of_its_range_is_refused(tmp_path, section, key, value, allowed):
    import json

    _refused(tmp_path, f"[{section}]\n{key} = {json.dumps(value)}\n",
             f"{section}.{key} must be {allowed}", f", got {value!r}")


@pytest.mark.parametrize("text, words", [
    ('[segments]\ntrain = ["2019-13-01", "2019-12-31"]\n',
     'segments.train must be a pair of dates ["YYYY-MM-DD", "YYYY-MM-DD"] (first and last day), '
     "got ['2019-13-01', '2019-12-31']: '2019-13-01' is not a date"),
    ('[segments]\ntrain = "2019-01-01"\n', "segments.train must be a pair of dates"),
    ('[segments]\ntrain = ["2019-01-01"]\n', "segments.train must be a pair of dates"),
    ('[segments]\ntrain = ["2019-01-01", "2019-06-01", "2019-12-31"]\n', "segments.train must be a pair of dates"),
    ("[segments]\ntrain = [20190101, 20191231]\n", "20190101 is not a date"),
    ('[segments]\nvalid = ["2018-12-31", "2018-01-01"]\n', "segments.valid starts after it ends: 2018-12-31 > 2018-01-01"),
    ('[segments]\npreset = "papr"\n', "segments.preset must be \"\" (dates in [segments]) or a preset, "
                                      "one of 'shared', 'paper', 'synthetic' (did you mean paper?), got 'papr'"),
    ('[segments]\npreset = ""\n', "segments.train is not set (give segments.preset or the dates"),
    ('[segments]\ntrain = ["2019-01-01", "2019-12-31"]\n', "segments must be ordered train < valid < test"),
    ('[presets.mine]\ntrain = ["2019-01-01", "2019-12-31"]\nvalid = ["2020-01-01"]\n',
     "presets.mine.valid must be a pair of dates"),
    ('[presets]\nmine = 5\n', "presets.mine must be a table [presets.mine]"),
])
def test_bad_segments_are_refused_naming_the_key(tmp_path, text, words):
    _refused(tmp_path, text, words)


def test_the_error_names_the_file_that_set_the_key(tmp_path):
    import tomllib

    from pipeline.config import DEFAULT_CONFIG, config_from_dict

    p = tmp_path / "mine.toml"            # n_drop = 5 from default.toml, topk = 3 from this file
    p.write_text("[backtest]\ntopk = 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: backtest.n_drop must be an integer in [1, topk = 3], got 5"
    with pytest.raises(ConfigError, match=r"^overrides: train.lr must be a number > 0, got -1.0$"):
        load_config("quick", {"train": {"lr": -1.0}})
    raw = tomllib.loads(DEFAULT_CONFIG.read_text())
    raw["data"]["window"] = 0
    with pytest.raises(ConfigError, match=r"^mine.toml: data.window must be an integer >= 1, got 0$"):
        config_from_dict(raw, "mine.toml")


def test_a_missing_config_file_is_one_clean_line(tmp_path, monkeypatch):
    from pathlib import Path

    from pipeline.config import CONFIG_DIR

    names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
    monkeypatch.chdir(tmp_path)

    def message(path) -> str:
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert "\n" not in str(e.value)
        return str(e.value)

    here = Path.cwd()
    assert message("foo") == f"no config named 'foo': give a TOML file path or one of {names} (in {CONFIG_DIR})"
    assert message("foo.toml") == (f"config file {here / 'foo.toml'} not found "
                                   f"(nor {CONFIG_DIR / 'foo.toml'}; the configs there: {names})")
    assert message(tmp_path / "x.toml") == f"config file {tmp_path / 'x.toml'} not found"
    assert message("configs/nope.toml") == f"config file {here / 'configs' / 'nope.toml'} not found"
    assert message(tmp_path) == f"config file {tmp_path} is not a file"


@pytest.mark.parametrize("change, message", [
    ({"max_epochs": 0}, "train.max_epochs must be an integer >= 1, got 0"),
    ({"batch_days": 0}, "train.batch_days must be an integer >= 1, got 0"),
    ({"max_epochs": "3"}, "train.max_epochs must be an integer >= 1, got '3'"),
    ({"device": "gpu"}, "train.device must be one of 'auto', 'cpu', 'cuda', 'cuda:<index>', got 'gpu'"),
    ({"epochs": 3}, "unknown key train.epochs (did you mean max_epochs?); the keys of [train] are alpha, "),
])
def test_with_train_checks_a_command_line_change_as_a_file_would(change, message):
    cfg = load_config()
    with pytest.raises(ConfigError) as e:
        cfg.with_train(**change)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    ok = cfg.with_train(max_epochs=1, batch_days=2, device="cuda:0")
    assert (ok.train.max_epochs, ok.train.batch_days, ok.train.device) == (1, 2, "cuda:0")
    assert ok.train_for("master-ref").max_epochs == 1
