"""Backbone cost and speed: parameters, GFLOPs per forward, training and inference throughput.

::

    python benchmarks/models.py                 # every preset at 32 and 64 px; timings for the tiny ones
    python benchmarks/models.py --quick         # smoke test: tiny iteration counts, seconds in total
    python benchmarks/models.py --time-large    # also time the large presets (GPU)
    python benchmarks/models.py --presets xunet-tiny --sizes 32 --device cuda

Per preset and image size: parameters, GFLOPs of one forward (batch 1, counted with ``FlopCounterMode`` on
the meta device), training images/s (forward + backward + the trainer's fused AdamW, fp32 and bf16 autocast), inference
images/s at batch 1 and 8. The machine's fp32 matmul GFLOP/s is measured first, and again just before and
after every timed fp32 training run; the run's achieved GFLOP/s (FLOPs of forward + backward, counted, divided
by the step time) is reported as a fraction of the mean of those two. Target for the tiny presets on the CPU:
>= 60 %.

Large presets get parameters and GFLOPs only unless ``--time-large``. Time on an otherwise idle machine:
the recorded ``load_average`` says whether it was (a warning is printed when it was not). Results go to
``benchmarks/results/models.json`` and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from novelview.models.presets import (
    PRESETS,
    build_from_config,
    count_parameters,
    example_inputs,
    forward_flops,
    preset_config,
)
from novelview.train import make_optimizer

from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

RESULTS = Path(__file__).resolve().parent / "results" / "models.json"
TINY = ("xunet-tiny", "dit-tiny")
TARGET_EFFICIENCY = 0.60


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], iters: int, warmup: int, device: torch.device) -> float:
    """Median seconds per call after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(device: torch.device, n: int, iters: int) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    seconds = timed(lambda: a @ b, iters, warmup=2, device=device)
    return 2 * n**3 / seconds / 1e9


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def reference(device: torch.device, args: argparse.Namespace) -> float:
    """The fp32 matmul GFLOP/s the training efficiency is a fraction of."""
    return matmul_gflops(device, 4096 if device.type == "cuda" else 1024, 3 if args.quick else 20)


def train_step_fn(model: torch.nn.Module, batch: int, device: torch.device, bf16: bool) -> Callable[[], None]:
    """One training step on fixed random inputs: MSE to a random target, backward, AdamW."""
    gen = torch.Generator().manual_seed(0)
    z_t, logsnr, kwargs = example_inputs(model.config, batch, device=device, generator=gen)
    kwargs["drop_cond"] = (torch.rand(batch, generator=gen) < 0.1).to(device)
    target = torch.randn(batch, model.config.out_channels, *z_t.shape[2:], generator=gen).to(device)
    optimizer = make_optimizer(model.parameters(), lr=1e-4, weight_decay=0.0)  # as the trainer steps it

    def step() -> None:
        with _autocast(device, bf16):
            out = model(z_t, logsnr, **kwargs)
        loss = (out.float() - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def train_flops(config: Any, batch: int) -> int:
    """FLOPs of forward + backward at ``batch`` (meta device: counted, not run)."""
    with torch.device("meta"):
        model = build_from_config(config)
    z_t, logsnr, kwargs = example_inputs(config, batch, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(z_t, logsnr, **kwargs).pow(2).mean().backward()
    return counter.get_total_flops()


def bench(preset: str, size: int, args: argparse.Namespace, device: torch.device, peak: float | None) -> dict:
    config = preset_config(preset, size)
    with torch.device("meta"):
        meta_model = build_from_config(config)
    row: dict[str, Any] = {
        "preset": preset,
        "image_size": size,
        "params": count_parameters(meta_model),
        "gflops_forward": round(forward_flops(meta_model) / 1e9, 4),
    }
    if preset not in TINY and not args.time_large:
        return row

    torch.manual_seed(0)
    model = build_from_config(config).to(device)
    for bf16 in args.precisions:
        name = "bf16" if bf16 else "fp32"
        before = reference(device, args) if peak and not bf16 else None
        seconds = timed(train_step_fn(model.train(), args.batch, device, bf16), args.iters, args.warmup, device)
        row[f"train_img_s_{name}"] = round(args.batch / seconds, 2)
        row[f"train_step_s_{name}"] = round(seconds, 4)
        gflops = train_flops(config, args.batch) / seconds / 1e9
        row[f"train_gflop_s_{name}"] = round(gflops, 1)
        if before is not None:
            # This VM's speed drifts by tens of percent between minutes: compare with the matmul rate measured
            # right around this run, not with the one from the start of the benchmark.
            around = (before + reference(device, args)) / 2
            row["matmul_gflop_s_around"] = round(around, 1)
            row["train_efficiency_fp32"] = round(gflops / around, 3)
    model.eval()
    for batch in (1, 8):
        z_t, logsnr, kwargs = example_inputs(config, batch, device=device)

        @torch.inference_mode()
        def infer() -> None:
            model(z_t, logsnr, **kwargs)

        row[f"infer_img_s_b{batch}"] = round(batch / timed(infer, args.iters, args.warmup, device), 2)
    return row


def print_table(rows: list[dict], peak: float | None) -> None:
    cols = [
        ("preset", "preset", "{:<12}"),
        ("image_size", "px", "{:>4}"),
        ("params", "params(M)", "{:>9.2f}"),
        ("gflops_forward", "GFLOP/fwd", "{:>9.2f}"),
        ("train_img_s_fp32", "train img/s", "{:>11.1f}"),
        ("train_img_s_bf16", "bf16 img/s", "{:>10.1f}"),
        ("infer_img_s_b1", "infer b1", "{:>8.1f}"),
        ("infer_img_s_b8", "infer b8", "{:>8.1f}"),
        ("train_efficiency_fp32", "of matmul", "{:>9.0%}"),
    ]
    print(" ".join(f"{title:<12}" if key == "preset" else f"{title:>{len(fmt.format(0))}}" for key, title, fmt in cols))
    for r in rows:
        cells = []
        for key, _, fmt in cols:
            value = r.get(key)
            if key == "params":
                value = value / 1e6
            width = len(fmt.format(0)) if key != "preset" else 12
            cells.append(fmt.format(value) if value is not None else f"{'-':>{width}}")
        print(" ".join(cells))
    if peak:
        print(f"fp32 matmul: {peak:.1f} GFLOP/s at the start; 'of matmul' is against the rate measured around each"
              f" run; target for the tiny presets: >= {TARGET_EFFICIENCY:.0%}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    p.add_argument("--batch", type=int, default=32, help="training batch size")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-bf16", action="store_true", help="time fp32 only")
    p.add_argument("--time-large", action="store_true", help="also time the large presets")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 iteration, no warm-up, batch 4")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.iters, args.warmup, args.batch = 1, 0, 4
    args.precisions = [False] if args.no_bf16 else [False, True]
    device = torch.device(args.device)

    info = machine()
    if device.type == "cpu" and info["load_average"][0] > 0.5:
        print(f"warning: load average {info['load_average']}: timings are not representative of an idle machine")
    peak = reference(device, args)
    rows = []
    for preset in args.presets:
        for size in args.sizes:
            row = bench(preset, size, args, device, peak)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print_table(rows, peak)
    result = {
        "machine": info,
        "device": str(device),
        "matmul_gflop_s_fp32": round(peak, 1),
        "target_efficiency": TARGET_EFFICIENCY,
        "train_batch": args.batch,
        "iters": args.iters,
        "quick": args.quick,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
