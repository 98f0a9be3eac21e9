"""How wide must an X-UNet be to train at 60 % of the CPU's matmul rate, and what does that cost in images/s?

::

    python benchmarks/xunet_width.py             # xunet-tiny and wider variants at 32 px, batch 32, fp32
    python benchmarks/xunet_width.py --quick     # smoke test

The variants' training steps are timed round-robin, one step each per round, with the matmul reference measured
at the start of every round: this VM's speed drifts by tens of percent between minutes, and interleaving puts
every variant and the reference under the same drift. Reported per variant: parameters, GFLOPs per forward,
training images/s and GFLOP/s (median over rounds) and that rate as a fraction of the median matmul rate.
Then every convolution shape of an xunet-tiny training forward is timed alone (forward + backward): the ceiling
its convolutions set, before any normalisation, activation or copy is paid for. Results go to
``benchmarks/results/xunet_width.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from novelview.models.presets import build_from_config, count_parameters, example_inputs, preset_config

from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from models import TARGET_EFFICIENCY, matmul_gflops, timed, train_flops, train_step_fn  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "xunet_width.json"

# Overrides of the xunet-tiny preset (ch 16, ch_mult (1,2,4,4), one res block, attention at 8 and 4 px, emb 64).
VARIANTS: dict[str, dict[str, Any]] = {
    "xunet-tiny": {},
    "emb 32": dict(emb_ch=32),
    "ch 24": dict(ch=24),
    "ch 32 x (1,2,2,2)": dict(ch=32, ch_mult=(1, 2, 2, 2)),
    "ch 32 x (1,2,4), attn 8": dict(ch=32, ch_mult=(1, 2, 4), attn_resolutions=(8,)),
    "ch 32, emb 32": dict(ch=32, emb_ch=32),
    "ch 64 x (1,2), attn 16": dict(ch=64, ch_mult=(1, 2), attn_resolutions=(16,)),
}


def conv_ceiling(config: Any, batch: int, rounds: int, reference: float) -> list[dict[str, Any]]:
    """Every convolution shape one training forward of ``config`` runs, timed alone (forward + backward).

    The FLOP-weighted rate of these is what the X-UNet would reach if the rest of its step (norms, SiLU,
    FiLM's elementwise work, attention, copies) took no time at all: the ceiling its convolutions set.
    """
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_from_config(config).train()
    shapes: dict[tuple, int] = {}

    def record(module: torch.nn.Conv2d, inputs: tuple[torch.Tensor, ...]) -> None:
        key = (tuple(inputs[0].shape), module.out_channels, module.kernel_size, module.stride, module.padding)
        shapes[key] = shapes.get(key, 0) + 1

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    z_t, logsnr, kwargs = example_inputs(config, batch, device=cpu)
    model(z_t, logsnr, **kwargs)
    for hook in hooks:
        hook.remove()

    rows = []
    for (in_shape, out_ch, kernel, stride, padding), calls in shapes.items():
        x = torch.randn(in_shape, requires_grad=True)
        conv = torch.nn.Conv2d(in_shape[1], out_ch, kernel, stride=stride, padding=padding)
        out_shape = conv(x).shape
        grad = torch.randn(out_shape)
        flops = 3 * 2 * out_shape.numel() * in_shape[1] * kernel[0] * kernel[1]  # forward + 2x for backward
        seconds = timed(lambda: conv(x).backward(grad), rounds, 1, cpu)
        rate = flops / seconds / 1e9
        rows.append({"input": list(in_shape), "out_channels": out_ch, "kernel": kernel[0], "calls": calls,
                     "flops": flops * calls, "seconds": seconds * calls,
                     "gflop_s": round(rate, 1), "efficiency": round(rate / reference, 3)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="smoke test: batch 2, one round")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.quick:
        args.batch, args.rounds = 2, 1
    cpu = torch.device("cpu")
    info = machine()
    if info["load_average"][0] > 0.5:
        print(f"warning: load average {info['load_average']}: timings are not representative of an idle machine")

    steps, flops, params = {}, {}, {}
    for name, overrides in VARIANTS.items():
        config = preset_config("xunet-tiny", args.size, **overrides)
        torch.manual_seed(0)
        model = build_from_config(config).train()
        params[name] = count_parameters(model)
        steps[name] = train_step_fn(model, args.batch, cpu, bf16=False)
        flops[name] = train_flops(config, args.batch)
        for _ in range(0 if args.quick else 2):  # warm-up: allocator, oneDNN primitive caches
            steps[name]()

    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    references = []
    for _ in range(args.rounds):
        references.append(matmul_gflops(cpu, 1024, 3 if args.quick else 10))
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
    reference = statistics.median(references)

    rows = []
    for name in VARIANTS:
        step_s = statistics.median(seconds[name])
        gflops = flops[name] / step_s / 1e9
        rows.append({
            "variant": name,
            "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in VARIANTS[name].items()},
            "params": params[name],
            "gflops_forward": round(flops[name] / args.batch / 3 / 1e9, 3),  # train FLOPs = forward + 2x backward
            "train_img_s": round(args.batch / step_s, 1),
            "train_gflop_s": round(gflops, 1),
            "efficiency": round(gflops / reference, 3),
        })
    print(f"{'variant':<26} {'params(M)':>9} {'GFLOP/fwd':>9} {'train img/s':>11} {'GFLOP/s':>8} {'of matmul':>9}")
    for r in rows:
        print(f"{r['variant']:<26} {r['params'] / 1e6:>9.2f} {r['gflops_forward']:>9.2f} {r['train_img_s']:>11.1f} "
              f"{r['train_gflop_s']:>8.1f} {r['efficiency']:>9.0%}")
    print(f"fp32 matmul (1024^2, median of {args.rounds} rounds): {reference:.1f} GFLOP/s; "
          f"target >= {TARGET_EFFICIENCY:.0%}")
    convs = conv_ceiling(preset_config("xunet-tiny", args.size), args.batch, args.rounds, reference)
    total_flops, total_seconds = sum(c["flops"] for c in convs), sum(c["seconds"] for c in convs)
    ceiling = total_flops / total_seconds / 1e9 / reference
    print(f"xunet-tiny's {sum(c['calls'] for c in convs)} convolutions ({len(convs)} shapes), each timed alone: "
          f"{ceiling:.0%} of matmul FLOP-weighted (range {min(c['efficiency'] for c in convs):.0%}-"
          f"{max(c['efficiency'] for c in convs):.0%}); the convolutions' share of a step's time: "
          f"{total_seconds / statistics.median(seconds['xunet-tiny']):.0%}")
    result = {"machine": info, "image_size": args.size, "batch": args.batch, "rounds": args.rounds,
              "quick": args.quick, "matmul_gflop_s_fp32": round(reference, 1), "matmul_rounds": references,
              "rows": rows, "xunet_tiny_convolutions": convs, "xunet_tiny_conv_ceiling": round(ceiling, 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
