"""How much of one sample's error is the sampler's spread? One sample against the mean of K samples.

On `novelview eval`'s protocol (the same held-out objects, condition and target views, and the same noise for the
first sample, so sample 1 is eval's "model" row), draw K samples per target and split one sample's mean squared
error into the error of the samples' mean and the samples' spread around it:

    E[MSE(one sample)] = MSE(mean of infinitely many samples) + spread

where spread is the per-pixel variance across samples (estimated without bias from K of them). A sampler that
draws from the true posterior has spread = MSE(posterior mean): both are the posterior variance. Its one sample
then scores 3.01 dB below its own mean, and a one-sample PSNR target of T dB asks for a posterior mean of at
least T + 3.01 dB. ``spread / error of the mean`` below 1 means the samples are narrower than their own error
(guidance does that); above 1, wider.

    python benchmarks/sample_spread.py --data /work/runs/synth2k --samples 8 --guidance 1 2

Writes ``benchmarks/results/sample_spread.json`` and prints one table per guidance weight.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from novelview import cameras
from novelview.evaluate import EvalConfig, split_dataset, task_generator
from novelview.evaluation import metrics
from novelview.evaluation import protocol as proto
from novelview.evaluation.methods import CheckpointMethod
from novelview.sampling import SamplingSettings, View

from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
BINS = ("60-120", "120-180", "all")


def target_stats(samples: torch.Tensor, truth: torch.Tensor) -> list[dict[str, float]]:
    """Per target: MSE of the first sample, of all samples on average, of their mean, and their spread
    (``samples [K, N, 3, H, W]``, ``truth [N, 3, H, W]``, both in [-1, 1]; errors in [0, 1] units)."""
    x, y = metrics.to_unit(samples), metrics.to_unit(truth)
    k = x.shape[0]
    per_sample = ((x - y) ** 2).mean(dim=(2, 3, 4))  # [K, N]
    mean_error = ((x.mean(0) - y) ** 2).mean(dim=(1, 2, 3))
    spread = x.var(dim=0, unbiased=True).mean(dim=(1, 2, 3))
    return [{"first": float(per_sample[0, j]), "one": float(per_sample[:, j].mean()), "mean_k": float(mean_error[j]),
             "spread": float(spread[j]), "mean_inf": max(float(per_sample[:, j].mean() - spread[j]), 1e-8),
             "samples": k} for j in range(y.shape[0])]


def db(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-10))


def summarize(records: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per angle bin: PSNRs averaged per image (as eval does) and the spread-to-error ratio of the pooled MSEs."""
    out = {}
    for label in BINS:
        rows = [r for r in records if label == "all" or r["bin"] == label]
        if not rows:
            continue
        mean_inf, spread = np.mean([r["mean_inf"] for r in rows]), np.mean([r["spread"] for r in rows])
        out[label] = {
            "n": len(rows),
            "psnr_first_sample": float(np.mean([db(r["first"]) for r in rows])),
            "psnr_one_sample": float(np.mean([db(r["one"]) for r in rows])),
            f"psnr_mean_of_{rows[0]['samples']}": float(np.mean([db(r["mean_k"]) for r in rows])),
            "psnr_mean_of_inf": float(np.mean([db(r["mean_inf"]) for r in rows])),
            "spread_over_mean_error": float(spread / mean_inf),
        }
    return out


def run(model: CheckpointMethod, dataset, tasks: list[proto.EvalTask], settings: SamplingSettings, samples: int,
        seed: int) -> list[dict[str, float]]:
    records = []
    for task in tqdm(tasks, desc=f"guidance {settings.guidance:g}", unit="object"):
        obj = task.object_index
        cond, K = dataset.view(obj, task.cond_view)
        poses = dataset.scenes[obj].poses.float()
        source = View(cond, poses[task.cond_view], K.float())
        targets = list(task.target_views)
        truth = torch.stack([dataset.view(obj, v)[0] for v in targets])
        target_K = torch.stack([dataset.view(obj, v)[1] for v in targets]).float()
        generator = task_generator(seed, task.object_name, group=task.group)  # eval's noise: sample 1 is eval's
        drawn = torch.stack([model.views(source, poses[targets], target_K, generator, settings)
                             for _ in range(samples)])
        angles = cameras.angle_between_views(source.pose.double().expand(len(targets), 4, 4), poses[targets].double())
        for stats, angle in zip(target_stats(drawn, truth), angles.tolist()):
            records.append({**stats, "bin": metrics.angle_bin(angle)})
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "default")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--objects", type=int, default=24)
    p.add_argument("--targets-per-object", type=int, default=6)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0])
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sample_spread.json")
    args = p.parse_args(argv)
    if args.samples < 2:
        p.error("--samples must be at least 2 to measure a spread")

    cfg = EvalConfig(checkpoint=str(args.checkpoint), data=str(args.data), objects=args.objects,
                     targets_per_object=args.targets_per_object, seed=args.seed)
    model = CheckpointMethod("model", args.checkpoint)
    dataset, _ = split_dataset(cfg, model)  # the test objects exactly as `novelview eval` splits them
    tasks = proto.make_protocol(dataset.scenes, args.objects, args.targets_per_object, args.seed)
    result = {"checkpoint": str(args.checkpoint), "data": str(args.data), "objects": len(tasks),
              "targets_per_object": args.targets_per_object, "samples": args.samples, "strength": args.strength,
              "machine": machine(), "guidance": {}}
    for guidance in args.guidance:
        settings = SamplingSettings(guidance=guidance, seed=args.seed, strength=args.strength)
        summary = summarize(run(model, dataset, tasks, settings, args.samples, args.seed))
        result["guidance"][f"{guidance:g}"] = summary
        print(f"\nguidance {guidance:g}, {args.samples} samples per target (PSNR in dB, averaged per image)")
        print(f"{'bin':>8} {'sample 1':>9} {'any sample':>11} {f'mean of {args.samples}':>11} {'mean of inf':>12} "
              f"{'spread/err':>11}")
        for label, row in summary.items():
            print(f"{label:>8} {row['psnr_first_sample']:9.2f} {row['psnr_one_sample']:11.2f} "
                  f"{row[f'psnr_mean_of_{args.samples}']:11.2f} {row['psnr_mean_of_inf']:12.2f} "
                  f"{row['spread_over_mean_error']:11.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
