"""3D-aware conditioning: projection, rendering and pooling of the lifting module, the wrapper, pixelNeRF."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from novelview import cameras
from novelview.data import synthetic
from novelview.diffusion import regression_loss
from novelview.models import ConditionedModel, ConditionViews, FeatureLifter, build_model, example_inputs
from novelview.models.lifting import composite, ray_samples, sample_view_features


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ring_cameras(azimuths: list[float], elevation: float = 20.0, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    az = torch.tensor(azimuths, dtype=torch.float64)
    poses = cameras.spherical_to_pose(az, torch.full_like(az, elevation), torch.full_like(az, 2.5))
    return poses, cameras.intrinsics_from_fov(40.0, size).double()


@torch.no_grad()
def _perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(scale * torch.randn(p.shape, generator=gen))
    return model.eval()


def test_a_point_lands_on_the_pixel_cameras_puts_it_in_every_view():
    """Feature maps holding each pixel's own centre coordinates: sampling at a point's projection returns exactly
    cameras.project's pixel coordinates (pixel centres at +0.5, align_corners=False), in both views."""
    size = 32
    poses, k = _ring_cameras([10.0, 75.0], size=size)
    v, u = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    coordinates = torch.stack([u, v]).float()  # [2, H, W]: channel 0 = u, channel 1 = v
    views = ConditionViews(torch.zeros(1, 2, 3, size, size), poses[None].float(), k.expand(1, 2, 3, 3).float())
    points = torch.tensor([[[0.1, -0.2, 0.15], [-0.3, 0.25, -0.1], [0.0, 0.0, 0.0]]])  # inside both views
    sampled = sample_view_features(coordinates.expand(1, 2, 2, size, size), views, points)  # [1, 2, 3, 2]
    uv, depth = cameras.project(points.double()[:, None], poses[None], k)
    assert (depth > 0).all() and (uv > 1).all() and (uv < size - 1).all()  # away from the border: exact there
    torch.testing.assert_close(sampled.double(), uv, atol=1e-4, rtol=0)


def test_points_behind_a_camera_or_outside_its_image_read_zeros():
    poses, k = _ring_cameras([0.0])
    views = ConditionViews(torch.zeros(1, 1, 3, 64, 64), poses[None].float(), k[None, None].float())
    camera_centre = poses[0, :3, 3].float()
    behind = camera_centre + (camera_centre - 0.0) * 0.5  # further out along the line through the centre
    far_aside = torch.tensor([0.0, 0.0, 30.0])
    sampled = sample_view_features(torch.ones(1, 1, 4, 64, 64), views, torch.stack([behind, far_aside])[None])
    assert torch.equal(sampled, torch.zeros_like(sampled))


def test_depth_of_one_view_reprojected_into_another_agrees_with_its_depth_map():
    """The renderer's depth map of view A, lifted to 3D and projected into view B with the lifter's sampling, meets
    B's own depth map where B sees the same surface, and is never in front of it (occlusion only hides points)."""
    obj = synthetic.random_object(np.random.default_rng(3))
    poses, k = _ring_cameras([20.0, 50.0], size=96)
    rendering = synthetic.render(obj, poses, k, 96)
    origins, dirs = cameras.pixel_rays(poses[:1], k, 96, 96)
    hit = rendering.mask[0]
    points = (origins[0][hit] + dirs[0][hit] * rendering.distance[0][hit][:, None]).float()  # world points seen by A
    view_b = ConditionViews(torch.zeros(1, 1, 3, 96, 96), poses[None, 1:].float(), k[None, None].float())
    seen = sample_view_features(rendering.depth[1][None, None, None].float(), view_b, points[None])[0, 0, :, 0]
    true = cameras.world_to_camera(points[None], poses[1:].float())[0, :, 2]
    inside = seen > 0
    error = (seen - true)[inside]
    assert inside.float().mean() > 0.5
    assert (error < 0.02).float().mean() > 0.97  # not in front of the surface B sees (bilinear edges aside)
    assert ((error.abs() < 0.02).float().mean()) > 0.6  # and on it for the points B sees


def test_an_opaque_sphere_renders_its_silhouette():
    """Volume rendering a sphere's density along the target rays gives the ray caster's silhouette of it."""
    sphere = synthetic.SynthObject([synthetic.Primitive(
        "sphere", np.array([0.2, -0.1, 0.1]), np.eye(3), np.array([0.45]), np.array([[1.0, 0.0, 0.0]]))])
    poses, k = _ring_cameras([30.0], elevation=15.0, size=48)
    mask = synthetic.render(sphere, poses, k, 48).mask[0]
    samples = ray_samples(poses.float(), k[None].float(), (48, 48), (48, 48), (1.5, 3.5), 128)
    inside = (samples.points - torch.tensor([0.2, -0.1, 0.1])).norm(dim=-1) < 0.45
    density = inside.float() * 200.0
    _, opacity = composite(density, torch.zeros(*density.shape, 1), samples.step)
    silhouette = (opacity[0] > 0.5).view(48, 48)
    iou = (silhouette & mask).sum() / (silhouette | mask).sum()
    assert iou > 0.95, float(iou)


def test_the_lifter_composites_its_field_on_white_and_scales_channels_like_images():
    """Through the whole lifter: an empty field renders the white background with opacity -1 (0 in [0, 1]); a
    dense field renders its own colour with opacity +1."""
    torch.manual_seed(0)
    model = build_model("dit-tiny-3d", 32)
    lifter: FeatureLifter = model.lifter
    poses, k = _ring_cameras([0.0, 90.0], size=32)
    views = ConditionViews(torch.rand(1, 1, 3, 32, 32) * 2 - 1, poses[None, :1].float(), k[None, None].float())
    with torch.no_grad():
        lifter.head.weight.zero_()
        colour = torch.full((3,), -4.0)  # sigmoid(-4) = 0.018: nearly black
        for density, expected_rgb, expected_opacity in ((-30.0, 1.0, -1.0), (30.0, 2 * torch.sigmoid(colour) - 1, 1.0)):
            lifter.head.bias.zero_()
            lifter.head.bias[0] = density
            lifter.head.bias[-3:] = colour
            image = lifter(views, poses[1:].float(), k[None].float(), (32, 32), (8, 8))
            rgb, opacity = image[0, FeatureLifter.RGB], image[0, -1]
            torch.testing.assert_close(opacity, torch.full_like(opacity, expected_opacity), atol=1e-4, rtol=0)
            expected = torch.as_tensor(expected_rgb).expand(8, 8, 3).permute(2, 0, 1)
            torch.testing.assert_close(rgb, expected.float(), atol=1e-4, rtol=0)


def test_renders_are_reused_within_a_sampling_run_only():
    """Inside reusing_conditioning (one sampling run) a repeated input is rendered once; outside it, and after an
    optimiser step, renders always come from the current weights."""
    from novelview.train import make_optimizer

    torch.manual_seed(0)
    model = _perturb(build_model("dit-tiny-3d", 32))
    z_t, logsnr, kwargs = example_inputs(model.config, 2, generator=torch.Generator().manual_seed(0))
    views = ConditionViews.of(kwargs["cond_image"], kwargs["cond_pose"], kwargs["cond_K"])

    def render() -> torch.Tensor:
        return model.render(views, kwargs["target_pose"], kwargs["target_K"], (32, 32))

    with torch.no_grad(), model.reusing_conditioning():
        assert render() is render()
    with torch.no_grad():
        before = render()
        assert render() is not before
    optimizer = make_optimizer(model.parameters(), lr=1e-2, weight_decay=0.0)  # fused: bumps no version counter
    model(z_t, logsnr, **kwargs).square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        assert not torch.allclose(render(), before)


def test_generate_samples_with_several_condition_views_per_target():
    from novelview.diffusion import DiffusionConfig
    from novelview.sampling import SamplingSettings, View, generate

    torch.manual_seed(0)
    model = _perturb(build_model("dit-tiny-3d", 16))
    _, _, kwargs = example_inputs(model.config, 3, generator=torch.Generator().manual_seed(0))
    images = torch.stack([kwargs["cond_image"], -kwargs["cond_image"]], 1)  # [3 targets, 2 views, 3, H, W]
    poses = torch.stack([kwargs["cond_pose"], kwargs["target_pose"].roll(1, 0)], 1)
    ks = torch.stack([kwargs["cond_K"], kwargs["cond_K"]], 1)
    settings = SamplingSettings(steps=2, seed=0)
    two = generate(model, DiffusionConfig(), View(images, poses, ks), kwargs["target_pose"], kwargs["target_K"],
                   settings)
    one = generate(model, DiffusionConfig(), View(images[:, :1], poses[:, :1], ks[:, :1]), kwargs["target_pose"],
                   kwargs["target_K"], settings)
    assert two.shape == (3, 3, 16, 16) and (two - one).abs().max() > 1e-4
    with pytest.raises(ValueError, match="lifting module"):
        plain = build_model("dit-tiny", 16)
        generate(plain, DiffusionConfig(), View(images, poses, ks), kwargs["target_pose"], kwargs["target_K"],
                 settings)


def test_mean_pooling_does_not_depend_on_the_order_of_the_views():
    torch.manual_seed(0)
    model = _perturb(build_model("dit-tiny-3d", 32))
    lifter: FeatureLifter = model.lifter
    poses, k = _ring_cameras([0.0, 80.0, 200.0], size=32)
    images = torch.rand(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    target_pose, _ = _ring_cameras([120.0], size=32)

    def render(order: list[int]) -> torch.Tensor:
        views = ConditionViews(images[:, order], poses[None, order].float(), k.expand(1, len(order), 3, 3).float())
        with torch.no_grad():
            return lifter(views, target_pose.float(), k[None].float(), (32, 32), (16, 16))

    torch.testing.assert_close(render([2, 0, 1]), render([0, 1, 2]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(render([0, 1, 2]), render([0]), atol=1e-4)  # the other views do count
    torch.testing.assert_close(render([1, 1, 1]), render([1]), atol=1e-5, rtol=1e-5)  # a mean: repeats change nothing


@pytest.mark.parametrize("name", ["dit-tiny-3d", "xunet-tiny-3d"])
def test_both_backbones_read_the_feature_image_through_the_one_wrapper(name):
    torch.manual_seed(0)
    model = _perturb(build_model(name, 32))
    assert isinstance(model, ConditionedModel) and model.lifter is not None
    assert not any("lifter" in key for key in model.backbone.state_dict())  # the backbone is only its network
    z_t, logsnr, kwargs = example_inputs(model.config, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(z_t, logsnr, **kwargs)
        _perturb(model.lifter, seed=5, scale=0.5)
        changed = model(z_t, logsnr, **kwargs)
    assert (out - changed).abs().amax(dim=(1, 2, 3)).min() > 1e-5


@pytest.mark.parametrize("name", ["dit-tiny-3d", "xunet-tiny-3d"])
def test_dropping_the_condition_removes_the_views_the_cameras_and_the_feature_image(name):
    torch.manual_seed(0)
    model = _perturb(build_model(name, 32))
    z_t, logsnr, kwargs = example_inputs(model.config, 2, generator=torch.Generator().manual_seed(0))
    _, _, other = example_inputs(model.config, 2, generator=torch.Generator().manual_seed(1))
    drop = torch.tensor([True, True])  # every camera, the view and its lifted image go: nothing of them is left
    with torch.no_grad():
        a, render_a = model(z_t, logsnr, **kwargs, drop_cond=drop, return_render=True)
        b = model(z_t, logsnr, **other, drop_cond=drop)
        kept, render_kept = model(z_t, logsnr, **kwargs, return_render=True)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert torch.equal(render_a, torch.zeros_like(render_a)) and render_kept.abs().sum() > 0
    assert (a - kept).abs().max() > 1e-5


def test_render_skip_starts_from_the_render_and_is_refused_without_x0_prediction(tmp_path):
    """With render_skip a fresh model predicts exactly the upsampled RGB render (its own output layer is zero), and
    nothing where the condition is dropped; training it with another parameterisation is refused."""
    from novelview.diffusion import DiffusionConfig
    from novelview.errors import ConfigError
    from novelview.train import TrainConfig, train

    torch.manual_seed(0)
    model = build_model("dit-tiny-3d", 32, render_skip=True)
    _perturb(model.lifter)
    z_t, logsnr, kwargs = example_inputs(model.config, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, render = model(z_t, logsnr, **kwargs, return_render=True)
        dropped = model(z_t, logsnr, **kwargs, drop_cond=torch.tensor([True, False]))
    upsampled = torch.nn.functional.interpolate(render, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, upsampled)
    assert torch.equal(dropped[0], torch.zeros_like(dropped[0])) and torch.equal(dropped[1], out[1])
    cfg = TrainConfig(data=str(tmp_path), out=str(tmp_path / "run"), model="dit-tiny-3d",
                      model_overrides={"render_skip": True}, diffusion=DiffusionConfig(prediction="v"))
    from novelview.data.synthetic import SynthConfig, generate

    generate(tmp_path, SynthConfig(objects=3, views=3, size=16, seed=0), progress=False, overwrite=True)
    with pytest.raises(ConfigError, match="--prediction x0"):
        train(dataclasses.replace(cfg, image_size=16))


def test_several_condition_views_are_accepted_and_checked():
    torch.manual_seed(0)
    model = _perturb(build_model("dit-tiny-3d", 32))
    z_t, logsnr, kwargs = example_inputs(model.config, 2, generator=torch.Generator().manual_seed(0))
    two = {"cond_image": torch.stack([kwargs["cond_image"], -kwargs["cond_image"]], 1),
           "cond_pose": torch.stack([kwargs["cond_pose"], kwargs["target_pose"]], 1),
           "cond_K": torch.stack([kwargs["cond_K"], kwargs["cond_K"]], 1)}
    with torch.no_grad():
        one = model(z_t, logsnr, **kwargs)
        both = model(z_t, logsnr, **{**kwargs, **two})
    assert both.shape == one.shape and (both - one).abs().max() > 1e-5
    with pytest.raises(ValueError, match="cond_pose must have shape"):
        model(z_t, logsnr, **{**kwargs, **two, "cond_pose": kwargs["cond_pose"]})


def test_pixelnerf_renders_rays_independently_and_overfits_one_batch():
    """A ray subset renders exactly the pixels of the full image it indexes; trained on random subsets, the
    regression loss on one batch falls more than 5x."""
    torch.manual_seed(0)
    model = build_model("pixelnerf-tiny", 16)
    gen = torch.Generator().manual_seed(0)
    z_t, logsnr, kwargs = example_inputs(model.config, 4, generator=gen)
    pixels = torch.randint(0, 256, (4, 32), generator=gen)
    with torch.no_grad():
        full = model(z_t, logsnr, **kwargs)
        subset = model(z_t, logsnr, **kwargs, pixels=pixels)
    torch.testing.assert_close(subset, full.flatten(2).gather(2, pixels[:, None].expand(-1, 3, -1)), atol=1e-5,
                               rtol=1e-5)
    smooth = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4, generator=gen) * 2 - 1, size=16, mode="bilinear")
    batch = {**kwargs, "target_image": smooth}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(300):
        pixels = torch.randint(0, 256, (4, 64), generator=gen)
        loss = regression_loss(model, batch, pixels=pixels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < losses[0] / 5, (losses[0], losses[-5:])
    with pytest.raises(ValueError, match="cannot drop its condition"):
        model(z_t, logsnr, **kwargs, drop_cond=torch.tensor([True, False, False, False]))


def test_ray_bounds_enclose_the_scene_the_cameras_see():
    near, far = cameras.scene_ray_bounds(2.5, 2.5, 40.0)
    radius = cameras.visible_sphere_radius(2.5, 40.0)
    assert radius == pytest.approx(2.5 * np.sin(np.radians(20.0)))
    assert (near, far) == pytest.approx((2.5 - radius, 2.5 + radius))
    assert synthetic.OBJECT_RADIUS < radius  # our generated objects fit
    config = build_model("dit-tiny-3d", 32, pose_scale=2.5).config
    assert config.ray_bounds() == pytest.approx((near, far))
    assert build_model("dit-tiny-3d", 32, near=1.0, far=4.0).config.ray_bounds() == (1.0, 4.0)


@pytest.mark.slow
def test_end_to_end_3d_model_and_pixelnerf_baseline(tmp_path):
    """Generate data, train a 3D-aware DiT (with the auxiliary render loss) and a pixelNeRF regressor from the CLI,
    reload both, sample views through the Python API, and evaluate one against the other."""
    import json
    import subprocess
    import sys

    from novelview import Pipeline
    from novelview.data.synthetic import SynthConfig, generate
    from novelview.sampling import SamplingSettings

    data = generate(tmp_path / "synth", SynthConfig(objects=6, views=6, size=16, seed=0), progress=False)
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "novelview.cli", *args], capture_output=True, text=True,
                              env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]

    common = ["--data", str(data), "--size", "16", "--steps", "3", "--batch-size", "4", "--checkpoint-every", "3",
              "--val-every", "0", "--sample-every", "3"]
    cli("train", "--model", "dit-tiny-3d", "--render-weight", "1", "--out", str(tmp_path / "d3"), *common)
    cli("train", "--model", "pixelnerf-tiny", "--objective", "regression", "--rays-per-image", "32",
        "--out", str(tmp_path / "pn"), *common)
    log = [json.loads(line) for line in (tmp_path / "d3" / "log.jsonl").read_text().splitlines()]
    assert all(record["render"] > 0 for record in log if "render" in record)
    from PIL import Image

    grid_3d = Image.open(tmp_path / "d3" / "samples" / "step_0000003.png")
    grid_pn = Image.open(tmp_path / "pn" / "samples" / "step_0000003.png")
    assert grid_3d.height == grid_pn.height and grid_3d.width > grid_pn.width  # + a column: the lifter's render
    config = json.loads(next((tmp_path / "d3" / "checkpoints").glob("step_*/config.json")).read_text())
    near, far = config["model"]["near"], config["model"]["far"]
    assert near == pytest.approx(2.5 - 2.5 * np.sin(np.radians(20.0)), abs=1e-3) and far > 2.5  # from the cameras

    pipe = Pipeline.from_checkpoint(tmp_path / "d3")
    image = data / "obj_00000" / "rgb" / "000000.png"
    views = pipe.synthesize(image, azimuth=[90, 180], elevation=0, settings=SamplingSettings(steps=2))
    assert len(views) == 2 and views[0].size == (16, 16)
    regressed = Pipeline.from_checkpoint(tmp_path / "pn").synthesize(image, azimuth=90, elevation=0)
    assert regressed[0].size == (16, 16)
    cli("sample", "--image", str(image), "--checkpoint", str(tmp_path / "d3"), "--azimuth", "90", "--steps", "4",
        "--strength", "0.5", "--out", str(tmp_path / "started.png"))
    assert Image.open(tmp_path / "started.png").size == (16, 16)

    cli("eval", "--checkpoint", str(tmp_path / "d3"), "--data", str(data), "--split", "all", "--objects", "2",
        "--targets-per-object", "2", "--steps", "2", "--consistency-objects", "0", "--strength", "0.5",
        "--baseline-checkpoint", str(tmp_path / "pn"), "--out", str(tmp_path / "report"))
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert any("step_0000003" in method for method in json.dumps(report["methods"]).split('"'))
    assert report["config"]["strength"] == 0.5 and report["methods"]["model"]["strength"] == 0.5


def test_pooled_stochastic_conditioning_hands_a_3d_model_every_view_so_far():
    """With pool, the k-th target of a stochastic orbit sees the source and the k-1 views before it, the drawn one
    first; without it, one view; a 2D model is never handed more than one."""
    from novelview.diffusion import DiffusionConfig
    from novelview.sampling import SamplingSettings, View, generate

    torch.manual_seed(0)
    seen: list[int] = []

    class Recording(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, *args, **kwargs):
            image = kwargs["cond_image"]
            seen.append(image.shape[1] if image.ndim == 5 else 1)
            return self.inner(*args, **kwargs)

    _, _, kwargs = example_inputs(build_model("dit-tiny-3d", 16).config, 3, generator=torch.Generator().manual_seed(0))
    source = View(kwargs["cond_image"][0], kwargs["cond_pose"][0], kwargs["cond_K"][0])
    for name, pool, expected in (("dit-tiny-3d", True, [1, 2, 3]), ("dit-tiny-3d", False, [1, 1, 1]),
                                 ("dit-tiny", True, [1, 1, 1])):
        seen.clear()
        model = Recording(build_model(name, 16).eval())
        generate(model, DiffusionConfig(), source, kwargs["target_pose"], kwargs["target_K"],
                 SamplingSettings(steps=1, guidance=1.0, stochastic=True, pool=pool, order="given"))
        assert seen == expected, (name, pool, seen)
