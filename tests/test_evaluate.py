"""Evaluation: metrics on known images, masks, angle bins, protocol, LPIPS plumbing, report files, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from novelview import cameras
from novelview.errors import ConfigError
from novelview.evaluation import metrics
from novelview.evaluation.consistency import FieldConfig
from novelview.evaluation.protocol import choose_views, make_protocol, orbit_views
from novelview.evaluation.report import EvalReport

SIZE = 16
TINY_FIELD = FieldConfig(resolution=8, steps=5, rays_per_step=128, samples_per_ray=8)


# ---------------------------------------------------------------------------------------------------------
# Fixtures: a tiny procedural dataset and random-weight checkpoints
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evaluate")


@pytest.fixture(scope="module")
def synth(workdir: Path) -> Path:
    from novelview.data.synthetic import SynthConfig, generate

    return generate(workdir / "synth", SynthConfig(objects=5, views=8, size=SIZE, seed=0), progress=False)


def _checkpoint(path: Path, objective: str) -> Path:
    from novelview.checkpoint import CheckpointConfig, save_checkpoint
    from novelview.models.presets import build_model

    torch.manual_seed(0)
    model = build_model("xunet-tiny", SIZE)
    return save_checkpoint(path, model, CheckpointConfig(model=model.config.to_dict(), objective=objective))


@pytest.fixture(scope="module")
def checkpoint(workdir: Path) -> Path:
    return _checkpoint(workdir / "ckpt", "diffusion")


@pytest.fixture(scope="module")
def regression(workdir: Path) -> Path:
    return _checkpoint(workdir / "regression", "regression")


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------


def _grey(value: float = 0.5, size: int = 32) -> torch.Tensor:
    """A constant image with [0, 1] value ``value``, as a [-1, 1] batch of one."""
    return torch.full((1, 3, size, size), value * 2.0 - 1.0)


def test_psnr_of_identical_images_is_capped() -> None:
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(metrics.psnr(x, x), torch.full((2,), metrics.PSNR_CAP_DB))
    mask = torch.ones(2, 1, 16, 16)
    assert torch.equal(metrics.psnr(x, x, mask), torch.full((2,), metrics.PSNR_CAP_DB))
    assert metrics.PSNR_CAP_DB == 100.0


def test_psnr_matches_the_formula_for_known_noise() -> None:
    target = _grey(0.5)
    sign = torch.where(torch.rand(target.shape, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0)
    pred = target + 2.0 * 0.1 * sign  # every pixel off by exactly 0.1 in [0, 1] units: mse = 0.01
    assert metrics.psnr(pred, target).item() == pytest.approx(20.0, abs=1e-4)
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(1)) * 0.05
    pred = (target + 2.0 * noise).clamp(-1, 1)
    mse = ((metrics.to_unit(pred) - metrics.to_unit(target)) ** 2).mean().item()
    assert metrics.psnr(pred, target).item() == pytest.approx(10.0 * math.log10(1.0 / mse), abs=1e-3)
    # masked PSNR with a full mask is the full-image PSNR
    full_mask = torch.ones(1, 1, 32, 32)
    assert metrics.psnr(pred, target, full_mask).item() == pytest.approx(metrics.psnr(pred, target).item(), abs=1e-4)


def test_ssim_is_torchmetrics_on_unit_range() -> None:
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = torch.rand(2, 2, 3, 24, 24).unbind(0)
    expected = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
    assert torch.allclose(metrics.ssim(a * 2 - 1, b * 2 - 1), expected, atol=1e-6)
    assert torch.allclose(metrics.ssim(a * 2 - 1, a * 2 - 1), torch.ones(2), atol=1e-6)
    full_mask = torch.ones(2, 1, 24, 24)
    assert torch.allclose(metrics.ssim(a * 2 - 1, b * 2 - 1, full_mask), expected, atol=1e-6)


def test_masked_metrics_ignore_background_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 12:20, 12:20] = 1.0
    pred = target.clone()
    pred[..., 12:20, 12:20] += 0.1 * torch.randn(1, 3, 8, 8, generator=g)  # error inside the object
    other = pred.clone()
    far = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    far[..., 7:25, 7:25] = False  # beyond the SSIM window (radius 5) of every mask pixel
    other = torch.where(far, -other, other)  # wreck the far background
    near = other.clone()
    near[..., 10:12, 10:22] = 1.0  # and background next to the object
    assert metrics.psnr(other, target).item() < metrics.psnr(pred, target).item() - 3  # full image notices
    for changed in (other, near):
        assert metrics.psnr(changed, target, mask).item() == pytest.approx(metrics.psnr(pred, target, mask).item())
    assert metrics.ssim(other, target, mask).item() == pytest.approx(metrics.ssim(pred, target, mask).item(), abs=1e-6)
    assert metrics.ssim(other, target).item() < metrics.ssim(pred, target).item() - 0.1
    # an empty mask gives NaN, which averages skip
    assert math.isnan(metrics.psnr(pred, target, torch.zeros_like(mask)).item())
    assert metrics.nanmean([1.0, float("nan"), 3.0]) == 2.0


def test_object_mask_from_white_background_or_dataset_mask() -> None:
    target = torch.ones(1, 3, 20, 20)
    target[..., 8:12, 8:12] = -0.5  # the object
    target[..., 0, 0] = 1.0 - 2.0 / 255.0  # off-white noise in the background is not object
    m = metrics.object_mask(target, None, radius=2)
    expected = torch.zeros(1, 1, 20, 20)
    expected[..., 6:14, 6:14] = 1.0
    assert torch.equal(m, expected)
    dataset_mask = torch.zeros(1, 1, 20, 20)
    dataset_mask[..., 2:4, 2:4] = 0.9
    assert int(metrics.object_mask(target, dataset_mask, radius=1).sum()) == 16
    assert int(metrics.object_mask(target, dataset_mask, radius=0).sum()) == 4


def test_sliced_wasserstein_tells_sharp_sets_from_blurred_ones() -> None:
    gen = torch.Generator().manual_seed(0)

    def views(n: int) -> torch.Tensor:  # flat-coloured squares on white: sharp edges, like the procedural views
        out = torch.ones(n, 3, 32, 32)
        for i in range(n):
            y, x, size = (int(v) for v in torch.randint(0, 16, (3,), generator=gen))
            out[i, :, y:y + size + 8, x:x + size + 8] = torch.rand(3, 1, 1, generator=gen) * 2 - 1
        return out

    truth, other = views(48), views(48)
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(other, (2, 2, 2, 2), mode="replicate"), 5, 1)
    assert metrics.swd_levels(32, 32) == 2 and metrics.swd_levels(128, 128) == 4
    # Patches are drawn independently from the two sets, so the same set is near (not at) zero, in any order,
    # and closer than an independent set of the same kind.
    same, reordered = metrics.sliced_wasserstein(truth, truth), metrics.sliced_wasserstein(truth.flip(0), truth)
    sharp, blur = metrics.sliced_wasserstein(other, truth), metrics.sliced_wasserstein(blurred, truth)
    assert all(max(a, b) < c for a, b, c in zip(same, reordered, sharp))
    assert blur[0] > 2 * sharp[0]  # an independent sharp set is closer than the same set blurred
    assert metrics.sliced_wasserstein(other, truth, seed=1) != sharp  # random patches and directions, seeded
    shifted = metrics.sliced_wasserstein((other * 0.5 + 0.3).clamp(-1, 1), truth)
    assert shifted[1] > sharp[1]  # colour and contrast count: patches are normalised by the truth's statistics
    with pytest.raises(ValueError, match="same shape"):
        metrics.sliced_wasserstein(truth[:4], truth)


def test_angle_bins_on_constructed_cameras() -> None:
    cond = cameras.spherical_to_pose(0.0, 0.0, 2.5)
    azimuths = torch.tensor([0.0, 10.0, 29.0, 31.0, 59.0, 61.0, 119.0, 121.0, 179.0, 180.0], dtype=torch.float64)
    targets = cameras.spherical_to_pose(azimuths, torch.zeros_like(azimuths), torch.full_like(azimuths, 2.5))
    angles = cameras.angle_between_views(cond.expand_as(targets), targets)
    assert torch.allclose(angles, azimuths, atol=1e-4)
    labels = [metrics.angle_bin(float(a)) for a in angles]
    assert labels == ["0-30", "0-30", "0-30", "30-60", "30-60", "60-120", "60-120", "120-180", "120-180", "120-180"]
    assert metrics.angle_bin(30.0) == "30-60" and metrics.angle_bin(60.0) == "60-120"
    # elevation changes count too: straight up from the side is 70 degrees away from level
    up = cameras.spherical_to_pose(0.0, 70.0, 2.5)
    assert metrics.angle_bin(float(cameras.angle_between_views(cond, up))) == "60-120"


# ---------------------------------------------------------------------------------------------------------
# LPIPS (plumbing only: random AlexNet weights in torchvision's key format)
# ---------------------------------------------------------------------------------------------------------


def test_lpips_plumbing_with_random_alexnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchmetrics.functional.image.lpips as tm_lpips

    from novelview.evaluation.lpips import alexnet_features, load_lpips

    torch.manual_seed(0)
    features = alexnet_features()
    full = {f"features.{k}": v for k, v in features.state_dict().items()}
    full["classifier.1.weight"] = torch.zeros(4, 4)  # a full torchvision state dict has a classifier too
    torch.save(full, tmp_path / "alexnet.pth")
    torch.save(features.state_dict(), tmp_path / "features.pth")
    net = load_lpips(tmp_path / "alexnet.pth")
    a, b = (torch.rand(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1).unbind(0)
    assert torch.allclose(net(a, a), torch.zeros(2), atol=1e-6)
    ours = net(a, b)
    assert (ours > 0).all()
    assert torch.allclose(load_lpips(tmp_path / "features.pth")(a, b), ours)
    # the same numbers as torchmetrics' LPIPS given the same backbone (its torchvision import patched out)
    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", lambda name, pretrained=False: features)
    reference = tm_lpips._LPIPS(pretrained=True, net="alex", pnet_rand=True)
    assert torch.allclose(ours, reference(a, b).flatten(), atol=1e-5)
    assert net(a[:, :, :16, :16], b[:, :, :16, :16]).shape == (2,)  # small images are upsampled to 64 px
    torch.save({"something": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="AlexNet"):
        load_lpips(tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="not found"):
        load_lpips(tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------------------------
# Protocol
# ---------------------------------------------------------------------------------------------------------


def test_protocol_is_deterministic_and_seed_dependent(synth: Path) -> None:
    from novelview.data.formats import open_dataset

    scenes = sorted(open_dataset(synth), key=lambda s: s.name)
    a = make_protocol(scenes, objects=3, targets_per_object=4, seed=0)
    assert a == make_protocol(scenes, objects=3, targets_per_object=4, seed=0)
    assert a != make_protocol(scenes, objects=3, targets_per_object=4, seed=1)
    assert len(a) == 3 and [t.object_index for t in a] == sorted(t.object_index for t in a)
    for t in a:
        assert len(t.target_views) == 4 == len(set(t.target_views)) and t.cond_view not in t.target_views
        assert t.object_name == scenes[t.object_index].name
    every = make_protocol(scenes, objects=None, targets_per_object=None, seed=0)
    assert len(every) == 5 and all(len(t.target_views) == 7 for t in every)
    # an object's views do not depend on which other objects are evaluated
    four = make_protocol(scenes, None, 4, 0)
    assert choose_views(8, "obj_00003", 0, 4) == (every[3].cond_view, four[3].target_views)
    order = orbit_views(scenes[0], every[0].cond_view, 4)
    assert len(order) == 4 and every[0].cond_view not in order
    fixed = make_protocol(scenes, None, 3, 0, cond_view=2)  # e.g. the PixelNeRF SRN protocol's fixed view
    assert all(t.cond_view == 2 and 2 not in t.target_views for t in fixed)
    with pytest.raises(ConfigError):
        make_protocol(scenes, objects=0)
    with pytest.raises(ConfigError, match="cond-view"):
        make_protocol(scenes, cond_view=8)


# ---------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------


def test_evaluate_writes_a_report_and_scores_baselines_exactly(
    synth: Path, checkpoint: Path, regression: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from novelview.data.views import MultiViewDataset
    from novelview.evaluate import evaluate

    monkeypatch.setattr(metrics, "SWD_MIN_IMAGES", 4)  # 6 views here; too few for real use, enough to check plumbing

    out = workdir / "report"
    report = evaluate(
        checkpoint, synth, out=out, split="all", objects=2, targets_per_object=3, steps=2, seed=0,
        baseline_checkpoints=[str(regression)], consistency_objects=1, orbit_views=4, consistency_field=TINY_FIELD,
        orbits=1, orbit_frames=3, progress=False,
    )
    for name in ("report.json", "report.md", "grid.png", "consistency.png"):
        assert (out / name).is_file(), name
    assert len(list((out / "orbits").glob("*.gif"))) == 1
    data = json.loads((out / "report.json").read_text())
    assert data["environment"]["torch"] == torch.__version__ and "commit" in data["environment"]["git"]
    assert data["lpips"]["available"] is False and "--lpips-weights" in data["lpips"]["reason"]
    loaded = EvalReport.load(out / "report.json")
    assert set(loaded.methods) == {"model", "copy-condition", "white-background", "checkpoint:regression"}
    assert loaded.summary["model"]["all"]["n"] == 6 == len(loaded.views)
    assert loaded.consistency is not None and len(loaded.consistency["objects"]) == 1
    orbit = loaded.consistency["objects"][0]["orbit"]  # the scored orbit against the object's real views
    assert 0 < orbit["psnr"] < 60 and orbit["swd"] > 0 and loaded.consistency["mean"]["orbit"] == orbit
    markdown = (out / "report.md").read_text()
    assert "| `copy-condition` |" in markdown and "3D consistency" in markdown and "obj_" in markdown
    assert "orbit vs truth" in markdown

    # the copy baseline's numbers are exactly those computed directly from the dataset
    ds = MultiViewDataset(synth, size=SIZE, split="all")
    index = {s.name: i for i, s in enumerate(ds.scenes)}
    for record in loaded.views:
        obj = index[record["object"]]
        cond, _ = ds.view(obj, record["cond_view"])
        target, _ = ds.view(obj, record["target_view"])
        scores = record["scores"]["copy-condition"]
        assert scores["psnr"] == pytest.approx(metrics.psnr(cond, target).item(), abs=1e-3)
        assert scores["ssim"] == pytest.approx(metrics.ssim(cond, target).item(), abs=1e-4)
        white = record["scores"]["white-background"]
        assert white["psnr"] == pytest.approx(metrics.psnr(torch.ones_like(target), target).item(), abs=1e-3)
        angle = cameras.angle_between_views(ds.scenes[obj].poses[record["cond_view"]].double(),
                                            ds.scenes[obj].poses[record["target_view"]].double())
        assert record["bin"] == metrics.angle_bin(float(angle))
    # the patch-distribution distance of the copy baseline is the metric applied to those same images
    copies, truths = [], []
    for record in loaded.views:
        obj = index[record["object"]]
        copies.append(ds.view(obj, record["cond_view"])[0])
        truths.append(ds.view(obj, record["target_view"])[0])
    levels = metrics.sliced_wasserstein(torch.stack(copies), torch.stack(truths))
    assert loaded.distribution["per_bin"]["all"]["copy-condition"]["levels"] == pytest.approx(levels, abs=1e-2)
    assert set(loaded.distribution["per_bin"]["all"]) == set(loaded.methods)
    assert "Patch distribution" in markdown
    margin = loaded.margins["copy-condition"]["all"]["psnr"]
    assert margin == pytest.approx(loaded.metric("psnr") - loaded.metric("psnr", "copy-condition"))
    # same seed, same numbers (and the held-out split is the default: test objects only)
    again = evaluate(checkpoint, synth, split="all", objects=2, targets_per_object=3, steps=2, seed=0,
                     consistency_objects=0, progress=False)
    assert again.summary["model"]["all"]["psnr"] == pytest.approx(report.summary["model"]["all"]["psnr"])
    test_split = evaluate(checkpoint, synth, targets_per_object=1, steps=1, consistency_objects=0, progress=False)
    assert test_split.protocol["objects_in_split"] == 1  # 10 % of 5 objects, at least one


def test_cli_eval_on_blender_format(synth: Path, checkpoint: Path, workdir: Path) -> None:
    from novelview.cli import app
    from novelview.data.formats import open_dataset
    from novelview.data.formats.blender import write_blender

    blender = write_blender(list(open_dataset(synth))[:3], workdir / "blender")
    out = workdir / "blender_report"
    result = CliRunner().invoke(app, [
        "eval", "--checkpoint", str(checkpoint), "--data", str(blender), "--split", "all", "--objects", "2",
        "--targets-per-object", "2", "--steps", "2", "--consistency-objects", "1", "--orbit-views", "4",
        "--field-resolution", "8", "--field-steps", "3", "--samples", "2", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "report.json").read_text())
    assert data["protocol"]["format"] == "blender"
    assert data["protocol"]["mask"] == ["dataset mask"]  # the alpha channel
    assert len(data["views"]) == 4 and "copy-condition" in result.output and "model-mean-of-2" in result.output
    assert data["methods"]["model-mean-of-2"]["samples"] == 2


def test_sample_mean_averages_independent_unguided_draws(synth: Path, checkpoint: Path, regression: Path) -> None:
    from novelview.data.views import MultiViewDataset
    from novelview.evaluation.methods import CheckpointMethod, SampleMean
    from novelview.sampling import SamplingSettings, View

    ds = MultiViewDataset(synth, size=SIZE, split="all")
    image, k = ds.view(0, 0)
    source = View(image, ds.scenes[0].poses[0].float(), k.float())
    poses, ks = ds.scenes[0].poses[1:4].float(), k.float().expand(3, 3, 3)
    # guidance 3 for the model's own sample: the mean must still draw without guidance
    model = CheckpointMethod("model", checkpoint, SamplingSettings(steps=2, guidance=3.0))
    unguided = CheckpointMethod("model", checkpoint, SamplingSettings(steps=2, guidance=1.0))
    generator = torch.Generator().manual_seed(5)
    draws = [unguided.predict(source, poses, ks, generator) for _ in range(3)]
    assert not torch.allclose(draws[0], draws[1])
    mean = SampleMean(model, 3).predict(source, poses, ks, torch.Generator().manual_seed(5))
    torch.testing.assert_close(mean, torch.stack(draws).mean(0), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="at least 2"):
        SampleMean(model, 1)
    with pytest.raises(ConfigError, match="regression"):
        SampleMean(CheckpointMethod("reg", regression), 2)
