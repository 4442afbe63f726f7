"""K models of one architecture as one: parameters flat on a leading cell axis, one vmapped call.

    stack = StackedModel([model_0, ..., model_K-1])      # same class and parameter shapes
    scores, aux, routing = stack(batch, keys)             # (K, B, N), (K,), (K, B, N, G, E) | None

The parameters live in one leaf `flat (K, P)`: a step's gradient is one (K, P) tensor, so the
per-cell gradient norm is one reduction, and Adam over the stack is a handful of elementwise
ops however many parameter tensors the model has (`pipeline.engine.optim`). Each call slices
`flat` into the model's parameter shapes (views, differentiable) and runs the model with
`torch.func.functional_call` under `torch.func.vmap` over the cell axis. Cells never mix: every
op of the model is per cell, and the loss is a sum of per-cell losses.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from pipeline.models.layers import keyed


def layout(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter, in order: what a stack or a checkpoint must agree on."""
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


class StackedModel:
    def __init__(self, models: list[nn.Module], device: torch.device):
        if not models:
            raise ValueError("a stack needs at least one model")
        first = layout(models[0])
        for m in models[1:]:
            if type(m) is not type(models[0]) or layout(m) != first:
                raise ValueError("a stack's models must share their class and parameter shapes")
            # The stack runs models[0]'s module: a setting that is not a parameter (MASTER's
            # gate temperature beta) must agree too (pipeline.grid.plan_stacks splits them).
            if getattr(m, "cfg", None) != getattr(models[0], "cfg", None):
                raise ValueError("a stack's models must share their config: "
                                 f"{getattr(m, 'cfg', None)} != {getattr(models[0], 'cfg', None)}")
        self.K, self.device = len(models), torch.device(device)
        self.layout = [[n, list(s)] for n, s in first]     # what a checkpoint must agree on
        self.names = [n for n, _ in first]
        self.shapes = [s for _, s in first]
        self.sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        params, buffers = stack_module_state([m.to("cpu") for m in models])
        self.flat = torch.cat([params[n].reshape(self.K, -1) for n in self.names], dim=1
                              ).to(self.device).detach().requires_grad_(True)     # (K, P)
        self.buffers = {n: b.to(self.device) for n, b in buffers.items()}
        self.base = copy.deepcopy(models[0]).to("meta")     # the architecture; holds no data
        self.needs_market = bool(getattr(models[0], "needs_market", False))

    def params(self, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`flat` (K, P) (default: the stack's) as the model's parameter dict, (K, *shape) views."""
        flat = self.flat if flat is None else flat
        return {n: v.view(self.K, *s) for n, v, s in
                zip(self.names, flat.split(self.sizes, dim=1), self.shapes)}

    def train(self, mode: bool = True) -> "StackedModel":
        self.base.train(mode)
        return self

    def __call__(self, x: torch.Tensor, mask: torch.Tensor, market: torch.Tensor | None,
                 keys: torch.Tensor):
        """x (K, B, N, T, D), mask (K, B, N), market (K, B, T, M), keys (K,) int64 (dropout) ->
        scores (K, B, N), aux (K,), routing (K, B, N, G, E) or None."""
        base, use_market = self.base, self.needs_market

        def one(p, b, key, x, m, mk):
            with keyed(key, m.shape) as ctx:          # m (B, N): per cell under vmap
                scores, aux = functional_call(base, (p, b), (x, m, mk if use_market else None))
            if not torch.is_tensor(aux):
                aux = scores.new_zeros(())
            routing = ctx.records.get("routing")
            return scores, aux, (routing if routing is not None else scores.new_zeros(()))

        if self.K == 1:
            # A stack of one runs the module as it is: vmap's batching rules cost a single cell
            # up to 2x on a CPU (grouped convolutions, per-op dispatch), and there is nothing to
            # batch. Same arithmetic up to float order (tests/model/test_stack.py compares).
            first = lambda t: t[0]  # noqa: E731  (views: batch-norm buffers update in place)
            scores, aux, routing = one({n: first(v) for n, v in self.params().items()},
                                       {n: first(b) for n, b in self.buffers.items()}, keys[0],
                                       x[0], mask[0], market[0] if market is not None else None)
            scores, aux, routing = scores[None], aux[None], routing[None]
        else:
            # "different": a model of the user's own may use torch's RNG (its draws then depend
            # on the stack); the registered models key their dropout (pipeline.models.layers).
            scores, aux, routing = vmap(one, randomness="different")(
                self.params(), self.buffers, keys, x, mask, market)
        return scores.float(), aux.float(), (routing if routing.dim() > 1 else None)

    def cell_state(self, k: int, flat: torch.Tensor | None = None,
                   buffers: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Cell k's state_dict (CPU tensors), from `flat`/`buffers` (default: the current ones)."""
        flat = (self.flat if flat is None else flat).detach()
        buffers = self.buffers if buffers is None else buffers
        state = {n: v[k].reshape(s).cpu().clone() for n, v, s in
                 zip(self.names, flat.split(self.sizes, dim=1), self.shapes)}
        state.update({n: b[k].cpu().clone() for n, b in buffers.items()})
        return state

    def load_cell(self, k: int, flat_k: torch.Tensor, buffers_k: dict[str, torch.Tensor]) -> None:
        """Set cell k's parameters (P,) and buffers (from a checkpoint)."""
        with torch.no_grad():
            self.flat[k].copy_(flat_k.to(self.device))
            for n, b in buffers_k.items():
                self.buffers[n][k].copy_(b.to(self.device))
