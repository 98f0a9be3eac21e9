"""The noise process: schedule, forward noising, parameterisations and training losses.

Noise levels are described by the log signal-to-noise ratio ``logsnr = log(alpha^2 / sigma^2)`` of a
variance-preserving process ``z_t = alpha * x0 + sigma * eps`` with ``alpha^2 + sigma^2 = 1``. The model is
told exactly the ``logsnr`` whose ``alpha, sigma`` noised its input; the 3DiM reference fed the network a noise level
from a different schedule than the one it applied, which is the bug this design rules out.

Pure functions of tensors: this module imports nothing else from novelview.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Literal

import torch
from torch import Tensor

Prediction = Literal["v", "eps", "x0"]


@dataclass
class DiffusionConfig:
    """Everything that defines the noise process and the training objective."""

    prediction: Prediction = "v"
    time: Literal["continuous", "discrete"] = "continuous"
    logsnr_min: float = -20.0
    logsnr_max: float = 20.0
    # Added to the cosine logSNR. Positive values keep more signal at every t, which suits low resolutions
    # (Hoogeboom et al. 2023 shift by 2*log(64/size)); 0 is the plain cosine schedule.
    schedule_shift: float = 0.0
    # Min-SNR-gamma loss weighting (Hang et al. 2023); None trains with the plain loss of the parameterisation.
    min_snr_gamma: float | None = None
    # Guided-diffusion's learned variance: the model returns 2x channels and the loss adds a KL term.
    learn_variance: bool = False
    vb_weight: float = 1.0
    # Self-conditioning (Chen et al. 2022, "Analog Bits"): on half of the training samples the model first
    # predicts x0 without gradient and then reads that estimate as an extra input; samplers feed it the
    # previous step's estimate. The first estimate, at pure noise, is the regression of the target from the
    # condition: a target-aligned picture the later steps refine (the network needs self_condition too).
    self_condition: bool = False
    # Probability of dropping the condition (view and pose together) for classifier-free guidance.
    cond_drop_prob: float = 0.1
    # 3D-aware models: weight of an auxiliary L2 loss between the lifter's RGB render and the target view
    # (area-downsampled to the render's size); 0 trains the lifter through the denoising loss alone (GeNVS).
    render_weight: float = 0.0
    # Discrete grid used by the samplers (diffusers schedulers) and by the learned-variance KL term.
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        if self.prediction not in ("v", "eps", "x0"):
            raise ValueError(f"prediction must be one of v, eps, x0; got {self.prediction!r}")
        if self.time not in ("continuous", "discrete"):
            raise ValueError(f"time must be 'continuous' or 'discrete'; got {self.time!r}")
        if not self.logsnr_min < self.logsnr_max:
            raise ValueError(f"logsnr_min ({self.logsnr_min}) must be below logsnr_max ({self.logsnr_max})")
        if not 0.0 <= self.cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob must lie in [0, 1), got {self.cond_drop_prob}")
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be positive, got {self.min_snr_gamma}")
        if not 0.0 <= self.render_weight < math.inf:
            raise ValueError(f"render_weight must be a finite number >= 0, got {self.render_weight}")
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be at least 2, got {self.num_train_timesteps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DiffusionConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown diffusion settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------------------


def logsnr_schedule(t: Tensor, cfg: DiffusionConfig) -> Tensor:
    """Cosine schedule in logSNR form, ``t`` in [0, 1] (0 = clean, 1 = pure noise), clipped to the config's range."""
    b = math.atan(math.exp(-0.5 * cfg.logsnr_max))
    a = math.atan(math.exp(-0.5 * cfg.logsnr_min)) - b
    return -2.0 * torch.log(torch.tan(a * t + b)) + cfg.schedule_shift


def alpha_sigma(logsnr: Tensor) -> tuple[Tensor, Tensor]:
    """Signal and noise scales of a variance-preserving process at ``logsnr``."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def discrete_alphas_cumprod(cfg: DiffusionConfig) -> Tensor:
    """``alpha_bar`` on the discrete grid ``t_i = (i + 1) / T``, i = 0..T-1 (float64).

    These are handed to the diffusers schedulers as ``trained_betas`` so that sampling walks exactly the noise
    levels the model was trained on.
    """
    steps = cfg.num_train_timesteps
    t = torch.arange(1, steps + 1, dtype=torch.float64) / steps
    return torch.sigmoid(logsnr_schedule(t, cfg))


def betas_from_alphas_cumprod(alphas_cumprod: Tensor) -> Tensor:
    prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return (1.0 - alphas_cumprod / prev).clamp(0.0, 0.999999)


def logsnr_from_alphas_cumprod(alphas_cumprod: Tensor) -> Tensor:
    return torch.log(alphas_cumprod) - torch.log1p(-alphas_cumprod)


# ---------------------------------------------------------------------------------------------------------
# Noising and parameterisations
# ---------------------------------------------------------------------------------------------------------


def _bcast(x: Tensor, like: Tensor) -> Tensor:
    return x.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def add_noise(x0: Tensor, noise: Tensor, logsnr: Tensor) -> Tensor:
    alpha, sigma = alpha_sigma(logsnr)
    return _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * noise


def prediction_target(x0: Tensor, noise: Tensor, logsnr: Tensor, prediction: Prediction) -> Tensor:
    """What the network is trained to output for a given parameterisation."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    alpha, sigma = alpha_sigma(logsnr)
    return _bcast(alpha, x0) * noise - _bcast(sigma, x0) * x0


def to_x0_eps(pred: Tensor, z_t: Tensor, logsnr: Tensor, prediction: Prediction) -> tuple[Tensor, Tensor]:
    """Recover ``(x0, eps)`` from a prediction of any parameterisation at the same ``z_t``."""
    alpha, sigma = alpha_sigma(logsnr)
    alpha, sigma = _bcast(alpha, z_t), _bcast(sigma, z_t)
    if prediction == "v":
        return alpha * z_t - sigma * pred, sigma * z_t + alpha * pred
    if prediction == "eps":
        # alpha -> 0 at pure noise: the x0 estimate is unbounded there, which is why v is the default.
        return (z_t - sigma * pred) / alpha.clamp_min(1e-8), pred
    return pred, (z_t - alpha * pred) / sigma.clamp_min(1e-8)


def convert_prediction(pred: Tensor, z_t: Tensor, logsnr: Tensor, src: Prediction, dst: Prediction) -> Tensor:
    """Re-express a prediction in another parameterisation."""
    if src == dst:
        return pred
    x0, eps = to_x0_eps(pred, z_t, logsnr, src)
    return prediction_target(x0, eps, logsnr, dst)


def loss_weight(logsnr: Tensor, cfg: DiffusionConfig) -> Tensor:
    """Per-sample weight of the squared error in the configured parameterisation.

    Min-SNR-gamma weights the x0 error by ``min(snr, gamma)``; expressed in v or eps space that becomes
    ``min(snr, gamma) / (snr + 1)`` or ``min(snr, gamma) / snr``.
    """
    if cfg.min_snr_gamma is None:
        return torch.ones_like(logsnr)
    snr = logsnr.exp()
    clipped = snr.clamp(max=cfg.min_snr_gamma)
    if cfg.prediction == "v":
        return clipped / (snr + 1.0)
    if cfg.prediction == "eps":
        return clipped / snr
    return clipped


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


def sample_noise_levels(
    batch: int, cfg: DiffusionConfig, generator: torch.Generator | None = None, device: torch.device | None = None
) -> tuple[Tensor, Tensor | None]:
    """Draw training noise levels: ``(logsnr [B], timestep index [B] or None)``."""
    if cfg.time == "discrete" or cfg.learn_variance:
        index = torch.randint(0, cfg.num_train_timesteps, (batch,), generator=generator, device=device)
        logsnr = logsnr_from_alphas_cumprod(discrete_alphas_cumprod(cfg).to(device))[index].float()
        return logsnr, index
    t = torch.rand(batch, generator=generator, device=device)
    return logsnr_schedule(t, cfg), None


def _normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def variational_bound_term(
    x0: Tensor, z_t: Tensor, x0_pred: Tensor, var_raw: Tensor, index: Tensor, cfg: DiffusionConfig
) -> Tensor:
    """KL(q(z_s | z_t, x0) || p(z_s | z_t)) in bits per dimension, per sample (guided-diffusion's L_vb).

    The model's variance interpolates in log space between the posterior variance and beta_t, with the
    interpolation read from ``var_raw`` in [-1, 1] exactly as diffusers' ``variance_type="learned_range"``
    does at sampling time. The mean uses a detached x0 so the KL only trains the variance (as guided-diffusion).
    At t = 0 the posterior variance is clipped to that of t = 1 instead of evaluating a discretised decoder.
    """
    ac = discrete_alphas_cumprod(cfg).to(x0.device)
    ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
    beta = betas_from_alphas_cumprod(ac)
    post_var = beta * (1.0 - ac_prev) / (1.0 - ac)
    post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    coef_x0 = beta * ac_prev.sqrt() / (1.0 - ac)
    coef_zt = (1.0 - ac_prev) * (1.0 - beta).sqrt() / (1.0 - ac)

    def at(v: Tensor) -> Tensor:
        return _bcast(v[index].float(), x0)

    true_mean = at(coef_x0) * x0 + at(coef_zt) * z_t
    model_mean = at(coef_x0) * x0_pred.detach().clamp(-1, 1) + at(coef_zt) * z_t
    frac = (var_raw + 1.0) / 2.0
    model_logvar = frac * at(torch.log(beta)) + (1.0 - frac) * at(post_logvar)
    kl = _normal_kl(true_mean, at(post_logvar), model_mean, model_logvar)
    return kl.mean(dim=tuple(range(1, kl.ndim))) / math.log(2.0)


MODEL_INPUT_KEYS = ("cond_image", "cond_pose", "target_pose", "cond_K", "target_K")


def model_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The keyword arguments a backbone takes besides ``z_t`` and ``logsnr``, from a dataset batch."""
    return {key: batch[key] for key in MODEL_INPUT_KEYS}


@dataclass
class NoiseDraw:
    """The random choices of one training step for a batch: noise level, noise and guidance-dropout mask.

    Drawn for the whole global batch from a generator seeded by (seed, step), then sliced per process, so
    the same sample gets the same noise whatever the number of processes and however often a run resumes.
    """

    logsnr: Tensor
    index: Tensor | None
    noise: Tensor
    drop_cond: Tensor
    self_cond: Tensor  # [B] bool: which samples get a self-conditioning estimate (unused unless enabled)

    def __getitem__(self, items: slice) -> "NoiseDraw":
        index = None if self.index is None else self.index[items]
        return NoiseDraw(self.logsnr[items], index, self.noise[items], self.drop_cond[items], self.self_cond[items])

    def to(self, device: torch.device | str) -> "NoiseDraw":
        index = None if self.index is None else self.index.to(device)
        return NoiseDraw(
            self.logsnr.to(device), index, self.noise.to(device), self.drop_cond.to(device), self.self_cond.to(device)
        )


def draw_noise(
    shape: tuple[int, ...], cfg: DiffusionConfig, generator: torch.Generator | None = None
) -> NoiseDraw:
    """Draw a step's randomness for a batch of images of ``shape`` (on the CPU, for reproducibility)."""
    logsnr, index = sample_noise_levels(shape[0], cfg, generator)
    noise = torch.randn(shape, generator=generator)
    drop_cond = torch.rand(shape[0], generator=generator) < cfg.cond_drop_prob
    self_cond = torch.rand(shape[0], generator=generator) < 0.5  # drawn last: earlier draws stay as they were
    return NoiseDraw(logsnr, index, noise, drop_cond, self_cond)


def training_loss(
    model: Callable[..., Tensor],
    batch: dict[str, Tensor],
    cfg: DiffusionConfig,
    draw: NoiseDraw | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """One diffusion training loss on a batch from ``MultiViewDataset``.

    Returns ``{"loss": scalar to minimise, "mse": scalar, "vb": scalar (0 without learned variance)}``.
    The classifier-free-guidance mask is part of ``draw``, fresh on every step (the 3DiM reference drew it once).
    """
    x0 = batch["target_image"]
    device = x0.device
    if draw is None:
        draw = draw_noise(tuple(x0.shape), cfg, generator)
    draw = draw.to(device)
    logsnr, noise = draw.logsnr, draw.noise.to(x0.dtype)
    z_t = add_noise(x0, noise, logsnr)
    channels = x0.shape[1]
    extra = {}
    if cfg.self_condition:
        extra["x_self"] = _self_condition_estimate(model, z_t, logsnr, batch, draw, cfg)
    render_loss = torch.zeros((), device=device)
    if cfg.render_weight > 0:
        out, render = model(z_t, logsnr, **model_inputs(batch), drop_cond=draw.drop_cond, return_render=True, **extra)
        render_loss = _render_loss(render, x0, draw.drop_cond)
    else:
        out = model(z_t, logsnr, **model_inputs(batch), drop_cond=draw.drop_cond, **extra)
    pred = out[:, :channels].float()
    target = prediction_target(x0, noise, logsnr, cfg.prediction)
    per_sample = ((pred - target) ** 2).mean(dim=tuple(range(1, pred.ndim)))
    mse = (loss_weight(logsnr, cfg) * per_sample).mean()
    vb = torch.zeros((), device=device)
    if cfg.learn_variance:
        if out.shape[1] != 2 * channels:
            raise ValueError("learn_variance needs a model with twice the image channels (set learn_variance on it)")
        x0_pred, _ = to_x0_eps(pred, z_t, logsnr, cfg.prediction)
        vb = variational_bound_term(x0, z_t, x0_pred, out[:, channels:].float(), draw.index, cfg).mean()
    loss = mse + cfg.vb_weight * vb + cfg.render_weight * render_loss
    return {"loss": loss, "mse": mse.detach(), "vb": vb.detach(), "render": render_loss.detach()}


def _render_loss(render: Tensor | None, x0: Tensor, dropped: Tensor) -> Tensor:
    """Squared error of the lifter's RGB render against the target at the render's size, averaged over the batch
    with the rows whose condition was dropped counting zero (they render nothing). Dividing by the whole batch,
    not by the kept rows, makes every process's term the same function of its rows, so data-parallel runs average
    to one process's loss."""
    if render is None:
        raise ValueError("render_weight is set but this model renders no feature image (build it with lift=true)")
    target = torch.nn.functional.adaptive_avg_pool2d(x0.float(), render.shape[-2:])
    per_row = ((render.float() - target) ** 2).mean(dim=(1, 2, 3))
    return (per_row * (~dropped.to(render.device)).float()).sum() / len(per_row)


def _self_condition_estimate(
    model: Callable[..., Tensor], z_t: Tensor, logsnr: Tensor, batch: dict[str, Tensor], draw: NoiseDraw,
    cfg: DiffusionConfig,
) -> Tensor:
    """x0 estimates (no gradient) for the samples ``draw.self_cond`` picks; zeros for the others."""
    estimate = torch.zeros_like(z_t)
    chosen = draw.self_cond.nonzero().flatten()
    if len(chosen) == 0:
        return estimate
    # The bare module, not a DDP wrapper: a gradient-free pass must not join DDP's collectives, which the
    # other processes (with their own number of chosen samples) would not.
    net = getattr(model, "module", model)
    cond = {k: v[chosen] for k, v in model_inputs(batch).items()}
    with torch.no_grad():
        out = net(z_t[chosen], logsnr[chosen], **cond, drop_cond=draw.drop_cond[chosen], x_self=estimate[chosen])
        x0, _ = to_x0_eps(out[:, : z_t.shape[1]].float(), z_t[chosen].float(), logsnr[chosen], cfg.prediction)
    return estimate.index_copy(0, chosen, x0.clamp(-1, 1).to(estimate.dtype))


def regression_loss(
    model: Callable[..., Tensor], batch: dict[str, Tensor], kind: str = "l2", pixels: Tensor | None = None
) -> dict[str, Tensor]:
    """Deterministic baseline objective: predict the target view directly from the condition.

    The network gets pure noise level (``logsnr_min``-like constant) and a zero ``z_t``, so the same backbone
    serves as a regressor; ``evaluate`` treats such checkpoints as one-step predictors. ``pixels`` (``[B, R]``
    flat indices) scores only those pixels, for models that render rays independently (pixelNeRF).
    """
    x0 = batch["target_image"]
    b = x0.shape[0]
    logsnr = torch.full((b,), REGRESSION_LOGSNR, device=x0.device)
    extra = {} if pixels is None else {"pixels": pixels}
    out = model(torch.zeros_like(x0), logsnr, **model_inputs(batch), drop_cond=None, **extra)[:, : x0.shape[1]].float()
    if pixels is not None:
        x0 = x0.flatten(2).gather(2, pixels[:, None].expand(-1, x0.shape[1], -1))
    err = (out - x0).abs() if kind == "l1" else (out - x0) ** 2
    loss = err.mean()
    zero = torch.zeros((), device=x0.device)
    return {"loss": loss, "mse": ((out - x0) ** 2).mean().detach(), "vb": zero, "render": zero}


# The noise level a regression model is always given: the bottom of the default schedule (pure noise).
REGRESSION_LOGSNR = -20.0
