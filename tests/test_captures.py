"""A user's own capture: the splits its files name (Blender, nerfstudio, COLMAP), a dataset view as the input with
its own camera, pose files in either convention, elevations that will run, and orbits written as a
transforms.json that other tools (and our Blender reader) read back with the same cameras."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from novelview import cameras
from novelview.checkpoint import CheckpointConfig, save_checkpoint
from novelview.cli import main
from novelview.data.formats import load_view, open_dataset, write_manifest
from novelview.data.formats.blender import BlenderSceneWriter, read_blender, write_transforms
from novelview.data.formats.colmap import write_colmap
from novelview.data.info import inspect_dataset
from novelview.data.views import MultiViewDataset
from novelview.diffusion import DiffusionConfig
from novelview.errors import ConfigError, DataError
from novelview.evaluate import evaluate
from novelview.evaluation.report import render_markdown
from novelview.models.presets import build_model
from novelview.pipeline import Pipeline

SIZE = 16
#: Views of the test capture: (split, azimuth, elevation). View 3 sits at 47 degrees, well above the 17.5 degrees
#: a picture without a camera is assumed to be taken from.
VIEWS = [("train", 0, 30), ("train", 40, 30), ("train", 80, 30), ("train", 120, 47), ("train", 160, 30),
         ("val", 200, 30), ("val", 240, 30), ("test", 280, 30), ("test", 320, 30), ("test", 340, 10)]


def _picture(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)


def _pose(azimuth: float, elevation: float) -> torch.Tensor:
    return cameras.spherical_to_pose(float(azimuth), float(elevation), 2.5)


def _k() -> torch.Tensor:
    return cameras.intrinsics_from_fov(40.0, 20)


def blender_scene(folder: Path) -> Path:
    """transforms_{train,val,test}.json, views in the order of :data:`VIEWS`."""
    for split in ("train", "val", "test"):
        writer = BlenderSceneWriter(folder, split=split)
        for i, (s, az, el) in enumerate(VIEWS):
            if s == split:
                writer.add(_picture(i), _pose(az, el), _k())
        writer.close()
    return folder


def nerfstudio_scene(folder: Path, lists: dict[str, list[int]]) -> Path:
    """One transforms.json with nerfstudio's ``{split}_filenames`` naming the views of ``lists``."""
    from PIL import Image

    pictures = [Image.fromarray(_picture(i)) for i in range(len(VIEWS))]
    poses = torch.stack([_pose(az, el) for _, az, el in VIEWS])
    path = write_transforms(folder, pictures, poses, _k())
    data = json.loads(path.read_text())
    for split, views in lists.items():
        data[f"{split}_filenames"] = [data["frames"][v]["file_path"] for v in views]
    path.write_text(json.dumps(data))
    return folder


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("xunet-tiny", SIZE)
    config = CheckpointConfig(model=model.config.to_dict(), diffusion=DiffusionConfig(), data={})
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", model, config)


@pytest.fixture(scope="module")
def chair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blender_scene(tmp_path_factory.mktemp("capture") / "chair")


def run(*args: object) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


def one_error(capsys: pytest.CaptureFixture, code: int, *fragments: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def views_read(dataset: MultiViewDataset) -> tuple[set[int], set[int]]:
    """(condition views, target views) of every item of ``dataset`` over a few epochs."""
    conds, targets = set(), set()
    for epoch in range(8):
        for i in range(len(dataset)):
            _, c, t = dataset.pair(i, epoch)
            conds.add(c)
            targets.add(t)
    return conds, targets


TRAIN = {i for i, (s, _, _) in enumerate(VIEWS) if s == "train"}
VAL = {i for i, (s, _, _) in enumerate(VIEWS) if s == "val"}
TEST = {i for i, (s, _, _) in enumerate(VIEWS) if s == "test"}


# ------------------------------------------------------------------------------------------------ splits


def check_view_splits(folder: Path) -> None:
    train = MultiViewDataset(folder, size=8, split="train")
    val = MultiViewDataset(folder, size=8, split="val")
    test = MultiViewDataset(folder, size=8, split="test")
    assert train.split_by == val.split_by == test.split_by == "views"
    conds, targets = views_read(train)
    assert conds == TRAIN and targets <= TRAIN  # every train view is a condition once per epoch
    for dataset, held_out in ((val, VAL), (test, TEST)):
        conds, targets = views_read(dataset)
        assert targets == held_out and conds <= TRAIN and len(dataset) == len(held_out)


def test_blender_scene_trains_validates_and_tests_on_its_own_views(chair: Path) -> None:
    check_view_splits(chair)
    stats = MultiViewDataset(chair, size=8, split="train").camera_stats()
    assert stats["views"] == len(TRAIN) and stats["elevation_max"] == pytest.approx(47.0, abs=1e-3)


def test_nerfstudio_filenames_name_the_splits(tmp_path: Path) -> None:
    folder = nerfstudio_scene(tmp_path / "ns", {"val": sorted(VAL), "test": sorted(TEST)})  # no train list
    assert open_dataset(folder)[0].view_splits == [s for s, _, _ in VIEWS]
    check_view_splits(folder)
    listed = nerfstudio_scene(tmp_path / "ns2", {"train": [0, 1, 2], "test": [7]})
    assert open_dataset(listed)[0].view_splits[:4] == ["train", "train", "train", ""]  # in no list: unused


def test_colmap_split_lists_name_the_splits(chair: Path, tmp_path: Path) -> None:
    scene = open_dataset(chair)[0]
    out = write_colmap([scene], tmp_path / "colmap")
    folder = out / scene.name
    names = sorted(p.name for p in (folder / "images").iterdir())
    by_view = {i: (folder / "images").joinpath(n).name for i, n in enumerate(names)}  # written in view order
    (folder / "test.txt").write_text("# held out\n" + "\n".join(by_view[v] for v in sorted(TEST)) + "\n")
    (folder / "val.txt").write_text("\n".join(f"images/{by_view[v]}" for v in sorted(VAL)))
    check_view_splits(folder)
    (folder / "test.txt").write_text("nope.png\n")
    with pytest.raises(DataError, match="nope.png"):
        open_dataset(folder, manifest=False)
    report = inspect_dataset(folder)
    assert not report.usable and any("nope.png" in p for p in report.problems)


def test_view_splits_survive_a_manifest_round_trip(chair: Path, tmp_path: Path, caplog) -> None:
    import shutil

    copy = Path(shutil.copytree(chair, tmp_path / "chair"))
    write_manifest(copy)
    indexed = open_dataset(copy)
    assert type(indexed).__name__ == "ManifestScenes"
    assert indexed[0].view_splits == open_dataset(copy, manifest=False)[0].view_splits == [s for s, _, _ in VIEWS]
    check_view_splits(copy)
    # A manifest from before splits were recorded cannot say them: it is out of date, and the folder is read.
    import pyarrow.parquet as pq

    from novelview.data.formats.manifest import manifest_path

    table = pq.read_table(manifest_path(copy))
    pq.write_table(table.drop_columns(["splits"]), manifest_path(copy))
    scenes = open_dataset(copy)
    assert "before manifests recorded the views' splits" in caplog.text
    assert type(scenes).__name__ == "SceneCollection" and scenes[0].view_splits == [s for s, _, _ in VIEWS]


def test_multi_object_datasets_keep_the_object_split(chair: Path, tmp_path: Path) -> None:
    root = tmp_path / "many"
    for name in ("a", "b", "c", "d"):
        blender_scene(root / name)
    train = MultiViewDataset(root, size=8, split="train")
    assert train.split_by == "objects" and len(train.scenes) == 2
    assert views_read(train)[0] == set(range(len(VIEWS)))  # every view of a training object trains
    assert MultiViewDataset(root, size=8, split="train", split_by="views").split_by == "views"
    assert "by object" in inspect_dataset(root, decode=False).splits


def test_data_info_says_which_split_scheme_applies(chair: Path, tmp_path: Path) -> None:
    assert inspect_dataset(chair, decode=False).splits.startswith("the scene's own, per view (5 train, 2 val, 3 test)")
    single = tmp_path / "single"
    writer = BlenderSceneWriter(single, split=None)  # one transforms.json without lists
    for i in range(3):
        writer.add(_picture(i), _pose(40 * i, 20), _k())
    writer.close()
    assert "name no view splits is all training" in inspect_dataset(single, decode=False).splits


def test_training_on_a_scene_validates_on_its_val_views(chair: Path, tmp_path: Path) -> None:
    from novelview.train import TrainConfig, train

    cfg = TrainConfig(data=str(chair), out=str(tmp_path / "run"), model="xunet-tiny", image_size=8, steps=2,
                      batch_size=2, checkpoint_every=2, log_every=1, val_every=1, val_batches=1, sample_every=0,
                      progress=False)
    result = train(cfg)
    log = [json.loads(line) for line in result.log_file.read_text().splitlines()]
    assert [r["step"] for r in log if "val_loss" in r] == [1, 2]
    saved = json.loads((Path(result.final_checkpoint) / "config.json").read_text())
    assert saved["data"]["views"] == len(TRAIN)  # the camera statistics of the train views alone


def test_data_info_flags_cameras_below_the_equator_and_render_names_its_up_axis(tmp_path: Path) -> None:
    from novelview.render.mesh import up_axis

    folder = tmp_path / "under"
    writer = BlenderSceneWriter(folder, split="train")
    for i in range(4):
        writer.add(_picture(i), _pose(90 * i, -25), _k())
    writer.close()
    report = inspect_dataset(folder, decode=False)
    assert report.usable and any("below the equator" in n for n in report.notes)
    assert any(line.startswith("note:") and "--up" in line for line in report.lines())
    assert not inspect_dataset(blender_scene(tmp_path / "above"), decode=False).notes
    assert [up_axis(Path(f"m{s}")) for s in (".glb", ".obj", ".ply", ".stl")] == ["y", "y", "z", "z"]
    assert up_axis(Path("m.glb"), "z") == "z"


def test_scene_without_test_views_says_so(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "trainonly"
    writer = BlenderSceneWriter(folder, split="train")
    for i in range(3):
        writer.add(_picture(i), _pose(40 * i, 20), _k())
    writer.close()
    code = run("eval", "--checkpoint", ckpt, "--data", folder, "--out", tmp_path / "r", "--steps", 1)
    one_error(capsys, code, "names no test views", "3 train, 0 val, 0 test")
    chair = blender_scene(tmp_path / "chair")
    code = run("eval", "--checkpoint", ckpt, "--data", chair, "--out", tmp_path / "r", "--cond-view", 8)
    one_error(capsys, code, "--cond-view 8: not a train view", "0-4")


def test_eval_scores_every_test_view_from_train_conditions(ckpt: Path, chair: Path, tmp_path: Path) -> None:
    report = evaluate(ckpt, chair, out=tmp_path / "r", steps=1, targets_per_object=2, consistency_objects=0,
                      progress=False)
    scored = {(v["cond_view"], v["target_view"]) for v in report.views}
    assert {t for _, t in scored} == TEST and {c for c, _ in scored} <= TRAIN
    assert report.protocol["split_by"] == "views" and len(report.protocol["tasks"]) == 2  # 3 views, groups of 2
    text = (tmp_path / "r" / "report.md").read_text()
    assert "split `test` of the scene's own view splits" in text
    assert "Not computed: a set needs at least 16 target views" in text and "all (3)" in text
    # Bins too small for the patch metric, but the pooled views enough: the pooled value, and why bins are missing.
    pooled = dataclasses.replace(report, distribution={
        "min_images": 3, "per_bin": {"all": {m: {"swd": 1.0} for m in report.methods}}})
    text = render_markdown(pooled)
    assert "fewer than the 3 views a set needs" in text and "the pooled `all` column covers their views" in text
    assert "before this metric existed" in render_markdown(dataclasses.replace(report, distribution=None))


# ------------------------------------------------------------------------------------------------ inputs


def test_dataset_view_brings_its_own_camera(ckpt: Path, chair: Path) -> None:
    pipe = Pipeline.from_checkpoint(ckpt)
    captured = pipe.dataset_view(chair, view=3)
    scene = open_dataset(chair)[0]
    picture, k = load_view(scene, 3, SIZE)
    assert torch.equal(captured.view.image, picture) and torch.allclose(captured.view.K, k)
    assert torch.allclose(captured.view.pose, scene.poses[3])
    assert captured.elevation == pytest.approx(47.0, abs=1e-3)  # from the data, not the checkpoint's mean
    views = pipe.synthesize(captured, azimuth=180.0, settings=_one_step())
    _, el, r = cameras.pose_to_spherical(views.poses[0].double())
    assert float(el) == pytest.approx(47.0, abs=1e-3) and float(r) == pytest.approx(2.5, abs=1e-4)
    with pytest.raises(ConfigError, match="its own camera"):
        pipe.synthesize(captured, azimuth=10.0, input_elevation=10.0)
    with pytest.raises(ConfigError, match="no object named 'sofa'"):
        pipe.dataset_view(chair, "sofa")


def _one_step():
    from novelview.sampling import SamplingSettings

    return SamplingSettings(steps=1, guidance=1.0)


def test_relative_turns_go_about_the_capture_not_the_world_origin(ckpt: Path, chair: Path, tmp_path: Path) -> None:
    """A reconstruction with its own world frame (shifted, tilted): the same turn as in the object frame."""
    scene = open_dataset(chair)[0]
    tilt = cameras.look_at((0.3, -1.0, 0.5), (0.0, 0.0, 0.0))
    tilt[:3, 3] = torch.tensor([4.0, -2.0, 1.5])
    moved = scene.take(range(scene.num_views))
    moved.poses = (tilt.float() @ scene.poses).float()
    pipe = Pipeline.from_checkpoint(ckpt)
    here = pipe.dataset_view([scene], view=3)
    there = pipe.dataset_view([moved], view=3)
    assert there.elevation == pytest.approx(47.0, abs=1e-2)
    a = pipe.relative_poses(here.view.pose, 90.0, -20.0, frame=here.frame)
    b = pipe.relative_poses(there.view.pose, 90.0, -20.0, frame=there.frame)
    assert torch.allclose(tilt.float() @ a, b, atol=1e-4)


def test_cli_sample_from_a_dataset_view(ckpt: Path, chair: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "side.png"
    code = run("sample", "--checkpoint", ckpt, "--data", chair, "--view", 3, "--azimuth", 30, "--out", out,
               "--steps", 1, "--upscale", 3, "--device", "cpu")
    assert code == 0, capsys.readouterr().err
    from PIL import Image

    assert Image.open(out).size == (3 * SIZE, 3 * SIZE)
    # The input camera is the view's own: 47 degrees up, so 45 more would pass the pole.
    one_error(capsys, run("sample", "--checkpoint", ckpt, "--data", chair, "--view", 3, "--elevation", 45,
                          "--out", out), "47.0", "(-137.0, 43.0)", "(-90, 90)")
    one_error(capsys, run("sample", "--checkpoint", ckpt, "--data", chair, "--view", 99, "--azimuth", 1,
                          "--out", out), "views 0..9")
    one_error(capsys, run("sample", "--checkpoint", ckpt, "--data", chair, "--image", out, "--azimuth", 1,
                          "--out", out), "not both")
    one_error(capsys, run("sample", "--checkpoint", ckpt, "--data", chair, "--input-elevation", 10, "--azimuth", 1,
                          "--out", out), "its own camera")


def test_opengl_pose_files_are_warned_about_and_read(ckpt: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    picture = tmp_path / "in.png"
    Image.fromarray(_picture(0)).save(picture)
    gl = [cameras.opencv_to_opengl(_pose(az, 20)).tolist() for az in (30, 60)]  # as Blender writes them
    (tmp_path / "gl.json").write_text(json.dumps(gl))
    args = ["sample", "--checkpoint", ckpt, "--image", picture, "--poses", tmp_path / "gl.json", "--steps", 1,
            "--out", tmp_path / "v.png"]
    assert run(*args) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "2 of 2 cameras look away" in err and "--poses-convention opengl" in err
    assert run(*args, "--poses-convention", "opengl") == 0
    assert "warning" not in capsys.readouterr().err
    one_error(capsys, run(*args, "--poses-convention", "blender"), "opencv, opengl")


# ------------------------------------------------------------------------------------------------ orbits


def test_orbit_writes_a_transforms_json_our_reader_reads_back(ckpt: Path, chair: Path, tmp_path: Path,
                                                              capsys) -> None:
    out = tmp_path / "orbit.gif"
    code = run("orbit", "--checkpoint", ckpt, "--data", chair, "--view", 3, "--views", 4, "--steps", 1,
               "--no-stochastic", "--upscale", 2, "--out", out)
    assert code == 0, capsys.readouterr().err
    capture = tmp_path / "orbit_views"
    back = read_blender(capture)[0]
    assert back.num_views == 4 and back.image_size == (2 * SIZE, 2 * SIZE)
    scene = open_dataset(chair)[0]
    # Frame 0 is the input view itself: its camera, and its intrinsics at the written size.
    assert torch.allclose(back.poses[0], scene.poses[3], atol=1e-5)
    k = cameras.resize_intrinsics(load_view(scene, 3, SIZE)[1].double(), (SIZE, SIZE), (2 * SIZE, 2 * SIZE))
    assert torch.allclose(back.intrinsics[0].double(), k, atol=1e-4)
    _, el, _ = cameras.pose_to_spherical(back.poses.double())
    assert torch.allclose(el, torch.full((4,), 47.0, dtype=torch.float64), atol=1e-3)
    data = json.loads((capture / "transforms.json").read_text())
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(data) and data["frames"][1]["file_path"].endswith(".png")
    assert run("orbit", "--checkpoint", ckpt, "--data", chair, "--view", 3, "--views", 2, "--steps", 1,
               "--out", out) == 0  # a second run replaces the capture it wrote
    assert read_blender(capture)[0].num_views == 2


def test_orbit_api_poses_round_trip_through_transforms(ckpt: Path, tmp_path: Path) -> None:
    from PIL import Image

    pipe = Pipeline.from_checkpoint(ckpt)
    frames = pipe.orbit(Image.fromarray(_picture(1)), n_views=3, elevation=10.0, settings=_one_step())
    assert len(frames) == 3 and frames.poses.shape == (3, 4, 4)
    back = read_blender(frames.save_transforms(tmp_path / "cap").parent)[0]
    assert torch.allclose(back.poses, frames.poses, atol=1e-5)
    assert torch.allclose(back.intrinsics, frames.K.expand(3, 3, 3), atol=1e-4)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="not a dataset written by novelview"):
        frames.save_transforms(tmp_path / "mine")


def test_pipeline_repr_names_the_preset(ckpt: Path) -> None:
    text = repr(Pipeline.from_checkpoint(ckpt))
    assert text.startswith("Pipeline(xunet-tiny, 16 px, diffusion") and "custom" not in text


# ------------------------------------------------------------------------------------------------ web


@pytest.fixture(scope="module")
def web_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose training data's cameras sat at 17.3 degrees on average, as the shipped one's."""
    torch.manual_seed(0)
    model = build_model("xunet-tiny", 32)
    config = CheckpointConfig(model=model.config.to_dict(), diffusion=DiffusionConfig(),
                              data={"radius": 2.5, "fov_deg": 40.0, "elevation_mean": 17.3})
    return save_checkpoint(tmp_path_factory.mktemp("web") / "tiny", model, config)


def test_web_offers_and_accepts_only_elevations_that_run(web_ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
    from fastapi.testclient import TestClient

    from novelview.serve.app import create_app

    app = create_app(Pipeline.from_checkpoint(web_ckpt), results_dir=tmp_path, video=False, warmup=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        info = client.get("/api/model").json()
        assert (info["limits"]["min_elevation"], info["limits"]["max_elevation"]) == (-89, 72)
        assert info["preset"] == "xunet-tiny"
        files = {"image": ("a.png", _png_bytes(), "image/png")}
        refused = client.post("/api/jobs", files=files, data={"params": json.dumps({"elevation": 80, "steps": 1})})
        assert refused.status_code == 422
        assert "(-107.3, 72.7)" in refused.json()["detail"] and "17.3" in refused.json()["detail"]
        params = {"mode": "orbit", "views": 3, "steps": 1, "elevation": 72, "stochastic": False}
        job = client.post("/api/jobs", files=files, data={"params": json.dumps(params)}).json()
        final = _wait(client, job["id"])
        assert final["status"] == "succeeded", final
        capture = next(f for f in final["files"] if f["kind"] == "capture")
        archive = client.get(capture["url"])
        assert archive.headers["content-type"] == "application/zip"
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        z.extractall(tmp_path / "capture")
    back = read_blender(tmp_path / "capture")[0]
    _, el, _ = cameras.pose_to_spherical(back.poses.double())
    assert back.num_views == 3 and torch.allclose(el, torch.full((3,), 17.3 + 72, dtype=torch.float64), atol=1e-3)


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_picture(5)).save(buf, format="PNG")
    return buf.getvalue()


def _wait(client, job_id: str, timeout: float = 60.0) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get(f"/api/jobs/{job_id}").json()
        if info["status"] in ("succeeded", "failed", "cancelled"):
            return info
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")
