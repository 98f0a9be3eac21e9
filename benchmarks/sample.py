"""Sampling speed and quality-vs-steps.

Speed (no checkpoint needed: the tiny presets with random weights cost the same as trained ones)::

    python benchmarks/sample.py                       # seconds per 64x64 view and per 24-view orbit
    python benchmarks/sample.py --quick               # smoke test: tiny counts, seconds in total
    python benchmarks/sample.py --autocast            # also time bf16 autocast next to fp32

Quality (needs a trained checkpoint and a dataset; PSNR/SSIM of held-out test objects)::

    python benchmarks/sample.py --checkpoint runs/tiny --data data/synth --objects 32 \\
        --quality-steps 10 25 50 100 250 --samplers dpmpp ddim ddpm

Results go to ``benchmarks/results/sample.json`` (sections measured by this run replace the ones stored, the
others are kept) and a table is printed. Targets on the 2-core reference machine: <= 1.5 s per 64x64 view
(25 DPM-Solver++ steps with guidance), <= 60 s per 24-view orbit. Time on an otherwise idle machine: the
recorded ``load_average`` says whether it was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from novelview.checkpoint import CheckpointConfig
from novelview.diffusion import DiffusionConfig
from novelview.pipeline import Pipeline
from novelview.sampling import SamplingSettings, View

from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

RESULTS = Path(__file__).resolve().parent / "results" / "sample.json"
TARGET_VIEW_S = 1.5
TARGET_ORBIT_S = 60.0


def random_pipeline(preset: str, size: int, device: str, autocast: bool, compile: bool) -> Pipeline:
    from novelview.models.presets import build_model

    torch.manual_seed(0)
    model = build_model(preset, size)
    config = CheckpointConfig(model=model.config.to_dict(), diffusion=DiffusionConfig())
    return Pipeline(model, config, device, autocast=autocast, compile=compile)


def test_image(size: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def bench_speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    image = test_image(args.size)
    variants = [False, True] if args.autocast else [False]
    for preset in args.presets:
        for bf16 in variants:
            if args.checkpoint:
                pipe = Pipeline.from_checkpoint(args.checkpoint, args.device, autocast=bf16, compile=args.compile)
                name = str(args.checkpoint)
            else:
                pipe = random_pipeline(preset, args.size, args.device, bf16, args.compile)
                name = preset
            settings = SamplingSettings(sampler="dpmpp", steps=args.steps, guidance=args.guidance, seed=0)
            warm_up = replace(settings, steps=2)  # allocator, compile, kernels
            pipe.synthesize(image, azimuth=90, settings=warm_up)
            view = timed(lambda: pipe.synthesize(image, azimuth=90, settings=settings), args.repeats)
            row: dict[str, Any] = {
                "model": name,
                "image_size": pipe.image_size,
                "precision": "bf16-autocast" if bf16 else "fp32",
                "steps": args.steps,
                "guidance": args.guidance,
                "sampler": "dpmpp",
                "view_s": round(statistics.median(view), 3),
                "view_s_all": [round(t, 3) for t in view],
            }
            if args.views > 0:
                stochastic = replace(settings, stochastic=True)
                orbit = timed(lambda: pipe.orbit(image, n_views=args.views, settings=stochastic), 1)[0]
                plain = timed(lambda: pipe.orbit(image, n_views=args.views, settings=settings), 1)[0]
                row.update(orbit_views=args.views, orbit_stochastic_s=round(orbit, 2), orbit_plain_s=round(plain, 2))
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.checkpoint:
                break
        if args.checkpoint:
            break
    return rows


def bench_quality(args: argparse.Namespace) -> list[dict[str, Any]]:
    """PSNR/SSIM of generated test views against ground truth, per sampler and step count."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    from novelview.data.views import MultiViewDataset

    pipe = Pipeline.from_checkpoint(args.checkpoint, args.device)
    data = MultiViewDataset(args.data, pipe.image_size, split=args.split, seed=0)
    count = min(args.objects, len(data))
    picks = np.linspace(0, len(data) - 1, count).round().astype(int).tolist()
    items = [data[i] for i in picks]
    stack = {k: torch.stack([it[k] for it in items]).to(pipe.device) for k in
             ("cond_image", "target_image", "cond_pose", "target_pose", "cond_K", "target_K")}
    truth = (stack["target_image"].float().cpu() + 1) / 2
    guidance = pipe.default_guidance() if args.guidance is None else args.guidance
    rows = []
    for sampler in args.samplers:
        for steps in args.quality_steps:
            settings = SamplingSettings(sampler=sampler, steps=steps, guidance=guidance, batch=args.batch_size)
            source = View(stack["cond_image"], stack["cond_pose"], stack["cond_K"])
            start = time.perf_counter()
            outs = []
            for s in range(0, count, args.batch_size):
                e = min(s + args.batch_size, count)
                part = View(source.image[s:e], source.pose[s:e], source.K[s:e])
                outs.append(pipe.generate(part, stack["target_pose"][s:e], settings, target_K=stack["target_K"][s:e],
                                          generator=torch.Generator().manual_seed(args.seed + s)))
            seconds = time.perf_counter() - start
            pred = (torch.cat(outs).float().cpu() + 1) / 2
            psnr = peak_signal_noise_ratio(pred, truth, data_range=1.0, reduction="none", dim=(1, 2, 3))
            ssim = structural_similarity_index_measure(pred, truth, data_range=1.0, reduction="none")
            row = {
                "sampler": "regression" if pipe.is_regression else sampler,
                "steps": 1 if pipe.is_regression else steps,
                "guidance": None if pipe.is_regression else guidance, "objects": count,
                "psnr": round(psnr.mean().item(), 3), "ssim": round(ssim.mean().item(), 4),
                "seconds_per_view": round(seconds / count, 3),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            if pipe.is_regression:
                return rows
    return rows


def print_tables(result: dict[str, Any]) -> None:
    if result.get("speed"):
        print(f"\nspeed ({result['machine']['torch_threads']} threads, load {result['machine']['load_average']})")
        print(f"{'model':24s} {'size':>4s} {'precision':>14s} {'s/view':>8s} {'orbit stoch s':>14s} "
              f"{'orbit plain s':>14s}")
        for r in result["speed"]:
            print(f"{r['model'][:24]:24s} {r['image_size']:4d} {r['precision']:>14s} {r['view_s']:8.3f} "
                  f"{r.get('orbit_stochastic_s', float('nan')):14.2f} {r.get('orbit_plain_s', float('nan')):14.2f}")
        print(f"targets: <= {TARGET_VIEW_S} s/view, <= {TARGET_ORBIT_S} s per 24-view orbit "
              "(25 DPM-Solver++ steps, guidance)")
    if result.get("quality"):
        print(f"\nquality ({result.get('quality_checkpoint')}, {result.get('quality_data')})")
        print(f"{'sampler':8s} {'steps':>5s} {'PSNR':>7s} {'SSIM':>7s} {'s/view':>8s}")
        for r in result["quality"]:
            print(f"{r['sampler']:8s} {r['steps']:5d} {r['psnr']:7.2f} {r['ssim']:7.4f} {r['seconds_per_view']:8.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["xunet-tiny", "dit-tiny"])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=None,
                   help="default 3 for speed; the checkpoint's default for quality")
    p.add_argument("--views", type=int, default=24, help="orbit length for the speed test (0: skip orbits)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--autocast", action="store_true", help="also time bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--checkpoint", type=Path, default=None, help="time this checkpoint; with --data also quality")
    p.add_argument("--data", type=Path, default=None, help="dataset for the quality table")
    p.add_argument("--split", default="test")
    p.add_argument("--objects", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samplers", nargs="+", default=["dpmpp", "ddim", "ddpm"])
    p.add_argument("--quality-steps", type=int, nargs="+", default=[10, 25, 50, 100, 250])
    p.add_argument("--no-speed", action="store_true", help="only the quality table")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 steps, 3-view orbits, 1 repeat, 2 objects")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.views, args.repeats, args.objects = 2, 3, 1, 2
        args.quality_steps = [2, 4]
    speed_guidance = 3.0 if args.guidance is None else args.guidance

    result: dict[str, Any] = {}
    if args.out.is_file():
        try:
            result = json.loads(args.out.read_text())
        except json.JSONDecodeError:
            result = {}
    result["machine"] = machine()
    if result["machine"]["load_average"][0] > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {result['machine']['load_average']}: timings are not trustworthy",
              file=sys.stderr)
    if not args.no_speed:
        guidance, args.guidance = args.guidance, speed_guidance
        result["speed"] = bench_speed(args)
        result["speed_quick"] = args.quick
        args.guidance = guidance
    if args.checkpoint and args.data:
        result["quality"] = bench_quality(args)
        result["quality_checkpoint"], result["quality_data"] = str(args.checkpoint), str(args.data)
        result["quality_quick"] = args.quick
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_tables(result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
