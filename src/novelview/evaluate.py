"""`novelview eval`: score a checkpoint and baselines on held-out objects of any dataset, write a report.

    from novelview.evaluate import evaluate
    report = evaluate("runs/x/checkpoints/step_0010000", "data/synth", split="test", objects=20, out="eval/x")
    report.metric("psnr_masked", bin="60-120")

The pieces live in :mod:`novelview.evaluation`: ``protocol`` (which views), ``methods`` (model and baselines),
``metrics`` (PSNR / SSIM / masks / angle bins), ``lpips``, ``consistency`` (3D consistency score) and
``report`` (EvalReport, report.json / report.md / pictures). This module only wires them together.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from novelview import cameras
from novelview.checkpoint import resolve_checkpoint
from novelview.errors import ConfigError
from novelview.evaluation import metrics
from novelview.evaluation import protocol as proto
from novelview.evaluation import report as rep
from novelview.evaluation.consistency import FieldConfig, consistency_score
from novelview.evaluation.methods import CheckpointMethod, CopyCondition, Method, SampleMean, WhiteBackground
from novelview.images import enlarge, save_animation, to_pil
from novelview.sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, SamplingSettings, View

PRIMARY = "model"


@dataclass
class EvalConfig:
    """Settings of one evaluation run (all recorded in ``report.json``)."""

    checkpoint: str | None  # None: the shipped default
    data: str
    split: str = "test"
    objects: int | None = None  # None: every object of the split
    targets_per_object: int | None = 8  # None: every view but the condition
    cond_view: int | None = None  # None: drawn per object from the seed; else this view of every object
    sampler: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    guidance: float | None = None  # None: the checkpoint's default (Pipeline.default_guidance)
    strength: float = 1.0  # SamplingSettings.strength (3D-aware models: start from the lifter's render)
    samples: int = 1  # >1: also score the mean of this many unguided samples (the model's posterior-mean estimate)
    seed: int = 0
    baseline_checkpoints: list[str] = field(default_factory=list)
    lpips_weights: str | None = None
    consistency_objects: int = 2
    orbit_views: int = 24
    stochastic: bool = True  # 3DiM stochastic conditioning for the consistency orbit
    pool: bool = False  # ... and a 3D-aware model's lifter pooling the views so far (SamplingSettings.pool)
    consistency_field: FieldConfig = field(default_factory=FieldConfig)
    orbits: int = 0  # orbit GIFs for this many objects
    orbit_frames: int = 24
    grid_objects: int = 8
    grid_targets: int = 4
    mask_dilation: int = metrics.MASK_DILATION
    split_seed: int | None = None  # None: as the checkpoint was trained (config.json training.split_seed, else 0)
    val_fraction: float | None = None
    test_fraction: float | None = None
    device: str = "cpu"
    batch_size: int = 16
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.consistency_field, dict):
            self.consistency_field = FieldConfig(**self.consistency_field)
        checks = [
            (self.consistency_objects >= 0, "--consistency-objects must be >= 0"),
            (self.orbit_views >= 2, "--orbit-views must be at least 2"),
            (self.orbits >= 0, "--orbits must be >= 0"),
            (self.orbit_frames >= 2, "orbit GIFs need at least 2 frames"),
            (self.grid_objects >= 0 and self.grid_targets >= 1, "grid sizes must be positive"),
            (self.mask_dilation >= 0, "mask dilation must be >= 0"),
            (self.seed >= 0, "--seed must be >= 0"),
            (self.samples >= 1, "--samples must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def task_generator(seed: int, name: str, salt: int = 0, group: int = 0) -> torch.Generator:
    """Per-task randomness: the same object (and task ``group`` of it) gets the same noise whatever else the run
    evaluates, and every method gets the same noise for it (common random numbers)."""
    entropy = [int(seed), zlib.crc32(name.encode("utf-8")), salt, *([group] if group else [])]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def _method_name(path: Path, taken: set[str]) -> str:
    base = f"checkpoint:{path.name}"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


def _lpips(cfg: EvalConfig) -> tuple[Any, dict[str, Any]]:
    if cfg.lpips_weights is None:
        return None, {
            "available": False,
            "reason": "no --lpips-weights given; LPIPS needs ImageNet AlexNet weights (torchvision state-dict "
            "format), which novelview neither ships nor downloads",
        }
    from novelview.evaluation.lpips import heads_path, load_lpips

    net = load_lpips(cfg.lpips_weights).to(cfg.device)
    info = {"available": True, "reason": None, "backbone": str(cfg.lpips_weights), "heads": str(heads_path()),
            "net": "alex", "version": "0.1"}
    return (lambda a, b: net(a.to(cfg.device), b.to(cfg.device)).cpu()), info


class _Views:
    """The split's views at the model's size (cached by the dataset), their masks and cameras."""

    def __init__(self, dataset: Any) -> None:
        self.ds = dataset

    def images(self, obj: int, views: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        """``(images [N,3,S,S], poses [N,4,4], K [N,3,3])``."""
        loaded = [self.ds.view(obj, v) for v in views]
        poses = self.ds.scenes[obj].poses[views].float()
        return torch.stack([im for im, _ in loaded]), poses, torch.stack([k for _, k in loaded]).float()

    def mask(self, obj: int, views: list[int], targets: Tensor, dilation: int) -> tuple[Tensor, str]:
        from novelview.data.formats import load_view_mask

        scene = self.ds.scenes[obj]
        if scene.mask_paths is None:
            return metrics.object_mask(targets, None, dilation), "non-white ground-truth pixels"
        masks = torch.stack([load_view_mask(scene, v, self.ds.size, self.ds.crop) for v in views])
        return metrics.object_mask(targets, masks, dilation), "dataset mask"


def evaluate(
    checkpoint: str | Path | None, data: str | Path, *, out: str | Path | None = None, **settings: Any
) -> rep.EvalReport:
    """Evaluate ``checkpoint`` on ``data`` (any supported format); ``settings`` are :class:`EvalConfig` fields.

    With ``out`` the report directory gets ``report.json``, ``report.md``, ``grid.png`` (rows: condition | ground
    truth targets | generated targets), ``consistency.png`` and ``orbits/*.gif`` when asked for.
    """
    cfg = EvalConfig(checkpoint=None if checkpoint is None else str(checkpoint), data=str(data), **settings)
    return run(cfg, out)


_RULES = {
    "objects": (
        "Objects: the dataset's object-level split (as in training; objects sorted by name, permuted by the split "
        "seed); `--objects N` keeps N chosen by the protocol seed. Per object, a generator seeded by "
        "(seed, crc32(name)) picks the condition view (unless `--cond-view` fixes it), then K distinct target views "
        "among the others. Every method sees the same tasks and, for sampled methods, the same noise per object. "
        "Angle = angle between the condition and target cameras' viewing directions."
    ),
    "views": (
        "Views: the scene's own split, as its files name it (as in training). Every view of the split is a target; "
        "a generator seeded by (seed, crc32(name)) shuffles them into groups of K, and each group is generated from "
        "a condition view drawn from the scene's train views (unless `--cond-view` fixes it), so no evaluated view "
        "was trained on or used as a condition. Every method sees the same tasks and, for sampled methods, the same "
        "noise per task. Angle = angle between the condition and target cameras' viewing directions."
    ),
}


def run(cfg: EvalConfig, out: str | Path | None = None) -> rep.EvalReport:
    """Evaluate per ``cfg``; see :func:`evaluate`."""
    from tqdm.auto import tqdm

    model, methods = _methods(cfg)
    dataset, split = split_dataset(cfg, model)
    pools = ([dataset.views_of(i) for i in range(len(dataset.scenes))] if dataset.split_by == "views" else None)
    tasks = proto.make_protocol(dataset.scenes, cfg.objects, cfg.targets_per_object, cfg.seed, cfg.cond_view, pools)
    views = _Views(dataset)
    lpips_fn, lpips_info = _lpips(cfg)
    scored = _Scored()
    for task in tqdm(tasks, desc="eval", unit="object", disable=not cfg.progress):
        _score_task(cfg, methods, task, views, lpips_fn, scored)

    names = [m.name for m in methods]
    summary = rep.summarize(scored.records, names)
    consistency = _consistency(cfg, model, dataset, tasks, views) if cfg.consistency_objects else None
    report = rep.EvalReport(
        config={**cfg.to_dict(), "checkpoint": str(model.path), "image_size": model.image_size,
                "guidance": model.guidance if not model.is_regression else None},
        protocol=_protocol(cfg, dataset, split, tasks, scored.mask_sources),
        methods={m.name: m.describe() for m in methods},
        primary=PRIMARY,
        views=scored.records,
        summary=summary,
        margins=rep.margins(summary, PRIMARY, names[1:]),
        lpips=lpips_info,
        distribution=_distribution(scored.pooled, names),
        consistency=consistency[0] if consistency else None,
        environment=rep.environment(cfg.device),
    )
    if out is not None:
        _write(report, Path(out), scored.grid_rows, consistency[1] if consistency else [], cfg, model, dataset, tasks,
               views)
    return report


def _methods(cfg: EvalConfig) -> tuple[CheckpointMethod, list[Method]]:
    """The model under test, then the baselines, all sampled per one :class:`SamplingSettings`."""
    settings = SamplingSettings(sampler=cfg.sampler, steps=cfg.steps, guidance=cfg.guidance, seed=cfg.seed,
                                batch=cfg.batch_size, pool=cfg.pool, strength=cfg.strength)
    model = CheckpointMethod(PRIMARY, resolve_checkpoint(cfg.checkpoint), settings, cfg.device)
    size = model.image_size
    methods: list[Method] = [model, CopyCondition(), WhiteBackground()]
    if cfg.samples > 1:
        methods.append(SampleMean(model, cfg.samples))
    for path in cfg.baseline_checkpoints:
        resolved = resolve_checkpoint(path)
        baseline = CheckpointMethod(_method_name(resolved, {m.name for m in methods}), resolved, settings, cfg.device)
        if not baseline.lifts:  # only a 3D-aware model has a render to start from; the others start from noise
            baseline.settings = replace(settings, strength=1.0)
        if baseline.image_size != size:
            raise ConfigError(f"{path}: baseline works at {baseline.image_size} px but the model at {size} px; "
                              "compare checkpoints of the same image size")
        methods.append(baseline)
    return model, methods


def split_dataset(cfg: EvalConfig, model: CheckpointMethod) -> tuple[Any, dict[str, Any]]:
    """The dataset's objects split exactly as training split them (so "test" objects were never trained on), and
    the split's ``split_seed`` / ``val_fraction`` / ``test_fraction``."""
    from novelview.data.views import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, MultiViewDataset

    training = model.pipe.config.training or {}

    def setting(value: Any, key: str, default: Any) -> Any:
        return value if value is not None else training.get(key, default)

    split = {
        "split_seed": int(setting(cfg.split_seed, "split_seed", 0)),
        "val_fraction": float(setting(cfg.val_fraction, "val_fraction", DEFAULT_VAL_FRACTION)),
        "test_fraction": float(setting(cfg.test_fraction, "test_fraction", DEFAULT_TEST_FRACTION)),
    }
    dataset = MultiViewDataset(cfg.data, size=model.image_size, split=cfg.split, **split)
    if not dataset.scenes:
        raise ConfigError(_empty_split(cfg, dataset))
    return dataset, split


def _empty_split(cfg: EvalConfig, dataset: Any) -> str:
    """Why ``cfg.split`` of ``dataset`` holds nothing to evaluate, and what to do instead."""
    from novelview.data.views import describe_view_splits

    if dataset.split_by == "views":
        scene = dataset.all_scenes[0]
        return (f"{cfg.data}: scene {scene.name} names no {cfg.split} views (its files: "
                f"{describe_view_splits(scene)}); choose --split with views in it, or --split all")
    if len(dataset.all_scenes) == 1:
        return (f"{cfg.data}: a single scene whose files name no splits, so split {cfg.split!r} has no objects; name "
                "its test views (Blender transforms_test.json, nerfstudio test_filenames, COLMAP test.txt) or use "
                "--split all")
    return (f"{cfg.data}: split {cfg.split!r} has no objects ({len(dataset.all_scenes)} objects in all; datasets of "
            "1-2 objects are all training) — use --split all or more objects")


@dataclass
class _Scored:
    """What scoring the tasks collects: one record per target view, every method's images pooled per angle bin
    (and "truth": the targets) for the set metrics, the picture grid's rows, where the object masks came from."""

    records: list[dict[str, Any]] = field(default_factory=list)
    pooled: dict[str, dict[str, list[Tensor]]] = field(default_factory=dict)
    grid_rows: list[list[Tensor]] = field(default_factory=list)
    mask_sources: set[str] = field(default_factory=set)


def _score_task(
    cfg: EvalConfig, methods: list[Method], task: proto.EvalTask, views: _Views, lpips_fn: Any, scored: _Scored
) -> None:
    """Every method's predictions of one object's targets, scored view by view into ``scored``."""
    cond_img, cond_pose, cond_k = views.images(task.object_index, [task.cond_view])
    source = View(cond_img[0], cond_pose[0], cond_k[0])
    targets, poses, ks = views.images(task.object_index, list(task.target_views))
    mask, mask_source = views.mask(task.object_index, list(task.target_views), targets, cfg.mask_dilation)
    scored.mask_sources.add(mask_source)
    angles = cameras.angle_between_views(source.pose.double().expand_as(poses.double()), poses.double())
    scores: dict[str, metrics.ImageScores] = {}
    preds: dict[str, Tensor] = {}
    for method in methods:
        generator = task_generator(cfg.seed, task.object_name, group=task.group)
        preds[method.name] = method.predict(source, poses, ks, generator)
        scores[method.name] = metrics.score_images(preds[method.name], targets, mask, lpips_fn)
    for j, v in enumerate(task.target_views):
        angle = float(angles[j])
        angle_bin = metrics.angle_bin(angle)
        for label in (angle_bin, rep.ALL):
            pool = scored.pooled.setdefault(label, {})
            for name, images in (*preds.items(), ("truth", targets)):
                pool.setdefault(name, []).append(images[j])
        scored.records.append({
            "object": task.object_name,
            "cond_view": task.cond_view,
            "target_view": v,
            "angle_deg": round(angle, 4),
            "bin": angle_bin,
            "mask_pixels": int(mask[j].sum()),
            "scores": {name: _view_scores(s, j) for name, s in scores.items()},
        })
    if len(scored.grid_rows) < cfg.grid_objects:
        k = min(cfg.grid_targets, len(task.target_views))
        scored.grid_rows.append([source.image, *targets[:k], *preds[PRIMARY][:k]])


def _protocol(
    cfg: EvalConfig, dataset: Any, split: dict[str, Any], tasks: list[proto.EvalTask], mask_sources: set[str]
) -> dict[str, Any]:
    return {
        "rules": _RULES[dataset.split_by],
        "seed": cfg.seed,
        "split": cfg.split,
        "split_by": dataset.split_by,
        **split,
        "format": getattr(dataset.scenes[0], "format", ""),
        "objects_in_split": len(dataset.scenes),
        "objects_evaluated": len({t.object_index for t in tasks}),
        "targets_per_object": cfg.targets_per_object,
        "cond_view": cfg.cond_view,
        "mask": sorted(mask_sources),
        "mask_dilation_px": cfg.mask_dilation,
        "psnr_cap_db": metrics.PSNR_CAP_DB,
        "angle_bins_deg": [list(b) for b in metrics.ANGLE_BINS],
        "tasks": [t.to_dict() for t in tasks],
    }


def _distribution(pooled: dict[str, dict[str, list[Tensor]]], names: list[str]) -> dict[str, Any]:
    """Sliced Wasserstein distance between each method's images and the ground truth's, per angle bin: a set
    metric, so it judges whether predictions look like real views (sharpness included) rather than how close
    each is to its own target."""
    per_bin: dict[str, dict[str, Any]] = {}
    for label, pool in pooled.items():
        truth = torch.stack(pool["truth"])
        if len(truth) < metrics.SWD_MIN_IMAGES:
            continue
        per_bin[label] = {}
        for name in names:
            levels = metrics.sliced_wasserstein(torch.stack(pool[name]), truth)
            per_bin[label][name] = {"swd": round(sum(levels) / len(levels), 3), "levels": [round(v, 3) for v in levels]}
    return {"metric": "sliced Wasserstein distance of 7x7 patches of a Laplacian pyramid down to 16 px, x 1000 "
                      "(Karras et al. 2018), normalised by the ground truth's patches; lower is better",
            "min_images": metrics.SWD_MIN_IMAGES, "per_bin": per_bin}


def _view_scores(s: metrics.ImageScores, j: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        "psnr": round(float(s.psnr[j]), 4),
        "ssim": round(float(s.ssim[j]), 5),
        "psnr_masked": None if torch.isnan(s.psnr_masked[j]) else round(float(s.psnr_masked[j]), 4),
        "ssim_masked": None if torch.isnan(s.ssim_masked[j]) else round(float(s.ssim_masked[j]), 5),
    }
    if s.lpips is not None:
        out["lpips"] = round(float(s.lpips[j]), 5)
    return out


def _orbit_fidelity(generated: Tensor, truth: Tensor) -> dict[str, float]:
    """How close the scored orbit is to the object's real views: mean PSNR view by view, and the patch SWD of the
    set (NaN below :data:`metrics.SWD_MIN_IMAGES` views). Consistency alone rewards orbits that agree by being
    blurry; these say whether the agreeing views look like the object."""
    levels = metrics.sliced_wasserstein(generated, truth) if len(truth) >= metrics.SWD_MIN_IMAGES else [float("nan")]
    return {"psnr": round(float(metrics.psnr(generated, truth).mean()), 4), "swd": round(sum(levels) / len(levels), 3)}


def _consistency(
    cfg: EvalConfig, model: CheckpointMethod, dataset: Any, tasks: list[proto.EvalTask], views: _Views
) -> tuple[dict[str, Any], list[list[Tensor]]]:
    """3D consistency of the model's generated orbits vs the ground-truth orbits (first N evaluated objects)."""
    from tqdm.auto import tqdm

    objects, picture_rows = [], []
    firsts = [t for t in tasks if t.group == 0]  # one orbit per object
    for task in tqdm(firsts[: cfg.consistency_objects], desc="consistency", unit="object", disable=not cfg.progress):
        scene = dataset.scenes[task.object_index]
        among = dataset.views_of(task.object_index)[1] if dataset.split_by == "views" else None
        orbit = proto.orbit_views(scene, task.cond_view, cfg.orbit_views, among)
        if len(orbit) < 2:
            continue
        cond_img, cond_pose, cond_k = views.images(task.object_index, [task.cond_view])
        gt, poses, ks = views.images(task.object_index, orbit)
        source = View(cond_img[0], cond_pose[0], cond_k[0])
        generated = model.orbit(source, poses, ks, task_generator(cfg.seed, task.object_name, salt=1), cfg.stochastic)
        ours = consistency_score(generated, poses, ks, cfg.consistency_field)
        ceiling = consistency_score(gt, poses, ks, cfg.consistency_field)
        objects.append({"object": task.object_name, "cond_view": task.cond_view, "views": orbit,
                        "generated": ours.to_dict(), "ground_truth": ceiling.to_dict(),
                        "orbit": _orbit_fidelity(generated, gt)})
        held = ours.test_views[: cfg.grid_targets * 2]
        picture_rows += [list(gt[held]), list(ceiling.renders[: len(held)]), list(generated[held]),
                         list(ours.renders[: len(held)])]
    mean = {
        kind: {m: metrics.nanmean([o[kind][m] for o in objects]) for m in ("psnr", "ssim")}
        for kind in ("generated", "ground_truth")
    }
    mean["orbit"] = {m: metrics.nanmean([o["orbit"][m] for o in objects]) for m in ("psnr", "swd")}
    summary = {"objects": objects, "mean": mean, "field": cfg.consistency_field.to_dict(),
               "stochastic": cfg.stochastic, "pool": cfg.pool, "hold_out": "every other view of the orbit (indices 1, 3, 5, ...)"}
    return summary, picture_rows


def _write(
    report: rep.EvalReport,
    out: Path,
    grid_rows: list[list[Tensor]],
    consistency_rows: list[list[Tensor]],
    cfg: EvalConfig,
    model: CheckpointMethod,
    dataset: Any,
    tasks: list[proto.EvalTask],
    views: _Views,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if grid_rows:
        k = (len(grid_rows[0]) - 1) // 2
        headers = [(0, "condition"), (1, "ground truth"), (1 + k, _primary_label(model))]
        rep.save_grid(grid_rows, out / "grid.png", headers=headers)
        report.files["grid"] = "grid.png"
    if consistency_rows:
        rep.save_grid(consistency_rows, out / "consistency.png")
        report.files["consistency"] = (
            "consistency.png (per object: GT held-out, GT-field renders, generated held-out, generated-field renders)"
        )
    for task in [t for t in tasks if t.group == 0][: cfg.orbits]:
        frames = [enlarge(to_pil(f), min_side=128) for f in _orbit_frames(cfg, model, task, views)]
        save_animation(frames, out / "orbits" / f"{task.object_name}.gif")
        report.files[f"orbit:{task.object_name}"] = f"orbits/{task.object_name}.gif"
    report.files["report_json"] = "report.json"
    report.files["report_md"] = "report.md"
    report.save_markdown(out / "report.md")
    report.save_json(out / "report.json")


def _primary_label(model: CheckpointMethod) -> str:
    return "predicted (regression)" if model.is_regression else "generated"


def _orbit_frames(cfg: EvalConfig, model: CheckpointMethod, task: proto.EvalTask, views: _Views) -> list[Tensor]:
    """A full turn in azimuth around the object (the point its cameras look at, around their up) at the condition
    camera's elevation and distance; frame 0 is the condition view itself."""
    cond_img, cond_pose, cond_k = views.images(task.object_index, [task.cond_view])
    source = View(cond_img[0], cond_pose[0], cond_k[0])
    azimuths = torch.arange(1, cfg.orbit_frames, dtype=torch.float64) * (360.0 / cfg.orbit_frames)
    frame = cameras.capture_frame(views.ds.scenes[task.object_index].poses.double())
    poses = model.pipe.relative_poses(source.pose, azimuths, 0.0, frame=frame)
    ks = source.K.expand(len(azimuths), 3, 3)
    generated = model.orbit(source, poses, ks, task_generator(cfg.seed, task.object_name, salt=2), cfg.stochastic)
    return [source.image, *generated]


__all__ = ["EvalConfig", "PRIMARY", "evaluate", "run"]
