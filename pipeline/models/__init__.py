"""Model zoo: MIGA (Conv, Rec, Attn), six baselines and two anchors (LightGBM, ridge) behind one
interface.

    model = create_model("miga-conv", d_feat=158, d_market=0, top_k=4)
    scores, aux = model(x, mask, market)   # x (B, N, T, D), mask (B, N) bool, market (B, T, M) | None
                                           # -> scores (B, N), aux scalar (router loss; 0 for baselines)

Each model has a config dataclass whose defaults are documented in its module; overrides are
its field names (unknown names raise ModelConfigError, a ValueError). Padded stocks
(mask False) never change real stocks' scores. Torch is imported only when a model is built.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from pipeline.errors import MigaError


class ModelConfigError(MigaError, ValueError):
    """Unknown model name or config field."""


# name -> (module, config class, model class); resolved lazily so `import pipeline.models`
# does not import torch.
_SPECS: dict[str, tuple[str, str, str]] = {
    "miga-conv": ("miga", "MIGAConvConfig", "MIGA"),
    "miga-rec": ("miga", "MIGARecConfig", "MIGA"),
    "miga-attn": ("miga", "MIGAAttnConfig", "MIGA"),
    "tcn": ("tcn", "TCNConfig", "TCN"),
    "lstm": ("lstm", "LSTMConfig", "LSTM"),
    "transformer": ("transformer", "TransformerConfig", "Transformer"),
    "moderntcn": ("moderntcn", "ModernTCNConfig", "ModernTCN"),
    "mamba": ("mamba", "MambaConfig", "Mamba"),
    "master": ("master", "MASTERConfig", "MASTER"),
    # The same model under MASTER's own training recipe and gate temperature (configs/default.toml
    # [models.master-ref]): both readings of MASTER run side by side in one grid and one report.
    "master-ref": ("master", "MASTERConfig", "MASTER"),
    # Anchors (no neural network; fitted by pipeline.anchors, not the torch training loop)
    "lgbm": ("lgbm", "LGBMConfig", "LGBM"),
    "linear": ("linear", "LinearConfig", "Linear"),
}
# The registered models fitted by `pipeline.anchors.fit_anchor` instead of `pipeline.train.fit_stack`
# (their class says so too: `anchor = True`).
ANCHORS: tuple[str, ...] = ("lgbm", "linear")


def _resolve(name: str) -> tuple[type, type]:
    if name not in _SPECS:
        raise ModelConfigError(f"unknown model {name!r}; registered: {', '.join(_SPECS)}")
    module, cfg_cls, model_cls = _SPECS[name]
    mod = importlib.import_module(f"pipeline.models.{module}")
    return getattr(mod, cfg_cls), getattr(mod, model_cls)


def model_config(name: str, **overrides: Any):
    """The config dataclass of model `name` with `overrides` applied (validated by field name)."""
    cfg_cls, _ = _resolve(name)
    fields = {f.name: f for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ModelConfigError(f"unknown setting(s) {unknown} for model {name!r}; "
                               f"valid: {', '.join(sorted(fields))}")
    for key, value in overrides.items():
        kind = _KINDS.get(str(fields[key].type))
        if kind is not None and not _fits(value, kind):
            raise ModelConfigError(f"model {name!r} setting {key!r} must be {kind.__name__}, "
                                   f"got {value!r}")
    return cfg_cls(**overrides)


_KINDS = {"int": int, "float": float, "bool": bool}


def _fits(value: Any, kind: type) -> bool:
    """TOML gives int/float/bool: ints are fine for floats, bools are not numbers here."""
    if kind is bool or isinstance(value, bool):
        return isinstance(value, bool) and kind is bool
    return isinstance(value, int) if kind is int else isinstance(value, (int, float))


def create_model(name: str, d_feat: int, d_market: int = 0, **overrides: Any):
    """Build model `name` for D = d_feat stock features and M = d_market market features."""
    cfg = model_config(name, **overrides)
    _, model_cls = _resolve(name)
    return model_cls(cfg, d_feat=d_feat, d_market=d_market)


def _factory(name: str):
    def factory(d_feat: int, d_market: int = 0, **overrides: Any):
        return create_model(name, d_feat, d_market, **overrides)
    factory.__name__ = f"create_{name.replace('-', '_')}"
    return factory


# The registry: name -> factory(d_feat, d_market=0, **overrides) -> nn.Module.
MODELS: dict[str, Any] = {name: _factory(name) for name in _SPECS}


def _plain(value: Any, where: str) -> Any:
    """`value` as what torch's weights_only unpickler accepts: None, bool, int, float, str,
    tuples, lists and str-keyed dicts of those (numpy scalars and arrays, dataclasses converted)."""
    import numpy as np

    if value is None:
        return None
    if isinstance(value, np.generic):                  # np.float64 is a float: convert first
        return _plain(value.item(), where)
    for kind in (bool, int, float, str):               # subclasses (enums, ...) as the base type
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value), where)
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v, where) for v in value)
    if isinstance(value, list):
        return [_plain(v, where) for v in value]
    raise ModelConfigError(f"{where} = {value!r} ({type(value).__name__}) cannot be saved as plain "
                           "data (None, bool, int, float, str, lists, tuples, dicts)")


def model_state(model, name: str, d_feat: int, d_market: int, overrides: dict,
                window: int) -> dict:
    """A trained model as plain data: its state_dict (CPU tensors) and how to rebuild it.

    Nothing in it needs unpickling code: `torch.load(weights_only=True)` reads it back
    (`pipeline.tracking.load_model_state`)."""
    return {"model_name": str(name), "d_feat": int(d_feat), "d_market": int(d_market),
            "overrides": _plain(dict(overrides), "overrides"), "window": int(window),
            "state_dict": {str(k): v.detach().cpu() for k, v in model.state_dict().items()}}


def model_from_state(state: dict):
    """The model that `model_state` describes, rebuilt and loaded (eval mode, CPU)."""
    model = create_model(state["model_name"], d_feat=state["d_feat"], d_market=state["d_market"],
                         **state["overrides"])
    model.load_state_dict(state["state_dict"])
    return model.eval()


__all__ = ["ANCHORS", "MODELS", "ModelConfigError", "create_model", "model_config", "model_from_state",
           "model_state"]
