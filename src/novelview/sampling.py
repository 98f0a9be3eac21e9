"""Samplers, classifier-free guidance and stochastic conditioning.

Everything here is a small function of a ``denoise(z_t, logsnr) -> prediction`` closure (k-diffusion style), so
the loop never knows which backbone it drives. The update rules come from ``diffusers`` schedulers:

* ``"ddpm"``  ancestral sampling (``DDPMScheduler``; learned variance via ``variance_type="learned_range"``),
* ``"ddim"``  deterministic DDIM, eta = 0 (``DDIMScheduler``),
* ``"dpmpp"`` DPM-Solver++ 2M (``DPMSolverMultistepScheduler``, ``algorithm_type="dpmsolver++"``).

Noise levels. ``diffusers`` timestep ``t`` means ``alphas_cumprod[t]``; our grid index ``i`` means continuous time
``(i + 1) / T`` (:func:`novelview.diffusion.discrete_alphas_cumprod`). So the scheduler is built from exactly
those ``alphas_cumprod`` and the model is told ``logsnr_from_alphas_cumprod(scheduler.alphas_cumprod[t])`` — the
very level the scheduler's update assumes ``z_t`` sits at.

Respacing. We pick the ``steps`` grid indices ourselves (:func:`timestep_indices`) and hand the scheduler only
those levels, as a ``steps``-long schedule (improved-DDPM's "respacing"; its ``alphas_cumprod`` are set to the
trained values exactly, see :func:`_use_alphas_cumprod`). This is the same arithmetic the schedulers would do on
the 1000-step grid, with one difference that matters: ``DDIMScheduler.step`` finds the previous level as
``t - T // steps``, which is *not* the next timestep of a "trailing" grid when ``steps`` does not divide ``T``
(e.g. 30 steps: 966 -> 933 while the next timestep is 932), so ``z`` and the noise level told to the model would
drift apart. With a respaced schedule every scheduler steps from chosen level ``k`` to level ``k + 1`` and finally
to the clean image (``set_alpha_to_one`` / ``final_sigmas_type="zero"``), whatever ``steps`` is. The terminal
level is the trained one (logSNR = ``logsnr_min``, alpha_bar ~2e-9, not zero), so no step divides by zero.

Spacing. ``"trailing"`` (default) starts at the last grid level (logSNR = ``logsnr_min``, pure noise in
practice) and ends ``T / steps`` levels above clean; ``"leading"`` starts ``T / steps`` levels *below* pure
noise (logSNR about -5.6 at 25 steps for the cosine schedule) although ``z`` is initialised as pure noise — the
flaw described by Lin et al. 2024. With an exact (oracle) denoiser, trailing gets the samples' mean and spread
closer to the data's than leading does for DPM-Solver++ (the default sampler) and DDIM's mean, and ties
elsewhere (docs/benchmarks.md, "Timestep spacing"), so it is the default; ``"leading"`` and ``"linspace"`` stay
selectable (linspace behaves like leading for DPM-Solver++). DDPM's low spread at few steps is its fixed
"small" posterior variance, not a plumbing error (it vanishes with steps:
``tests/test_sampling.py::test_oracle_gaussian_data_statistics``).

Generation. :class:`SamplingSettings` holds every choice of a sampling run and :func:`generate` is the one
entry point that runs it: regression or diffusion, autocast, seeding and the checks live there once.

Nothing clips: ``clip_sample=False`` and ``thresholding=False`` everywhere; images are clamped to [-1, 1] only
when they become pictures (or condition views, in stochastic conditioning).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from novelview import cameras
from novelview.diffusion import (
    REGRESSION_LOGSNR,
    DiffusionConfig,
    alpha_sigma,
    betas_from_alphas_cumprod,
    discrete_alphas_cumprod,
    logsnr_from_alphas_cumprod,
    to_x0_eps,
)
from novelview.errors import ConfigError
from novelview.models.lifting import ConditionViews

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""``denoise(z_t [B,C,H,W], logsnr [B]) -> prediction [B,C or 2C,H,W]`` in the config's parameterisation."""

Progress = Callable[[int, int], None]
"""``progress(done, total)``, called once per denoising step; raising from it aborts sampling."""

Spacing = Literal["trailing", "leading", "linspace"]
# In which order stochastic conditioning generates the targets: as given (3DiM), or nearest to the source first,
# so that views far from the input are drawn when generated views on both sides of them can condition them.
Order = Literal["given", "nearest"]

SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpmpp")
_ALIASES = {"dpm++": "dpmpp", "dpmsolver++": "dpmpp", "dpm-solver++": "dpmpp", "dpm": "dpmpp"}
DEFAULT_SAMPLER = "dpmpp"
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 3.0
#: Guidance weights beyond this only push samples off the image range (3DiM used 3); far larger ones overflow to
#: NaN. Every path that samples (pipeline, evaluation, the web server, checkpoint defaults) is held to it.
MAX_GUIDANCE = 20.0
DEFAULT_SPACING: Spacing = "trailing"

_PREDICTION_TYPE = {"v": "v_prediction", "eps": "epsilon", "x0": "sample"}


def canonical_sampler(name: str) -> str:
    """Normalise a sampler name (``"DPM++"`` -> ``"dpmpp"``); unknown names raise :class:`ConfigError`."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return key


def check_steps(steps: int, cfg: DiffusionConfig) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= cfg.num_train_timesteps:
        raise ConfigError(f"steps must be an integer in [1, {cfg.num_train_timesteps}], got {steps!r}")
    return int(steps)


def check_guidance(guidance: float, name: str = "guidance") -> float:
    """A classifier-free guidance weight in ``[0, MAX_GUIDANCE]`` as a float, or a :class:`ConfigError`."""
    ok = isinstance(guidance, (int, float, np.integer, np.floating)) and not isinstance(guidance, bool)
    if not ok or not 0.0 <= float(guidance) <= MAX_GUIDANCE:
        raise ConfigError(f"{name} must be a number in [0, {MAX_GUIDANCE:g}], got {guidance!r}")
    return float(guidance)


# ---------------------------------------------------------------------------------------------------------
# Schedulers
# ---------------------------------------------------------------------------------------------------------


def check_strength(strength: float) -> float:
    """``strength`` as a float in (0, 1], or a :class:`ConfigError` naming the range."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.floating, np.integer)):
        raise ConfigError(f"strength must be a number in (0, 1], got {strength!r}")
    if not (math.isfinite(float(strength)) and 0.0 < float(strength) <= 1.0):
        raise ConfigError(f"strength must be in (0, 1] (1: start from pure noise), got {strength!r}")
    return float(strength)


def timestep_indices(num_train_timesteps: int, steps: int, spacing: Spacing = DEFAULT_SPACING) -> np.ndarray:
    """The grid indices (descending, noisiest first) a ``steps``-step sampler visits.

    Same formulas as ``diffusers``' ``timestep_spacing`` options (Lin et al. 2024, table 2).
    """
    T = num_train_timesteps
    if spacing == "trailing":
        idx = np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1
    elif spacing == "leading":
        idx = (np.arange(steps) * (T // steps))[::-1].astype(np.int64)
    elif spacing == "linspace":
        idx = np.linspace(T - 1, 0, steps).round().astype(np.int64)  # from the top, so 1 step starts at noise
    else:
        raise ConfigError(f"unknown timestep spacing {spacing!r}; choose trailing, leading or linspace")
    idx = np.ascontiguousarray(idx[:steps])
    if len(np.unique(idx)) != len(idx):  # only reachable for steps close to T with linspace rounding
        raise ConfigError(f"{steps} steps with {spacing} spacing repeat a noise level; use trailing spacing")
    return idx


def _use_alphas_cumprod(sched, alphas_cumprod: Tensor) -> None:
    """Make a freshly built scheduler use exactly ``alphas_cumprod`` (before ``set_timesteps``).

    Schedulers rebuild ``alphas_cumprod`` as a float32 ``cumprod(1 - betas)``; when one respaced step jumps from
    ``alpha_bar`` 0.02 to the terminal 2e-9, ``1 - beta`` (1e-7) is below float32 resolution next to 1 and the
    terminal level would come out near logSNR -19 instead of -20. DDPM and DDIM read ``alphas_cumprod`` in
    ``step``; DPM-Solver derives ``sigmas`` from it in ``set_timesteps`` and keeps the other derived tables below.
    :func:`make_scheduler` verifies the result, so a diffusers change cannot slip past silently.
    """
    ac = alphas_cumprod.to(torch.float32)
    sched.alphas_cumprod = ac
    if hasattr(sched, "lambda_t"):  # DPM-Solver's derived tables (__init__)
        sched.alpha_t = torch.sqrt(ac)
        sched.sigma_t = torch.sqrt(1 - ac)
        sched.lambda_t = torch.log(sched.alpha_t) - torch.log(sched.sigma_t)
        sched.sigmas = ((1 - ac) / ac) ** 0.5


def make_scheduler(
    sampler: str,
    cfg: DiffusionConfig,
    steps: int,
    spacing: Spacing = DEFAULT_SPACING,
):
    """A ``diffusers`` scheduler that walks ``steps`` of the trained noise levels, ready for the loop.

    The returned scheduler's ``timesteps`` are ``steps - 1 .. 0`` and its ``alphas_cumprod[k]`` is the trained
    ``alpha_bar`` at grid index ``timestep_indices(...)[steps - 1 - k]`` (see the module docstring: respacing).
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    sampler = canonical_sampler(sampler)
    steps = check_steps(steps, cfg)
    chosen = timestep_indices(cfg.num_train_timesteps, steps, spacing)[::-1].copy()  # ascending
    alphas_cumprod = discrete_alphas_cumprod(cfg)[torch.from_numpy(chosen)]
    common = dict(
        num_train_timesteps=steps,
        trained_betas=betas_from_alphas_cumprod(alphas_cumprod).numpy(),
        prediction_type=_PREDICTION_TYPE[cfg.prediction],
        thresholding=False,
        # One schedule step per inference step: every spacing then gives timesteps steps-1..0 (see module doc).
        timestep_spacing="trailing",
    )
    if sampler == "ddpm":
        sched = DDPMScheduler(
            **common,
            clip_sample=False,
            # Learned variance interpolates between posterior variance and beta of each (respaced) step, exactly
            # what the KL term in diffusion.variational_bound_term trains on the full grid.
            variance_type="learned_range" if cfg.learn_variance else "fixed_small",
        )
    elif sampler == "ddim":
        sched = DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)
    else:
        sched = DPMSolverMultistepScheduler(
            **common,
            algorithm_type="dpmsolver++",
            solver_order=2,
            final_sigmas_type="zero",  # the last step lands on the clean image
            lower_order_final=True,
        )
    _use_alphas_cumprod(sched, alphas_cumprod)
    sched.set_timesteps(steps)
    # Guards against a diffusers change: timesteps steps-1..0, and the levels (DPM-Solver: its sigmas) we set.
    expected = np.arange(steps - 1, -1, -1)
    if not np.array_equal(sched.timesteps.cpu().numpy(), expected):
        raise RuntimeError(f"unexpected {type(sched).__name__} timesteps {sched.timesteps.tolist()}")
    want = logsnr_from_alphas_cumprod(alphas_cumprod)
    if hasattr(sched, "sigmas") and sampler == "dpmpp":
        got = -2.0 * torch.log(sched.sigmas[:-1].double().flip(0))
    else:
        got = scheduler_logsnr(sched)
    if not torch.allclose(got, want, atol=0.05):
        raise RuntimeError(f"{type(sched).__name__} does not walk the trained noise levels (diffusers changed?)")
    return sched


def scheduler_logsnr(scheduler) -> Tensor:
    """logSNR of every scheduler timestep (float64), from the scheduler's own ``alphas_cumprod``."""
    return logsnr_from_alphas_cumprod(scheduler.alphas_cumprod.double())


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------


def skipped_steps(steps: int, strength: float) -> int:
    """How many of ``steps`` a run started from an image at ``strength`` skips (at least one step runs)."""
    return min(steps - 1, round((1.0 - strength) * steps))


def sample(
    denoise: Denoiser,
    shape: Sequence[int],
    cfg: DiffusionConfig,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    *,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    device: str | torch.device = "cpu",
    spacing: Spacing = DEFAULT_SPACING,
    progress: Progress | None = None,
    init: Tensor | None = None,
    strength: float = 1.0,
) -> Tensor:
    """Draw ``x0`` samples of ``shape`` ``[B, C, H, W]`` by integrating the reverse process with ``denoise``.

    ``denoise`` is called exactly once per step with ``(z_t, logsnr [B])``. The initial noise comes from
    ``noise`` or from ``generator`` (a CPU generator gives the same samples on every device). Returns float32
    samples, not clamped.

    ``init`` with ``strength < 1`` starts from an image instead of pure noise (SDEdit, Meng et al. 2022): ``init``
    noised to the level of the step ``round((1 - strength) * steps)`` steps into the schedule, then only the
    remaining steps run. ``strength = 1`` (or no ``init``) is ordinary sampling.
    """
    sched = make_scheduler(sampler, cfg, steps, spacing)
    ddpm_learned = canonical_sampler(sampler) == "ddpm" and cfg.learn_variance
    logsnrs = scheduler_logsnr(sched).float()
    channels = shape[1]
    if noise is None:
        noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    noise = noise.to(device=device, dtype=torch.float32)
    first = skipped_steps(steps, strength) if init is not None else 0
    timesteps = sched.timesteps[first:]
    if first:
        alpha, sigma = alpha_sigma(logsnrs[int(timesteps[0])].to(device))
        z = alpha * init.to(device=device, dtype=torch.float32) + sigma * noise
    else:
        z = noise * sched.init_noise_sigma
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        z_in = sched.scale_model_input(z, t)
        logsnr = logsnrs[int(t)].to(device).expand(z.shape[0])
        out = denoise(z_in, logsnr).float()
        if ddpm_learned:
            if out.shape[1] != 2 * channels:
                raise ValueError(f"learn_variance is set but the model returned {out.shape[1]} channels")
        else:
            out = out[:, :channels]  # DDIM / DPM-Solver++ (and fixed-variance DDPM) ignore a variance head
        step = sched.step(out, t, z, generator=generator)
        # The last step goes to alpha_bar = 1, where the update's mean *is* the x0 estimate; taking it directly
        # skips DDPM's final noise draw (variance ~0 there, but the learned-range variance need not be).
        last = i == total - 1
        x0 = getattr(step, "pred_original_sample", None)
        z = x0 if last and x0 is not None else step.prev_sample
        if progress is not None:
            progress(i + 1, total)
    return z


# ---------------------------------------------------------------------------------------------------------
# Conditioning and classifier-free guidance
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """One posed image: ``image [3,H,W]`` in [-1, 1], ``pose [4,4]`` camera-to-world, ``K [3,3]`` pixels."""

    image: Tensor
    pose: Tensor
    K: Tensor


def guided_forward(
    model: Callable[..., Tensor],
    z_t: Tensor,
    logsnr: Tensor,
    *,
    cond_image: Tensor,
    cond_pose: Tensor,
    cond_K: Tensor,
    target_pose: Tensor,
    target_K: Tensor,
    guidance: float,
    x_self: Tensor | None = None,
) -> Tensor:
    """One classifier-free-guided prediction: ``uncond + w * (cond - uncond)``, cond and uncond in ONE forward.

    ``w = 1`` is the plain conditional model and ``w = 0`` the unconditional one; each then needs only its own
    half of the batch, so those run a single-branch forward (which also makes them exactly equal to the branch).
    With a learned-variance head only the prediction channels are guided; the variance comes from the
    conditional branch (as GLIDE). ``x_self``: the previous x0 estimate of a self-conditioned model, the
    same for both branches.
    """
    b = z_t.shape[0]
    kw = dict(cond_image=cond_image, cond_pose=cond_pose, target_pose=target_pose, cond_K=cond_K, target_K=target_K)
    if x_self is not None:
        kw["x_self"] = x_self
    if guidance == 1.0:
        return model(z_t, logsnr, **kw, drop_cond=torch.zeros(b, dtype=torch.bool, device=z_t.device)).float()
    if guidance == 0.0:
        return model(z_t, logsnr, **kw, drop_cond=torch.ones(b, dtype=torch.bool, device=z_t.device)).float()
    both = {k: torch.cat([v, v]) for k, v in kw.items()}
    drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(z_t.device)
    out = model(torch.cat([z_t, z_t]), torch.cat([logsnr, logsnr]), **both, drop_cond=drop).float()
    cond, uncond = out[:b], out[b:]
    c = z_t.shape[1]
    guided = uncond[:, :c] + guidance * (cond[:, :c] - uncond[:, :c])
    return torch.cat([guided, cond[:, c:]], dim=1) if out.shape[1] > c else guided


EstimatingDenoiser = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]
"""``denoise(z_t, logsnr, x_self)``: a denoiser that may read the previous x0 estimate."""


def self_conditioned(denoise: EstimatingDenoiser, cfg: DiffusionConfig | None) -> Denoiser:
    """A :data:`Denoiser` that hands ``denoise`` the x0 estimate of its previous call (self-conditioning).

    Stateful by design: one per sampling run. The first call gets zeros (as in training); later calls the
    clamped x0 implied by the previous (guided) prediction. Without ``cfg.self_condition`` it passes None.
    """
    if cfg is None or not cfg.self_condition:
        return lambda z_t, logsnr: denoise(z_t, logsnr, None)
    estimate: Tensor | None = None

    def wrapped(z_t: Tensor, logsnr: Tensor) -> Tensor:
        nonlocal estimate
        out = denoise(z_t, logsnr, torch.zeros_like(z_t) if estimate is None else estimate)
        estimate = to_x0_eps(out[:, : z_t.shape[1]], z_t, logsnr, cfg.prediction)[0].clamp(-1, 1)
        return out

    return wrapped


def conditional_denoiser(
    model: Callable[..., Tensor],
    source: View,
    target_pose: Tensor,
    target_K: Tensor,
    guidance: float = 1.0,
    cfg: DiffusionConfig | None = None,
) -> Denoiser:
    """Denoiser for a batch of targets ``target_pose [B,4,4]``, all conditioned on the one ``source`` view
    (or, when ``source`` holds one condition per target, ``[B, ...]`` tensors, each on its own).
    ``cfg`` tells whether the model is self-conditioned."""
    rows = _batched(source, target_pose.shape[0])

    def denoise(z_t: Tensor, logsnr: Tensor, x_self: Tensor | None) -> Tensor:
        return guided_forward(
            model, z_t, logsnr, cond_image=rows.image, cond_pose=rows.pose, cond_K=rows.K,
            target_pose=target_pose, target_K=target_K, guidance=guidance, x_self=x_self,
        )

    return self_conditioned(denoise, cfg)


def stochastic_denoiser(
    model: Callable[..., Tensor],
    pool: Sequence[View],
    target_pose: Tensor,
    target_K: Tensor,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    on_choice: Callable[[int], None] | None = None,
    cfg: DiffusionConfig | None = None,
    pooled: bool = False,
) -> Denoiser:
    """Stochastic conditioning (3DiM, Watson et al. 2022, sec. 3.2) for ONE target ``[1,4,4]``.

    Every call (= every denoising step) conditions on a view drawn uniformly from ``pool``. ``pool`` is read at
    call time, so the caller may grow it between targets. ``on_choice(index)`` observes the draws. A
    self-conditioned model's estimate carries over from step to step whichever view conditions it. ``pooled``:
    hand the model the whole pool, the drawn view first (a 3D-aware model's lifter pools them all; its backbone
    reads the first).
    """

    def denoise(z_t: Tensor, logsnr: Tensor, x_self: Tensor | None) -> Tensor:
        k = int(torch.randint(len(pool), (1,), generator=generator))
        if on_choice is not None:
            on_choice(k)
        if pooled:  # [1, K, ...]: the drawn view first, then the rest of the pool
            views = [pool[k], *(v for i, v in enumerate(pool) if i != k)]
            image, pose, K = (torch.stack([getattr(v, f) for v in views])[None] for f in ("image", "pose", "K"))
        else:
            image, pose, K = pool[k].image[None], pool[k].pose[None], pool[k].K[None]
        return guided_forward(
            model, z_t, logsnr, cond_image=image, cond_pose=pose, cond_K=K, target_pose=target_pose,
            target_K=target_K, guidance=guidance, x_self=x_self,
        )

    return self_conditioned(denoise, cfg)


# ---------------------------------------------------------------------------------------------------------
# Settings and the one entry point
# ---------------------------------------------------------------------------------------------------------

SPACINGS: tuple[str, ...] = ("trailing", "leading", "linspace")
ORDERS: tuple[str, ...] = ("nearest", "given")
OBJECTIVES: tuple[str, ...] = ("diffusion", "regression")


@dataclass(frozen=True)
class SamplingSettings:
    """How views are sampled. Every path that generates (the Python API, the CLI, evaluation, the web server,
    training's sample grids) builds one of these and hands it to :func:`generate`; a bad value raises
    :class:`ConfigError` naming the field when the record is built.

    ``guidance``: classifier-free guidance weight in ``[0, MAX_GUIDANCE]``; None is the caller's default (a
    checkpoint's measured weight, ``generate(default_guidance=)``). ``seed``: None draws a fresh one.
    ``stochastic``: 3DiM stochastic conditioning, the targets generated one after another in ``order``
    (``"nearest"`` to the source first, or as ``"given"``); otherwise each target is conditioned on the source
    only and ``batch`` of them are denoised together. ``pool``: in stochastic conditioning, a 3D-aware model's
    lifter also pools every view generated so far with the drawn one (GeNVS), while the backbone reads the drawn
    view; models without a lifter ignore it. ``spacing``: which noise levels ``steps`` visits (see the module
    docstring). ``strength``: below 1, a 3D-aware model starts each view from its lifter's render of the source
    view at the target camera, noised part-way, and runs only that fraction of the steps (SDEdit): the geometry
    fixes the layout and the denoiser paints the detail. Lower is closer to the render, blurrier and more 3D
    consistent (docs/results.md measures the trade). Models without a lifter need 1. A regression checkpoint
    uses ``batch`` only.
    """

    sampler: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    guidance: float | None = None
    seed: int | None = 0
    spacing: Spacing = DEFAULT_SPACING
    stochastic: bool = False
    order: Order = "nearest"
    pool: bool = False
    batch: int = 16
    strength: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.sampler, str):
            raise ConfigError(f"sampler must be a name such as 'dpmpp', got {self.sampler!r}")
        object.__setattr__(self, "sampler", canonical_sampler(self.sampler))
        object.__setattr__(self, "steps", _positive_int(self.steps, "steps"))
        if self.guidance is not None:
            object.__setattr__(self, "guidance", check_guidance(self.guidance))
        if self.seed is not None:
            if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
                raise ConfigError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
            object.__setattr__(self, "seed", int(self.seed))
        if self.spacing not in SPACINGS:
            raise ConfigError(f"unknown timestep spacing {self.spacing!r}; choose {', '.join(SPACINGS)}")
        if not isinstance(self.stochastic, (bool, np.bool_)):
            raise ConfigError(f"stochastic must be true or false, got {self.stochastic!r}")
        object.__setattr__(self, "stochastic", bool(self.stochastic))
        if not isinstance(self.pool, (bool, np.bool_)):
            raise ConfigError(f"pool must be true or false, got {self.pool!r}")
        object.__setattr__(self, "pool", bool(self.pool))
        if self.order not in ORDERS:
            raise ConfigError(f"unknown generation order {self.order!r}: choose given or nearest")
        object.__setattr__(self, "batch", _positive_int(self.batch, "batch size"))
        object.__setattr__(self, "strength", check_strength(self.strength))

    def check(self, cfg: DiffusionConfig) -> "SamplingSettings":
        """These settings, checked against the noise process they sample (``steps`` within its grid)."""
        check_steps(self.steps, cfg)
        return self

    def generator(self) -> torch.Generator:
        """A CPU generator seeded with ``seed`` (a fresh seed when None): the same seed gives the same views on
        every device."""
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _positive_int(value: object, name: str) -> int:
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def generate(
    model: Callable[..., Tensor],
    diffusion: DiffusionConfig,
    source: View,
    target_poses: Tensor,
    target_K: Tensor,
    settings: SamplingSettings,
    *,
    objective: str = "diffusion",
    default_guidance: float = DEFAULT_GUIDANCE,
    autocast: bool = False,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
    on_choice: Callable[[int, int], None] | None = None,
) -> Tensor:
    """One image per target camera, ``[N, 3, H, W]`` clamped to [-1, 1], on ``source``'s device.

    ``model`` is any network with the backbones' call signature (2D or 3D-aware); ``source`` is the condition
    view, or one condition per target (``[N, ...]`` tensors, e.g. ``[N, K, 3, H, W]`` for K views each).
    ``target_K`` is ``[3, 3]`` or one per target. A ``"regression"`` checkpoint predicts every view in one
    forward; a diffusion checkpoint is sampled per ``settings`` (guidance None: ``default_guidance``), its noise
    drawn from ``generator`` (default: ``settings.generator()``), so a caller that draws several samples from
    one stream passes its own. ``autocast`` runs the network under bf16 autocast. ``progress(done, total)``
    counts denoising steps over the whole call; raising from it aborts. ``on_choice(n, index)`` observes
    stochastic conditioning's draws for target ``n`` (index 0 = source, ``i`` = the i-th target generated).
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; choose {' or '.join(OBJECTIVES)}")
    settings.check(diffusion)
    network = _autocast(model, source.image.device.type) if autocast else model
    n = target_poses.shape[0]
    device = source.image.device
    target_poses = target_poses.to(device)
    target_K = (target_K.expand(n, 3, 3) if target_K.ndim == 2 else target_K).to(device)
    reusing = getattr(model, "reusing_conditioning", contextlib.nullcontext)
    with torch.inference_mode(), reusing():
        if objective == "regression":  # one-step predictor: no noise, no guidance, no steps
            return _regress_views(network, source, target_poses, target_K, settings.batch, progress)
        guidance = check_guidance(default_guidance if settings.guidance is None else settings.guidance)
        run = _Run(network, diffusion, settings, guidance, settings.generator() if generator is None else generator,
                   pooled=settings.pool and _lifts(model), render=_start_renderer(model, settings))
        if settings.stochastic:
            return _stochastic_views(run, source, target_poses, target_K, progress, on_choice)
        return _plain_views(run, source, target_poses, target_K, progress)


def _autocast(model: Callable[..., Tensor], device_type: str) -> Callable[..., Tensor]:
    def forward(*args: Any, **kwargs: Any) -> Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return model(*args, **kwargs)

    return forward


# ---------------------------------------------------------------------------------------------------------
# Many views of one object
# ---------------------------------------------------------------------------------------------------------


def _offset_progress(progress: Progress | None, offset: int, total: int) -> Progress | None:
    if progress is None:
        return None
    return lambda done, _n: progress(offset + done, total)


def _shared(source: View) -> bool:
    """Whether ``source`` is one condition for every target (``[3, H, W]`` image) rather than one per target."""
    return source.image.ndim == 3


def _rows(source: View, start: int, stop: int) -> View:
    """The condition views of targets ``start:stop``: the one shared view, or a slice of per-target views."""
    if _shared(source):
        return source
    return View(source.image[start:stop], source.pose[start:stop], source.K[start:stop])


def _batched(source: View, b: int) -> View:
    """``source`` as ``b`` rows: the shared view repeated, or the per-target views as they are."""
    if not _shared(source):
        return source
    return View(source.image.expand(b, *source.image.shape), source.pose.expand(b, 4, 4), source.K.expand(b, 3, 3))


@dataclass(frozen=True)
class _Run:
    """The fixed parts of one sampling run, shared by the plain and the stochastic loop."""

    model: Callable[..., Tensor]
    cfg: DiffusionConfig
    settings: SamplingSettings
    guidance: float
    generator: torch.Generator
    pooled: bool = False  # stochastic conditioning hands the model the whole pool (a 3D-aware model)
    render: Renderer | None = None  # the start image of each target when settings.strength < 1

    @property
    def steps(self) -> int:
        """Denoising steps each view runs (fewer than ``settings.steps`` when it starts from a render)."""
        return self.settings.steps - skipped_steps(self.settings.steps, self.settings.strength)

    def draw(
        self, denoise: Denoiser, source: View, target_poses: Tensor, target_K: Tensor, progress: Progress | None
    ) -> Tensor:
        """Samples of ``denoise`` for ``target_poses`` (``source``: the view each start image is rendered from),
        clamped to [-1, 1]."""
        shape = (target_poses.shape[0], *source.image.shape[-3:])
        init = None if self.render is None else self.render(_batched(source, shape[0]), target_poses, target_K)
        return sample(
            denoise, shape, self.cfg, self.settings.sampler, self.settings.steps, generator=self.generator,
            device=source.image.device, spacing=self.settings.spacing, progress=progress, init=init,
            strength=self.settings.strength,
        ).clamp(-1, 1)


def _plain_views(run: _Run, source: View, target_poses: Tensor, target_K: Tensor, progress: Progress | None) -> Tensor:
    """Every target conditioned on ``source`` only, ``settings.batch`` of them denoised together."""
    n = target_poses.shape[0]
    batch, steps = run.settings.batch, run.steps
    chunks = list(range(0, n, batch))
    outputs: list[Tensor] = []
    for c, start in enumerate(chunks):
        stop = min(start + batch, n)
        rows = _rows(source, start, stop)
        denoise = conditional_denoiser(
            run.model, rows, target_poses[start:stop], target_K[start:stop], run.guidance, run.cfg
        )
        progress_c = _offset_progress(progress, c * steps, len(chunks) * steps)
        outputs.append(run.draw(denoise, rows, target_poses[start:stop], target_K[start:stop], progress_c))
    return torch.cat(outputs)


def _stochastic_views(
    run: _Run,
    source: View,
    target_poses: Tensor,
    target_K: Tensor,
    progress: Progress | None,
    on_choice: Callable[[int, int], None] | None,
) -> Tensor:
    """3DiM stochastic conditioning: the targets one after another (nearest the source first, or as given), each
    denoising step conditioned on a view drawn uniformly from ``{source} ∪ {targets generated before it}``;
    outputs in the given order."""
    if not _shared(source):
        raise ValueError("stochastic conditioning starts from one source view")
    n, steps = target_poses.shape[0], run.steps
    sequence = list(range(n))
    if run.settings.order == "nearest":
        angles = cameras.angle_between_views(source.pose.double().expand(n, 4, 4), target_poses.double())
        sequence = sorted(sequence, key=lambda j: float(angles[j]))
    pool: list[View] = [source]
    generated: dict[int, Tensor] = {}
    for done, j in enumerate(sequence):
        choice = None if on_choice is None else (lambda k, j=j: on_choice(j, k))
        denoise = stochastic_denoiser(
            run.model, pool, target_poses[j : j + 1], target_K[j : j + 1], run.guidance, run.generator, choice, run.cfg,
            pooled=run.pooled,
        )
        # The start image is rendered from the input alone: one radiance field for the whole orbit.
        x = run.draw(denoise, source, target_poses[j : j + 1], target_K[j : j + 1],
                     _offset_progress(progress, done * steps, n * steps))
        generated[j] = x
        pool.append(View(x[0], target_poses[j], target_K[j]))
    return torch.cat([generated[j] for j in range(n)])


def _lifts(model: Callable[..., Tensor]) -> bool:
    """Whether ``model`` lifts its condition views into 3D (and so can pool several)."""
    return bool(getattr(getattr(model, "config", None), "lift", False))


Renderer = Callable[[View, Tensor, Tensor], Tensor]
"""``render(source rows, target_poses [B,4,4], target_K [B,3,3]) -> [B,3,H,W]``: a start image per target."""


def _start_renderer(model: Callable[..., Tensor], settings: SamplingSettings) -> Renderer | None:
    """The lifter's RGB render as the start image when ``settings.strength < 1``; None at full strength."""
    if settings.strength >= 1.0:
        return None
    if not _lifts(model):
        raise ConfigError(f"strength {settings.strength:g} starts from a 3D-aware model's render, and this model has "
                          "no lifting module (a -3d preset); use strength 1")

    def render(rows: View, target_poses: Tensor, target_K: Tensor) -> Tensor:
        views = ConditionViews.of(rows.image, rows.pose, rows.K)
        return model.render_rgb(views, target_poses, target_K, tuple(rows.image.shape[-2:])).float().clamp(-1, 1)

    return render


def _regress_views(
    model: Callable[..., Tensor],
    source: View,
    target_poses: Tensor,
    target_K: Tensor,
    batch: int,
    progress: Progress | None,
) -> Tensor:
    """One-step prediction with a regression checkpoint (see ``diffusion.regression_loss``): ``[N,3,H,W]``."""
    n, device = target_poses.shape[0], source.image.device
    chunks = list(range(0, n, batch))
    outputs = []
    for c, start in enumerate(chunks):
        stop = min(start + batch, n)
        b = stop - start
        src = _batched(_rows(source, start, stop), b)
        channels, h, w = src.image.shape[-3:]
        out = model(
            src.image.new_zeros(b, channels, h, w),
            torch.full((b,), REGRESSION_LOGSNR, device=device),
            cond_image=src.image,
            cond_pose=src.pose,
            target_pose=target_poses[start:stop],
            cond_K=src.K,
            target_K=target_K[start:stop],
            drop_cond=None,
        )
        outputs.append(out[:, :channels].float().clamp(-1, 1))
        if progress is not None:
            progress(c + 1, len(chunks))
    return torch.cat(outputs)


__all__ = [
    "DEFAULT_GUIDANCE",
    "MAX_GUIDANCE",
    "DEFAULT_SAMPLER",
    "DEFAULT_SPACING",
    "DEFAULT_STEPS",
    "SAMPLERS",
    "Denoiser",
    "Progress",
    "SamplingSettings",
    "View",
    "canonical_sampler",
    "check_guidance",
    "check_strength",
    "check_steps",
    "conditional_denoiser",
    "generate",
    "guided_forward",
    "make_scheduler",
    "sample",
    "scheduler_logsnr",
    "self_conditioned",
    "stochastic_denoiser",
    "timestep_indices",
]
