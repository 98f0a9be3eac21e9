"""The noise process: schedule, parameterisations, loss weighting, per-step randomness, self-conditioning."""

from __future__ import annotations

import math

import pytest
import torch

from novelview import diffusion as D

PREDICTIONS = ("v", "eps", "x0")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ schedule


def test_cosine_schedule_spans_the_configured_range_and_decreases():
    cfg = D.DiffusionConfig()
    t = torch.linspace(0, 1, 101)
    logsnr = D.logsnr_schedule(t, cfg)
    assert logsnr[0].item() == pytest.approx(cfg.logsnr_max, abs=1e-2)
    assert logsnr[-1].item() == pytest.approx(cfg.logsnr_min, abs=1e-2)
    assert (logsnr[1:] < logsnr[:-1]).all()
    # the plain cosine schedule has logSNR 0 (alpha = sigma) at t = 1/2, up to the clipping at the ends
    assert D.logsnr_schedule(torch.tensor([0.5]), cfg).item() == pytest.approx(0.0, abs=1e-3)
    shifted = D.logsnr_schedule(t, D.DiffusionConfig(schedule_shift=1.5))
    torch.testing.assert_close(shifted, logsnr + 1.5)


def test_variance_preserving_and_discrete_grid_matches_continuous():
    logsnr = torch.linspace(-15, 15, 31, dtype=torch.float64)
    alpha, sigma = D.alpha_sigma(logsnr)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha))
    torch.testing.assert_close(torch.log(alpha**2 / sigma**2), logsnr)
    cfg = D.DiffusionConfig()
    ac = D.discrete_alphas_cumprod(cfg)
    t = torch.arange(1, cfg.num_train_timesteps + 1, dtype=torch.float64) / cfg.num_train_timesteps
    torch.testing.assert_close(D.logsnr_from_alphas_cumprod(ac), D.logsnr_schedule(t, cfg))
    # betas rebuild alphas_cumprod
    torch.testing.assert_close(torch.cumprod(1 - D.betas_from_alphas_cumprod(ac), 0), ac, rtol=1e-6, atol=1e-12)


# ------------------------------------------------------------------------------------------------ parameterisations


@pytest.mark.parametrize("dst", PREDICTIONS)
@pytest.mark.parametrize("src", PREDICTIONS)
def test_parameterisations_round_trip(src, dst):
    g = gen(1)
    x0 = torch.rand(6, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    logsnr = torch.tensor([-8.0, -3.0, -0.5, 0.0, 2.0, 7.0], dtype=torch.float64)
    z_t = D.add_noise(x0, eps, logsnr)
    pred = D.prediction_target(x0, eps, logsnr, src)
    # every parameterisation determines (x0, eps) given z_t
    x0_back, eps_back = D.to_x0_eps(pred, z_t, logsnr, src)
    torch.testing.assert_close(x0_back, x0)
    torch.testing.assert_close(eps_back, eps)
    there = D.convert_prediction(pred, z_t, logsnr, src, dst)
    torch.testing.assert_close(there, D.prediction_target(x0, eps, logsnr, dst))
    torch.testing.assert_close(D.convert_prediction(there, z_t, logsnr, dst, src), pred)


def test_v_is_the_rotation_of_x0_and_eps():
    """v = alpha * eps - sigma * x0, and z_t, v are an orthonormal rotation of (x0, eps)."""
    x0, eps = torch.randn(2, 1, 5, 5, generator=gen(2), dtype=torch.float64)
    logsnr = torch.tensor([0.7], dtype=torch.float64)
    alpha, sigma = (s.item() for s in D.alpha_sigma(logsnr))
    v = D.prediction_target(x0[None], eps[None], logsnr, "v")[0]
    z = D.add_noise(x0[None], eps[None], logsnr)[0]
    torch.testing.assert_close(v, alpha * eps - sigma * x0)
    torch.testing.assert_close(z.square().sum() + v.square().sum(), x0.square().sum() + eps.square().sum())


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_min_snr_weight_equals_clipped_snr_times_x0_error(prediction):
    """Min-SNR-gamma in any parameterisation is min(SNR, gamma) * |x0 error|^2 (Hang et al. 2023)."""
    gamma = 5.0
    cfg = D.DiffusionConfig(prediction=prediction, min_snr_gamma=gamma)
    g = gen(3)
    x0 = torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64)
    x0_hat = x0 + 0.1 * torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64)
    logsnr = torch.tensor([-4.0, -1.0, 0.5, 1.6, 6.0], dtype=torch.float64)
    z_t = D.add_noise(x0, eps, logsnr)
    eps_hat = (z_t - D._bcast(D.alpha_sigma(logsnr)[0], z_t) * x0_hat) / D._bcast(D.alpha_sigma(logsnr)[1], z_t)
    pred = D.prediction_target(x0_hat, eps_hat, logsnr, prediction)
    target = D.prediction_target(x0, eps, logsnr, prediction)
    weighted = D.loss_weight(logsnr, cfg) * (pred - target).square().mean(dim=(1, 2, 3))
    expected = logsnr.exp().clamp(max=gamma) * (x0_hat - x0).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(weighted, expected)
    assert torch.equal(D.loss_weight(logsnr, D.DiffusionConfig(prediction=prediction)), torch.ones_like(logsnr))


def test_bad_config_values_raise():
    for kw in ({"prediction": "score"}, {"logsnr_min": 5.0, "logsnr_max": 1.0}, {"cond_drop_prob": 1.0},
               {"min_snr_gamma": 0.0}, {"num_train_timesteps": 1}):
        with pytest.raises(ValueError):
            D.DiffusionConfig(**kw)
    with pytest.raises(ValueError, match="unknown diffusion settings"):
        D.DiffusionConfig.from_dict({"predicton": "v"})
    cfg = D.DiffusionConfig(self_condition=True, min_snr_gamma=5.0)
    assert D.DiffusionConfig.from_dict(cfg.to_dict()) == cfg


# ------------------------------------------------------------------------------------------------ randomness


def test_noise_draw_is_a_function_of_the_generator_and_slices_per_process():
    cfg = D.DiffusionConfig(cond_drop_prob=0.3)
    a = D.draw_noise((8, 3, 4, 4), cfg, gen(7))
    b = D.draw_noise((8, 3, 4, 4), cfg, gen(7))
    for name in ("logsnr", "noise", "drop_cond", "self_cond"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    half = a[4:8]
    assert torch.equal(half.noise, a.noise[4:8]) and torch.equal(half.self_cond, a.self_cond[4:8])
    # fresh guidance dropout every step (the 3DiM reference drew the mask once); rate as configured
    masks = torch.stack([D.draw_noise((64, 1, 1, 1), cfg, gen(s)).drop_cond for s in range(100)])
    assert 0.25 < masks.float().mean() < 0.35
    assert len({tuple(m.tolist()) for m in masks}) == 100


def test_adding_self_condition_draw_kept_the_earlier_draws():
    """The self-conditioning mask is drawn last, so runs of recipes without it keep their randomness."""
    cfg = D.DiffusionConfig()
    g = gen(11)
    logsnr = D.logsnr_schedule(torch.rand(4, generator=g), cfg)
    noise = torch.randn((4, 3, 2, 2), generator=g)
    drop = torch.rand(4, generator=g) < cfg.cond_drop_prob
    draw = D.draw_noise((4, 3, 2, 2), cfg, gen(11))
    assert torch.equal(draw.logsnr, logsnr) and torch.equal(draw.noise, noise) and torch.equal(draw.drop_cond, drop)


# ------------------------------------------------------------------------------------------------ losses


class EchoModel(torch.nn.Module):
    """Fake backbone whose v-prediction is ``scale * cond_image``; records what each call was given."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))
        self.calls: list[dict] = []

    def forward(self, z_t, logsnr, *, cond_image, cond_pose, target_pose, cond_K, target_K, drop_cond=None,
                x_self=None):
        self.calls.append({"batch": z_t.shape[0], "x_self": None if x_self is None else x_self.clone(),
                           "grad": torch.is_grad_enabled(), "drop": None if drop_cond is None else drop_cond.clone()})
        return self.scale * cond_image


def _batch(b: int = 6, size: int = 4) -> dict[str, torch.Tensor]:
    g = gen(5)
    eye = torch.eye(4).expand(b, 4, 4)
    return {"cond_image": torch.rand(b, 3, size, size, generator=g) * 2 - 1,
            "target_image": torch.rand(b, 3, size, size, generator=g) * 2 - 1,
            "cond_pose": eye, "target_pose": eye, "cond_K": torch.eye(3).expand(b, 3, 3),
            "target_K": torch.eye(3).expand(b, 3, 3)}


def test_training_loss_is_the_mse_of_the_parameterisation():
    model, batch = EchoModel(), _batch()
    cfg = D.DiffusionConfig()
    draw = D.draw_noise(tuple(batch["target_image"].shape), cfg, gen(0))
    out = D.training_loss(model, batch, cfg, draw=draw)
    target = D.prediction_target(batch["target_image"], draw.noise, draw.logsnr, "v")
    expected = (0.5 * batch["cond_image"] - target).square().mean()
    torch.testing.assert_close(out["loss"], expected)
    assert len(model.calls) == 1 and model.calls[0]["x_self"] is None
    assert torch.equal(model.calls[0]["drop"], draw.drop_cond)


def test_self_conditioning_feeds_a_gradient_free_estimate_to_the_chosen_samples():
    model, batch = EchoModel(), _batch()
    cfg = D.DiffusionConfig(self_condition=True, cond_drop_prob=0.5)
    draw = D.draw_noise(tuple(batch["target_image"].shape), cfg, gen(4))
    chosen = draw.self_cond
    assert 0 < chosen.sum() < len(chosen)  # this seed picks some and leaves some
    out = D.training_loss(model, batch, cfg, draw=draw)
    first, second = model.calls
    assert not first["grad"] and first["batch"] == int(chosen.sum())
    assert torch.equal(first["x_self"], torch.zeros_like(first["x_self"]))  # the estimate pass starts from zeros
    assert torch.equal(first["drop"], draw.drop_cond[chosen])  # with the same guidance dropout
    assert second["grad"] and second["batch"] == len(chosen)
    z_t = D.add_noise(batch["target_image"], draw.noise, draw.logsnr)
    x0_hat, _ = D.to_x0_eps(0.5 * batch["cond_image"], z_t, draw.logsnr, "v")
    torch.testing.assert_close(second["x_self"][chosen], x0_hat[chosen].clamp(-1, 1))
    assert torch.equal(second["x_self"][~chosen], torch.zeros_like(second["x_self"][~chosen]))
    out["loss"].backward()  # the gradient flows through the second pass only
    assert model.scale.grad is not None and torch.isfinite(model.scale.grad)


def test_regression_loss_uses_the_regression_noise_level_and_no_input():
    model, batch = EchoModel(), _batch()
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(args), with_kwargs=False)
    out = D.regression_loss(model, batch)
    z_t, logsnr = calls[0]
    assert torch.equal(z_t, torch.zeros_like(z_t)) and (logsnr == D.REGRESSION_LOGSNR).all()
    torch.testing.assert_close(out["loss"], (0.5 * batch["cond_image"] - batch["target_image"]).square().mean())
    l1 = D.regression_loss(model, batch, kind="l1")["loss"]
    assert l1.item() == pytest.approx((0.5 * batch["cond_image"] - batch["target_image"]).abs().mean().item())


def test_kl_term_vanishes_for_a_perfect_mean_and_the_posterior_variance():
    """L_vb is zero when the model's mean is exact and its variance is the posterior one (var_raw = -1)."""
    cfg = D.DiffusionConfig(learn_variance=True)
    g = gen(9)
    x0 = torch.rand(4, 3, 2, 2, generator=g) * 2 - 1
    noise = torch.randn(4, 3, 2, 2, generator=g)
    index = torch.tensor([1, 10, 500, 999])
    logsnr = D.logsnr_from_alphas_cumprod(D.discrete_alphas_cumprod(cfg))[index].float()
    z_t = D.add_noise(x0, noise, logsnr)
    exact = D.variational_bound_term(x0, z_t, x0, -torch.ones_like(x0), index, cfg)
    assert exact.abs().max() < 1e-4
    worse = D.variational_bound_term(x0, z_t, x0, torch.ones_like(x0), index, cfg)
    # beta_t and the posterior variance differ most near t = 0 and coincide as t -> T
    assert (worse[:3] > 1e-6).all() and worse[3] >= -1e-6
    assert math.isfinite(float(worse.sum()))
