"""Training-efficiency study: train variants on a fixed budget, score each at several points, compare per CPU-minute.

Every variant trains with `novelview train` settings (resumed from one evaluation point to the next, so a curve
costs no more than its last point) and is scored by `novelview eval`'s protocol (held-out objects, fixed
condition/target views, angle bins; PSNR, SSIM and the patch-distribution distance SWD) on the held-out split of
the training data and, with ``--other-data``, on a dataset from another generator and renderer
(`scripts/make_generalisation_set.py`). Output: ``benchmarks/results/learning_curves.json``, the table in
``docs/learning-curves.md`` and ``docs/learning_curves.png`` (PSNR per angle bin against CPU-minutes).

    python benchmarks/learning_curves.py --data /work/runs/synth2k --other-data /work/runs/other-renderer \\
        --runs /work/runs/curves --variants dit-2d,dit-3d,pixelnerf --eval-steps 1000,2000

Budget: each point records the training wall time (``minutes``) and the process's CPU time (``cpu_minutes``), but
other work on the machine distorts both; the tables and the plot convert steps into *machine-minutes* with each
variant's training throughput measured alone (``--throughput``, on an idle machine). Runs are resumable: a variant's
finished points are read back from the JSON, so the study can be stopped and continued. Keep --runs outside the
repository.
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
METRICS = ("psnr", "ssim", "psnr_masked", "ssim_masked", "swd")
# The recipe of the shipped 2D model (x0-prediction, self-conditioning, condition view concatenated): every
# diffusion variant below starts from it and changes one thing.
RECIPE = {"prediction": "x0", "self_condition": True}
# `novelview eval`'s baseline methods, as the tables name them.
BASELINE_LABELS = {"copy-condition": "copy the input", "white-background": "blank (white)"}


@dataclass
class Variant:
    """One training recipe: `TrainConfig` fields (+ `diffusion` fields) that differ from the study's defaults."""

    name: str
    description: str
    train: dict[str, Any] = field(default_factory=dict)
    diffusion: dict[str, Any] = field(default_factory=dict)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("dit-2d", "DiT-tiny, geometry-free (the recipe of the 2D model)", {"model": "dit-tiny"}, RECIPE),
        Variant("dit-3d", "DiT-tiny reading the lifted feature image (dit-tiny-3d), denoising loss only",
                {"model": "dit-tiny-3d"}, RECIPE),
        Variant("dit-3d-aux", "dit-tiny-3d + auxiliary L2 loss on the lifter's RGB render (weight 1)",
                {"model": "dit-tiny-3d"}, {**RECIPE, "render_weight": 1.0}),
        Variant("dit-3d-aux-skip", "dit-3d-aux whose x0 estimate is the lifter's render plus the DiT's correction "
                "(render_skip)", {"model": "dit-tiny-3d", "model_overrides": {"render_skip": True}},
                {**RECIPE, "render_weight": 1.0}),
        Variant("xunet-3d-aux", "X-UNet-tiny reading the lifted feature image (xunet-tiny-3d), auxiliary loss",
                {"model": "xunet-tiny-3d"}, {**RECIPE, "render_weight": 1.0}),
        Variant("dit-3d-aux-p2", "dit-tiny-3d-aux with 2x2 patches (4x the tokens)",
                {"model": "dit-tiny-3d", "model_overrides": {"patch_size": 2}}, {**RECIPE, "render_weight": 1.0}),
        Variant("dit-3d-aux-64px", "dit-tiny-3d-aux at 64 px (feature image rendered at 32 px)",
                {"model": "dit-tiny-3d", "image_size": 64}, {**RECIPE, "render_weight": 1.0}),
        Variant("pixelnerf", "pixelNeRF regression (pixelnerf-tiny), 128 random rays per target, lr 1e-3",
                {"model": "pixelnerf-tiny", "objective": "regression", "rays_per_image": 128, "lr": 1e-3}),
        Variant("dit-regression", "DiT-tiny trained as a deterministic L2 regressor",
                {"model": "dit-tiny", "objective": "regression"}),
    ]
}


def _train_to(variant: Variant, args: argparse.Namespace, run: Path, steps: int) -> tuple[float, float]:
    """Train (or resume) ``variant`` up to ``steps``; returns (wall seconds, process CPU seconds) of this call."""
    from novelview.checkpoint import list_checkpoints
    from novelview.diffusion import DiffusionConfig
    from novelview.train import TrainConfig, train

    settings: dict[str, Any] = dict(
        data=str(args.data), out=str(run), image_size=args.size, steps=steps,
        batch_size=args.batch_size, lr=args.lr, warmup_steps=200, checkpoint_every=min(1000, *args.eval_steps),
        val_every=0,
        sample_every=max(args.eval_steps), seed=args.seed, progress=args.progress,
    )
    settings.update(variant.train)
    settings["diffusion"] = DiffusionConfig(**variant.diffusion)
    wall, cpu = time.perf_counter(), time.process_time()
    train(TrainConfig(**settings), resume=bool(list_checkpoints(run)))
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_throughput(args: argparse.Namespace, results: dict[str, Any], steps: int = 60) -> None:
    """Training images/s of each variant alone on this machine (second half of a ``steps``-step run), recorded as
    ``results["throughput"]``: the clean rate that converts a variant's steps into machine minutes."""
    import tempfile

    from novelview.diffusion import DiffusionConfig
    from novelview.train import TrainConfig, train

    rates = results.setdefault("throughput", {})
    for name in args.variants:
        variant = VARIANTS[name]
        with tempfile.TemporaryDirectory() as tmp:
            settings: dict[str, Any] = dict(
                data=str(args.data), out=str(Path(tmp) / "run"), image_size=args.size, steps=steps,
                batch_size=args.batch_size, lr=args.lr, checkpoint_every=10**9, log_every=steps // 2, val_every=0,
                sample_every=0, seed=args.seed, progress=False,
            )
            settings.update(variant.train)
            settings["diffusion"] = DiffusionConfig(**variant.diffusion)
            log = train(TrainConfig(**settings)).log_file.read_text().splitlines()
        rates[name] = [json.loads(line) for line in log if "img_per_s" in line][-1]["img_per_s"]
        print(f"{name:16s} {rates[name]:6.1f} img/s", flush=True)
    _save(args.root, results)


def _evaluate(args: argparse.Namespace, checkpoint: Path, data: Path, split: str) -> dict[str, Any]:
    from novelview.evaluate import evaluate

    report = evaluate(
        checkpoint, data, split=split, objects=args.objects, targets_per_object=args.targets,
        steps=args.sample_steps, guidance=args.guidance, seed=0, consistency_objects=0, progress=False,
        grid_objects=0,
    )
    out: dict[str, Any] = {}
    per_bin = (report.distribution or {}).get("per_bin", {})
    for method in report.methods:
        label = "model" if method == report.primary else method.split(" ")[0]
        out[label] = {b: {m: report.metric(m, method, b) for m in METRICS[:4]} for b in BINS}
        for b in BINS:
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
        "data": str(args.data), "other_data": str(args.other_data), "size": args.size, "batch_size": args.batch_size,
        "objects": args.objects, "targets_per_object": args.targets, "sampler_steps": args.sample_steps,
        "guidance": args.guidance,
    }
    for name in args.variants:
        variant, run = VARIANTS[name], Path(args.runs) / name
        points = results["points"].setdefault(name, [])
        done = {p["step"] for p in points}
        minutes = max((p["minutes"] for p in points if p.get("minutes") is not None), default=0.0)
        cpu_minutes = max((p["cpu_minutes"] for p in points if p.get("cpu_minutes") is not None), default=0.0)
        for steps in args.eval_steps:
            if steps in done:
                continue
            wall, cpu = _train_to(variant, args, run, steps)
            minutes, cpu_minutes = minutes + wall / 60, cpu_minutes + cpu / 60
            checkpoint = [c for c in list_checkpoints(run) if int(c.name.split("_")[1]) == steps][0]
            point = {"step": steps, "minutes": minutes, "cpu_minutes": cpu_minutes,
                     "scores": _evaluate(args, checkpoint, args.data, "test")}
            if args.other_data:
                point["other"] = _evaluate(args, checkpoint, args.other_data, "all")
            points.append(point)
            _save(args.root, results)
            print(_summary(name, point), flush=True)
    return results


def _summary(name: str, point: dict[str, Any]) -> str:
    model = point["scores"]["model"]
    line = (f"{name:16s} step {point['step']:6d} {point['minutes']:6.1f} min  PSNR 60-120 {model['60-120']['psnr']:.2f} "
            f"120-180 {model['120-180']['psnr']:.2f} all {model['all']['psnr']:.2f}")
    if "other" in point:
        line += f"  other renderer all {point['other']['model']['all']['psnr']:.2f}"
    return line


def _cell(scores: dict[str, Any], bin_: str) -> str:
    s = scores[bin_]
    swd = "-" if s.get("swd") is None else f"{s['swd']:.0f}"
    return f"{s['psnr']:.2f} / {s['ssim']:.3f} / {swd}"


def machine_minutes(results: dict[str, Any], name: str, step: int) -> float | None:
    """Minutes this machine needs for ``step`` steps of variant ``name`` alone (from its measured throughput)."""
    rate = results.get("throughput", {}).get(name)
    batch = results.get("protocol", {}).get("batch_size", 32)
    return None if not rate else step * batch / rate / 60


def _table(results: dict[str, Any], key: str, bins: tuple[str, ...]) -> str:
    head = "| variant | step | machine-min | " + " | ".join(f"{b}°" if b != "all" else "all" for b in bins) + " |"
    lines = [head, "|---|---|---|" + "---|" * len(bins)]
    baselines: dict[str, Any] = {}
    for name, points in results["points"].items():
        for p in sorted(points, key=lambda p: p["step"]):
            if key not in p:
                continue
            cells = [_cell(p[key]["model"], b) for b in bins]
            minutes = machine_minutes(results, name, p["step"])
            budget = "-" if minutes is None else f"{minutes:.0f}"
            lines.append(f"| {name} | {p['step']} | {budget} | " + " | ".join(cells) + " |")
            baselines.update({k: v for k, v in p[key].items() if k in BASELINE_LABELS})
    for label, scores in baselines.items():
        lines.append(f"| *{BASELINE_LABELS[label]}* | - | - | " + " | ".join(_cell(scores, b) for b in bins) + " |")
    return "\n".join(lines)


def _plot(results: dict[str, Any], root: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("scores", "60-120"), ("scores", "120-180"), ("other", "60-120"), ("other", "120-180")]
    fig, axes = plt.subplots(1, len(panels), figsize=(20, 4.2))
    for ax, (key, bin_) in zip(axes, panels):
        copy_level = None
        for name, points in results["points"].items():
            pts = sorted((p for p in points if key in p), key=lambda p: p["step"])
            minutes = [machine_minutes(results, name, p["step"]) for p in pts]
            if pts and None not in minutes:
                ax.plot(minutes, [p[key]["model"][bin_]["psnr"] for p in pts], "o-", label=name)
                copy_level = pts[-1][key].get("copy-condition", {}).get(bin_, {}).get("psnr", copy_level)
        if copy_level is not None:
            ax.axhline(copy_level, color="k", linestyle="--", label="copy the input")
        where = "held-out objects" if key == "scores" else "other renderer"
        ax.set_title(f"PSNR {bin_}°, {where}")
        ax.set_xlabel("training minutes on this machine (2 cores, alone)")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    (root / PLOT).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(root / PLOT, dpi=80)
    plt.close(fig)


def write_report(results: dict[str, Any], root: Path) -> None:
    """Rewrite the tables between the ``<!-- table -->`` markers of the doc, and the plot."""
    _plot(results, root)
    bins = ("60-120", "120-180", "all")
    tables = ("**Held-out objects** (PSNR dB / SSIM / SWD; lower SWD is better)\n\n" + _table(results, "scores", bins)
              + "\n\n**Other renderer** (PSNR dB / SSIM / SWD)\n\n" + _table(results, "other", bins))
    marker = "<!-- table -->"
    doc = root / DOC
    text = doc.read_text() if doc.exists() else f"# Learning curves\n\n{marker}\n{marker}\n"
    head, _, rest = text.partition(marker)
    _, _, tail = rest.partition(marker)
    doc.write_text(f"{head}{marker}\n{tables}\n{marker}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--other-data", type=Path, default=None, help="a dataset the models never train on")
    parser.add_argument("--runs", type=Path, required=True, help="run directories (outside the repo)")
    parser.add_argument("--variants", default="dit-2d,dit-3d", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--eval-steps", default="1000,2000")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objects", type=int, default=24, help="held-out objects evaluated")
    parser.add_argument("--targets", type=int, default=6, help="target views per object")
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--root", type=Path, default=REPO, help="where benchmarks/results and docs/ are written")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the doc and plot from the JSON")
    parser.add_argument("--throughput", action="store_true",
                        help="only measure each variant's training images/s (run it on an idle machine)")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    args.eval_steps = sorted(int(s) for s in args.eval_steps.split(","))
    if args.throughput:
        measure_throughput(args, _load(args.root))
        return
    results = _load(args.root) if args.report_only else run_study(args)
    write_report(results, args.root)
    print(f"wrote {args.root / RESULTS}, {args.root / DOC}, {args.root / PLOT}")


if __name__ == "__main__":
    main()
