"""Pipeline: checkpoints in, PIL images out; cameras, preprocessing, orbits, regression checkpoints."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from novelview import cameras
from novelview.checkpoint import CheckpointConfig, export_checkpoint, read_config, save_checkpoint
from novelview.diffusion import DiffusionConfig
from novelview.errors import CheckpointError, ConfigError, NovelviewError, PoseError
from novelview.models.presets import build_model
from novelview.images import to_pil
from novelview.pipeline import DEFAULT_CAMERA, Pipeline
from novelview.sampling import SamplingSettings as Settings

SIZE = 16
DATA = {"radius": 2.0, "fov_deg": 50.0, "elevation_mean": 10.0}


def make_checkpoint(path, preset="xunet-tiny", objective="diffusion", data=DATA, diffusion=None, **overrides):
    torch.manual_seed(0)
    model = build_model(preset, SIZE, **overrides)
    config = CheckpointConfig(
        model=model.config.to_dict(), diffusion=diffusion or DiffusionConfig(), objective=objective, data=data
    )
    return save_checkpoint(path, model, config, ema=model)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return Pipeline.from_checkpoint(make_checkpoint(tmp_path_factory.mktemp("ck") / "tiny"))


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))


def test_loads_checkpoint_and_camera_defaults(pipe, tmp_path):
    assert pipe.image_size == SIZE and not pipe.is_regression
    assert pipe.camera_defaults() == DATA
    pose, K = pipe.input_camera()
    az, el, r = cameras.pose_to_spherical(pose)
    assert abs(el.item() - 10.0) < 1e-4 and abs(r.item() - 2.0) < 1e-5 and abs(az.item()) < 1e-4
    assert abs(cameras.fov_of(K, SIZE).item() - 50.0) < 1e-4
    bare = Pipeline.from_checkpoint(make_checkpoint(tmp_path / "bare", data={}))
    assert bare.camera_defaults() == DEFAULT_CAMERA == {"radius": 2.5, "fov_deg": 40.0, "elevation_mean": 17.5}


def test_run_directory_resolves_to_latest_checkpoint(tmp_path):
    make_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000010")
    make_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000020", data={})
    assert Pipeline.from_checkpoint(tmp_path / "run").camera_defaults() == DEFAULT_CAMERA


def test_missing_default_checkpoint_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVELVIEW_CHECKPOINT", str(tmp_path / "nothing"))
    with pytest.raises(CheckpointError, match="--checkpoint") as err:
        Pipeline.from_checkpoint()
    assert "train" in str(err.value) and "\n" not in str(err.value)


def test_preprocess_is_what_the_model_sees(pipe):
    rgba = np.zeros((20, 40, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, 10:30, 3] = 255  # opaque red square in the middle, transparent sides
    shown = pipe.preprocess(Image.fromarray(rgba, "RGBA"))
    assert shown.mode == "RGB" and shown.size == (SIZE, SIZE)
    assert np.asarray(shown)[SIZE // 2, SIZE // 2].tolist() == [255, 0, 0]  # centre crop keeps the red square
    padded = np.asarray(pipe.preprocess(Image.fromarray(rgba, "RGBA"), crop="pad"))
    assert padded[0, SIZE // 2].tolist() == [255, 255, 255]  # white padding above
    gray = pipe.preprocess(Image.fromarray(np.full((8, 8), 128, np.uint8), "L"))
    assert gray.mode == "RGB" and gray.size == (SIZE, SIZE)


def test_synthesize_relative_and_absolute_agree(pipe, picture):
    views = pipe.synthesize(picture, azimuth=[90, -45], elevation=[0, 20], settings=Settings(steps=3, seed=1))
    assert len(views) == 2 and all(v.size == (SIZE, SIZE) and v.mode == "RGB" for v in views)
    input_pose, _ = pipe.input_camera()
    poses = torch.stack(
        [cameras.rotate_about_target(input_pose, 90, 0), cameras.rotate_about_target(input_pose, -45, 20)]
    )
    absolute = pipe.synthesize(picture, target_poses=poses.numpy().tolist(), settings=Settings(steps=3, seed=1))
    for a, b in zip(views, absolute):
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 1


def test_synthesize_deterministic_per_seed(pipe, picture):
    def view(seed):
        settings = Settings(steps=3, guidance=2.0, sampler="ddpm", seed=seed)
        return np.asarray(pipe.synthesize(picture, azimuth=60, settings=settings)[0])

    a, b, c = view(5), view(5), view(6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_radius_and_input_overrides(pipe, picture):
    source = pipe.input_view(picture, input_elevation=25.0, fov_deg=30.0)
    targets = pipe.target_poses(source.pose, azimuth=30, radius=3.0)
    _, el, r = cameras.pose_to_spherical(targets[0].double())
    assert abs(r.item() - 3.0) < 1e-4 and abs(el.item() - 25.0) < 1e-3
    assert abs(cameras.fov_of(source.K, SIZE).item() - 30.0) < 1e-3
    # synthesize paints exactly these cameras
    settings = Settings(steps=1)
    (view,) = pipe.synthesize(picture, azimuth=30, radius=3.0, input_elevation=25.0, fov_deg=30.0, settings=settings)
    assert np.array_equal(np.asarray(view), np.asarray(to_pil(pipe.generate(source, targets, settings)[0])))


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(), ConfigError),
        (dict(azimuth=10, target_poses=np.eye(4)), ConfigError),
        (dict(elevation=80.0), PoseError),  # 10 + 80 reaches the pole
        (dict(elevation=-120.0), PoseError),
        (dict(azimuth=float("nan")), ConfigError),
        (dict(target_poses=np.full((4, 4), np.nan)), PoseError),
        (dict(target_poses=np.diag([2.0, 2.0, 2.0, 1.0])), PoseError),
        (dict(target_poses=np.eye(3)), PoseError),
        (dict(azimuth=10, input_pose=np.diag([1.0, 1.0, -1.0, 1.0])), PoseError),
    ],
)
def test_bad_arguments_are_user_errors(pipe, picture, kwargs, error):
    with pytest.raises(error):
        pipe.synthesize(picture, settings=Settings(steps=1), **kwargs)


def test_steps_beyond_the_training_grid_are_refused(pipe, picture):
    with pytest.raises(ConfigError, match="steps"):
        pipe.synthesize(picture, azimuth=10, settings=Settings(steps=pipe.config.diffusion.num_train_timesteps + 1))


def test_bad_images_are_user_errors(pipe, tmp_path):
    from novelview.errors import DataError

    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for src in (corrupt, empty, tmp_path / "missing.png", np.zeros((0, 5, 3), np.uint8)):
        with pytest.raises(DataError):
            pipe.synthesize(src, azimuth=10, settings=Settings(steps=1))


def test_orbit_stochastic_starts_with_the_input(pipe, picture):
    seen = []
    frames = pipe.orbit(picture, n_views=4, settings=Settings(steps=2, stochastic=True),
                        progress=lambda d, t: seen.append((d, t)))
    assert len(frames) == 4 and all(f.size == (SIZE, SIZE) for f in frames)
    assert np.array_equal(np.asarray(frames[0]), np.asarray(pipe.preprocess(picture)))
    assert seen == [(i, 6) for i in range(1, 7)]  # 3 generated views x 2 steps
    plain = pipe.orbit(picture, n_views=4, settings=Settings(steps=2, batch=8))
    assert len(plain) == 4 and np.array_equal(np.asarray(plain[0]), np.asarray(frames[0]))
    # the first generated view is conditioned on the input alone in both modes (same noise: same seed)
    assert np.abs(np.asarray(plain[1], np.int16) - np.asarray(frames[1], np.int16)).max() <= 1


def test_orbit_off_the_input_elevation_generates_every_frame(pipe, picture):
    seen = []
    frames = pipe.orbit(picture, n_views=3, elevation=15.0, settings=Settings(steps=2, stochastic=True),
                        progress=lambda d, t: seen.append(t))
    assert len(frames) == 3 and set(seen) == {6}
    with pytest.raises(ConfigError):
        pipe.orbit(picture, n_views=0)
    with pytest.raises(PoseError):
        pipe.orbit(picture, n_views=3, elevation=85.0, settings=Settings(steps=1))


def test_progress_raising_cancels(pipe, picture):
    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        pipe.orbit(picture, n_views=3, settings=Settings(steps=5), progress=cancel)


def test_regression_checkpoint_is_one_step(tmp_path, picture):
    reg = Pipeline.from_checkpoint(make_checkpoint(tmp_path / "reg", objective="regression"))
    seen = []
    views = reg.synthesize(picture, azimuth=[30, 60, 90], settings=Settings(steps=50),
                           progress=lambda d, t: seen.append((d, t)))
    assert len(views) == 3 and seen == [(1, 1)]
    frames = reg.orbit(picture, n_views=4)
    assert len(frames) == 4


def test_learned_variance_dit_and_self_conditioned_checkpoints(tmp_path, picture):
    lv = Pipeline.from_checkpoint(
        make_checkpoint(tmp_path / "lv", diffusion=DiffusionConfig(learn_variance=True), learn_variance=True)
    )
    for sampler in ("ddpm", "ddim", "dpmpp"):
        (view,) = lv.synthesize(picture, azimuth=45, settings=Settings(steps=2, sampler=sampler))
        assert view.size == (SIZE, SIZE)
    dit = Pipeline.from_checkpoint(make_checkpoint(tmp_path / "dit", preset="dit-tiny"))
    assert len(dit.orbit(picture, n_views=3, settings=Settings(steps=2, stochastic=True))) == 3
    # self-conditioned (the shipped recipe): plain and stochastic-conditioning sampling both feed the estimate
    sc = Pipeline.from_checkpoint(
        make_checkpoint(tmp_path / "sc", preset="dit-tiny", diffusion=DiffusionConfig(self_condition=True),
                        self_condition=True)
    )
    assert len(sc.orbit(picture, n_views=3, settings=Settings(steps=2, stochastic=True))) == 3
    (view,) = sc.synthesize(picture, azimuth=45, settings=Settings(steps=2))
    assert view.size == (SIZE, SIZE)


def test_guidance_default_depends_on_condition_dropout_and_the_checkpoint(tmp_path):
    no_drop = Pipeline.from_checkpoint(make_checkpoint(tmp_path / "nd", diffusion=DiffusionConfig(cond_drop_prob=0.0)))
    assert no_drop.default_guidance() == 1.0
    plain = make_checkpoint(tmp_path / "plain")
    assert Pipeline.from_checkpoint(plain).default_guidance() == 3.0  # the library default
    # a measured weight recorded at export becomes the checkpoint's default
    measured = export_checkpoint(plain, tmp_path / "measured", sampling={"guidance": 2.0})
    assert read_config(measured).sampling == {"guidance": 2.0}
    assert Pipeline.from_checkpoint(measured).default_guidance() == 2.0
    config = json.loads((measured / "config.json").read_text())
    config["sampling"] = {"guidance": -1}
    (measured / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="sampling.guidance"):
        Pipeline.from_checkpoint(measured)


def test_compile_and_autocast_options(tmp_path, picture):
    path = make_checkpoint(tmp_path / "c")
    compiled = Pipeline.from_checkpoint(path, compile=True)
    assert type(compiled.network) is not type(compiled.model)  # torch.compile's wrapper (compiles on first call)
    bf16 = Pipeline.from_checkpoint(path, autocast=True)
    (view,) = bf16.synthesize(picture, azimuth=45, settings=Settings(steps=2))
    assert view.size == (SIZE, SIZE)
    assert Pipeline.from_checkpoint(path).autocast is False  # CPU default: fp32


# ------------------------------------------------------------------------------------------- API bad input

_IMG = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize("image, words", [
    (np.full((8, 8, 3), 128.0), "[0, 1]"),  # 0..255 floats would be clipped to white
    (torch.full((3, 8, 8), float("nan")), "NaN"),
    (torch.zeros(3, 0, 0), "zero size"),
    (torch.full((3, 8, 8), 200.0), "[-1, 1]"),
    (torch.rand(8, 8, 3), "[3, H, W]"),
    (torch.rand(1, 8, 8), "[3, H, W]"),
], ids=["float-0-255", "tensor-nan", "tensor-empty", "tensor-0-255", "tensor-hwc", "tensor-gray"])
def test_images_the_api_cannot_read_correctly_are_refused(pipe, image, words):
    with pytest.raises(NovelviewError, match=re.escape(words)):
        pipe.synthesize(image, azimuth=30, settings=Settings(steps=1))


@pytest.mark.parametrize("kwargs, words", [
    (dict(azimuth=[0, 30, 60], elevation=[0, 10]), "equal lengths"),
    (dict(azimuth=[]), "empty"),
    (dict(azimuth="30"), "azimuth"),
    (dict(azimuth=30, radius=[2, 3]), "radius"),
    (dict(azimuth=30, input_pose=torch.eye(4)), "input_pose"),
    (dict(azimuth=30, input_elevation=90), "input_elevation"),
    (dict(azimuth=30, input_pose=cameras.spherical_to_pose(0.0, 10.0, 2.5), fov_deg=float("nan")), "fov_deg"),
    (dict(target_poses=cameras.spherical_to_pose(0.0, 10.0, 2.5)[:3]), "[0, 0, 0, 1]"),
], ids=["lengths", "empty", "string", "radius-list", "pose-at-origin", "input-elevation", "fov-nan", "pose-3x4"])
def test_settings_the_api_cannot_use_are_refused_by_name(pipe, kwargs, words):
    with pytest.raises(NovelviewError, match=re.escape(words)):
        pipe.synthesize(_IMG, settings=Settings(steps=1), **kwargs)


def test_orbit_checks_settings_even_without_frames_to_generate(pipe):
    with pytest.raises(NovelviewError, match="steps"):
        pipe.orbit(_IMG, n_views=1, settings=Settings(steps=pipe.config.diffusion.num_train_timesteps + 1))
    assert len(pipe.orbit(_IMG, n_views=np.int64(2), settings=Settings(steps=1))) == 2


def test_camera_helpers_refuse_degenerate_input():
    with pytest.raises(PoseError, match="equals the target"):
        cameras.look_at([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    pose = cameras.look_at([0.0, 2.0, 0.0], up=[0.0, 1.0, 0.0])  # looking along -y with a +y up hint
    cameras.validate_pose(pose)
    for fov in (0.0, 180.0, float("nan")):
        with pytest.raises(PoseError, match="fov_deg"):
            cameras.intrinsics_from_fov(fov, 32)
    with pytest.raises(NovelviewError, match="no CUDA device|not a device"):
        Pipeline.from_checkpoint(None, device="cuda" if not torch.cuda.is_available() else "gpu")


def test_scalar_tensors_and_tiny_overshoot_are_still_accepted(pipe):
    settings = Settings(steps=1, guidance=np.float32(2.0), seed=np.int64(3))
    (view,) = pipe.synthesize(_IMG, azimuth=torch.tensor(30.0), radius=torch.tensor(2.5), settings=settings,
                              input_elevation=np.array(15.0))
    assert view.size == (pipe.image_size, pipe.image_size)
    near_one = np.clip(_IMG / 255.0, 0, 1) * 1.001  # resampling overshoot
    assert pipe.synthesize(near_one, azimuth=30, settings=Settings(steps=1))[0].size == view.size
    k = cameras.intrinsics_from_fov(torch.tensor([40.0, 50.0]), 32)
    assert k.shape == (2, 3, 3)
    assert cameras.focal_from_fov(50.0, torch.tensor([32.0, 64.0])).shape == (2,)
