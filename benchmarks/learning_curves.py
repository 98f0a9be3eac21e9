"""Training-efficiency study: train variants on a fixed budget, evaluate each at several points, compare.

Every variant trains with `novelview train` settings (resumed from one evaluation point to the next, so a
curve costs no more than its last point) and is scored by `novelview eval` with one fixed protocol (held-out
objects, fixed condition/target views, angle bins). Results: a table per angle bin and a plot of metric vs
CPU-minutes, one line per variant.

    python benchmarks/learning_curves.py --data /work/runs/synth2k --runs /work/runs/curves \\
        --variants xunet,regression --eval-steps 500,1000,2000

Runs are resumable: a variant's finished points are read back from its run directory, so the study can be
stopped and continued across sessions. Keep --runs outside the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path("benchmarks") / "results" / "learning_curves.json"
DOC = Path("docs") / "learning-curves.md"
PLOT = Path("docs") / "learning_curves.png"
BINS = ("0-30", "30-60", "60-120", "120-180", "all")


@dataclass
class Variant:
    """One training recipe: `TrainConfig` fields (+ `diffusion` fields) that differ from the default."""

    name: str
    description: str
    train: dict[str, Any] = field(default_factory=dict)
    diffusion: dict[str, Any] = field(default_factory=dict)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("xunet", "X-UNet tiny, cross-frame attention, rays, v-prediction (the default recipe)"),
        Variant("regression", "same X-UNet trained as a deterministic L2 regressor", {"objective": "regression"}),
        Variant("xunet-concat", "X-UNet + condition view concatenated on the target's channels",
                {"model_overrides": {"cond_concat": True}}),
        Variant("xunet-plucker", "X-UNet with Plücker ray embedding", {"model_overrides": {"pose_mode": "plucker"}}),
        Variant("xunet-eps", "X-UNet, eps-prediction", diffusion={"prediction": "eps"}),
        Variant("xunet-x0", "X-UNet, x0-prediction", diffusion={"prediction": "x0"}),
        Variant("xunet-minsnr", "X-UNet, v-prediction with min-SNR-5 weighting", diffusion={"min_snr_gamma": 5.0}),
        Variant("xunet-shift", "X-UNet, cosine schedule shifted +1.4 (less noise, Hoogeboom 2023 for 32 px)",
                diffusion={"schedule_shift": 1.386}),
        Variant("xunet-lr1e-3", "X-UNet, learning rate 1e-3", {"lr": 1e-3}),
        # The DiT variants without concatenation state it: dit-tiny concatenates by default since the study.
        Variant("dit", "DiT tiny with cross-attention, v-prediction",
                {"model": "dit-tiny", "model_overrides": {"cond_concat": False}}),
        Variant("xunet-selfcond", "X-UNet with self-conditioning on the previous x0 estimate",
                diffusion={"self_condition": True}),
        Variant("dit-selfcond", "DiT tiny with self-conditioning",
                {"model": "dit-tiny", "model_overrides": {"cond_concat": False}}, diffusion={"self_condition": True}),
        Variant("dit-x0-selfcond", "DiT tiny, x0-prediction, self-conditioning",
                {"model": "dit-tiny", "model_overrides": {"cond_concat": False}},
                diffusion={"prediction": "x0", "self_condition": True}),
        Variant("dit-x0-selfcond-concat", "DiT tiny, x0, self-conditioning, condition view also concatenated "
                "on the target patches (as Zero-1-to-3)",
                {"model": "dit-tiny", "model_overrides": {"cond_concat": True}},
                diffusion={"prediction": "x0", "self_condition": True}),
        # The shipped recipe on the X-UNet, as xunet-tiny and as the wider X-UNet that reaches 60 % of the
        # CPU's matmul rate in benchmarks/xunet_width.py (half the images/s): which learns more per minute?
        Variant("xunet-x0-selfcond-concat", "X-UNet tiny, x0, self-conditioning, condition view concatenated",
                {"model_overrides": {"cond_concat": True}}, diffusion={"prediction": "x0", "self_condition": True}),
        Variant("xunet32-x0-selfcond-concat", "the same, X-UNet ch 32 x (1,2,4), attention at 8 px",
                {"model_overrides": {"cond_concat": True, "ch": 32, "ch_mult": (1, 2, 4), "attn_resolutions": (8,)}},
                diffusion={"prediction": "x0", "self_condition": True}),
        Variant("dit-regression", "the same DiT (condition view concatenated) trained as a deterministic L2 regressor",
                {"model": "dit-tiny", "objective": "regression"}),
    ]
}


def _train_to(variant: Variant, args: argparse.Namespace, run: Path, steps: int) -> float:
    """Train (or resume) ``variant`` up to ``steps``; returns the wall seconds spent in this call."""
    from novelview.checkpoint import list_checkpoints
    from novelview.diffusion import DiffusionConfig
    from novelview.train import TrainConfig, train

    settings: dict[str, Any] = dict(
        data=str(args.data), out=str(run), model="xunet-tiny", image_size=args.size, steps=steps,
        batch_size=args.batch_size, lr=args.lr, checkpoint_every=min(args.eval_steps), val_every=10**9,
        sample_every=max(args.eval_steps), seed=args.seed, progress=args.progress,
    )
    settings.update(variant.train)
    settings["diffusion"] = DiffusionConfig(**variant.diffusion)
    start = time.perf_counter()
    train(TrainConfig(**settings), resume=bool(list_checkpoints(run)))
    return time.perf_counter() - start


def _evaluate(args: argparse.Namespace, checkpoint: Path) -> dict[str, Any]:
    from novelview.evaluate import evaluate

    report = evaluate(
        checkpoint, args.data, split="test", objects=args.objects, targets_per_object=args.targets,
        steps=args.sample_steps, guidance=args.guidance, seed=0, consistency_objects=0, progress=False,
        grid_objects=0,
    )
    out: dict[str, Any] = {}
    per_bin = (report.distribution or {}).get("per_bin", {})
    for method in report.methods:
        label = "model" if method == report.primary else method
        out[label] = {
            b: {m: report.metric(m, method, b) for m in ("psnr", "ssim", "psnr_masked", "ssim_masked")} for b in BINS
        }
        for b in BINS:  # the patch-distribution distance (points recorded before it existed lack it)
            out[label][b]["swd"] = per_bin.get(b, {}).get(method, {}).get("swd")
    return out


def _load(root: Path) -> dict[str, Any]:
    path = root / RESULTS
    return json.loads(path.read_text()) if path.exists() else {"points": {}}


def _save(root: Path, results: dict[str, Any]) -> None:
    path = root / RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")


def run_study(args: argparse.Namespace) -> dict[str, Any]:
    from novelview.checkpoint import list_checkpoints

    results = _load(args.root)
    results["protocol"] = {
        "data": str(args.data), "size": args.size, "batch_size": args.batch_size, "objects": args.objects,
        "targets_per_object": args.targets, "sampler_steps": args.sample_steps, "guidance": args.guidance,
    }
    for name in args.variants:
        variant = VARIANTS[name]
        run = Path(args.runs) / name
        points = results["points"].setdefault(name, [])
        done = {p["step"] for p in points}
        minutes = max((p["minutes"] for p in points), default=0.0)
        for steps in args.eval_steps:
            if steps in done:
                continue
            minutes += _train_to(variant, args, run, steps) / 60.0
            checkpoint = [c for c in list_checkpoints(run) if int(c.name.split("_")[1]) == steps][0]
            scores = _evaluate(args, checkpoint)
            points.append({"step": steps, "minutes": minutes, "scores": scores})
            _save(args.root, results)
            model = scores["model"]
            print(f"{name:16s} step {steps:6d} {minutes:7.1f} min  PSNR all {model['all']['psnr']:.2f}  "
                  f"60-120 {model['60-120']['psnr']:.2f}  120-180 {model['120-180']['psnr']:.2f}", flush=True)
    return results


def write_report(results: dict[str, Any], root: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, bin_ in zip(axes, ("60-120", "120-180", "all")):
        copy_level = None
        for name, points in results["points"].items():
            pts = sorted(points, key=lambda p: p["step"])
            if not pts:
                continue
            ax.plot([p["minutes"] for p in pts], [p["scores"]["model"][bin_]["psnr"] for p in pts], "o-", label=name)
            copy_key = next((k for k in pts[-1]["scores"] if k.startswith("copy")), None)
            if copy_key:
                copy_level = pts[-1]["scores"][copy_key][bin_]["psnr"]
        if copy_level is not None:
            ax.axhline(copy_level, color="k", linestyle="--", label="copy input")
        ax.set_title(f"PSNR, angle {bin_}" if bin_ != "all" else "PSNR, all views")
        ax.set_xlabel("training minutes (this machine)")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    (root / PLOT).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(root / PLOT, dpi=90)
    plt.close(fig)

    lines = ["| variant | step | minutes | " + " | ".join(f"PSNR/SSIM {b}" for b in BINS) + " |",
             "|---|---|---|" + "---|" * len(BINS)]
    baselines_done = False
    for name, points in results["points"].items():
        for p in sorted(points, key=lambda p: p["step"]):
            cells = [f"{p['scores']['model'][b]['psnr']:.2f} / {p['scores']['model'][b]['ssim']:.3f}" for b in BINS]
            lines.append(f"| {name} | {p['step']} | {p['minutes']:.1f} | " + " | ".join(cells) + " |")
        if points and not baselines_done:
            last = sorted(points, key=lambda p: p["step"])[-1]["scores"]
            for method in ("copy", "white"):
                key = next((k for k in last if k.startswith(method)), None)
                if key:
                    cells = [f"{last[key][b]['psnr']:.2f} / {last[key][b]['ssim']:.3f}" for b in BINS]
                    lines.append(f"| *{key} baseline* | - | - | " + " | ".join(cells) + " |")
            baselines_done = True
    table = "\n".join(lines)
    marker = "<!-- table -->"
    doc = root / DOC
    text = doc.read_text() if doc.exists() else f"# Learning curves\n\n{marker}\n{marker}\n"
    head, _, rest = text.partition(marker)
    _, _, tail = rest.partition(marker)
    doc.write_text(f"{head}{marker}\n{table}\n{marker}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True, help="run directories (outside the repo)")
    parser.add_argument("--variants", default="xunet,regression", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--eval-steps", default="500,1000,2000")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objects", type=int, default=24, help="held-out objects evaluated")
    parser.add_argument("--targets", type=int, default=6, help="target views per object")
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--root", type=Path, default=REPO, help="where benchmarks/results and docs/ are written")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the doc and plot from the JSON")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    args.eval_steps = sorted(int(s) for s in args.eval_steps.split(","))
    results = _load(args.root) if args.report_only else run_study(args)
    write_report(results, args.root)
    print(f"wrote {args.root / RESULTS}, {args.root / DOC}, {args.root / PLOT}")


if __name__ == "__main__":
    main()
