"""The evaluation report: numbers in a dataclass, written as ``report.json`` and ``report.md``, plus pictures.

``EvalReport`` keeps every per-view score (so anything can be re-aggregated later) and the aggregates the
report shows: per method x angle bin means, the primary model's margins over each baseline, and the 3D
consistency scores. ``report.json`` is the machine-readable record (with config, git commit and machine);
``report.md`` is the same in tables for people.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from novelview.data.atomic import write_text_atomic
from novelview.evaluation.metrics import ANGLE_BINS, PSNR_CAP_DB, bin_label, nanmean

#: Metrics in every view record; "lpips" only when LPIPS is available. Higher is better except for LPIPS.
METRICS = ("psnr", "ssim", "psnr_masked", "ssim_masked", "lpips")
LOWER_IS_BETTER = ("lpips",)
ALL = "all"


# ---------------------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------------------


def bin_labels() -> list[str]:
    return [bin_label(lo, hi) for lo, hi in ANGLE_BINS]


def summarize(views: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """``summary[method][bin or "all"][metric] = mean`` (NaN-skipping) and ``[...]["n"] = number of views``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method in methods:
        per_bin: dict[str, dict[str, float]] = {}
        for label in [*bin_labels(), ALL]:
            rows = [v for v in views if label == ALL or v["bin"] == label]
            entry: dict[str, float] = {"n": len(rows)}
            for metric in METRICS:
                values = [r["scores"][method][metric] for r in rows if r["scores"][method].get(metric) is not None]
                if values:
                    entry[metric] = nanmean(values)
            per_bin[label] = entry
        out[method] = per_bin
    return out


def margins(
    summary: dict[str, dict[str, dict[str, float]]], primary: str, baselines: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """``margins[baseline][bin][metric]``: how much better the primary model is (positive = better; for
    LPIPS, where lower is better, baseline minus model)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for base in baselines:
        out[base] = {}
        for label, ours in summary[primary].items():
            theirs = summary[base][label]
            entry = {}
            for metric in METRICS:
                if metric in ours and metric in theirs:
                    diff = ours[metric] - theirs[metric]
                    entry[metric] = -diff if metric in LOWER_IS_BETTER else diff
            out[base][label] = entry
    return out


# ---------------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------------


def git_commit(start: Path | None = None) -> dict[str, Any]:
    """The commit of the novelview source tree (and whether it has uncommitted changes), if it is a checkout."""
    root = start or Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()
        return {"commit": sha, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str = "cpu") -> dict[str, Any]:
    """Where the numbers were produced: git commit, platform, CPU, torch version, accelerator."""
    from novelview import __version__

    env: dict[str, Any] = {
        "novelview": __version__,
        "git": git_commit(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


# ---------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------


@dataclass
class EvalReport:
    """All numbers of one evaluation run (see :func:`novelview.evaluate.evaluate`)."""

    config: dict[str, Any]
    protocol: dict[str, Any]
    methods: dict[str, dict[str, Any]]  # name -> description
    primary: str
    views: list[dict[str, Any]]  # one per (object, target view): angle, bin, scores[method][metric]
    summary: dict[str, dict[str, dict[str, float]]]
    margins: dict[str, dict[str, dict[str, float]]]
    lpips: dict[str, Any]
    consistency: dict[str, Any] | None = None
    distribution: dict[str, Any] | None = None  # sliced Wasserstein distance per bin and method (older: None)
    environment: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def baselines(self) -> list[str]:
        return [m for m in self.methods if m != self.primary]

    def metric(self, metric: str = "psnr", method: str | None = None, bin: str = ALL) -> float:
        """One aggregate, e.g. ``report.metric("psnr_masked", bin="60-120")`` (NaN when absent)."""
        return float(self.summary[method or self.primary].get(bin, {}).get(metric, math.nan))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        text = json.dumps(_json_safe(self.to_dict()), indent=2, allow_nan=False)
        write_text_atomic(path, text + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EvalReport":
        data = json.loads(Path(path).read_text())
        return cls(**data)

    def save_markdown(self, path: str | Path) -> Path:
        path = Path(path)
        write_text_atomic(path, render_markdown(self))
        return path


def _json_safe(x: Any) -> Any:
    """NaN / inf are not JSON: write them as null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _signed(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _pair_table(summary: dict[str, Any], methods: Sequence[str], a: str, b: str, labels: list[str]) -> list[str]:
    rows = []
    for m in methods:
        cells = [f"`{m}`"]
        for label in labels:
            e = summary[m].get(label, {})
            cells.append(f"{_fmt(e.get(a), 2)} / {_fmt(e.get(b), 3)}" if e.get("n") else "–")
        rows.append(cells)
    return _table(["method", *[f"{lab}°" if lab != ALL else "all" for lab in labels]], rows)


def _describe(d: dict[str, Any]) -> str:
    if d.get("kind") == "checkpoint":
        what = f"{d.get('objective')} checkpoint `{d.get('path')}`"
        if d.get("objective") != "regression":
            what += f", {d.get('sampler')} {d.get('steps')} steps, guidance {d.get('guidance')}"
        return what
    return str(d.get("what", d.get("kind", "")))


def _columns(labels: Sequence[str]) -> list[str]:
    return [f"{lab}°" if lab != ALL else "all" for lab in labels]


def _split_line(report: EvalReport) -> str:
    cfg, prot = report.config, report.protocol
    if prot.get("split_by") == "views":
        where = f"split `{prot.get('split')}` of the scene's own view splits (conditions from its train views)"
    else:
        where = f"split `{prot.get('split')}` (split seed {prot.get('split_seed')})"
    return (f"- data: `{cfg.get('data')}` (format {prot.get('format')}), {where}: {prot.get('objects_evaluated')} of "
            f"{prot.get('objects_in_split')} objects, {len(report.views)} target views, image size "
            f"{cfg.get('image_size')} px")


def _header(report: EvalReport) -> list[str]:
    cfg, prot, env = report.config, report.protocol, report.environment
    git = env.get("git", {}) or {}
    return [
        "# novelview evaluation report",
        "",
        f"- checkpoint: `{cfg.get('checkpoint')}`",
        _split_line(report),
        f"- sampling: {cfg.get('sampler')}, {cfg.get('steps')} steps, guidance {cfg.get('guidance')}; protocol seed "
        f"{prot.get('seed')}",
        f"- code: novelview {env.get('novelview')}, commit `{git.get('commit')}`"
        + (" (with uncommitted changes)" if git.get("dirty") else ""),
        f"- machine: {env.get('platform')}; {env.get('cpu')}; torch {env.get('torch')}; device {env.get('device')}"
        + (f" ({env['gpu']})" if env.get("gpu") else ""),
        "",
        "Methods: " + "; ".join(f"`{m}` ({_describe(d)})" for m, d in report.methods.items()) + ".",
        "",
    ]


def _pixel_sections(report: EvalReport, labels: list[str]) -> list[str]:
    methods = list(report.methods)
    counts = report.summary[report.primary]
    lines = [
        "Cells are **PSNR (dB) / SSIM**, means over target views; columns bin the angle between the condition and "
        f"target viewing directions. PSNR is capped at {PSNR_CAP_DB:g} dB (identical images). "
        "Masked = over the object's pixels only (see docs/evaluation.md).",
        "",
        "## Full image (as papers report)",
        "",
        *_pair_table(report.summary, methods, "psnr", "ssim", labels),
        "",
        "## Object pixels only (masked)",
        "",
        *_pair_table(report.summary, methods, "psnr_masked", "ssim_masked", labels),
        "",
        "Target views per bin: " + ", ".join(f"{lab}: {int(counts[lab]['n'])}" for lab in labels) + ".",
        "",
        "## LPIPS (AlexNet; lower is better)",
        "",
    ]
    if report.lpips.get("available"):
        rows = [[f"`{m}`", *[_fmt(report.summary[m][lab].get("lpips"), 4) for lab in labels]] for m in methods]
        return lines + _table(["method", *_columns(labels)], rows)
    return lines + [f"Not computed: {report.lpips.get('reason')}"]


def _distribution_section(report: EvalReport, labels: list[str]) -> list[str]:
    lines = ["", "## Patch distribution vs the ground truth (sliced Wasserstein distance x 1000; lower is better)", ""]
    if report.distribution is None:
        return lines + ["Not computed (a report from before this metric existed)."]
    dist = report.distribution.get("per_bin", {})
    least = report.distribution.get("min_images")
    counts = report.summary[report.primary]
    short = [lab for lab in labels if lab not in dist and counts.get(lab, {}).get("n")]
    too_few = ", ".join(f"{'all' if lab == ALL else lab + '°'} ({int(counts[lab]['n'])})" for lab in short)
    if not dist:
        more = ("The scene's split holds no more views to score." if report.protocol.get("split_by") == "views"
                else "Evaluate more objects or targets (`--objects`, `--targets-per-object`).")
        return lines + [f"Not computed: a set needs at least {least} target views, and these sets hold fewer: "
                        f"{too_few}. {more}"]
    shown = [lab for lab in labels if lab in dist]
    rows = [[f"`{m}`", *[_fmt(dist[lab].get(m, {}).get("swd"), 1) for lab in shown]] for m in report.methods]
    lines += _table(["method", *_columns(shown)], rows)
    lines += ["", "A distance between *sets* of views: it asks whether the predictions look like real views of "
              "these objects (sharp edges, flat faces, the right colours), not whether each matches its own "
              "target, so a blurry average scores badly even where its PSNR is high. Compare methods within "
              "a column: two sets of real views score further apart the fewer views they hold, so columns of "
              "different sizes are not comparable. See docs/evaluation.md."]
    if short:
        lines[-1] += (f" Left out, with fewer than the {least} views a set needs (views in brackets): {too_few}"
                      + ("; the pooled `all` column covers their views." if ALL in dist else "."))
    return lines


def _margins_section(report: EvalReport, labels: list[str]) -> list[str]:
    lines = ["", f"## Margin of `{report.primary}` over each baseline (positive = `{report.primary}` is better)", ""]
    if not report.margins:
        return lines + ["No baselines.", ""]
    for metric, digits in (("psnr", 2), ("psnr_masked", 2), ("ssim", 3), ("ssim_masked", 3), ("lpips", 4)):
        if not any(metric in report.margins[b][ALL] for b in report.margins):
            continue
        rows = [[f"`{b}`", *[_signed(report.margins[b][lab].get(metric), digits) for lab in labels]]
                for b in report.margins]
        lines += [f"**{metric}**", "", *_table(["baseline", *_columns(labels)], rows), ""]
    return lines


def _consistency_section(report: EvalReport) -> list[str]:
    lines = ["## 3D consistency (3DiM, Watson et al. 2022 sec. 5)", ""]
    cons = report.consistency
    if not (cons and cons.get("objects")):
        return lines + ["Not computed (`--consistency-objects 0`, or the objects have fewer than 3 views)."]
    f = cons["field"]
    lines += [
        f"A {f['resolution']}^3 voxel radiance field (box ±{f['bound']:g}, {f['steps']} Adam steps) is fitted to "
        f"every other view of an orbit and scored on the held-out views (PSNR / SSIM, higher = more consistent). "
        f"`generated`: views made by `{report.primary}` "
        f"({'stochastic conditioning' if cons.get('stochastic') else 'each conditioned on the input only'}); "
        "`ground truth`: the dataset's own views (the ceiling of the procedure). `orbit vs truth`: the generated "
        "views against the real ones (PSNR view by view / patch SWD x 1000 of the set): an orbit can agree with "
        "itself by being blurry, which these show.",
        "",
    ]
    rows = []
    for o in cons["objects"]:
        g, t, v = o["generated"], o["ground_truth"], o.get("orbit", {})
        rows.append([o["object"], str(len(o["views"])), f"{_fmt(g['psnr'], 2)} / {_fmt(g['ssim'], 3)}",
                     f"{_fmt(t['psnr'], 2)} / {_fmt(t['ssim'], 3)}",
                     f"{_fmt(v.get('psnr'), 2)} / {_fmt(v.get('swd'), 0)}"])
    mean = cons["mean"]
    v = mean.get("orbit", {})
    rows.append(["**mean**", "", f"**{_fmt(mean['generated']['psnr'], 2)} / {_fmt(mean['generated']['ssim'], 3)}**",
                 f"**{_fmt(mean['ground_truth']['psnr'], 2)} / {_fmt(mean['ground_truth']['ssim'], 3)}**",
                 f"**{_fmt(v.get('psnr'), 2)} / {_fmt(v.get('swd'), 0)}**"])
    return lines + _table(["object", "views", "generated", "ground truth", "orbit vs truth"], rows)


def _protocol_section(report: EvalReport) -> list[str]:
    prot = report.protocol
    rows = [[t["object_name"], str(t["cond_view"]), ", ".join(map(str, t["target_views"]))] for t in prot["tasks"]]
    lines = ["", "## Protocol", "", prot.get("rules", ""), "",
             *_table(["object", "condition view", "target views"], rows)]
    return lines + ["", "## Files", "", *[f"- `{k}`: {v}" for k, v in report.files.items()]]


def render_markdown(report: EvalReport) -> str:
    """``report.md``: the report's numbers as tables, with what each means."""
    labels = [*bin_labels(), ALL]
    sections = (_header(report), _pixel_sections(report, labels), _distribution_section(report, labels),
                _margins_section(report, labels), _consistency_section(report), _protocol_section(report))
    return "\n".join(line for section in sections for line in section) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------------------


def save_grid(
    rows: Sequence[Sequence[Tensor | Image.Image]],
    path: str | Path,
    min_cell: int = 64,
    headers: Sequence[tuple[int, str]] = (),
) -> Path:
    """Rows of images (tensors in [-1, 1] or PIL) as one PNG, cells upscaled to at least ``min_cell`` px.

    ``headers``: ``(column, text)`` labels drawn above the first row, starting at that column.
    """
    from PIL import ImageDraw

    from novelview.images import enlarge, make_grid, save_image, to_pil

    cells = [[enlarge(im if isinstance(im, Image.Image) else to_pil(im), min_side=min_cell) for im in row]
             for row in rows]
    grid = make_grid(cells)
    if headers:
        padding = 2  # make_grid's default
        cell_w = max(im.width for row in cells for im in row)
        canvas = Image.new("RGB", (grid.width, grid.height + 14), (255, 255, 255))
        canvas.paste(grid, (0, 14))
        draw = ImageDraw.Draw(canvas)
        for column, text in headers:
            draw.text((padding + column * (cell_w + padding), 2), text, fill=(0, 0, 0))
        grid = canvas
    return save_image(grid, path)


__all__ = [
    "ALL",
    "METRICS",
    "EvalReport",
    "bin_labels",
    "environment",
    "git_commit",
    "margins",
    "render_markdown",
    "save_grid",
    "summarize",
]
