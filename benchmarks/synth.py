"""Throughput of the procedural dataset generator (`novelview data synth`).

Measures, per image size, views per second for rendering alone (the analytic ray caster) and end to end
(rendering + PNG/depth/mask/pose files, written atomically). Target: >= 200 views/s end to end at 64x64 on
a 2-core machine. Prints a table and writes benchmarks/results/synth.json.

    python benchmarks/synth.py [--objects 12] [--views 50] [--sizes 32 64 128] [--repeats 3]

Timings are only meaningful on an otherwise idle machine: the load average before and after is recorded, and
a warning is printed when it suggests other jobs were competing for the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from novelview.data.synthetic import SynthConfig, generate, object_rngs, random_object, render

RESULTS = Path(__file__).resolve().parent / "results" / "synth.json"
TARGET_VIEWS_PER_S = 200.0


def bench_render(cfg: SynthConfig) -> float:
    """Views/s of the ray caster alone, single-threaded (objects and cameras made outside the timed region)."""
    scenes = []
    for i in range(cfg.objects):
        shape_rng, cam_rng = object_rngs(cfg.seed, i)
        scenes.append((random_object(shape_rng, cfg.max_primitives), cfg.cameras.poses(cam_rng, cfg.views)))
    k = cfg.cameras.intrinsics(cfg.size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `generate` runs it (the other core encodes and writes files)
    try:
        render(scenes[0][0], scenes[0][1][:2], k, cfg.size)  # warm-up
        start = time.perf_counter()
        for obj, poses in scenes:
            render(obj, poses, k, cfg.size)
        return cfg.objects * cfg.views / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def bench_generate(cfg: SynthConfig) -> tuple[float, float]:
    """Views/s of the whole command (render + encode + write + atomic rename): per wall-clock second and per
    CPU second of this process (all threads). The second is less sensitive to other jobs on the machine:
    on an idle machine with >= 1 core, wall-clock throughput is at least the CPU-time throughput."""
    tmp = Path(tempfile.mkdtemp(prefix="nv-bench-synth-"))
    try:
        start, cpu = time.perf_counter(), time.process_time()
        generate(tmp / "ds", cfg, progress=False)
        n = cfg.objects * cfg.views
        return n / (time.perf_counter() - start), n / (time.process_time() - cpu)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=12)
    parser.add_argument("--views", type=int, default=50)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--repeats", type=int, default=3, help="best of N")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    rows = []
    for size in args.sizes:
        cfg = SynthConfig(objects=args.objects, views=args.views, size=size, seed=0)
        render_vps = max(bench_render(cfg) for _ in range(args.repeats))
        runs = [bench_generate(cfg) for _ in range(args.repeats)]
        rows.append({"size": size, "render_views_per_s": round(render_vps, 1),
                     "end_to_end_views_per_s": round(max(r[0] for r in runs), 1),
                     "end_to_end_views_per_cpu_s": round(max(r[1] for r in runs), 1)})
    load_after = os.getloadavg()[0]

    print(f"{'size':>6} {'render views/s':>15} {'end-to-end views/s':>19} {'views per CPU-s':>16}")
    for r in rows:
        print(f"{r['size']:>6} {r['render_views_per_s']:>15.1f} {r['end_to_end_views_per_s']:>19.1f} "
              f"{r['end_to_end_views_per_cpu_s']:>16.1f}")
    at64 = next((r for r in rows if r["size"] == 64), None)
    cores = os.cpu_count() or 1
    busy = max(load_before, load_after) > 0.5 * cores
    if at64 is not None:
        verdict = "meets" if at64["end_to_end_views_per_s"] >= TARGET_VIEWS_PER_S else "MISSES"
        print(f"64x64 end to end {verdict} the {TARGET_VIEWS_PER_S:.0f} views/s target")
    if busy:
        print(f"warning: load average {load_before:.2f} -> {load_after:.2f} on {cores} cores; other jobs were "
              "running, so these numbers understate the generator's speed. Re-run on a quiet machine.")

    result = {
        "benchmark": "synth",
        "objects": args.objects,
        "views": args.views,
        "repeats": args.repeats,
        "rows": rows,
        "target_views_per_s_at_64": TARGET_VIEWS_PER_S,
        "machine": {"cpus": cores, "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "load_average": {"before": round(load_before, 2), "after": round(load_after, 2), "busy": busy},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
