"""Parameter count of every registered model at D = 158 (Alpha158) and D = 626 (the paper's panel).

    .venv/bin/python benchmarks/model_sizes.py [--market 63] [--d 158,626]

Models from `pipeline.models.create_model` at their default config (M = --market market
features: 63 = 3 indices x 21, as the stores built from the shared and synthetic data). What
depends on D is the first layer of every model (D -> hidden) and, in ModernTCN, the variable
mixing, which the reference runs over the D raw features (a D x D ConvFFN per channel); our
`n_vars` (default 32) first maps the D features to 32 learned series. The last row shows the
reference's choice (`n_vars = 0`) for comparison. Output of 2026-12-08 (the table in
docs/ARCHITECTURE.md, "Models"):

    model                    D = 158      D = 626    ratio
    miga-conv                124,878      244,686     2.0x
    miga-rec                 128,334      248,142     1.9x
    miga-attn                610,190      640,142     1.0x
    tcn                      105,345      225,153     2.1x
    lstm                      90,689      210,497     2.3x
    transformer              572,545      602,497     1.1x
    moderntcn                163,969      178,945     1.1x
    mamba                     75,713      105,665     1.4x
    master                   775,041      924,801     1.2x
    master-ref               775,041      924,801     1.2x
    lgbm                           0            0        -
    linear                       159          627     3.9x
    moderntcn n_vars=0     2,057,953   26,903,137    13.1x   (the reference's D x D variable mixing)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.models import MODELS, create_model  # noqa: E402


def parameter_count(name: str, d_feat: int, d_market: int, **overrides) -> int:
    model = create_model(name, d_feat=d_feat, d_market=d_market, **overrides)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--market", type=int, default=63)
    ap.add_argument("--d", default="158,626")
    args = ap.parse_args()
    ds = [int(x) for x in args.d.split(",")]
    print(f"{'model':<19}" + "".join(f"{f'D = {d}':>13}" for d in ds) + "    ratio")
    rows = [(n, n, {}) for n in MODELS] + [("moderntcn n_vars=0", "moderntcn", {"n_vars": 0})]
    for label, name, over in rows:
        counts = [parameter_count(name, d, args.market, **over) for d in ds]
        ratio = f"{counts[-1] / counts[0]:.1f}x" if counts[0] else "-"
        print(f"{label:<19}" + "".join(f"{c:>13,}" for c in counts) + f"{ratio:>9}")


if __name__ == "__main__":
    main()
