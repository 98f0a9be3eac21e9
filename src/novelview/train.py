"""Training loop: HF accelerate (DDP over torch.distributed), EMA, atomic checkpoints, exact resume.

Launch it as one process (``novelview train ...``) or across processes and nodes with no code change
(``torchrun --nproc_per_node=N -m novelview.cli train ...`` or ``accelerate launch``). Gradients are averaged
across processes by DDP; every process sees a different slice of the global batch.

Reproducibility: what a step does depends only on (seed, step). The global batch of step ``s`` is the sample
positions ``s*B .. s*B+B-1`` of an endless, seeded stream of dataset items, and its noise is drawn for the whole
global batch from a generator seeded by (seed, step), then sliced per process. Hence a resumed run repeats an
uninterrupted one, and N processes compute the same update as one process with the same global batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from novelview import cameras
from novelview import checkpoint as ckpt
from novelview.diffusion import DiffusionConfig, draw_noise, regression_loss, training_loss
from novelview.errors import ConfigError, NovelviewError

Objective = Literal["diffusion", "regression"]


def recommended_diffusion() -> DiffusionConfig:
    """The default objective of `novelview train`: x0-prediction with self-conditioning, the winner of the
    training-efficiency study (docs/learning-curves.md). ``DiffusionConfig()`` itself stays 3DiM's v-prediction."""
    return DiffusionConfig(prediction="x0", self_condition=True)


@dataclass
class TrainConfig:
    """All settings of a training run; stored in every checkpoint's config.json under ``training``."""

    data: str
    out: str
    model: str = "dit-tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    image_size: int = 32
    objective: Objective = "diffusion"
    regression_loss: Literal["l2", "l1"] = "l2"
    diffusion: DiffusionConfig = field(default_factory=recommended_diffusion)
    steps: int = 10_000
    batch_size: int = 32  # global, split across processes
    lr: float = 3e-4
    weight_decay: float = 0.0
    # Linear warm-up; None: 5 % of --steps, at most 200 (fixed when the run starts, so a resumed run keeps it).
    warmup_steps: int | None = None
    # Linear decay to zero over the last ``decay_steps`` (warm-up / stable / decay). 0 keeps the LR constant, so
    # a finished run can still be continued; a later resume with a larger --steps and --decay-steps is then the
    # "cool-down" of that schedule, which needs no decision about the total length up front.
    decay_steps: int = 0
    grad_clip: float = 1.0
    precision: Literal["fp32", "bf16"] = "fp32"
    ema_decay: float = 0.999
    seed: int = 0
    num_workers: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 25
    val_every: int = 500
    val_batches: int = 4
    sample_every: int = 1000
    sample_steps: int = 25
    max_nonfinite: int = 20
    # Fine-tuning: start from this checkpoint's (EMA) weights, with its model and noise process and a new
    # optimiser; the camera scale and ray bounds come from the new data, the training settings from this config.
    init: str | None = None
    # pixelNeRF regression: score this many random pixels of each target per step instead of the whole image
    # (0: whole images). Only rendered rays cost, so a step is that much cheaper.
    rays_per_image: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.diffusion, dict):
            self.diffusion = DiffusionConfig.from_dict(self.diffusion)
        checks = [
            (self.steps >= 1, f"--steps must be at least 1, got {self.steps}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (0 < self.lr < 1, f"--lr must lie in (0, 1), got {self.lr}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_steps is None or self.warmup_steps >= 0,
             f"warm-up steps must be >= 0, got {self.warmup_steps}"),
            (0 <= self.decay_steps <= self.steps,
             f"--decay-steps must lie in [0, --steps={self.steps}], got {self.decay_steps}"),
            (self.grad_clip > 0, f"gradient clip must be positive, got {self.grad_clip}"),
            (0 <= self.ema_decay < 1, f"--ema-decay must lie in [0, 1), got {self.ema_decay}"),
            (8 <= self.image_size <= 1024, f"--size must lie in [8, 1024], got {self.image_size}"),
            (self.precision in ("fp32", "bf16"), f"--precision must be fp32 or bf16, got {self.precision!r}"),
            (self.objective in ("diffusion", "regression"), f"--objective must be diffusion or regression"),
            (self.checkpoint_every >= 1, "--checkpoint-every must be at least 1"),
            (self.keep_checkpoints >= 1, "--keep must be at least 1"),
            (self.num_workers >= 0, "--workers must be >= 0"),
            (self.val_every >= 0, "--val-every must be >= 0 (0: never)"),
            (self.sample_every >= 0, "--sample-every must be >= 0 (0: never)"),
            (self.max_nonfinite >= 1, "max_nonfinite must be at least 1"),
            (0 <= self.rays_per_image <= self.image_size**2,
             f"--rays-per-image must lie in [0, {self.image_size**2}] (0: whole images), got {self.rays_per_image}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["diffusion"] = self.diffusion.to_dict()
        return out


# ---------------------------------------------------------------------------------------------------------
# Data order
# ---------------------------------------------------------------------------------------------------------


class _SampleStream(Dataset):
    """Maps a global sample position to a dataset item, deterministically from the seed.

    Position ``p`` lies in epoch ``p // N``; each epoch visits the N items in a seeded permutation, and the
    dataset's own randomness (which pair of views) is keyed by (epoch, item), so items never depend on which
    worker or process loads them.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:  # positions are unbounded; DataLoader only needs this for bookkeeping
        return 2**62

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.dataset), generator=g)
            self._perm_epoch = epoch
        return self._perm

    def __getitem__(self, position: int) -> dict[str, Any]:
        epoch, offset = divmod(position, len(self.dataset))
        index = int(self._permutation(epoch)[offset])
        self.dataset.set_epoch(epoch)  # the dataset keys its choice of view pair by (seed, epoch, index)
        return self.dataset[index]


class _RankBatches(Sampler[list[int]]):
    """Yields, for each step from ``start`` on, this process's slice of the global batch's positions."""

    def __init__(self, start: int, stop: int, global_batch: int, rank: int, world: int) -> None:
        self.start, self.stop, self.global_batch = start, stop, global_batch
        self.lo, self.hi = _rank_slice(global_batch, rank, world)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            base = step * self.global_batch
            yield list(range(base + self.lo, base + self.hi))


def _rank_slice(global_batch: int, rank: int, world: int) -> tuple[int, int]:
    per = global_batch // world
    return rank * per, (rank + 1) * per


def _step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 7_919 + step) * 31 + salt)


# ---------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_dir: Path
    final_checkpoint: Path
    steps: int
    final_loss: float
    nonfinite_steps: int
    log_file: Path
    model: nn.Module  # the trained (non-EMA) network, unwrapped from DDP


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` for the update made at ``step`` (0-based): linear warm-up, constant, then
    linear decay to zero over the last ``cfg.decay_steps`` updates."""
    warmup = default_warmup(cfg.steps) if cfg.warmup_steps is None else cfg.warmup_steps
    warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if cfg.decay_steps == 0:
        return warm
    decay_start = cfg.steps - cfg.decay_steps
    return min(warm, max(0.0, (cfg.steps - step) / cfg.decay_steps) if step >= decay_start else 1.0)


def default_warmup(steps: int) -> int:
    """Warm-up steps of a run of ``steps`` when none are given: 5 %, at most 200."""
    return min(200, max(1, steps // 20))


def make_optimizer(params: Iterable[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW as the trainer runs it. Fused (one kernel for every parameter, on CPU and CUDA): on a 2-core CPU
    AdamW over dit-tiny took 18 ms a step as a per-parameter loop, 14 ms foreach, 4-8 ms fused."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Restore a saved optimizer state but keep this optimizer's implementation: ``load_state_dict`` would
    also restore the saving run's ``fused`` / ``foreach`` flags (checkpoints from before the fused AdamW
    would resume on the slower foreach path)."""
    implementation = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, implementation):
        group.update(flags)


def _make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """EMA of the weights with the usual warm-up: the decay used at update ``n`` is min(decay, (1+n)/(10+n)).

    Without warm-up an EMA with decay 0.999 is still mostly the random initialisation after a few hundred steps,
    which is what short CPU runs and early evaluation points see.
    """

    @torch.no_grad()
    def ema_update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(ema_params, params, 1.0 - d)

    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_update, use_buffers=True)
    ema.requires_grad_(False)
    return ema


def _check_resume_compatible(cfg: TrainConfig, saved: dict[str, Any], where: Path) -> None:
    """Refuse to continue a run with settings that change what is being trained (steps, logging may change)."""
    current = cfg.to_dict()
    keys = ["model", "model_overrides", "image_size", "objective", "batch_size", "data", "seed", "rays_per_image"]
    # Only the settings of the run's own objective: a regression run ignores the diffusion settings (whose
    # defaults may have changed since it started), a diffusion run the regression loss.
    keys.append("regression_loss" if cfg.objective == "regression" else "diffusion")
    for key in keys:
        if key in saved and saved[key] != current[key]:
            raise ConfigError(
                f"cannot resume {where}: it was trained with {key}={saved[key]!r} but this run asks for "
                f"{key}={current[key]!r}; use the same setting or a new --out directory"
            )


LossFn = Callable[[nn.Module, dict[str, torch.Tensor], int], dict[str, torch.Tensor]]
"""``loss_fn(model, batch, step) -> {"loss", "mse", "vb", "render"}``: the objective of one training step."""


def make_objective(cfg: TrainConfig, rank: int = 0, world: int = 1) -> LossFn:
    """The configured objective of step ``step`` on this process's slice of the global batch.

    Its randomness (noise, guidance dropout, the rays a pixelNeRF step scores) is drawn for the whole global batch
    from a generator seeded by (seed, step) and sliced, so it does not depend on the process count or on resuming.
    """
    lo, hi = _rank_slice(cfg.batch_size, rank, world)
    image_shape = (cfg.batch_size, 3, cfg.image_size, cfg.image_size)

    def objective(model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        if cfg.objective == "diffusion":
            draw = draw_noise(image_shape, cfg.diffusion, _step_generator(cfg.seed, step))[lo:hi]
            return training_loss(model, batch, cfg.diffusion, draw=draw)
        pixels = None
        if cfg.rays_per_image:
            shape = (cfg.batch_size, cfg.rays_per_image)
            pixels = torch.randint(0, cfg.image_size**2, shape, generator=_step_generator(cfg.seed, step, salt=2))
            pixels = pixels[lo:hi].to(batch["target_image"].device)
        return regression_loss(model, batch, kind=cfg.regression_loss, pixels=pixels)

    return objective


def train(cfg: TrainConfig, resume: bool = False, loss_fn: LossFn | None = None) -> TrainResult:
    """Run (or resume) training as described by ``cfg``. Returns where the results are.

    ``loss_fn`` replaces the configured objective (:func:`make_objective`), e.g. to wrap it. A new run that fails
    before its first training step (say, on a corrupt image in its first batch) removes the run directory it
    created, so nothing is left that looks like a run; once a step has run, the folder and its log stay whatever
    happens (they are what diagnoses a failure), and a resumed run is never touched.
    """
    run_dir = Path(cfg.out)
    created = not run_dir.exists()
    run: _Run | None = None
    try:
        run = _Run(cfg, resume)
        return run.loop(loss_fn or make_objective(cfg, run.rank, run.world))
    except BaseException:
        stepped = run is not None and run.steps_taken > 0
        if created and not resume and not stepped and os.environ.get("RANK", "0") == "0":
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _model_overrides(cfg: TrainConfig, stats: dict[str, Any], saved: dict[str, Any] | None) -> dict[str, Any]:
    """The model options a run adds to ``cfg.model_overrides``: heads the objective needs, and the scale and ray
    bounds of the training data's cameras (or of the run being resumed: what its weights learned)."""
    overrides = dict(cfg.model_overrides)
    if cfg.objective == "diffusion":
        overrides.update({k: True for k in ("learn_variance", "self_condition") if getattr(cfg.diffusion, k)})
    radius = stats.get("radius")
    if "pose_scale" not in overrides and saved is not None and saved.get("pose_scale") is not None:
        overrides["pose_scale"] = float(saved["pose_scale"])
    elif "pose_scale" not in overrides and radius and math.isfinite(radius) and radius > 0:
        # Ray origins in units of the dataset's camera distance: the same model fits SRN, Blender or our data.
        overrides["pose_scale"] = float(radius)
    if not ({"near", "far"} & set(overrides)):
        if saved is not None and saved.get("far"):
            overrides.update(near=float(saved["near"]), far=float(saved["far"]))
        elif stats.get("radius_min") and stats.get("fov_deg"):
            overrides.update(zip(("near", "far"), cameras.scene_ray_bounds(
                stats["radius_min"], stats["radius_max"], stats["fov_deg"])))
    return overrides


class _Run:
    """One training run: data, model, optimiser and bookkeeping, set up before anything is written."""

    def __init__(self, cfg: TrainConfig, resume: bool) -> None:
        from accelerate import Accelerator

        from novelview.data.formats import open_dataset
        from novelview.data.views import MultiViewDataset
        from novelview.models.presets import build_model

        self.run_dir = Path(cfg.out)
        self.start_step = self.steps_taken = 0
        existing = _existing_checkpoints(self.run_dir, resume)
        # Everything that can fail on user input happens before anything is written.
        saved = ckpt.read_config(existing[-1]) if resume else None
        self.cfg = cfg = _settled(cfg, saved)
        scenes = open_dataset(cfg.data)  # once: the splits share it (a million objects take about a gigabyte)
        self.dataset = MultiViewDataset(scenes, size=cfg.image_size, split="train", seed=cfg.seed)
        self.val_dataset = _maybe_split(cfg, "val", scenes)
        for split in (self.dataset, self.val_dataset):
            if split is not None:  # a corrupt view fails now, naming its file, not after hours of training
                split.verify(progress=cfg.progress)
        if cfg.val_every and self.val_dataset is None and os.environ.get("RANK", "0") == "0":
            print(f"warning: {cfg.data} has no validation views, so --val-every {cfg.val_every} logs nothing",
                  file=sys.stderr)
        overrides = _model_overrides(cfg, self.dataset.camera_stats(), saved.model if saved else None)
        torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only, not on the process count
        model = build_model(cfg.model, cfg.image_size, **overrides)
        _check_model_fits_objective(model, cfg)
        if cfg.init and not resume:
            _load_init_weights(model, cfg.init)
        state = self._load(existing[-1], model, saved) if resume else None
        # accelerate only forms a gloo process group on CPU when told cpu=True.
        self.accelerator = Accelerator(
            mixed_precision="bf16" if cfg.precision == "bf16" else "no", cpu=not torch.cuda.is_available()
        )
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        _check_process_group(self.world, cfg.batch_size)
        self.ema = _make_ema(model, cfg.ema_decay)
        self.optimizer = make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
        # Not handed to accelerate: it would step the scheduler once per process.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, cfg))
        self.nonfinite_total = 0
        if state is not None:
            self._restore(state)
        self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        self.ema.to(self.accelerator.device)  # AveragedModel deep-copied the model while it was still on the CPU
        self.checkpoint_config = ckpt.CheckpointConfig(
            model=self.network.config.to_dict(), diffusion=cfg.diffusion, objective=cfg.objective,
            data=self.dataset.camera_stats(), training=cfg.to_dict(),
        )
        self.logger = _RunLogger(self.run_dir, enabled=self.accelerator.is_main_process, append=resume)
        if self.accelerator.is_main_process:
            self.logger.write_config(cfg)

    @property
    def network(self) -> nn.Module:
        """The trained model without its DDP wrapper."""
        return self.accelerator.unwrap_model(self.model)

    def _load(self, latest: Path, model: nn.Module, saved: ckpt.CheckpointConfig) -> dict[str, Any]:
        _check_resume_compatible(self.cfg, saved.training, latest)
        state = ckpt.load_training_state(latest)
        model.load_state_dict(ckpt.load_weights(latest, ckpt.MODEL_FILE))
        self.start_step = int(state["step"])
        if self.start_step >= self.cfg.steps:
            raise ConfigError(f"--resume: {latest} is already at step {self.start_step}; pass --steps above it to "
                              "train further")
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.nonfinite_total = int(state.get("nonfinite_total", 0))

    def _loader(self, start: int) -> DataLoader:
        return DataLoader(
            _SampleStream(self.dataset, self.cfg.seed),
            batch_sampler=_RankBatches(start, self.cfg.steps, self.cfg.batch_size, self.rank, self.world),
            num_workers=self.cfg.num_workers,
            persistent_workers=False,
            # Its own generator: otherwise creating the iterator draws from the global RNG, and a resumed run's
            # dropout masks would be one draw off from an uninterrupted run's.
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def loop(self, loss_fn: LossFn) -> TrainResult:
        """Train from the start (or resumed) step to ``cfg.steps``: one update, its log line, validation, sample
        grid and checkpoint as due."""
        from tqdm.auto import tqdm

        cfg, start = self.cfg, self.start_step
        bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (cfg.progress and self.accelerator.is_main_process))
        self.model.train()
        self.nonfinite_run, self.last_loss = 0, float("nan")
        self.tick = (time.perf_counter(), start)
        for step, batch in enumerate(self._loader(start), start=start):
            batch = {k: v.to(self.accelerator.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with self.accelerator.autocast():
                losses = loss_fn(self.model, batch, step)
            applied = self._update(losses["loss"], step, bar)
            self.steps_taken += 1
            bar.update(1)
            self._after_step(step + 1, losses, applied, bar)
        bar.close()
        return self._finish()

    def _update(self, loss: torch.Tensor, step: int, bar: Any) -> bool:
        """Backward pass, clipping, optimiser and EMA step; or, if the loss is not finite on any process, a
        skipped step (too many in a row stop the run). Returns whether the update was applied."""
        # Every process must agree to skip, or DDP would wait forever for the skipping one's gradients.
        finite = self.accelerator.reduce(torch.isfinite(loss.detach()).float().reshape(1), reduction="sum")
        if finite.item() < self.world:
            self.nonfinite_run += 1
            self.nonfinite_total += 1
            self.optimizer.zero_grad(set_to_none=True)
            if self.nonfinite_run >= self.cfg.max_nonfinite:
                bar.close()
                raise NovelviewError(
                    f"training stopped at step {step}: the loss was NaN/inf {self.nonfinite_run} steps in a row "
                    f"({self.nonfinite_total} skipped in all); lower --lr, use fp32, or check the data. "
                    f"The last good checkpoint is under {self.run_dir / 'checkpoints'}"
                )
            self.scheduler.step()
            return False
        self.nonfinite_run = 0
        self.accelerator.backward(loss)
        self.grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update_parameters(self.network)
        self.last_loss = self.accelerator.reduce(loss.detach().float().reshape(1), reduction="mean").item()
        return True

    def _after_step(self, done: int, losses: dict[str, torch.Tensor], applied: bool, bar: Any) -> None:
        cfg = self.cfg

        def due(every: int) -> bool:
            return bool(every) and (done % every == 0 or done == cfg.steps)

        if applied and due(cfg.log_every):
            self._log(done, losses, bar)
        if applied and self.val_dataset is not None and due(cfg.val_every):
            val = _validation_loss(self.ema.module, self.val_dataset, cfg, self.accelerator)
            if val is not None:
                self.logger.log({"step": done, "val_loss": val})
        if applied and self.accelerator.is_main_process and due(cfg.sample_every):
            grid = self.run_dir / "samples" / f"step_{done:07d}.png"
            _write_sample_grid(self.ema.module, self.val_dataset or self.dataset, cfg, grid)
        if due(cfg.checkpoint_every):
            self.accelerator.wait_for_everyone()
            if self.accelerator.is_main_process:
                self._save(done)
            self.accelerator.wait_for_everyone()

    def _log(self, done: int, losses: dict[str, torch.Tensor], bar: Any) -> None:
        now = time.perf_counter()
        img_per_s = (done - self.tick[1]) * self.cfg.batch_size / max(now - self.tick[0], 1e-9)
        self.tick = (now, done)
        bar.set_postfix(loss=f"{self.last_loss:.4f}", img_s=f"{img_per_s:.0f}")
        record = {"step": done, "loss": self.last_loss}
        record.update({k: losses[k].item() for k in ("mse", "vb", "render") if k in losses})
        record.update(grad_norm=float(self.grad_norm), lr=self.scheduler.get_last_lr()[0], img_per_s=img_per_s,
                      nonfinite_total=self.nonfinite_total)
        self.logger.log(record)

    def _save(self, step: int) -> Path:
        path = self.run_dir / "checkpoints" / f"step_{step:07d}"
        training_state = {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "nonfinite_total": self.nonfinite_total,
        }
        self.checkpoint_config.training = {**self.cfg.to_dict(), "step": step}
        ckpt.save_checkpoint(path, self.network, self.checkpoint_config, ema=self.ema.module,
                             training_state=training_state)
        for old in ckpt.list_checkpoints(self.run_dir)[: -self.cfg.keep_checkpoints]:
            ckpt.remove_checkpoint(old)
        return path

    def _finish(self) -> TrainResult:
        if self.accelerator.is_main_process:
            self.logger.plot()
        self.accelerator.wait_for_everyone()
        latest = ckpt.list_checkpoints(self.run_dir)
        self.logger.close()
        return TrainResult(self.run_dir, latest[-1] if latest else None, self.cfg.steps, self.last_loss,
                           self.nonfinite_total, self.logger.file, self.network)


def _settled(cfg: TrainConfig, saved: ckpt.CheckpointConfig | None) -> TrainConfig:
    """``cfg`` with what it leaves open decided: the warm-up length and, with ``init``, the model and noise process
    of the checkpoint being fine-tuned. A resumed run keeps what its start decided (and needs no ``init`` file)."""
    changes: dict[str, Any] = {}
    if cfg.warmup_steps is None:
        started = saved.training.get("warmup_steps") if saved is not None else None
        changes["warmup_steps"] = int(started) if started is not None else default_warmup(cfg.steps)
    if cfg.init and saved is not None:
        started = saved.training
        changes.update(model=started["model"], model_overrides=started["model_overrides"],
                       diffusion=DiffusionConfig.from_dict(started["diffusion"]))
    elif cfg.init:
        changes.update(_init_settings(cfg))
    return dataclasses.replace(cfg, **changes) if changes else cfg


# What defines a diffusion model's network and its noise process; the rest of DiffusionConfig (condition dropout,
# loss weights) is how it is trained, which a fine-tuning run chooses for itself.
_MODEL_DIFFUSION_FIELDS = ("prediction", "time", "logsnr_min", "logsnr_max", "schedule_shift", "learn_variance",
                           "self_condition", "num_train_timesteps")


def _init_settings(cfg: TrainConfig) -> dict[str, Any]:
    init = ckpt.read_config(ckpt.resolve_checkpoint(cfg.init))
    model = dict(init.model)
    if not model.get("preset"):
        raise ConfigError(f"--init {cfg.init}: its config.json names no model preset to rebuild")
    if int(model["image_size"]) != cfg.image_size:
        raise ConfigError(f"--init {cfg.init}: the checkpoint works at {model['image_size']} px; pass --size "
                          f"{model['image_size']} to fine-tune it")
    if init.objective != cfg.objective:
        raise ConfigError(f"--init {cfg.init} is a {init.objective} checkpoint; pass --objective {init.objective}")
    scale_free = {k: v for k, v in model.items() if k not in ("family", "preset", "image_size", "pose_scale",
                                                              "near", "far")}
    inherited = {f: getattr(init.diffusion, f) for f in _MODEL_DIFFUSION_FIELDS}
    return dict(model=model["preset"], model_overrides={**scale_free, **cfg.model_overrides},
                diffusion=dataclasses.replace(cfg.diffusion, **inherited))


def _load_init_weights(model: nn.Module, init: str) -> None:
    path = ckpt.resolve_checkpoint(init)
    weights = ckpt.EMA_FILE if (path / ckpt.EMA_FILE).is_file() else ckpt.MODEL_FILE
    try:
        model.load_state_dict(ckpt.load_weights(path, weights))
    except RuntimeError as err:
        raise ConfigError(f"--init {init}: its weights do not fit the model ({str(err).splitlines()[0]})") from None


def _existing_checkpoints(run_dir: Path, resume: bool) -> list[Path]:
    existing = ckpt.list_checkpoints(run_dir)
    if existing and not resume:
        raise ConfigError(f"{run_dir} already holds checkpoints; pass --resume to continue or choose another --out")
    if resume and not existing:
        raise ConfigError(f"--resume: no checkpoint found under {run_dir / 'checkpoints'}")
    if os.environ.get("RANK", "0") == "0":
        ckpt.remove_partial_checkpoints(run_dir)
    return existing



def _check_model_fits_objective(model: nn.Module, cfg: TrainConfig) -> None:
    renders_rays = model.config.family == "pixelnerf"
    if renders_rays and cfg.objective != "regression":
        raise ConfigError(f"--model {cfg.model} renders the target directly; train it with --objective regression")
    if cfg.rays_per_image and not renders_rays:
        raise ConfigError("--rays-per-image needs a model that renders rays independently (a pixelnerf preset)")
    if cfg.diffusion.render_weight and cfg.objective == "diffusion" and not model.config.lift:
        raise ConfigError("--render-weight needs a 3D-aware model (a -3d preset, or --override lift=true)")
    if model.config.render_skip and cfg.objective == "diffusion" and cfg.diffusion.prediction != "x0":
        raise ConfigError("render_skip adds the render to an x0 estimate; train it with --prediction x0")


def _check_process_group(world: int, batch_size: int) -> None:
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world:
        # Independent models on identical batches was the 3DiM reference's "distributed" training: refuse.
        raise RuntimeError(
            f"launched as {launched} processes but the process group has {world}; gradients would not be averaged"
        )
    if batch_size % world:
        raise ConfigError(f"--batch-size {batch_size} must be divisible by the number of processes ({world})")


def _maybe_split(cfg: TrainConfig, split: str, scenes: Any) -> Any:
    from novelview.data.views import MultiViewDataset

    try:
        ds = MultiViewDataset(scenes, size=cfg.image_size, split=split, seed=cfg.seed)
    except NovelviewError:
        return None
    return ds if len(ds) > 0 else None


@torch.no_grad()
def _validation_loss(model: nn.Module, dataset: Any, cfg: TrainConfig, accelerator: Any) -> float | None:
    """Loss of the EMA model on held-out objects, with fixed noise so successive values compare."""
    model.eval()
    stream = _SampleStream(dataset, cfg.seed + 1)
    per_batch = min(cfg.batch_size, 16)
    losses = []
    for b in range(cfg.val_batches):
        items = [stream[b * per_batch + j] for j in range(per_batch)]
        batch = {k: v.to(accelerator.device) for k, v in _collate_tensors(items).items()}
        with accelerator.autocast():
            if cfg.objective == "regression":
                out = regression_loss(model, batch, kind=cfg.regression_loss)
            else:
                shape = tuple(batch["target_image"].shape)
                draw = draw_noise(shape, cfg.diffusion, _step_generator(cfg.seed, b, salt=1))
                out = training_loss(model, batch, cfg.diffusion, draw=draw)
        losses.append(out["loss"].item())
    return sum(losses) / len(losses) if losses else None


def _write_sample_grid(model: nn.Module, dataset: Any, cfg: TrainConfig, path: Path, n: int = 8) -> None:
    """condition | ground truth | generated (| the lifter's RGB render, for 3D-aware models), for a few fixed
    held-out pairs (EMA weights)."""
    from novelview.images import make_grid, save_image
    from novelview.sampling import SamplingSettings, View, generate

    stream = _SampleStream(dataset, cfg.seed + 2)
    items = [stream[i] for i in range(min(n, len(dataset)))]
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in _collate_tensors(items).items()}
    source = View(batch["cond_image"], batch["cond_pose"], batch["cond_K"])
    settings = SamplingSettings(steps=cfg.sample_steps, seed=cfg.seed)
    was_training = model.training
    model.eval()
    generated = generate(model, cfg.diffusion, source, batch["target_pose"], batch["target_K"], settings,
                         objective=cfg.objective)
    columns = [batch["cond_image"], batch["target_image"], generated]
    if cfg.objective == "diffusion" and getattr(model, "lifter", None) is not None:
        columns.append(_lifter_rgb(model, batch))
    model.train(was_training)
    save_image(make_grid([[column[i] for column in columns] for i in range(len(items))]), path)


@torch.no_grad()
def _lifter_rgb(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What a 3D-aware model's lifter renders at the target cameras (RGB, upsampled to the image size)."""
    from novelview.models.lifting import ConditionViews

    views = ConditionViews.of(batch["cond_image"], batch["cond_pose"], batch["cond_K"])
    hw = tuple(batch["target_image"].shape[-2:])
    return model.render_rgb(views, batch["target_pose"], batch["target_K"], hw).clamp(-1, 1)


def _collate_tensors(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k, v in items[0].items() if isinstance(v, torch.Tensor)}


class _RunLogger:
    """JSONL metrics log, optional TensorBoard scalars, and a loss-curve PNG."""

    def __init__(self, run_dir: Path, enabled: bool, append: bool) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self.file = run_dir / "log.jsonl"
        self._fh = None
        self._tb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.file, "a" if append else "w")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        except Exception:  # tensorboard is optional
            self._tb = None

    def write_config(self, cfg: TrainConfig) -> None:
        (self.run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": time.time(), **record}
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "time") and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, record["step"])

    def plot(self) -> None:
        if not self.enabled or not self.file.exists():
            return
        plot_training_curves(self.file, self.run_dir / "loss.png")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._tb is not None:
            self._tb.close()


def plot_training_curves(log_file: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_pts, val_pts = [], []
    for line in log_file.read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            train_pts.append((rec["step"], rec["loss"]))
        if "val_loss" in rec:
            val_pts.append((rec["step"], rec["val_loss"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    if train_pts:
        ax.plot(*zip(*train_pts), label="train loss")
    if val_pts:
        ax.plot(*zip(*val_pts), "o-", label="val loss (EMA)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
