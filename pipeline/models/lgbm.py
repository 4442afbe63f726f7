"""LightGBM anchor: gradient-boosted trees on the last day's features, what a Qlib user gets
with no neural network.

Not trained by the torch loop: `pipeline.anchors.fit_anchor` boosts it on the train segment's
per-day z-scored labels with early stopping on the validation segment. The booster lives in
a uint8 buffer (its model string), so `state_dict`, `pipeline.models.model_state` and
`model_from_state` save and load it as a plain tensor (`torch.load(weights_only=True)`).
Scoring runs the booster on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class LGBMConfig:
    # Defaults: Qlib examples/benchmarks/LightGBM/workflow_config_lightgbm_Alpha158.yaml
    # (LGBModel kwargs) and qlib/contrib/model/gbdt.py (LGBModel's num_boost_round and
    # early_stopping_rounds defaults).
    loss: str = "mse"                 # LightGBM objective (Qlib `loss`)
    colsample_bytree: float = 0.8879
    learning_rate: float = 0.2
    subsample: float = 0.8789         # bagging fraction; like Qlib we set no bagging_freq, and
                                      # LightGBM bags only when bagging_freq > 0: kept as Qlib has it
    lambda_l1: float = 205.6999
    lambda_l2: float = 580.9768
    max_depth: int = 8
    num_leaves: int = 210
    num_threads: int = 0              # 0 = os.cpu_count() (Qlib's yaml: 20, its machine's cores);
                                      # results are deterministic for a given thread count
    num_boost_round: int = 1000       # LGBModel default
    early_stopping_rounds: int = 50   # LGBModel default: rounds without a better valid l2


class LGBM(nn.Module):
    """Booster scores of x[:, :, -1, :] (the window's last day, the store's normalised features)."""

    needs_market = False
    anchor = True              # fitted by pipeline.anchors, not by pipeline.train

    def __init__(self, cfg: LGBMConfig, d_feat: int, d_market: int = 0):
        super().__init__()
        self.cfg, self.d_feat = cfg, d_feat
        self.register_buffer("model_string", torch.zeros(0, dtype=torch.uint8))   # empty = unfitted
        self._booster = None

    def set_booster(self, model_string: str) -> None:
        self.model_string = torch.from_numpy(np.frombuffer(model_string.encode(), np.uint8).copy())
        self._booster = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A fitted booster's buffer is longer than the empty one: take its size before loading.
        key = prefix + "model_string"
        if key in state_dict:
            self.model_string = torch.zeros_like(state_dict[key], device=self.model_string.device)
        self._booster = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __getstate__(self):
        # Pickled (MLflow's model format) without the live booster: the buffer rebuilds it.
        return {**self.__dict__, "_booster": None}

    def booster(self):
        """The lightgbm.Booster of the buffer (None while unfitted), built once."""
        if self._booster is None and self.model_string.numel():
            import lightgbm as lgb

            text = bytes(self.model_string.cpu().numpy()).decode()
            self._booster = lgb.Booster(model_str=text)
        return self._booster

    def forward(self, x: torch.Tensor, mask: torch.Tensor, market=None):
        b, n = mask.shape
        booster = self.booster()
        if booster is None or b * n == 0:                      # unfitted: every score 0
            scores = torch.zeros(b, n, device=x.device)
        else:
            last = x[:, :, -1, :].detach().float().cpu().numpy().reshape(b * n, -1)   # (B*N, D)
            pred = booster.predict(last.astype(np.float64), num_threads=self.cfg.num_threads)
            scores = torch.as_tensor(pred, dtype=torch.float32).reshape(b, n).to(x.device)
        scores = torch.where(mask, scores, torch.zeros_like(scores))
        return scores, scores.new_zeros(())
