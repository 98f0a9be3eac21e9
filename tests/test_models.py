"""Backbones: shapes, initialisation, what the output may and may not depend on, configs, presets."""

from __future__ import annotations

import json

import pytest
import torch

from novelview import cameras
from novelview.errors import ConfigError
from novelview.models import presets
from novelview.models.presets import (
    build_model,
    config_from_dict,
    count_parameters,
    example_inputs,
    list_presets,
    preset_config,
)

# Denoisers: the backbones behind the conditioning wrapper (pixelNeRF, a regressor, is tested in test_lifting.py).
TINY = ["xunet-tiny", "dit-tiny", "xunet-tiny-3d", "dit-tiny-3d"]
LARGE = [name for name in list_presets() if "tiny" not in name and "pixelnerf" not in name]
# Property tests run on the tiny presets and on the non-default conditioning options.
VARIANTS = [
    ("xunet-tiny", {}),
    ("dit-tiny", {}),
    ("xunet-tiny", {"pose_mode": "plucker", "cond_concat": True, "self_condition": True}),
    ("dit-tiny", {"pose_mode": "plucker", "cond_concat": True, "self_condition": True}),
    ("xunet-tiny-3d", {"self_condition": True}),
    ("dit-tiny-3d", {}),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models and batches are tiny: a second thread only adds synchronisation, and on a shared,
    busy machine OpenMP spin-waiting made this file 4x slower with two threads than with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs(model, batch=3, seed=0):
    return example_inputs(model.config, batch, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add noise to every weight so zero-initialised branches (and outputs) become live."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: "-".join([v[0], *sorted(v[1])]))
def live_model(request):
    name, overrides = request.param
    torch.manual_seed(0)
    return _perturb(build_model(name, 32, **overrides))


def _run(model, z_t, logsnr, kwargs, **changes):
    with torch.no_grad():
        return model(z_t, logsnr, **{**kwargs, **changes})


# ---------------------------------------------------------------------------------------------------------
# Shapes and initialisation
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", TINY)
def test_tiny_presets_run(name, size):
    model = build_model(name, size)
    z_t, logsnr, kwargs = _inputs(model, batch=2)
    out = _run(model, z_t, logsnr, kwargs)
    assert out.shape == (2, 3, size, size)
    # zero-initialised output layer: a fresh model predicts exactly zero
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("name", TINY)
def test_learn_variance_doubles_channels(name):
    model = _perturb(build_model(name, 32, learn_variance=True))
    z_t, logsnr, kwargs = _inputs(model, batch=2)
    out = _run(model, z_t, logsnr, kwargs)
    assert out.shape == (2, 6, 32, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", LARGE)
def test_large_presets_shapes_on_meta(name, size):
    with torch.device("meta"):
        model = build_model(name, size)
    z_t, logsnr, kwargs = example_inputs(model.config, 2, device="meta")
    out = model(z_t, logsnr, **kwargs)
    assert out.shape == (2, 3, size, size)
    assert count_parameters(model) > 1e6


def test_xunet_paper_matches_3dim_parameter_count():
    with torch.device("meta"):
        model = build_model("xunet-paper", 128)
    assert abs(count_parameters(model) / 471e6 - 1) < 0.10


@pytest.mark.parametrize("name", TINY)
def test_state_dict_has_no_aliases_and_reloads(name):
    model = build_model(name, 32)
    state = model.state_dict()
    params = dict(model.named_parameters())
    assert set(state) == set(params)  # no duplicate keys; fixed tables are non-persistent buffers
    ptrs = [t.data_ptr() for t in state.values()]
    assert len(set(ptrs)) == len(ptrs)
    fresh = build_model(name, 32)
    fresh.load_state_dict(state, strict=True)


def test_ray_features_are_reused_only_for_identical_cameras():
    model = build_model("xunet-tiny", 32)
    _, _, kw = _inputs(model)
    args = (kw["cond_pose"], kw["target_pose"], kw["cond_K"], kw["target_K"], (32, 32), [(32, 32), (16, 16)])
    with torch.no_grad(), model.reusing_conditioning():
        first = model.pose_embed(*args)
        again = model.pose_embed(*args)
        assert again is first  # a sampler's next step: nothing recomputed
        kw["target_pose"][0, 0, 3] += 0.5  # the same tensor, changed in place: must not be served stale
        moved = model.pose_embed(*args)
        drop = torch.tensor([True, False, False])
        dropped = model.pose_embed(*args, drop)
    fresh = model.pose_embed.features(*args, None)
    assert moved is not first and torch.equal(moved[0].camera, fresh[0].camera)
    assert not torch.equal(moved[0].camera, first[0].camera)  # ray origins moved (directions did not)
    assert dropped[0].pixel[0].abs().sum() == 0 and dropped is not moved
    with torch.no_grad():  # outside a sampling run nothing is reused
        assert model.pose_embed(*args) is not model.pose_embed(*args)
    assert model.pose_embed(*args) is not model.pose_embed(*args)  # training (autograd on): never cached


def test_bare_backbone_weights_load_into_the_wrapper():
    """Weights saved from a backbone without the wrapper (no ``backbone.`` prefix) load unchanged."""
    model = _perturb(build_model("dit-tiny", 32))
    bare = {key.removeprefix("backbone."): value for key, value in model.state_dict().items()}
    fresh = build_model("dit-tiny", 32)
    fresh.load_state_dict(bare, strict=True)
    z_t, logsnr, kwargs = _inputs(model)
    torch.testing.assert_close(_run(fresh.eval(), z_t, logsnr, kwargs), _run(model, z_t, logsnr, kwargs))


def test_dit_position_table_is_a_buffer():
    model = build_model("dit-tiny", 32)
    assert "backbone.pos_embed" in dict(model.named_buffers())
    assert "backbone.pos_embed" not in model.state_dict()
    assert dict(model.to(torch.float64).named_buffers())["backbone.pos_embed"].dtype == torch.float64


# ---------------------------------------------------------------------------------------------------------
# What the output depends on
# ---------------------------------------------------------------------------------------------------------


def test_output_is_live_and_uses_noise_level(live_model):
    z_t, logsnr, kwargs = _inputs(live_model)
    out = _run(live_model, z_t, logsnr, kwargs)
    assert torch.isfinite(out).all() and out.abs().mean() > 1e-4
    assert not torch.allclose(out, _run(live_model, z_t, logsnr + 3.0, kwargs), atol=1e-5)


def test_swapping_cameras_changes_output(live_model):
    z_t, logsnr, kwargs = _inputs(live_model)
    out = _run(live_model, z_t, logsnr, kwargs)
    swapped = _run(live_model, z_t, logsnr, kwargs, cond_pose=kwargs["target_pose"], target_pose=kwargs["cond_pose"])
    assert (out - swapped).abs().amax(dim=(1, 2, 3)).min() > 1e-5


def test_condition_image_changes_output(live_model):
    z_t, logsnr, kwargs = _inputs(live_model)
    out = _run(live_model, z_t, logsnr, kwargs)
    other = _run(live_model, z_t, logsnr, kwargs, cond_image=-kwargs["cond_image"])
    assert (out - other).abs().amax(dim=(1, 2, 3)).min() > 1e-5


def test_drop_cond_removes_image_and_pose(live_model):
    z_t, logsnr, kwargs = _inputs(live_model)
    _, _, other = _inputs(live_model, seed=1)  # different images, poses, and intrinsics below
    other["cond_K"] = cameras.intrinsics_from_fov(35.0, 32).expand(3, 3, 3)
    drop = torch.tensor([True, False, True])
    out = _run(live_model, z_t, logsnr, kwargs, drop_cond=drop)
    out_other = _run(live_model, z_t, logsnr, other, drop_cond=drop)
    torch.testing.assert_close(out[drop], out_other[drop], rtol=0, atol=1e-6)
    assert (out[1] - out_other[1]).abs().max() > 1e-5
    # None means "keep everything", same as an all-False mask
    keep_all = _run(live_model, z_t, logsnr, kwargs, drop_cond=torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(_run(live_model, z_t, logsnr, kwargs), keep_all)


@pytest.mark.parametrize("name", TINY)
def test_self_condition_estimate_is_read(name):
    torch.manual_seed(0)
    model = _perturb(build_model(name, 32, self_condition=True))
    z_t, logsnr, kwargs = _inputs(model)
    estimate = torch.rand(z_t.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    none = _run(model, z_t, logsnr, kwargs)
    torch.testing.assert_close(none, _run(model, z_t, logsnr, kwargs, x_self=torch.zeros_like(z_t)))  # None = zeros
    out = _run(model, z_t, logsnr, kwargs, x_self=estimate)
    assert (out - none).abs().amax(dim=(1, 2, 3)).min() > 1e-5
    with pytest.raises(ValueError, match="x_self must have the shape"):
        _run(model, z_t, logsnr, kwargs, x_self=estimate[:, :, :16])
    plain = build_model(name, 32)
    with pytest.raises(ValueError, match="without self_condition"):
        _run(plain, z_t, logsnr, kwargs, x_self=estimate)


def test_no_leakage_between_samples(live_model):
    z_t, logsnr, kwargs = _inputs(live_model)
    _, _, other = _inputs(live_model, seed=1)
    out = _run(live_model, z_t, logsnr, kwargs)
    mixed = {k: torch.cat([v[:1], other[k][1:]]) for k, v in kwargs.items()}
    z_mixed = torch.cat([z_t[:1], -z_t[1:]])
    out_mixed = _run(live_model, z_mixed, torch.cat([logsnr[:1], logsnr[1:] + 5]), mixed)
    torch.testing.assert_close(out_mixed[0], out[0], rtol=1e-5, atol=1e-5)
    single = _run(live_model, z_t[:1], logsnr[:1], {k: v[:1] for k, v in kwargs.items()})
    torch.testing.assert_close(single[0], out[0], rtol=1e-5, atol=1e-5)


def test_invariant_to_the_world_frame(live_model):
    """Relative pose conditioning: moving and rotating the whole world (both cameras) changes nothing."""
    z_t, logsnr, kwargs = _inputs(live_model)
    # any rigid transform will do; a look-at pose is one with a non-trivial rotation and translation
    world = cameras.look_at(torch.tensor([0.7, -1.2, 0.4], dtype=torch.float64), (0.1, 0.3, -0.2))
    moved = {
        "cond_pose": (world @ kwargs["cond_pose"].double()).float(),
        "target_pose": (world @ kwargs["target_pose"].double()).float(),
    }
    out = _run(live_model, z_t, logsnr, kwargs)
    out_moved = _run(live_model, z_t, logsnr, kwargs, **moved)
    torch.testing.assert_close(out_moved, out, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("pose_mode", ["rays", "plucker"])
def test_pose_scale_divides_translations(pose_mode):
    """A scene scaled by s, seen by a model with pose_scale * s, gives the same output (same weights)."""
    model = _perturb(build_model("dit-tiny", 32, pose_mode=pose_mode))
    scaled = build_model("dit-tiny", 32, pose_mode=pose_mode, pose_scale=3.0)
    scaled.load_state_dict(model.state_dict())
    z_t, logsnr, kwargs = _inputs(model)
    big = {name: kwargs[name].clone() for name in ("cond_pose", "target_pose")}
    for pose in big.values():
        pose[:, :3, 3] *= 3.0
    torch.testing.assert_close(_run(scaled.eval(), z_t, logsnr, kwargs, **big), _run(model, z_t, logsnr, kwargs))


def _both_frames(model, z_t, logsnr, kwargs, **changes):
    """The X-UNet's target output computed without dropping the condition frame after the last cross-frame
    attention: both frames run through the whole decoder and the target is picked at the end."""
    pruned_at = model.backbone.last_cross_attention
    model.backbone.last_cross_attention = 10**9
    try:
        return _run(model, z_t, logsnr, kwargs, **changes)[1::2]
    finally:
        model.backbone.last_cross_attention = pruned_at


def test_xunet_frames_never_share_normalisation():
    """Without attention the two frames only meet through shared weights, so the condition view cannot
    reach the target frame: any dependence would mean statistics are mixed across frames."""
    model = _perturb(build_model("xunet-tiny", 32, attn_resolutions=()))
    z_t, logsnr, kwargs = _inputs(model)
    out = _both_frames(model, z_t, logsnr, kwargs)
    changed = _both_frames(model, z_t, logsnr, kwargs, cond_image=kwargs["cond_image"] * 3 + 1)
    torch.testing.assert_close(changed, out)
    torch.testing.assert_close(_run(model, z_t, logsnr, kwargs), out)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("overrides", [{}, {"cond_concat": True, "self_condition": True}, {"attn_resolutions": ()}],
                         ids=["default", "concat-selfcond", "no-attention"])
def test_xunet_drops_the_condition_frame_exactly(size, overrides):
    """Once nothing attends to the condition frame any more it cannot reach the output: running the rest of the
    decoder on the target frame alone gives the two-frame result."""
    model = _perturb(build_model("xunet-tiny", size, **overrides))
    z_t, logsnr, kwargs = _inputs(model)
    if overrides.get("self_condition"):
        kwargs["x_self"] = torch.randn(z_t.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_run(model, z_t, logsnr, kwargs), _both_frames(model, z_t, logsnr, kwargs),
                               atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Configs and presets
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_presets())
def test_config_json_round_trip(name):
    config = preset_config(name, 64, **({} if "pixelnerf" in name else {"learn_variance": True}))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["family"] in ("xunet", "dit", "pixelnerf") and data["image_size"] == 64 and data["preset"] == name
    assert config_from_dict(data) == config


def test_model_rebuilt_from_its_config_loads_its_weights():
    model = build_model("dit-tiny", 32, cond_depth=1)
    data = json.loads(json.dumps(model.config.to_dict()))
    rebuilt = presets.model_from_config_dict(data)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ConfigError, match="xunet-tiny.*dit-tiny"):
        build_model("xunet-huge", 32)


def test_unknown_override_lists_valid_options():
    with pytest.raises(ConfigError, match="unknown option.*chanels.*valid options:.*ch_mult"):
        build_model("xunet-tiny", 32, chanels=64)


def test_invalid_values_raise_config_error():
    with pytest.raises(ConfigError, match="pose_mode"):
        build_model("xunet-tiny", 32, pose_mode="euler")
    with pytest.raises(ConfigError, match="divisible"):
        build_model("dit-tiny", 30)
    with pytest.raises(ConfigError, match="family"):
        config_from_dict({"family": "resnet"})
    with pytest.raises(ConfigError, match="unknown field"):
        config_from_dict({"family": "dit", "depht": 3})


def test_bad_input_shapes_are_reported():
    model = build_model("xunet-tiny", 32)
    z_t, logsnr, kwargs = _inputs(model, batch=2)
    with pytest.raises(ValueError, match="cond_pose"):
        model(z_t, logsnr, **{**kwargs, "cond_pose": kwargs["cond_pose"][:1]})


def test_forward_flops_are_counted_without_running():
    with torch.device("meta"):
        model = build_model("dit-reference", 64)
    flops = presets.forward_flops(model)
    assert flops > 2 * count_parameters(model) * 16 * 16 * 0.5  # ~2 FLOPs per parameter per token
    assert presets.preset_config("dit-seed") == model.config  # the preset's former name still works


# ---------------------------------------------------------------------------------------------------------
# Learning
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
def test_tiny_model_overfits_one_batch(name):
    """The training loss on one batch with one fixed noise draw falls more than 10x (usually in < 50 steps)."""
    diffusion = pytest.importorskip("novelview.diffusion")
    torch.manual_seed(0)
    model = build_model(name, 16)
    gen = torch.Generator().manual_seed(0)
    z_t, _, kwargs = example_inputs(model.config, 4, generator=gen)
    batch = {**kwargs, "target_image": z_t.clamp(-1, 1)}
    cfg = diffusion.DiffusionConfig(cond_drop_prob=0.0)
    draw = diffusion.draw_noise(tuple(z_t.shape), cfg, gen)  # one fixed draw: the batch can be memorised
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses: list[float] = []
    for _ in range(300):
        loss = diffusion.training_loss(model, batch, cfg, draw=draw)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 20:
            break
    assert min(losses) < losses[0] / 10, (losses[0], losses[-10:])
