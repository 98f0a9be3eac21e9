"""Where along the noise levels does a checkpoint fail? A diagnostic for the training-efficiency study.

Two probes on held-out pairs (condition view -> target view):

1. **One-step x0 error per noise level**: noise the true target to a given logSNR, ask the model for x0 once,
   with and without the condition (guidance dropout). Where the two PSNRs coincide the model ignores the
   condition at that level.
2. **Partial sampling (SDEdit)**: noise the true target to the level of time ``t`` and run deterministic DDIM from
   there. Starting at ``t = 1`` is ordinary sampling; the later it starts, the more of the answer is given. The
   PSNR curve shows from which level on the model can no longer finish the picture on its own, and the PNG shows
   how it fails.

    python benchmarks/denoise_probe.py --checkpoint checkpoints/default --data /work/runs/synth2k

Writes ``benchmarks/results/denoise_probe.json`` and ``docs/results/denoise-probe.png`` (condition | truth |
one column per start time).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from novelview.checkpoint import load_model
from novelview.data.views import MultiViewDataset
from novelview.diffusion import add_noise, alpha_sigma, logsnr_schedule, model_inputs, to_x0_eps
from novelview.images import make_grid

from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("cond_image", "target_image", "cond_pose", "target_pose", "cond_K", "target_K")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10.0 * math.log10(4.0 / max(((a - b) ** 2).mean().item(), 1e-12))


def _predict_x0(model, z, logsnr, batch, cfg, drop: bool, x_self=None) -> torch.Tensor:
    n = z.shape[0]
    extra = {} if x_self is None else {"x_self": x_self}
    out = model(z, logsnr, **model_inputs(batch), drop_cond=torch.full((n,), drop), **extra)
    return to_x0_eps(out[:, :3].float(), z, logsnr, cfg.prediction)[0].clamp(-1, 1)


def partial_ddim(model, batch, cfg, t_start: float, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Deterministic DDIM from the true target noised to time ``t_start`` down to t = 0 (conditional, w = 1)."""
    x0 = batch["target_image"]
    n = x0.shape[0]
    times = torch.linspace(t_start, 0.0, steps + 1)
    z = add_noise(x0, torch.randn(x0.shape, generator=generator), logsnr_schedule(times[:1], cfg).expand(n))
    estimate = torch.zeros_like(x0) if cfg.self_condition else None
    for i in range(steps):
        logsnr = logsnr_schedule(times[i : i + 1], cfg).expand(n)
        x_hat = _predict_x0(model, z, logsnr, batch, cfg, drop=False, x_self=estimate)
        estimate = x_hat if cfg.self_condition else None
        if i == steps - 1:
            return x_hat
        alpha, sigma = (s.view(-1, 1, 1, 1) for s in alpha_sigma(logsnr))
        eps_hat = (z - alpha * x_hat) / sigma
        alpha_next, sigma_next = (s.view(-1, 1, 1, 1) for s in alpha_sigma(logsnr_schedule(times[i + 1 : i + 2], cfg)))
        z = alpha_next * x_hat + sigma_next * eps_hat
    return z


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "default")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--pairs", type=int, default=16, help="held-out pairs (one per test object)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps of the partial sampling")
    p.add_argument("--logsnrs", type=float, nargs="+", default=[-10, -5, -2, 0, 2, 5])
    p.add_argument("--starts", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "denoise_probe.json")
    p.add_argument("--png", type=Path, default=ROOT / "docs" / "results" / "denoise-probe.png")
    args = p.parse_args(argv)

    model, config = load_model(args.checkpoint)
    cfg = config.diffusion
    if config.objective != "diffusion":
        print("error: this probe needs a diffusion checkpoint", file=sys.stderr)
        return 2
    dataset = MultiViewDataset(args.data, config.image_size, split="test", seed=1)
    views = max(1, len(dataset) // max(1, len(dataset.scenes)))
    items = [dataset[i * views] for i in range(min(args.pairs, len(dataset.scenes)))]
    batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in KEYS}
    x0 = batch["target_image"]
    generator = torch.Generator().manual_seed(0)
    result: dict = {"checkpoint": str(args.checkpoint), "pairs": len(items), "machine": machine(),
                    "copy_psnr": _psnr(batch["cond_image"], x0), "one_step": [], "partial": []}
    print(f"copy-the-condition PSNR {result['copy_psnr']:.2f} dB over {len(items)} held-out pairs")
    print(f"{'logSNR':>7} {'x0 PSNR cond':>13} {'x0 PSNR uncond':>15}")
    with torch.inference_mode():
        for value in args.logsnrs:
            logsnr = torch.full((len(items),), float(value))
            z = add_noise(x0, torch.randn(x0.shape, generator=generator), logsnr)
            zeros = torch.zeros_like(x0) if cfg.self_condition else None
            cond = _psnr(_predict_x0(model, z, logsnr, batch, cfg, False, zeros), x0)
            uncond = _psnr(_predict_x0(model, z, logsnr, batch, cfg, True, zeros), x0)
            result["one_step"].append({"logsnr": value, "psnr_cond": cond, "psnr_uncond": uncond})
            print(f"{value:7.1f} {cond:13.2f} {uncond:15.2f}")
        rows = [[batch["cond_image"][i], x0[i]] for i in range(len(items))]
        print(f"{'start t':>7} {'logSNR':>7} {'PSNR':>6}")
        for t in args.starts:
            out = partial_ddim(model, batch, cfg, t, args.steps, torch.Generator().manual_seed(0))
            level = logsnr_schedule(torch.tensor([t]), cfg).item()
            score = _psnr(out, x0)
            result["partial"].append({"t_start": t, "logsnr": level, "psnr": score})
            print(f"{t:7.2f} {level:7.2f} {score:6.2f}")
            for i in range(len(items)):
                rows[i].append(out[i])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.png.parent.mkdir(parents=True, exist_ok=True)
    make_grid(rows[:8]).save(args.png)
    print(f"wrote {args.out} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
