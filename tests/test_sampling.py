"""Sampler plumbing: noise levels, oracle denoisers, guidance, stochastic conditioning, determinism."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from novelview import cameras, diffusion as D, sampling as S
from novelview.errors import ConfigError

PREDICTIONS = ("v", "eps", "x0")


# ------------------------------------------------------------------------------------------------ oracles


def point_oracle(cfg: D.DiffusionConfig, x_star: torch.Tensor, logsnr_fn=None) -> S.Denoiser:
    """Exact denoiser when every data point is ``x_star``: eps follows from z_t and the told logsnr."""

    def denoise(z_t, logsnr):
        if logsnr_fn is not None:
            logsnr = logsnr_fn(logsnr)
        lam = logsnr.double()
        alpha, sigma = D.alpha_sigma(lam)
        alpha, sigma = alpha.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)
        eps = (z_t.double() - alpha * x_star) / sigma
        return D.prediction_target(x_star.expand_as(eps), eps, lam, cfg.prediction).float()

    return denoise


def gaussian_oracle(cfg: D.DiffusionConfig, mu: float, std: float) -> S.Denoiser:
    """Exact denoiser for data with i.i.d. N(mu, std^2) pixels: E[x0 | z_t] in closed form."""

    def denoise(z_t, logsnr):
        lam = logsnr.double()
        alpha, sigma = D.alpha_sigma(lam)
        alpha, sigma = alpha.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)
        z = z_t.double()
        x0 = mu + alpha * std**2 / (alpha**2 * std**2 + sigma**2) * (z - alpha * mu)
        eps = (z - alpha * x0) / sigma
        return D.prediction_target(x0, eps, lam, cfg.prediction).float()

    return denoise


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ schedule


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 25, 30, 1000])
def test_timestep_indices_are_distinct_descending_grid_points(spacing, steps):
    idx = S.timestep_indices(1000, steps, spacing)
    assert len(idx) == steps
    assert (idx[:-1] > idx[1:]).all()
    assert idx.min() >= 0 and idx.max() <= 999
    if spacing in ("trailing", "linspace"):
        assert idx[0] == 999  # starts at the trained pure-noise level


@pytest.mark.parametrize("sampler", S.SAMPLERS)
@pytest.mark.parametrize("steps", [1, 10, 30, 250])
def test_schedulers_walk_exactly_the_trained_noise_levels(sampler, steps):
    cfg = D.DiffusionConfig()
    sched = S.make_scheduler(sampler, cfg, steps)
    trained = D.logsnr_from_alphas_cumprod(D.discrete_alphas_cumprod(cfg))
    chosen = S.timestep_indices(cfg.num_train_timesteps, steps)
    told = S.scheduler_logsnr(sched)[sched.timesteps]  # what the loop tells the model, noisiest first
    assert torch.allclose(told, trained[chosen], atol=0.05), (told - trained[chosen]).abs().max()
    assert not getattr(sched.config, "clip_sample", False)
    assert not sched.config.thresholding


def test_bad_sampler_and_steps_are_config_errors():
    cfg = D.DiffusionConfig()
    with pytest.raises(ConfigError, match="unknown sampler"):
        S.make_scheduler("euler", cfg, 10)
    for steps in (0, 1001, 2.5):
        with pytest.raises(ConfigError, match="steps"):
            S.make_scheduler("ddim", cfg, steps)
    assert S.canonical_sampler("DPM++") == "dpmpp"


# ------------------------------------------------------------------------------------------------ oracle correctness


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("sampler", S.SAMPLERS)
def test_oracle_point_mass_is_recovered(sampler, prediction):
    """All data = x*: with the exact prediction every sampler must land on x*. Any misalignment between the
    level the scheduler assumes and the logsnr the model is told shows up as an error >> 1e-4 (next test)."""
    cfg = D.DiffusionConfig(prediction=prediction)
    x_star = torch.rand(1, 3, 8, 8, generator=gen(1), dtype=torch.float64) * 2 - 1
    x = S.sample(point_oracle(cfg, x_star), (2, 3, 8, 8), cfg, sampler, 25, generator=gen())
    assert (x - x_star).abs().max() < 1e-4


@pytest.mark.parametrize("sampler", S.SAMPLERS)
def test_oracle_detects_an_off_by_one_noise_level(sampler):
    """The point-mass test has teeth: telling the model the level of grid index i-1 instead of i fails it."""
    cfg = D.DiffusionConfig(prediction="v")
    trained = D.logsnr_from_alphas_cumprod(D.discrete_alphas_cumprod(cfg))

    def previous_level(logsnr):
        i = (trained[None, :] - logsnr.double()[:, None]).abs().argmin(1)
        return D.logsnr_schedule(i.double().clamp_min(0.5) / cfg.num_train_timesteps, cfg).float()

    x_star = torch.rand(1, 3, 8, 8, generator=gen(1), dtype=torch.float64) * 2 - 1
    x = S.sample(point_oracle(cfg, x_star, previous_level), (2, 3, 8, 8), cfg, sampler, 25, generator=gen())
    assert (x - x_star).abs().max() > 1e-3


@pytest.mark.parametrize(
    "sampler,steps,std_tol",
    [("dpmpp", 25, 0.01), ("ddim", 100, 0.015), ("ddpm", 250, 0.015)],
)
def test_oracle_gaussian_data_statistics(sampler, steps, std_tol):
    """Data with N(0.3, 0.5^2) pixels: samples must reproduce mean and std (checks the whole trajectory,
    not just the last step, and DDPM's noise injection)."""
    cfg = D.DiffusionConfig()
    x = S.sample(gaussian_oracle(cfg, 0.3, 0.5), (32, 3, 16, 16), cfg, sampler, steps, generator=gen())
    assert abs(x.mean().item() - 0.3) < 0.01
    assert abs(x.std().item() - 0.5) < std_tol


def test_trailing_spacing_beats_leading():
    """Why trailing is the default: leading starts below pure noise although z starts as pure noise."""
    cfg = D.DiffusionConfig()
    err = {}
    for spacing in ("trailing", "leading"):
        x = S.sample(gaussian_oracle(cfg, 0.3, 0.5), (32, 3, 16, 16), cfg, "dpmpp", 10, generator=gen(),
                     spacing=spacing)
        err[spacing] = abs(x.std().item() - 0.5) + abs(x.mean().item() - 0.3)
    assert err["trailing"] < 0.5 * err["leading"], err


@pytest.mark.parametrize("sampler", S.SAMPLERS)
def test_learned_variance_output(sampler):
    """A 6-channel (learned variance) model: DDPM uses the extra channels, DDIM/DPM-Solver++ drop them."""
    cfg = D.DiffusionConfig(learn_variance=True)
    x_star = torch.rand(1, 3, 8, 8, generator=gen(1), dtype=torch.float64) * 2 - 1
    base = point_oracle(cfg, x_star)

    def with_variance(value):
        return lambda z, l: torch.cat([base(z, l), torch.full_like(z, value)], dim=1)

    lo = S.sample(with_variance(-1.0), (2, 3, 8, 8), cfg, sampler, 10, generator=gen())
    hi = S.sample(with_variance(1.0), (2, 3, 8, 8), cfg, sampler, 10, generator=gen())
    assert (lo - x_star).abs().max() < 1e-4 and (hi - x_star).abs().max() < 1e-4  # the oracle still lands on x*
    # Gaussian data shows whether the variance channels matter: only DDPM's noise depends on them.
    g = gaussian_oracle(cfg, 0.0, 0.5)
    outs = [
        S.sample(lambda z, l, v=v: torch.cat([g(z, l), torch.full_like(z, v)], 1), (4, 3, 8, 8), cfg, sampler, 10,
                 generator=gen())
        for v in (-1.0, 1.0)
    ]
    assert torch.equal(outs[0], outs[1]) == (sampler != "ddpm")


def test_learned_variance_requires_six_channels_for_ddpm():
    cfg = D.DiffusionConfig(learn_variance=True)
    with pytest.raises(ValueError, match="channels"):
        S.sample(lambda z, l: z, (1, 3, 8, 8), cfg, "ddpm", 3, generator=gen())


# ------------------------------------------------------------------------------------------------ loop behaviour


def test_progress_called_once_per_step_and_raising_aborts():
    cfg = D.DiffusionConfig()
    calls, seen = [], []

    def denoise(z, l):
        calls.append(1)
        return torch.zeros_like(z)

    S.sample(denoise, (1, 3, 4, 4), cfg, "dpmpp", 7, generator=gen(), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 7) for i in range(1, 8)] and len(calls) == 7

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done == 3:
            raise Cancelled

    calls.clear()
    with pytest.raises(Cancelled):
        S.sample(denoise, (1, 3, 4, 4), cfg, "ddim", 10, generator=gen(), progress=cancel)
    assert len(calls) == 3


# ------------------------------------------------------------------------------------------------ guidance


class RecordingModel(torch.nn.Module):
    """Fake backbone: conditional output depends on the condition image, unconditional on z only.
    Records every call's batch size, drop mask and condition images (a fake is the right tool here)."""

    def __init__(self, out_channels: int = 3) -> None:
        super().__init__()
        self.calls: list[dict] = []
        self.out_channels = out_channels

    def forward(self, z_t, logsnr, *, cond_image, cond_pose, target_pose, cond_K, target_K, drop_cond=None):
        drop = torch.zeros(z_t.shape[0], dtype=torch.bool) if drop_cond is None else drop_cond
        self.calls.append({"batch": z_t.shape[0], "drop": drop.clone(), "cond": cond_image.clone(),
                           "target_pose": target_pose.clone()})
        uncond = 0.5 * z_t
        cond = uncond + cond_image + 0.1 * target_pose[:, :3, 3].sum(-1).view(-1, 1, 1, 1)
        out = torch.where(drop.view(-1, 1, 1, 1), uncond, cond)
        if self.out_channels > 3:
            out = torch.cat([out, torch.where(drop.view(-1, 1, 1, 1), -torch.ones_like(z_t), torch.ones_like(z_t))], 1)
        return out


def _batch(b=2, size=4):
    g = gen(3)
    return dict(
        z=torch.randn(b, 3, size, size, generator=g),
        logsnr=torch.zeros(b),
        cond_image=torch.randn(b, 3, size, size, generator=g),
        cond_pose=cameras.spherical_to_pose(torch.zeros(b), torch.full((b,), 20.0), torch.full((b,), 2.5)),
        target_pose=cameras.spherical_to_pose(torch.full((b,), 90.0), torch.full((b,), 20.0), torch.full((b,), 2.5)),
        K=cameras.intrinsics_from_fov(40.0, size).expand(b, 3, 3),
    )


def _guided(model, d, w):
    return S.guided_forward(model, d["z"], d["logsnr"], cond_image=d["cond_image"], cond_pose=d["cond_pose"],
                            cond_K=d["K"], target_pose=d["target_pose"], target_K=d["K"], guidance=w)


def test_guidance_w0_is_exactly_unconditional_and_w1_conditional():
    model, d = RecordingModel(), _batch()
    kw = dict(cond_image=d["cond_image"], cond_pose=d["cond_pose"], target_pose=d["target_pose"],
              cond_K=d["K"], target_K=d["K"])
    uncond = model(d["z"], d["logsnr"], **kw, drop_cond=torch.ones(2, dtype=torch.bool))
    cond = model(d["z"], d["logsnr"], **kw, drop_cond=torch.zeros(2, dtype=torch.bool))
    assert torch.equal(_guided(model, d, 0.0), uncond)
    assert torch.equal(_guided(model, d, 1.0), cond)


def test_guidance_runs_one_batched_forward():
    model, d = RecordingModel(), _batch()
    out = _guided(model, d, 3.0)
    assert len(model.calls) == 1
    call = model.calls[0]
    assert call["batch"] == 4 and call["drop"].tolist() == [False, False, True, True]
    model.calls.clear()
    uncond, cond = _guided(model, d, 0.0), _guided(model, d, 1.0)
    assert torch.allclose(out, uncond + 3.0 * (cond - uncond), atol=1e-6)


def test_guidance_with_learned_variance_guides_only_the_prediction():
    model, d = RecordingModel(out_channels=6), _batch()
    out = _guided(model, d, 2.0)
    assert out.shape[1] == 6
    assert torch.equal(out[:, 3:], torch.ones_like(out[:, 3:]))  # variance of the conditional branch


# ------------------------------------------------------------------------------------------------ many views


def _views(n_targets: int, size: int = 4):
    source_pose = cameras.spherical_to_pose(0.0, 20.0, 2.5).float()
    K = cameras.intrinsics_from_fov(40.0, size).float()
    source = S.View(torch.full((3, size, size), 0.9), source_pose, K)
    az = torch.arange(1, n_targets + 1, dtype=torch.float64) * 30.0
    targets = cameras.spherical_to_pose(az, torch.full_like(az, 20.0), torch.full_like(az, 2.5)).float()
    return source, targets, K


class IdentifyingModel(torch.nn.Module):
    """x0-predicting fake: view j comes out as a constant image whose value identifies it, and every call
    records which condition image (by its value) it was given."""

    def __init__(self, source: S.View, targets: torch.Tensor) -> None:
        super().__init__()
        self.source_pose = source.pose
        self.targets = targets
        self.seen: list[tuple[int, float]] = []  # (target index, condition value)

    def value(self, j: int) -> float:
        return -0.8 + 0.1 * j

    def forward(self, z_t, logsnr, *, cond_image, cond_pose, target_pose, cond_K, target_K, drop_cond=None):
        outs = []
        for b in range(z_t.shape[0]):
            j = int((self.targets - target_pose[b]).abs().flatten(1).sum(1).argmin())
            if drop_cond is None or not drop_cond[b]:
                self.seen.append((j, round(float(cond_image[b].mean()), 4)))
                # the condition must arrive with its own camera
                assert torch.allclose(cond_pose[b], self.pose_of(round(float(cond_image[b].mean()), 4)))
            outs.append(torch.full_like(z_t[b], self.value(j)))
        return torch.stack(outs)

    def pose_of(self, value: float) -> torch.Tensor:
        return self.source_pose if value == 0.9 else self.targets[round((value + 0.8) / 0.1)]


def test_stochastic_conditioning_draws_uniformly_from_the_growing_set():
    cfg = D.DiffusionConfig(prediction="x0")
    source, targets, K = _views(5)
    model = IdentifyingModel(source, targets)
    choices: list[tuple[int, int]] = []
    steps = 40
    settings = S.SamplingSettings(stochastic=True, steps=steps, guidance=1.0)
    out = S.generate(model, cfg, source, targets, K, settings, generator=gen(),
                     on_choice=lambda j, k: choices.append((j, k)))
    # each view is what the model predicted for it (x0 parameterisation: the last prediction is the sample)
    for j in range(5):
        assert torch.allclose(out[j], torch.full_like(out[j], model.value(j)))
    allowed = {j: {0.9} | {round(model.value(i), 4) for i in range(j)} for j in range(5)}
    per_view: dict[int, list[float]] = {j: [] for j in range(5)}
    for j, value in model.seen:
        per_view[j].append(value)
    for j in range(5):
        assert len(per_view[j]) == steps  # one condition draw per denoising step
        assert set(per_view[j]) <= allowed[j]  # only the input and views generated before j
    assert set(per_view[0]) == {0.9}
    assert set(per_view[4]) == allowed[4]  # with 40 draws from 5 items every one shows up
    # the recorded draws are the indices into {source, view 0, view 1, ...}
    values = [0.9] + [round(model.value(i), 4) for i in range(5)]
    assert [values[k] for _, k in choices] == [v for _, v in model.seen]
    # roughly uniform: the source is drawn about 1/(j+1) of the time
    late = [k for j, k in choices if j == 4]
    assert 2 <= late.count(0) <= 18


def test_nearest_order_generates_views_closest_to_the_input_first():
    cfg = D.DiffusionConfig(prediction="x0")
    source, _, K = _views(0)
    az = torch.tensor([150.0, 30.0, 90.0, 120.0, 60.0], dtype=torch.float64)
    targets = cameras.spherical_to_pose(az, torch.full_like(az, 20.0), torch.full_like(az, 2.5)).float()
    model = IdentifyingModel(source, targets)
    out = S.generate(model, cfg, source, targets, K, S.SamplingSettings(stochastic=True, steps=30, guidance=1.0),
                     generator=gen())
    generation = list(dict.fromkeys(j for j, _ in model.seen))
    assert generation == [1, 4, 2, 3, 0]
    for j in range(5):  # outputs stay in the given order
        assert torch.allclose(out[j], torch.full_like(out[j], model.value(j)))
    for rank, j in enumerate(generation):  # conditioned only on the input and the views generated before it
        allowed = {0.9} | {round(model.value(i), 4) for i in generation[:rank]}
        assert {v for t, v in model.seen if t == j} <= allowed
    model.seen.clear()
    given = S.generate(model, cfg, source, targets, K, S.SamplingSettings(stochastic=True, steps=2, order="given"))
    assert list(dict.fromkeys(j for j, _ in model.seen)) == [0, 1, 2, 3, 4]
    torch.testing.assert_close(given, out)  # each camera's view as before, only generated in another order
    with pytest.raises(ConfigError, match="order"):
        S.SamplingSettings(stochastic=True, steps=2, order="random")


def test_stochastic_conditioning_is_sequential_and_plain_mode_is_batched():
    cfg = D.DiffusionConfig(prediction="x0")
    source, targets, K = _views(5)
    model = RecordingModel()
    S.generate(model, cfg, source, targets, K, S.SamplingSettings(stochastic=True, steps=3, guidance=2.0))
    assert len(model.calls) == 15 and all(c["batch"] == 2 for c in model.calls)  # one view (+ its uncond)
    model.calls.clear()
    S.generate(model, cfg, source, targets, K, S.SamplingSettings(steps=3, guidance=2.0, batch=8))
    assert len(model.calls) == 3 and all(c["batch"] == 10 for c in model.calls)
    assert all(torch.equal(c["cond"][:5], source.image.expand(5, -1, -1, -1)) for c in model.calls)
    model.calls.clear()
    seen = []
    S.generate(model, cfg, source, targets, K, S.SamplingSettings(steps=3, guidance=1.0, batch=2),
               progress=lambda d, t: seen.append((d, t)))
    assert [c["batch"] for c in model.calls] == [2, 2, 2, 2, 2, 2, 1, 1, 1]
    assert seen == [(i, 9) for i in range(1, 10)]


class EstimateRecordingModel(torch.nn.Module):
    """Fake self-conditioned backbone: v-prediction ``0.3 * z_t + 0.1 * x_self + 0.2``; records each x_self."""

    def __init__(self) -> None:
        super().__init__()
        self.estimates: list[torch.Tensor] = []

    def forward(self, z_t, logsnr, *, cond_image, cond_pose, target_pose, cond_K, target_K, drop_cond=None,
                x_self=None):
        assert x_self is not None, "a self-conditioned model must always be handed an estimate"
        self.estimates.append(x_self.clone())
        return 0.3 * z_t + 0.1 * x_self + 0.2


@pytest.mark.parametrize("stochastic", [False, True])
def test_self_conditioning_hands_the_previous_estimate_to_the_next_step(stochastic):
    cfg = D.DiffusionConfig(self_condition=True)
    source, targets, K = _views(2)
    model = EstimateRecordingModel()
    steps = 4
    S.generate(model, cfg, source, targets, K, S.SamplingSettings(stochastic=stochastic, steps=steps, guidance=2.0))
    runs = 2 if stochastic else 1
    assert len(model.estimates) == runs * steps
    for r in range(runs):
        first = model.estimates[r * steps]
        assert torch.equal(first, torch.zeros_like(first))  # every sampling run starts from zeros, as in training
        for k in range(1, steps):
            est = model.estimates[r * steps + k]
            b = est.shape[0] // 2
            assert torch.equal(est[:b], est[b:])  # cond and uncond branches read the same estimate
            assert est.abs().max() > 0 and est.abs().max() <= 1.0  # a real (clamped) x0 estimate
    # the estimate is exactly the x0 implied by the previous guided prediction
    denoise = S.conditional_denoiser(model, source, targets, K.expand(2, 3, 3), guidance=1.0, cfg=cfg)
    z, logsnr = torch.randn(2, 3, 4, 4, generator=gen(1)), torch.full((2,), -1.0)
    pred = denoise(z, logsnr)
    denoise(z, logsnr + 2)
    x0, _ = D.to_x0_eps(pred, z, logsnr, "v")
    torch.testing.assert_close(model.estimates[-1], x0.clamp(-1, 1))


def test_plain_models_are_never_handed_an_estimate():
    source, targets, K = _views(2)
    model = RecordingModel()  # its forward has no x_self argument: passing one would raise
    S.generate(model, D.DiffusionConfig(), source, targets, K, S.SamplingSettings(steps=3, guidance=2.0))
    assert len(model.calls) == 3


def test_regression_views_are_one_forward_at_the_regression_level():
    source, targets, K = _views(3)
    model = RecordingModel()
    logsnrs = []
    orig = model.forward

    def spy(z, l, **kw):
        logsnrs.append(l)
        assert torch.equal(z, torch.zeros_like(z))
        return orig(z, l, **kw)

    model.forward = spy
    seen = []
    settings = S.SamplingSettings(steps=50, guidance=2.0, batch=2)  # only the batch size matters
    out = S.generate(model, D.DiffusionConfig(), source, targets, K, settings, objective="regression",
                     progress=lambda d, t: seen.append((d, t)))
    assert out.shape == (3, 3, 4, 4) and len(model.calls) == 2 and seen == [(1, 2), (2, 2)]
    assert torch.all(logsnrs[0] == D.REGRESSION_LOGSNR)


@pytest.mark.parametrize("kwargs, words", [
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(sampler="euler"), "euler"),
    (dict(sampler=None), "sampler"),
    (dict(guidance=-1.0), "guidance"),
    (dict(guidance="abc"), "guidance"),
    (dict(seed=-3), "seed"),
    (dict(seed=2**70), "seed"),
    (dict(spacing="random"), "spacing"),
    (dict(order="random"), "order"),
    (dict(stochastic="yes"), "stochastic"),
    (dict(batch=0), "batch"),
    (dict(strength=0.0), "strength"),
    (dict(strength=1.5), "strength"),
    (dict(strength=float("nan")), "strength"),
    (dict(strength="half"), "strength"),
], ids=["steps-0", "steps-float", "sampler", "sampler-none", "guidance-negative", "guidance-str", "seed-negative",
        "seed-huge", "spacing", "order", "stochastic-str", "batch-0", "strength-0", "strength-big", "strength-nan",
        "strength-str"])
def test_sampling_settings_refuse_what_cannot_run_by_name(kwargs, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        S.SamplingSettings(**kwargs)


def test_settings_are_values_and_seed_the_noise():
    assert S.SamplingSettings(sampler="DPM++", steps=np.int64(4)) == S.SamplingSettings(steps=4)
    a, b = S.SamplingSettings(seed=3).generator(), S.SamplingSettings(seed=3).generator()
    assert torch.equal(torch.randn(5, generator=a), torch.randn(5, generator=b))


def test_several_condition_views_per_target_reach_the_model_as_given():
    """generate() does not look inside the condition: K views per target ([N, K, 3, H, W], as 3D-aware models
    take them) are sliced per batch and handed over unchanged, for diffusion and regression alike."""
    source, targets, K = _views(3)
    views = S.View(torch.rand(3, 2, 3, 4, 4), source.pose.expand(3, 2, 4, 4), K.expand(3, 2, 3, 3))

    def first_view(z_t, logsnr, *, cond_image, cond_pose, target_pose, cond_K, target_K, drop_cond=None):
        assert cond_image.shape[1:] == (2, 3, 4, 4) and cond_pose.shape[1:] == (2, 4, 4)
        return cond_image[:, 0].clone()  # an x0 prediction: the first condition view

    settings = S.SamplingSettings(steps=2, guidance=1.0, batch=2)
    for objective in ("diffusion", "regression"):
        out = S.generate(first_view, D.DiffusionConfig(prediction="x0"), views, targets, K, settings,
                         objective=objective)
        torch.testing.assert_close(out, views.image[:, 0])


# ------------------------------------------------------------------------------------------------ start image


@pytest.mark.parametrize("sampler", S.SAMPLERS)
@pytest.mark.parametrize("strength", [0.04, 0.3, 0.5, 0.96])
def test_a_start_image_is_noised_to_the_first_remaining_level(sampler, strength):
    """SDEdit: with ``init`` the loop runs only the last ``steps - skipped`` levels, and its first input is
    ``alpha * init + sigma * noise`` at exactly the level the model is told."""
    cfg, steps = D.DiffusionConfig(prediction="x0"), 25
    init, noise = torch.rand(2, 3, 8, 8, generator=gen(2)) * 2 - 1, torch.randn(2, 3, 8, 8, generator=gen(3))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def denoise(z_t, logsnr):
        seen.append((z_t.clone(), logsnr.clone()))
        return torch.zeros_like(z_t)

    S.sample(denoise, (2, 3, 8, 8), cfg, sampler, steps, noise=noise, init=init, strength=strength)
    assert len(seen) == steps - S.skipped_steps(steps, strength) == max(1, steps - round((1 - strength) * steps))
    z0, logsnr0 = seen[0]
    expected_level = S.scheduler_logsnr(S.make_scheduler(sampler, cfg, steps))[len(seen) - 1]
    torch.testing.assert_close(logsnr0.double(), expected_level.expand(2), atol=1e-5, rtol=0)
    alpha, sigma = D.alpha_sigma(logsnr0[:1])
    torch.testing.assert_close(z0, alpha * init + sigma * noise, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", S.SAMPLERS)
def test_a_start_image_at_full_strength_is_ordinary_sampling(sampler):
    cfg = D.DiffusionConfig(prediction="v")
    x_star = torch.rand(1, 3, 8, 8, generator=gen(1), dtype=torch.float64) * 2 - 1
    plain = S.sample(point_oracle(cfg, x_star), (2, 3, 8, 8), cfg, sampler, 10, generator=gen())
    started = S.sample(point_oracle(cfg, x_star), (2, 3, 8, 8), cfg, sampler, 10, generator=gen(),
                       init=torch.ones(2, 3, 8, 8), strength=1.0)
    assert torch.equal(plain, started)


@pytest.mark.parametrize("sampler", S.SAMPLERS)
def test_oracle_lands_on_the_data_from_any_start(sampler):
    """With the exact denoiser of a point mass, a run started part-way from a wrong image still ends on the data:
    the skipped levels are accounted for, not silently assumed."""
    cfg = D.DiffusionConfig(prediction="eps")
    x_star = torch.rand(1, 3, 8, 8, generator=gen(1), dtype=torch.float64) * 2 - 1
    x = S.sample(point_oracle(cfg, x_star), (2, 3, 8, 8), cfg, sampler, 25, generator=gen(),
                 init=torch.zeros(2, 3, 8, 8), strength=0.4)
    assert (x - x_star).abs().max() < 1e-4


def test_strength_below_one_needs_a_lifting_model(tiny_model):
    source, targets, K = _views(2, size=16)
    source = S.View(torch.rand(3, 16, 16) * 2 - 1, source.pose, K)
    with pytest.raises(ConfigError, match="lifting module"):
        S.generate(tiny_model, D.DiffusionConfig(), source, targets, K, S.SamplingSettings(steps=4, strength=0.5))


@pytest.mark.parametrize("stochastic", [False, True])
def test_a_lifting_model_starts_from_its_render_of_the_input(tiny_lifting_model, stochastic):
    """At the lowest strength one x0-prediction step remains, taken from the input's render barely noised: the
    views follow the render; at full strength they do not depend on it. In stochastic conditioning too, the start
    is rendered from the input alone."""
    model = tiny_lifting_model
    cfg = D.DiffusionConfig(prediction="x0", self_condition=model.config.self_condition)
    source, targets, K = _views(3, size=16)
    source = S.View(torch.rand(3, 16, 16) * 2 - 1, source.pose, K)
    from novelview.models.lifting import ConditionViews

    n = targets.shape[0]
    render = model.render_rgb(ConditionViews.of(source.image.expand(n, 3, 16, 16), source.pose.expand(n, 4, 4),
                                                K.expand(n, 3, 3)), targets, K.expand(n, 3, 3), (16, 16))
    settings = S.SamplingSettings(steps=25, guidance=1.0, stochastic=stochastic, strength=0.02)
    with torch.inference_mode():
        low = S.generate(model, cfg, source, targets, K, settings)
        seen = []
        S.generate(_recording(model, seen), cfg, source, targets, K, settings)
    assert len(seen) == n if stochastic else len(seen) == 1  # one step per view (batched when plain)
    first_z = torch.cat([z for z, _ in seen])
    alpha, sigma = D.alpha_sigma(seen[0][1][:1])
    assert alpha > 0.99 and (first_z - alpha * render.clamp(-1, 1)).abs().max() < 6 * sigma
    assert low.shape == (n, 3, 16, 16) and torch.isfinite(low).all()


def _recording(model, seen):
    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.config = model, model.config

        def render_rgb(self, *args):
            return model.render_rgb(*args)

        def forward(self, z_t, logsnr, **kw):
            seen.append((z_t.clone(), logsnr.clone()))
            return model(z_t, logsnr, **kw)

    return Recording()


@pytest.fixture(scope="module")
def tiny_lifting_model():
    from novelview.models.presets import build_model

    torch.manual_seed(0)
    return build_model("dit-tiny-3d", 16).eval()


# ------------------------------------------------------------------------------------------------ real tiny model


@pytest.fixture(scope="module")
def tiny_model():
    from novelview.models.presets import build_model

    torch.manual_seed(0)
    return build_model("xunet-tiny", 16).eval()


@pytest.mark.parametrize("sampler", S.SAMPLERS)
def test_real_model_deterministic_per_seed_and_finite(tiny_model, sampler):
    cfg = D.DiffusionConfig()
    source, targets, K = _views(2, size=16)
    source = S.View(torch.rand(3, 16, 16) * 2 - 1, source.pose, K)
    a, b, c = (S.generate(tiny_model, cfg, source, targets, K,
                          S.SamplingSettings(sampler=sampler, steps=4, guidance=2.0, seed=seed))
               for seed in (0, 0, 1))
    assert a.shape == (2, 3, 16, 16)
    assert torch.isfinite(a).all() and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
