"""`novelview` command line: a thin shell over the Python API.

Option defaults are read from where they are stated: the training options from :class:`TrainConfig` (and the
recommended :class:`~novelview.diffusion.DiffusionConfig`), the sampling options from :mod:`novelview.sampling`.
Everything else a command needs is imported when it runs. User errors (:class:`novelview.errors.NovelviewError`)
are printed as one line on stderr with exit code 2, no traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from novelview.errors import ConfigError, NovelviewError
from novelview.sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, SamplingSettings
from novelview.train import TrainConfig, recommended_diffusion

_DIFFUSION = recommended_diffusion()

app = typer.Typer(
    help="Single-image novel view synthesis with pose-conditional diffusion models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Make, inspect and render multi-view datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# ============================================================== data


@data_app.command("synth")
def data_synth(
    out: Path = typer.Argument(..., help="Output directory (written atomically; refused if non-empty)."),
    objects: int = typer.Option(20, "--objects", help="Number of random objects."),
    views: int = typer.Option(50, "--views", help="Views per object."),
    size: int = typer.Option(64, "--size", help="Square image size in pixels."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    radius: float = typer.Option(2.5, "--radius", help="Camera distance from the origin."),
    fov: float = typer.Option(40.0, "--fov", help="Horizontal field of view, degrees."),
    elevation: tuple[float, float] = typer.Option((-10.0, 45.0), "--elevation", help="MIN MAX camera elevation, degrees."),
    max_primitives: int = typer.Option(4, "--max-primitives", help="Primitives per object (1..N)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT."),
    workers: int = typer.Option(1, "--workers", help="Rendering processes (same bytes for any number)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    no_manifest: bool = typer.Option(False, "--no-manifest", help="Skip writing the manifest (see `data index`)."),
) -> None:
    """Render a procedural multi-view dataset (SRN layout + depth + masks + dataset.json + manifest)."""
    from novelview.data.synthetic import SynthConfig, generate
    from novelview.data.viewpoints import CameraDistribution

    _check_out(out)
    cams = CameraDistribution(radius=radius, fov_deg=fov, elevation_range=(elevation[0], elevation[1]))
    cfg = SynthConfig(objects=objects, views=views, size=size, seed=seed, cameras=cams, max_primitives=max_primitives)
    generate(out, cfg, overwrite=overwrite, progress=not quiet, workers=workers, manifest=not no_manifest)
    typer.echo(f"wrote {objects} objects x {views} views at {size}x{size} to {out}")


@data_app.command("index")
def data_index(
    path: Path = typer.Argument(..., help="Dataset directory (SRN, Blender, COLMAP, ring or MVC pairs)."),
    format: str = typer.Option("auto", "--format", help="auto, srn, blender, colmap, ring or mvc."),
    check: bool = typer.Option(False, "--check", help="Only say whether the manifest is current (every file "
                               "checked); exit code 1 if it is not."),
) -> None:
    """Write PATH/.novelview/manifest.parquet: every object, view, camera and file of the dataset in one file,
    so that training and evaluation open it in seconds instead of reading every object folder."""
    from novelview.data.formats import manifest_status, write_manifest
    from novelview.data.formats.manifest import read_metadata

    if check:
        current, description = manifest_status(path, verify="full")
        typer.echo(f"manifest: {description}")
        if not current:
            raise typer.Exit(1)
        return
    written = write_manifest(path, format=format)
    meta = read_metadata(path) or {}
    typer.echo(f"indexed {meta.get('objects')} objects, {meta.get('views')} views ({meta.get('format')}) in "
               f"{written} ({written.stat().st_size / 1e6:.2f} MB)")


@data_app.command("info")
def data_info(
    path: Path = typer.Argument(..., help="Dataset directory (SRN, Blender, COLMAP, ring or MVC pairs)."),
    format: str = typer.Option("auto", "--format", help="auto, srn, blender, colmap, ring or mvc."),
    quick: bool = typer.Option(False, "--quick", help="Skip fully decoding every image."),
) -> None:
    """Summarise a dataset and list every problem found; exit code 1 if it is unusable."""
    from novelview.data.info import inspect_dataset

    report = inspect_dataset(path, format=format, decode=not quick)
    for line in report.lines():
        typer.echo(line)
    if not report.usable:
        raise typer.Exit(1)


# ============================================================== models


@app.command("models")
def models_list(
    size: Optional[int] = typer.Option(None, "--size", help="Image size for all presets (default: each one's own)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the model presets with parameter counts and GFLOPs per forward (counted on the meta device)."""
    import json

    import torch

    from novelview.models.presets import PRESETS, build_model, count_parameters, forward_flops

    if size is not None and not 8 <= size <= 1024:
        raise ConfigError(f"--size must lie in [8, 1024], got {size}")
    rows = []
    for name, preset in PRESETS.items():
        with torch.device("meta"):  # nothing is allocated, so the 450M-parameter preset lists instantly
            model = build_model(name, size)
        rows.append(
            {
                "preset": name,
                "family": preset.family,
                "image_size": model.config.image_size,
                "params": count_parameters(model),
                "gflops": forward_flops(model) / 1e9,
                "description": preset.description,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    name_width = max(len(r["preset"]) for r in rows)
    typer.echo(f"{'preset':<{name_width}} {'family':<9} {'size':>5} {'params':>9} {'GFLOPs/fwd':>11}  description")
    for r in rows:
        typer.echo(
            f"{r['preset']:<{name_width}} {r['family']:<9} {r['image_size']:>5} {r['params'] / 1e6:>8.2f}M "
            f"{r['gflops']:>11.2f}  {r['description']}"
        )


# ============================================================== train


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Dataset directory (any supported format)."),
    out: Path = typer.Option(..., "--out", help="Run directory: checkpoints, logs, samples."),
    model: str = typer.Option(TrainConfig.model, "--model", help="Model preset (see `novelview models`)."),
    size: int = typer.Option(TrainConfig.image_size, "--size", help="Image size the model works at."),
    steps: int = typer.Option(TrainConfig.steps, "--steps", help="Total optimizer steps."),
    batch_size: int = typer.Option(
        TrainConfig.batch_size, "--batch-size", help="Global batch, split across processes."),
    lr: float = typer.Option(TrainConfig.lr, "--lr", help="Peak AdamW learning rate."),
    warmup: Optional[int] = typer.Option(
        TrainConfig.warmup_steps, "--warmup", help="Linear warm-up steps (default: 5% of --steps, at most 200)."),
    init: Optional[Path] = typer.Option(
        None, "--init", help="Fine-tune: start from this checkpoint's weights, model and noise process (new optimiser; "
        "--model, --prediction and --self-condition come from it; camera scale and ray bounds from --data)."),
    decay_steps: int = typer.Option(
        TrainConfig.decay_steps, "--decay-steps",
        help="Decay the LR linearly to zero over the last N steps (0: constant, so the run can be continued; "
        "resuming with a larger --steps and --decay-steps cools a constant run down)."),
    weight_decay: float = typer.Option(TrainConfig.weight_decay, "--weight-decay"),
    grad_clip: float = typer.Option(TrainConfig.grad_clip, "--grad-clip"),
    precision: str = typer.Option(
        TrainConfig.precision, "--precision",
        help="fp32 or bf16 autocast (for GPUs; ~10x slower than fp32 on CPUs without bf16 units)."),
    ema_decay: float = typer.Option(TrainConfig.ema_decay, "--ema-decay"),
    objective: str = typer.Option(
        TrainConfig.objective, "--objective", help="diffusion, or regression (deterministic baseline)."),
    prediction: str = typer.Option(
        _DIFFUSION.prediction, "--prediction",
        help="x0 (default: the training-efficiency study's winner), v (3DiM) or eps."),
    min_snr_gamma: Optional[float] = typer.Option(
        _DIFFUSION.min_snr_gamma, "--min-snr-gamma", help="Min-SNR-gamma loss weighting."),
    schedule_shift: float = typer.Option(
        _DIFFUSION.schedule_shift, "--schedule-shift", help="Added to the cosine logSNR."),
    learn_variance: bool = typer.Option(
        _DIFFUSION.learn_variance, "--learn-variance", help="Learned variance + hybrid MSE/KL loss."),
    self_condition: bool = typer.Option(
        _DIFFUSION.self_condition, "--self-condition/--no-self-condition",
        help="Self-conditioning on the previous x0 estimate."),
    cond_drop: float = typer.Option(
        _DIFFUSION.cond_drop_prob, "--cond-drop", help="Condition dropout for classifier-free guidance."),
    render_weight: float = typer.Option(
        _DIFFUSION.render_weight, "--render-weight",
        help="3D-aware models: weight of an L2 loss on the lifter's RGB render (0: none)."),
    rays_per_image: int = typer.Option(
        TrainConfig.rays_per_image, "--rays-per-image",
        help="pixelNeRF regression: score N random pixels per target (0: whole images)."),
    seed: int = typer.Option(TrainConfig.seed, "--seed"),
    workers: int = typer.Option(TrainConfig.num_workers, "--workers", help="DataLoader worker processes."),
    checkpoint_every: int = typer.Option(TrainConfig.checkpoint_every, "--checkpoint-every"),
    keep: int = typer.Option(TrainConfig.keep_checkpoints, "--keep", help="Training checkpoints to keep."),
    val_every: int = typer.Option(
        TrainConfig.val_every, "--val-every", help="Validation loss every N steps (0: never)."),
    sample_every: int = typer.Option(
        TrainConfig.sample_every, "--sample-every", help="Write a sample grid every N steps (0: never)."),
    override: list[str] = typer.Option([], "--override", help="Model config override KEY=VALUE (JSON value)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
) -> None:
    """Train a model (one process, or many under torchrun / accelerate launch)."""
    from novelview.diffusion import DiffusionConfig
    from novelview.models.presets import preset_config
    from novelview.train import train as run_training

    overrides = _model_overrides(override)
    try:
        diffusion = DiffusionConfig(
            prediction=prediction, min_snr_gamma=min_snr_gamma, schedule_shift=schedule_shift,
            learn_variance=learn_variance, self_condition=self_condition, cond_drop_prob=cond_drop,
            render_weight=render_weight,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    cfg = TrainConfig(
        data=str(data), out=str(out), model=model, model_overrides=overrides, image_size=size,
        objective=objective, diffusion=diffusion, steps=steps, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup, decay_steps=decay_steps, grad_clip=grad_clip,
        precision=precision, ema_decay=ema_decay, seed=seed, num_workers=workers, checkpoint_every=checkpoint_every,
        keep_checkpoints=keep, val_every=val_every, sample_every=sample_every, rays_per_image=rays_per_image,
        init=None if init is None else str(init),
    )
    _check_out(out)
    if init is None:
        preset_config(model, size, **overrides)  # an absurd model (--override depth=100000000) fails before data loads
    result = run_training(cfg, resume=resume)
    if os.environ.get("RANK", "0") == "0":
        typer.echo(f"final loss {result.final_loss:.4f}; checkpoint {result.final_checkpoint}")


def _model_overrides(items: list[str]) -> dict[str, object]:
    """``--override KEY=VALUE`` options as a dict (values parsed as JSON where they are JSON)."""
    import json

    overrides: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--override expects KEY=VALUE, got {item!r}")
        if key in ("image_size", "preset"):
            raise ConfigError(f"--override {key}: set it with --size / --model")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


@app.command()
def export(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Training checkpoint or run directory (its latest)."),
    out: Path = typer.Option(..., "--out", help="Directory for the inference-only checkpoint."),
    raw: bool = typer.Option(False, "--raw", help="Export the raw weights instead of the EMA weights."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a checkpoint already at OUT."),
    guidance: Optional[float] = typer.Option(
        None, "--guidance", min=0.0, help="Record this guidance weight (chosen by measurement, e.g. with `novelview "
        "eval --guidance W`) as the checkpoint's default for sample, orbit, eval, serve and demo."),
) -> None:
    """Write an inference-only checkpoint (EMA weights + config.json, no optimizer state) for shipping."""
    from novelview.checkpoint import export_checkpoint

    sampling = {} if guidance is None else {"guidance": guidance}
    path = export_checkpoint(checkpoint, _check_out(out), use_ema=not raw, overwrite=overwrite, sampling=sampling)
    size = sum(f.stat().st_size for f in path.iterdir())
    typer.echo(f"wrote {path} ({size / 1e6:.1f} MB)")


# ============================================================== sample / orbit

_CHECKPOINT_HELP = "Checkpoint or training-run directory (default: the shipped model, or $NOVELVIEW_CHECKPOINT)."
_SAMPLER_HELP = "dpmpp (DPM-Solver++ 2M), ddim or ddpm (ancestral)."
_GUIDANCE_HELP = ("Classifier-free guidance weight w: 1 = plain conditional, 0 = unconditional (default: the "
                  "checkpoint's measured sampling.guidance, else 3; 1 for models trained without --cond-drop).")
_STRENGTH_HELP = ("3D-aware models: below 1, each view starts from the model's render of the input at the target "
                  "camera and runs this fraction of the steps (SDEdit). Lower: more 3D-consistent, blurrier and "
                  "noisier; 1 (default): from pure noise.")
_INPUT_ELEVATION_HELP = "Elevation of the input camera in degrees (default: the training data's mean)."
_PAD_HELP = "Pad a non-square input with white instead of centre-cropping it."
_DEVICE_HELP = "cpu, cuda, cuda:1, ... or auto."
MAX_ORBIT_VIEWS = 360


def _device(name: str) -> str:
    """``--device`` checked before any work (see :func:`novelview.devices.resolve_device`)."""
    from novelview.devices import resolve_device

    return str(resolve_device(name))


def _check_out(path: Path) -> Path:
    """Refuse an output path that cannot be created, before any work is done (not after minutes of sampling)."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"--out {path}: cannot be created, {ancestor} is a file and not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {path}: cannot be created, {ancestor} is not writable")
    return path


def _progress_bar(desc: str):
    """A ``progress(done, total)`` callback drawing a tqdm bar (rate and ETA) on stderr, and a closer."""
    from tqdm.auto import tqdm

    state: dict = {}

    def progress(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=False)
        bar.update(done - bar.n)

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return progress, close


def _output_path(out: Path, suffixes: tuple[str, ...]) -> Path:
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"--out {out}: the file name must end in {' or '.join(suffixes)}")
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name")
    return out


def write_orbit(frames: list, out: Path, fps: float = 8.0, columns: int | None = None) -> list[Path]:
    """Write frames as ``out`` (.gif / .mp4 / .png) plus a PNG contact sheet beside it; returns the paths."""
    import math

    from novelview.images import make_grid, save_animation, save_image

    cols = columns or math.ceil(math.sqrt(len(frames)))
    sheet = make_grid([frames[i : i + cols] for i in range(0, len(frames), cols)])
    if out.suffix.lower() == ".png":
        return [save_image(sheet, out)]
    return [save_animation(frames, out, fps=fps), save_image(sheet, out.with_name(f"{out.stem}_sheet.png"))]


_IMAGE_HELP = "Input picture of the object (PNG/JPEG/...; alpha -> white); or give --data/--object/--view."
_DATA_HELP = ("Take the input from a dataset (any supported format) instead of --image: view --view of object "
              "--object, with its own camera and intrinsics.")
_OBJECT_HELP = "With --data: the object (scene) name; may be left out when the dataset holds one."
_VIEW_HELP = "With --data: the view's number in the object (as `novelview data info` and eval reports count them)."
_UPSCALE_HELP = "Enlarge the written pictures K times for viewing (their cameras' intrinsics follow)."


def _input(pipe, image: Optional[Path], data: Optional[Path], object_name: Optional[str], view: Optional[int],
           input_elevation: Optional[float]):
    """The pipeline's input: the picture at ``image``, or a dataset view (``--data``) with its own camera."""
    if (image is None) == (data is None):
        raise ConfigError("give the input as either --image FILE or --data DIR (with --object/--view), not both"
                          if image is not None else "no input: give --image FILE or --data DIR --view I")
    if data is None:
        if object_name is not None or view is not None:
            raise ConfigError("--object and --view choose a view of --data; give --data DIR too")
        return image
    if input_elevation is not None:
        raise ConfigError("--input-elevation: a dataset view brings its own camera; drop it (or use --image)")
    return pipe.dataset_view(data, object_name, 0 if view is None else view)


def _warn(message: Optional[str]) -> None:
    if message:
        typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)


def _target_file(path: Path, convention: str, source):
    """``(input_pose, targets)`` of a --poses file, warning when its cameras face away from the object (the other
    convention's matrices); a dataset view's file is in the dataset's world frame, around its capture's centre."""
    import torch

    from novelview.pipeline import CapturedView, convention_warning, load_poses

    input_pose, targets = load_poses(path, convention)
    centre = source.frame.point if isinstance(source, CapturedView) else (0.0, 0.0, 0.0)
    both = targets if input_pose is None else torch.cat([input_pose, targets])
    _warn(convention_warning(both, centre, convention, str(path)))
    return input_pose, targets


def _write_views(views, out: Path, upscale: int, upscale_filter: str) -> list[Path]:
    """Each view as OUT, or OUT_000, OUT_001, ... when there are several (numbered in pose order)."""
    from novelview.images import save_image

    width = max(3, len(str(len(views) - 1)))
    paths = [out] if len(views) == 1 else [out.with_name(f"{out.stem}_{i:0{width}d}{out.suffix}")
                                           for i in range(len(views))]
    for view, path in zip(views.enlarged(upscale, upscale_filter), paths):
        save_image(view, path)
    return paths


@app.command()
def sample(
    out: Path = typer.Option(..., "--out", help="Output .png (several targets: OUT_000.png, OUT_001.png, ...)."),
    image: Optional[Path] = typer.Option(None, "--image", help=_IMAGE_HELP),
    data: Optional[Path] = typer.Option(None, "--data", help=_DATA_HELP),
    object_name: Optional[str] = typer.Option(None, "--object", help=_OBJECT_HELP),
    view: Optional[int] = typer.Option(None, "--view", min=0, help=_VIEW_HELP),
    azimuth: Optional[float] = typer.Option(
        None, "--azimuth", help="Degrees to turn around the object, relative to the input view."
    ),
    elevation: Optional[float] = typer.Option(
        None, "--elevation", help="Degrees to move up (+) or down (-), relative to the input view (input + this "
        "must stay inside (-90, 90))."
    ),
    radius: Optional[float] = typer.Option(
        None, "--radius", help="Target camera distance (default: the input camera's)."
    ),
    poses: Optional[Path] = typer.Option(
        None, "--poses",
        help="JSON list of absolute 4x4 camera-to-world matrices (instead of --azimuth/--elevation), "
        'or {"target_poses": [...], "input_pose": 4x4}; with --data, in the dataset\'s world frame.',
    ),
    poses_convention: str = typer.Option(
        "opencv", "--poses-convention", help="How the --poses matrices orient cameras: opencv (+z forward, +y down) "
        "or opengl (Blender / NeRF: -z forward, +y up)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help=_CHECKPOINT_HELP),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", min=1, help="Denoising steps."),
    sampler: str = typer.Option(DEFAULT_SAMPLER, "--sampler", help=_SAMPLER_HELP),
    guidance: Optional[float] = typer.Option(None, "--guidance", help=_GUIDANCE_HELP),
    strength: float = typer.Option(SamplingSettings.strength, "--strength", help=_STRENGTH_HELP),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed (same seed, same views)."),
    input_elevation: Optional[float] = typer.Option(None, "--input-elevation", help=_INPUT_ELEVATION_HELP),
    upscale: int = typer.Option(1, "--upscale", min=1, max=16, help=_UPSCALE_HELP),
    upscale_filter: str = typer.Option("nearest", "--upscale-filter", help="nearest or bicubic."),
    pad: bool = typer.Option(False, "--pad", help=_PAD_HELP),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
) -> None:
    """Paint the object in IMAGE (or a dataset view) as seen from another camera."""
    from novelview.pipeline import Pipeline

    out = _check_out(_output_path(out, (".png", ".jpg", ".jpeg", ".webp")))
    if poses is not None and (azimuth is not None or elevation is not None or radius is not None):
        raise ConfigError("give either --poses or --azimuth/--elevation/--radius, not both")
    if poses is None and azimuth is None and elevation is None and radius is None:
        raise ConfigError("no target camera: give --azimuth/--elevation (relative degrees) or --poses FILE")
    if upscale_filter not in ("nearest", "bicubic"):
        raise ConfigError(f"--upscale-filter must be nearest or bicubic, got {upscale_filter!r}")
    settings = SamplingSettings(sampler=sampler, steps=steps, guidance=guidance, seed=seed, strength=strength)
    pipe = Pipeline.from_checkpoint(checkpoint, device=_device(device))
    source = _input(pipe, image, data, object_name, view, input_elevation)
    input_pose, targets = _target_file(poses, poses_convention, source) if poses is not None else (None, None)
    progress, close = _progress_bar("sampling")
    try:
        views = pipe.synthesize(
            source, target_poses=targets, azimuth=azimuth, elevation=elevation, radius=radius, input_pose=input_pose,
            settings=settings, progress=progress, input_elevation=input_elevation, crop="pad" if pad else "center",
        )
    finally:
        close()
    typer.echo("\n".join(str(p) for p in _write_views(views, out, upscale, upscale_filter)))


@app.command()
def orbit(
    out: Path = typer.Option(
        ..., "--out",
        help="Output .gif or .mp4 (a PNG contact sheet OUT_sheet.png is written beside it), or .png for the sheet; "
        "the frames with their cameras go to OUT_views/ (transforms.json + images/, for nerfstudio or instant-ngp).",
    ),
    image: Optional[Path] = typer.Option(None, "--image", help=_IMAGE_HELP),
    data: Optional[Path] = typer.Option(None, "--data", help=_DATA_HELP),
    object_name: Optional[str] = typer.Option(None, "--object", help=_OBJECT_HELP),
    view: Optional[int] = typer.Option(None, "--view", min=0, help=_VIEW_HELP),
    views: int = typer.Option(
        24, "--views", min=1, help=f"Frames around the full turn (frame 0 is the input view; at most {MAX_ORBIT_VIEWS})."
    ),
    elevation: Optional[float] = typer.Option(
        None, "--elevation", help="Orbit elevation relative to the input view (degrees; default 0; input + this must "
        "stay inside (-90, 90))."
    ),
    radius: Optional[float] = typer.Option(
        None, "--radius", help="Camera distance of the orbit (default: the input camera's)."
    ),
    stochastic: bool = typer.Option(
        True, "--stochastic/--no-stochastic",
        help="3DiM stochastic conditioning on the input and all views so far (default), or the input only.",
    ),
    order: str = typer.Option(
        "nearest", "--order",
        help="Stochastic conditioning generates the views nearest the input first (nearest), or around the circle "
        "(given, as 3DiM).",
    ),
    pool: bool = typer.Option(
        SamplingSettings.pool, "--pool/--no-pool",
        help="3D-aware models: the lifter pools every view so far with the drawn one (GeNVS)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help=_CHECKPOINT_HELP),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", min=1, help="Denoising steps per view."),
    sampler: str = typer.Option(DEFAULT_SAMPLER, "--sampler", help=_SAMPLER_HELP),
    guidance: Optional[float] = typer.Option(None, "--guidance", help=_GUIDANCE_HELP),
    strength: float = typer.Option(SamplingSettings.strength, "--strength", help=_STRENGTH_HELP),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed."),
    input_elevation: Optional[float] = typer.Option(None, "--input-elevation", help=_INPUT_ELEVATION_HELP),
    upscale: int = typer.Option(1, "--upscale", min=1, max=16, help=_UPSCALE_HELP),
    upscale_filter: str = typer.Option("nearest", "--upscale-filter", help="nearest or bicubic."),
    fps: float = typer.Option(8.0, "--fps", min=0.1, max=60.0, help="Frames per second of the animation."),
    pad: bool = typer.Option(False, "--pad", help=_PAD_HELP),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
) -> None:
    """Generate VIEWS frames around the object in IMAGE (or a dataset view): an animation, a contact sheet, and
    the frames with their cameras as a transforms.json capture."""
    from novelview.data.atomic import check_writable_target
    from novelview.pipeline import Pipeline

    out = _check_out(_output_path(out, (".gif", ".mp4", ".png")))
    capture = out.with_name(f"{out.stem}_views")
    check_writable_target(capture, overwrite=True)  # refused now, not after minutes of sampling
    if views > MAX_ORBIT_VIEWS:
        raise ConfigError(f"--views {views}: an orbit has at most {MAX_ORBIT_VIEWS} frames (one per degree)")
    if upscale_filter not in ("nearest", "bicubic"):
        raise ConfigError(f"--upscale-filter must be nearest or bicubic, got {upscale_filter!r}")
    settings = SamplingSettings(sampler=sampler, steps=steps, guidance=guidance, seed=seed, stochastic=stochastic,
                                order=order, pool=pool, strength=strength)  # type: ignore[arg-type]
    pipe = Pipeline.from_checkpoint(checkpoint, device=_device(device))
    source = _input(pipe, image, data, object_name, view, input_elevation)
    progress, close = _progress_bar("orbit")
    try:
        frames = pipe.orbit(
            source, n_views=views, elevation=elevation, radius=radius, settings=settings, progress=progress,
            input_elevation=input_elevation, crop="pad" if pad else "center",
        )
    finally:
        close()
    enlarged = frames.enlarged(upscale, upscale_filter)
    written = [*write_orbit(list(enlarged), out, fps=fps), enlarged.save_transforms(capture)]
    typer.echo("\n".join(str(p) for p in written))


# ============================================================== eval


@app.command("eval")
def eval_command(
    data: Path = typer.Option(..., "--data", help="Dataset directory (SRN, Blender, COLMAP, rings, MVC, procedural)."),
    out: Path = typer.Option(..., "--out", help="Report directory: report.json, report.md, grid.png, ..."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Checkpoint or training-run directory (default: the shipped model)."
    ),
    split: str = typer.Option(
        "test", "--split", help="test (held-out objects, or a single scene's own test views), val, train or all."),
    objects: Optional[int] = typer.Option(None, "--objects", min=1, help="Evaluate N objects (default: all)."),
    targets: int = typer.Option(
        8, "--targets-per-object", min=0, help="Target views per object (0 = all others); for a scene split by its "
        "own views, every view of the split is scored, this many per condition view."),
    cond_view: Optional[int] = typer.Option(
        None, "--cond-view", min=0, help="Use this view of every object as the condition (default: drawn from --seed)."
    ),
    sampler: str = typer.Option(DEFAULT_SAMPLER, "--sampler", help=_SAMPLER_HELP),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", help="Denoising steps."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help=_GUIDANCE_HELP),
    strength: float = typer.Option(SamplingSettings.strength, "--strength", help=_STRENGTH_HELP),
    samples: int = typer.Option(
        1, "--samples", min=1, help="Also score the mean of N unguided samples per view (the model's estimate of "
        "the posterior mean, which is what a regression model predicts); costs N more samplings."),
    seed: int = typer.Option(0, "--seed", min=0, help="Protocol and sampling seed."),
    baseline: list[Path] = typer.Option([], "--baseline-checkpoint", help="Extra checkpoint to compare (repeatable)."),
    lpips_weights: Optional[Path] = typer.Option(
        None, "--lpips-weights", help="torchvision AlexNet ImageNet state dict; enables LPIPS."
    ),
    consistency_objects: int = typer.Option(2, "--consistency-objects", min=0, help="Objects for 3D consistency."),
    orbit_views: int = typer.Option(24, "--orbit-views", min=2, help="Views per consistency orbit."),
    field_resolution: int = typer.Option(48, "--field-resolution", min=4, help="Voxels per side of the field."),
    field_steps: int = typer.Option(1000, "--field-steps", min=1, help="Adam steps of each consistency field fit."),
    bound: float = typer.Option(1.2, "--consistency-bound", help="The field spans [-B, B]^3 around the origin."),
    stochastic: bool = typer.Option(
        True, "--stochastic/--independent", help="Consistency orbits with 3DiM stochastic conditioning or not."
    ),
    pool: bool = typer.Option(
        SamplingSettings.pool, "--pool/--no-pool",
        help="3D-aware models in stochastic conditioning: the lifter pools every view so far with the drawn one."),
    orbits: int = typer.Option(0, "--orbits", min=0, help="Write orbit GIFs for the first N objects."),
    split_seed: Optional[int] = typer.Option(None, "--split-seed", help="Object split seed (default: as trained)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ... or auto."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Target views denoised together."),
) -> None:
    """Score a checkpoint and baselines on held-out objects; write report.json, report.md and pictures."""
    from novelview.evaluate import evaluate
    from novelview.evaluation.consistency import FieldConfig

    device = _device(device)
    _check_out(out)
    report = evaluate(
        checkpoint, data, out=out, split=split, objects=objects, targets_per_object=targets or None,
        cond_view=cond_view,
        sampler=sampler, steps=steps, guidance=guidance, strength=strength, samples=samples, seed=seed,
        baseline_checkpoints=[str(b) for b in baseline],
        lpips_weights=None if lpips_weights is None else str(lpips_weights),
        consistency_objects=consistency_objects, orbit_views=orbit_views, stochastic=stochastic, pool=pool,
        consistency_field=FieldConfig(resolution=field_resolution, steps=field_steps, bound=bound, seed=seed),
        orbits=orbits, split_seed=split_seed, device=device, batch_size=batch_size,
    )
    swd = (report.distribution or {}).get("per_bin", {}).get("all", {})
    for name in report.methods:
        typer.echo(
            f"{name:>24}: PSNR {report.metric('psnr', name):6.2f} dB (object {report.metric('psnr_masked', name):6.2f})"
            f"  SSIM {report.metric('ssim', name):.3f} (object {report.metric('ssim_masked', name):.3f})"
            + (f"  SWD {swd[name]['swd']:7.1f}" if name in swd else "")
        )
    if report.consistency and report.consistency["objects"]:
        mean = report.consistency["mean"]
        typer.echo(f"3D consistency PSNR: generated {mean['generated']['psnr']:.2f} dB, "
                   f"ground truth {mean['ground_truth']['psnr']:.2f} dB; generated orbit vs truth: PSNR "
                   f"{mean['orbit']['psnr']:.2f} dB, SWD {mean['orbit']['swd']:.1f}")
    typer.echo(f"report: {out / 'report.md'}")


# ============================================================== serve


@app.command()
def serve(
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Checkpoint directory (default: the shipped model, or $NOVELVIEW_CHECKPOINT)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes the demo to the network."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    max_queue: int = typer.Option(8, "--max-queue", min=1, help="Jobs allowed to wait; more are refused with 429."),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", min=0.01, help="Upload size limit in MB."),
    ttl: float = typer.Option(3600.0, "--ttl", min=1.0, help="Seconds finished results are kept."),
    max_jobs: int = typer.Option(100, "--max-jobs", min=1, help="Finished jobs kept (oldest are deleted)."),
    allow_host: list[str] = typer.Option(
        [], "--allow-host", metavar="NAME",
        help="Also answer requests for this host name or address (repeatable; loopback names and --host always "
        "are). Needed when clients reach the server by another name, e.g. with --host 0.0.0.0; '*' allows any "
        "(only behind a proxy that checks Host itself). See docs/security.md.",
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Web demo and HTTP API (needs the "serve" extra): open http://HOST:PORT/ in a browser."""
    try:
        from novelview.serve.app import create_app
        from novelview.serve.security import is_loopback
        from novelview.serve.server import bind, run
    except ImportError as err:
        raise NovelviewError(f"the web server needs the [serve] extra: pip install 'novelview[serve]' ({err})") from None
    sock = bind(host, port)  # a busy port is refused before the model loads
    if not is_loopback(host):
        typer.secho(f"warning: binding to {host}: anyone who can reach this machine can use the demo; clients "
                    "must reach it by a name given with --allow-host", err=True, fg=typer.colors.YELLOW)
    web_app = create_app(
        checkpoint, max_queue=max_queue, max_upload_bytes=int(max_upload_mb * 1024 * 1024), job_ttl_s=ttl,
        max_jobs=max_jobs, allowed_hosts=(host, *allow_host),
    )
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"novelview demo on http://{shown}:{port}/ (API schema: /openapi.json); Ctrl-C stops it")
    run(web_app, log_level=log_level, sock=sock)


# ============================================================== demo


@app.command()
def demo(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint or run directory (default: shipped)."),
    example: Optional[str] = typer.Option(None, "--example", help="Example object name or SRN object folder."),
    out: Path = typer.Option(Path("outputs/demo"), "--out", help="Where orbit.gif and compare.png go."),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", help="Denoising steps per view."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help=_GUIDANCE_HELP),
    strength: float = typer.Option(SamplingSettings.strength, "--strength", help=_STRENGTH_HELP),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The main job: a 24-view orbit of a held-out object from one picture, next to the ground truth."""
    from novelview.demo import run_demo

    settings = SamplingSettings(steps=steps, guidance=guidance, seed=seed, stochastic=True, strength=strength)
    result = run_demo(checkpoint, example, _check_out(out), settings)
    typer.echo(f"orbit:   {result.orbit_gif}   (generated | ground truth)")
    typer.echo(f"compare: {result.compare_png}   (top: input + generated, bottom: input + ground truth)")
    typer.echo(f"novel views vs ground truth: PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.3f}")
    typer.echo(f"copy-the-input baseline:     PSNR {result.copy_psnr:.2f} dB, SSIM {result.copy_ssim:.3f}")
    typer.echo(f"generated in {result.seconds:.1f} s")



# ============================================================== render (data render)


@data_app.command("render")
def data_render(
    mesh_dir: Path = typer.Argument(..., help="Folder of meshes (.glb .gltf .obj .ply .stl .off), searched recursively."),
    out: Path = typer.Argument(..., help="Output dataset folder (resumable: complete objects are skipped)."),
    views: int = typer.Option(50, "--views", help="Views per object."),
    size: int = typer.Option(64, "--size", help="Square image size in pixels."),
    format: str = typer.Option("srn", "--format", help="Output layout: srn, blender or colmap (no depth)."),
    camera_mode: str = typer.Option("random", "--cameras", help="random (uniform azimuth/elevation) or orbit."),
    elevation: tuple[float, float] = typer.Option((-10.0, 45.0), "--elevation", help="MIN MAX camera elevation, degrees."),
    radius: float = typer.Option(2.5, "--radius", help="Camera distance from the origin (objects fill radius 0.8)."),
    fov: float = typer.Option(40.0, "--fov", help="Horizontal field of view, degrees."),
    seed: int = typer.Option(0, "--seed", help="Camera seed (per object: seed + object name)."),
    workers: int = typer.Option(1, "--workers", help="Parallel renderer processes."),
    antialias: int = typer.Option(1, "--antialias", help="N x N samples per pixel."),
    up: str = typer.Option("auto", "--up", help="Up axis of the files: auto (y for glb/gltf/obj, else z), y or z."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete OUT first instead of resuming."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    no_manifest: bool = typer.Option(False, "--no-manifest", help="Skip writing the manifest (see `data index`)."),
) -> None:
    """Render a folder of meshes into a multi-view dataset (same layout and cameras as `data synth`)."""
    from novelview.data.viewpoints import CameraDistribution
    from novelview.render.dataset import RenderConfig, render_dataset

    cams = CameraDistribution(radius=radius, fov_deg=fov, elevation_range=(elevation[0], elevation[1]),
                              mode=camera_mode)  # type: ignore[arg-type]
    cfg = RenderConfig(views=views, size=size, format=format, cameras=cams, seed=seed, antialias=antialias,  # type: ignore[arg-type]
                       up=up)  # type: ignore[arg-type]
    summary = render_dataset(mesh_dir, _check_out(out), cfg, workers=workers, overwrite=overwrite, progress=not quiet,
                             manifest=not no_manifest)
    typer.echo(_up_axes(mesh_dir, up))
    typer.echo(f"rendered {len(summary.rendered)}, skipped {len(summary.skipped)} already complete, "
               f"failed {len(summary.failed)}" + (f" (listed in {out / 'failures.txt'})" if summary.failed else ""))
    if summary.manifest_error:
        typer.echo(f"manifest not written: {summary.manifest_error}", err=True)
    if summary.failed and not summary.rendered and not summary.skipped:
        raise ConfigError(f"no mesh in {mesh_dir} could be rendered; see {out / 'failures.txt'}")


def _up_axes(mesh_dir: Path, up: str) -> str:
    """Which axis of the files `data render` took as up, and how many files each."""
    from collections import Counter

    from novelview.render.mesh import find_meshes, up_axis

    counts = Counter(up_axis(path, up) for _, path in find_meshes(mesh_dir))  # type: ignore[arg-type]
    used = ", ".join(f"+{axis} for {n} mesh{'es' if n != 1 else ''}" for axis, n in sorted(counts.items()))
    how = "as --up says" if up != "auto" else "by file type: glTF and OBJ +y, PLY/STL/OFF +z"
    return f"up axis: {used} ({how}); a model lying on its side wants the other --up y|z"


HELP_WIDTH = 120


def _wide_help() -> None:
    """Let ``--help`` tables be at least :data:`HELP_WIDTH` columns wide (unless ``TERMINAL_WIDTH`` says
    otherwise): at the 80 columns of a pipe, rich cuts long option names such as ``--self-condition`` short."""
    import shutil

    try:
        from typer import rich_utils
    except ImportError:  # without rich, click wraps help text and never cuts option names
        return
    if rich_utils.MAX_WIDTH is None:
        rich_utils.MAX_WIDTH = max(shutil.get_terminal_size().columns, HELP_WIDTH)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point."""
    _wide_help()
    try:
        app(args=argv, standalone_mode=True)
    except NovelviewError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except OSError as err:  # the file system refused (full disk, permissions, a path that cannot exist)
        where = f": {err.filename}" if err.filename else ""
        typer.secho(f"error: {err.strerror or err}{where}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
