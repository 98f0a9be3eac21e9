"""Timestep spacing with an exact denoiser: how far each sampler's samples land from the data's statistics.

Data with i.i.d. N(0.3, 0.5^2) pixels has a closed-form posterior mean E[x0 | z_t], so the denoiser is exact and
every error left in the samples' mean and standard deviation comes from the sampler and its choice of noise
levels (default v-prediction cosine schedule; 64 x 3 x 16 x 16 = 49k pixels, one seed). Not a timing: the
numbers do not depend on the machine. Prints a table and writes benchmarks/results/spacing.json.

    python benchmarks/spacing.py [--steps 10 25 50] [--spacings trailing leading]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from novelview import diffusion as D
from novelview import sampling as S

RESULTS = Path(__file__).resolve().parent / "results" / "spacing.json"
MEAN, STD = 0.3, 0.5
SHAPE = (64, 3, 16, 16)


def exact_denoiser(cfg: D.DiffusionConfig) -> S.Denoiser:
    """E[x0 | z_t] for N(MEAN, STD^2) pixels, in the config's parameterisation."""

    def denoise(z_t: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        lam, z = logsnr.double(), z_t.double()
        alpha, sigma = (t.view(-1, 1, 1, 1) for t in D.alpha_sigma(lam))
        x0 = MEAN + alpha * STD**2 / (alpha**2 * STD**2 + sigma**2) * (z - alpha * MEAN)
        return D.prediction_target(x0, (z - alpha * x0) / sigma, lam, cfg.prediction).float()

    return denoise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--spacings", nargs="+", default=["trailing", "leading"])
    args = parser.parse_args()
    cfg = D.DiffusionConfig()
    rows = []
    for steps in args.steps:
        for spacing in args.spacings:
            row = {"steps": steps, "spacing": spacing}
            for sampler in S.SAMPLERS:
                x = S.sample(exact_denoiser(cfg), SHAPE, cfg, sampler, steps, spacing=spacing,
                             generator=torch.Generator().manual_seed(0))
                row[sampler] = {"mean_error": round(x.mean().item() - MEAN, 3),
                                "std_error": round(x.std().item() - STD, 3)}
            rows.append(row)
    print(f"{'steps':>5}  {'spacing':9}" + "".join(f"  {s:>15}" for s in S.SAMPLERS) + "   (mean / std error)")
    for row in rows:
        cells = "".join(f"  {row[s]['mean_error']:+.3f} / {row[s]['std_error']:+.3f}" for s in S.SAMPLERS)
        print(f"{row['steps']:>5}  {row['spacing']:9}{cells}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"data": {"mean": MEAN, "std": STD, "shape": SHAPE}, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
