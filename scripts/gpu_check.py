"""The Python steps of scripts/gpu_check.sh (which runs them, each under its own time limit).

::

    python scripts/gpu_check.py env    --device cuda --out env.json
    python scripts/gpu_check.py models --device cuda --presets xunet-small dit-small --size 64 --out models.json
    python scripts/gpu_check.py grid   --device cuda --checkpoint RUN --data DATA --out grid.png --json grid.json
    python scripts/gpu_check.py report --work WORK --out OUT_DIR --device cuda

``models`` times one bf16 training step (forward, backward, the trainer's fused AdamW; benchmarks/models.py's
``train_step_fn`` and ``timed``) of each preset, eager and under ``torch.compile``, with the attention of
``scaled_dot_product_attention`` forced to the flash kernel or to the plain math kernel.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAX_OUTPUT_BYTES = 20 * 2**20
STEPS = ("env", "tests", "models", "data", "train", "grid")
# (how the model runs, which attention kernel); flash is the fused kernel, math the reference implementation.
VARIANTS = (("eager", "flash"), ("eager", "math"), ("compiled", "flash"))


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------------
# env
# ---------------------------------------------------------------------------------------------------------


def _command(*args: str) -> str | None:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def environment(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "requested_device": device,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "git_commit": _command("git", "rev-parse", "HEAD"),
        "git_dirty": bool(_command("git", "status", "--porcelain")),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name, gpu_count=torch.cuda.device_count(), gpu_memory_gb=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
            bf16_supported=torch.cuda.is_bf16_supported(), flash_sdp_enabled=torch.backends.cuda.flash_sdp_enabled(),
            nvidia_smi=_command("nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                "--format=csv,noheader"),
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: no CUDA device here (torch {torch.__version__}, CUDA build "
                         f"{torch.version.cuda})")
    return info


# ---------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------


def time_variant(preset: str, size: int, batch: int, iters: int, warmup: int, device: Any, compiled: bool,
                 attention: str, backend: str) -> dict[str, Any]:
    """One preset's bf16 training step under one (execution, attention kernel) variant."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from models import timed, train_step_fn  # benchmarks/models.py

    from novelview.models.presets import build_from_config, preset_config

    torch.manual_seed(0)
    model = build_from_config(preset_config(preset, size)).to(device)
    if compiled:
        model = torch.compile(model, backend=backend)
    kernel = SDPBackend.FLASH_ATTENTION if attention == "flash" else SDPBackend.MATH
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with sdpa_kernel([kernel]):
        step = train_step_fn(model.train(), batch, device, bf16=True)
        start = time.perf_counter()
        step()  # the first call compiles
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        first = time.perf_counter() - start
        seconds = timed(step, iters, max(0, warmup - 1), device)
    row = {"preset": preset, "image_size": size, "precision": "bf16", "execution": "compiled" if compiled else "eager",
           "attention": attention, "batch": batch, "first_step_s": round(first, 3), "step_s": round(seconds, 5),
           "train_img_s": round(batch / seconds, 1)}
    if compiled:
        row["compile_backend"] = backend
    if device.type == "cuda":
        row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def models(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = torch.device(args.device)
    rows = []
    for preset in args.presets:
        for execution, attention in VARIANTS:
            compiled = execution == "compiled"
            if compiled and args.compile_presets and preset not in args.compile_presets:
                continue
            try:
                row = time_variant(preset, args.size, args.batch, args.iters, args.warmup, device, compiled,
                                   attention, args.compile_backend)
            except Exception as err:  # noqa: BLE001 -- a kernel or compiler failure is a finding, not a crash
                row = {"preset": preset, "execution": execution, "attention": attention,
                       "error": f"{type(err).__name__}: {str(err)[:500]}"}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {"device": str(device), "iters": args.iters, "warmup": args.warmup, "rows": rows}


# ---------------------------------------------------------------------------------------------------------
# grid
# ---------------------------------------------------------------------------------------------------------


def grid(args: argparse.Namespace) -> dict[str, Any]:
    """Held-out objects: input | generated views at three ground-truth cameras | those ground-truth views."""
    import numpy as np

    from novelview.data.formats import load_view
    from novelview.data.views import MultiViewDataset
    from novelview.images import make_grid, to_pil
    from novelview.pipeline import Pipeline
    from novelview.sampling import SamplingSettings

    pipe = Pipeline.from_checkpoint(args.checkpoint, device=args.device)
    scenes = MultiViewDataset(args.data, size=pipe.image_size, split="test").scenes[: args.objects]
    rows, psnrs = [], []
    start = time.perf_counter()
    for scene in scenes:
        targets = list(range(1, min(4, scene.num_views)))
        generated = pipe.synthesize(str(scene.image_paths[0]), target_poses=[scene.poses[i] for i in targets],
                                    input_pose=scene.poses[0], settings=SamplingSettings(steps=args.steps, seed=0))
        truth = [to_pil(load_view(scene, i, pipe.image_size)[0]) for i in targets]
        for g, t in zip(generated, truth):
            mse = np.mean((np.asarray(g, dtype=np.float64) - np.asarray(t, dtype=np.float64)) ** 2)
            psnrs.append(float(10 * math.log10(255.0**2 / max(mse, 1e-10))))
        rows.append([to_pil(load_view(scene, 0, pipe.image_size)[0]), *generated, *truth])
    seconds = time.perf_counter() - start
    make_grid(rows).save(args.out)
    return {"objects": len(rows), "views": len(psnrs), "sampler_steps": args.steps, "seconds": round(seconds, 2),
            "psnr_mean": round(sum(psnrs) / len(psnrs), 2) if psnrs else None, "autocast": pipe.autocast,
            "layout": "per row: input | generated at 3 ground-truth cameras | those ground-truth views"}


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tests(path: Path) -> dict[str, Any] | None:
    try:
        suite = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return None
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {**counts, "failed": failed, "seconds": float(suite.get("time", 0))}


def _training(run: Path) -> dict[str, Any] | None:
    log = run / "log.jsonl"
    if not log.is_file():
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss" in r]
    rates = sorted(r["img_per_s"] for r in steps[1:] if "img_per_s" in r)  # the first includes start-up
    config = _json(run / "train_config.json") or {}
    return {"steps": steps[-1]["step"] if steps else 0, "first_loss": steps[0]["loss"] if steps else None,
            "last_loss": steps[-1]["loss"] if steps else None,
            "median_img_per_s": rates[len(rates) // 2] if rates else None,
            "val_loss": [r["val_loss"] for r in records if "val_loss" in r][-3:],
            "checkpoints": sorted(p.name for p in (run / "checkpoints").glob("step_*")),
            "settings": {k: config.get(k) for k in ("model", "image_size", "batch_size", "precision", "lr")}}


def report(args: argparse.Namespace) -> int:
    work, out = Path(args.work), Path(args.out)
    steps = {}
    for line in (work / "steps.tsv").read_text().splitlines() if (work / "steps.tsv").is_file() else []:
        name, rc, seconds = line.split("\t")
        steps[name] = {"exit_code": int(rc), "seconds": float(seconds)}
    training = _training(work / "run")
    train_step = steps.get("train")
    if train_step and train_step["exit_code"] == 124 and training and training["checkpoints"]:
        train_step["stopped_at_time_limit"] = True  # the run is meant to end that way
    for name in STEPS:
        step = steps.setdefault(name, {"exit_code": None})
        step["ok"] = step["exit_code"] == 0 or bool(step.get("stopped_at_time_limit"))
    models_result = _json(work / "models.json")
    if models_result and any("error" in row for row in models_result["rows"]):
        steps["models"]["ok"] = False
    if (work / "grid.png").is_file():
        shutil.copyfile(work / "grid.png", out / "gpu_check.png")
    result = {
        "device": args.device, "quick": bool(args.quick), "ok": all(s["ok"] for s in steps.values()),
        "steps": steps, "environment": _json(work / "env.json"), "tests": _tests(work / "tests.xml"),
        "models": models_result, "training": training, "samples": _json(work / "grid.json"),
        "png": "gpu_check.png" if (out / "gpu_check.png").is_file() else None,
    }
    _write(out / "gpu_check.json", result)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    if size > MAX_OUTPUT_BYTES:
        result["ok"] = False
        result["output_bytes_over_limit"] = size
        _write(out / "gpu_check.json", result)
    for name in STEPS:
        s = steps[name]
        note = " (stopped at its time limit, as planned)" if s.get("stopped_at_time_limit") else ""
        print(f"{name:7s} {'ok' if s['ok'] else 'FAILED':6s} exit {s['exit_code']} {s.get('seconds', 0):7.1f} s{note}")
    print(f"{'ok' if result['ok'] else 'FAILED'}: {out / 'gpu_check.json'}, {out / 'gpu_check.png'} ({size / 1e6:.2f} MB)")
    return 0 if result["ok"] else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env")
    env.add_argument("--device", default="cuda")
    env.add_argument("--out", type=Path, required=True)
    m = sub.add_parser("models")
    m.add_argument("--device", default="cuda")
    m.add_argument("--presets", nargs="+", default=["xunet-small", "dit-small"])
    m.add_argument("--compile-presets", nargs="*", default=None, help="compile only these (default: all)")
    m.add_argument("--compile-backend", default="inductor", help="inductor, or aot_eager (tracing only: fast)")
    m.add_argument("--size", type=int, default=64)
    m.add_argument("--batch", type=int, default=32)
    m.add_argument("--iters", type=int, default=10)
    m.add_argument("--warmup", type=int, default=3)
    m.add_argument("--out", type=Path, required=True)
    g = sub.add_parser("grid")
    g.add_argument("--device", default="cuda")
    g.add_argument("--checkpoint", type=Path, required=True)
    g.add_argument("--data", type=Path, required=True)
    g.add_argument("--objects", type=int, default=4)
    g.add_argument("--steps", type=int, default=25)
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--json", type=Path, required=True)
    r = sub.add_parser("report")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--device", default="cuda")
    r.add_argument("--quick", type=int, default=0)
    args = p.parse_args()
    if args.command == "env":
        _write(args.out, environment(args.device))
    elif args.command == "models":
        _write(args.out, models(args))
    elif args.command == "grid":
        _write(args.json, grid(args))
    else:
        sys.exit(report(args))


if __name__ == "__main__":
    main()
