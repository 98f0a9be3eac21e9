"""Mesh renderer (`novelview data render`): geometry against analytic shapes, textures, scenes, bad files.

Needs the [render] extra (trimesh, moderngl) and a headless EGL; skipped cleanly otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from novelview import cameras
from novelview.data.formats import ManifestScenes, load_view, load_view_mask, manifest_status, open_dataset
from novelview.data.synthetic import Primitive, SynthObject, render
from novelview.data.viewpoints import CameraDistribution

pytestmark = pytest.mark.render
trimesh = pytest.importorskip("trimesh")
pytest.importorskip("moderngl")

from novelview.render.dataset import RenderConfig, object_cameras, render_dataset
from novelview.render.gl import GLRenderer, RenderUnavailable, check_available
from novelview.render.mesh import MeshError, find_meshes, load_mesh

try:
    check_available()
except RenderUnavailable as err:  # pragma: no cover - depends on the machine
    pytest.skip(f"headless rendering unavailable: {err}", allow_module_level=True)

SIZE = 64


def _poses(az: list[float], el: list[float], radius: float = 2.5) -> torch.Tensor:
    return cameras.spherical_to_pose(torch.tensor(az, dtype=torch.float64), torch.tensor(el, dtype=torch.float64),
                                     torch.full((len(az),), radius, dtype=torch.float64))


def _k() -> torch.Tensor:
    return CameraDistribution().intrinsics(SIZE)


def _border(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood is not uniform in ``mask``: within a pixel of the silhouette."""
    padded = np.pad(mask, 1, mode="edge")
    windows = np.stack([padded[1 + dy : 1 + dy + mask.shape[0], 1 + dx : 1 + dx + mask.shape[1]]
                        for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    return windows.any(0) & ~windows.all(0)


def _render(path: Path, poses: torch.Tensor, antialias: int = 1):
    mesh = load_mesh(path)
    with GLRenderer(SIZE, antialias=antialias) as r:
        return mesh, r.render(mesh, poses, _k())


# ---------------------------------------------------------------------------------------------------------
# Geometry and colour
# ---------------------------------------------------------------------------------------------------------


def test_vertex_coloured_sphere_matches_analytic_silhouette_and_depth(tmp_path: Path) -> None:
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=3.0)
    sphere.apply_translation([1.0, 2.0, 3.0])  # normalisation must undo this
    up = sphere.vertices[:, 2] > 3.0  # PLY is taken as z-up: upper half red, lower half blue
    colours = np.where(up[:, None], [230, 20, 20, 255], [20, 20, 230, 255]).astype(np.uint8)
    sphere.visual.vertex_colors = colours
    path = tmp_path / "sphere.ply"
    sphere.export(path)

    poses = _poses([0.0, 100.0, 230.0], [0.0, 30.0, -10.0])
    mesh, out = _render(path, poses)
    assert np.allclose(mesh.transform[:3, 3], -np.array([1.0, 2.0, 3.0]) * 0.8 / 3.0, atol=1e-6)
    analytic = render(SynthObject([Primitive("sphere", np.zeros(3), np.eye(3), np.array([0.8]),
                                             np.array([[1.0, 1.0, 1.0]]))]), poses, _k(), SIZE)
    for b in range(len(poses)):
        truth = analytic.mask[b].numpy()
        wrong = out.mask[b] != truth
        assert not (wrong & ~_border(truth)).any(), f"view {b}: mask differs away from the silhouette"
        assert wrong.sum() <= 0.1 * truth.sum() ** 0.5 * 4  # only a fraction of the rim
        inner = truth & ~_border(truth)
        err = np.abs(out.depth[b][inner] - analytic.depth[b].numpy()[inner])
        assert err.max() < 0.01, err.max()  # a finely tessellated sphere is within 1e-3 of the true one
        assert (out.depth[b][~out.mask[b]] == 0).all()
    # Colour and orientation: at elevation 0 the top of the disc is red and the bottom blue (no y-flip).
    rgb = out.rgba[0].astype(int)
    rows = np.nonzero(out.mask[0].any(1))[0]
    top, bottom = rgb[rows[0] + 3, SIZE // 2], rgb[rows[-1] - 3, SIZE // 2]
    assert top[0] > top[2] + 50 and bottom[2] > bottom[0] + 50, (top, bottom)
    assert (out.rgba[0][~out.mask[0]][:, 3] == 0).all() and (out.rgba[0][out.mask[0]][:, 3] == 255).all()


def _textured_box(path: Path, extents: tuple[float, float, float]) -> None:
    """A box whose texture is red on top (file +y, glTF's up) and blue below, mapped by height."""
    box = trimesh.creation.box(extents=extents)
    box = box.copy()
    box.unmerge_vertices()
    half = np.asarray(extents) / 2
    v = (box.vertices[:, 1] + half[1]) / (2 * half[1])  # OpenGL uv: v = 1 at the top of the image
    u = (box.vertices[:, 0] + half[0]) / (2 * half[0])
    u = np.where(np.abs(box.vertex_normals[:, 0]) > 0.5, (box.vertices[:, 2] + half[2]) / (2 * half[2]), u)
    v = np.clip(v * 0.9 + 0.05, 0, 1)  # stay off the texture's edge rows
    texture = np.zeros((64, 64, 3), np.uint8)
    texture[:32] = [230, 30, 30]
    texture[32:] = [30, 30, 230]
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(texture),
                                                   baseColorFactor=[255, 255, 255, 255])
    box.visual = trimesh.visual.TextureVisuals(uv=np.stack([u, v], 1), material=material)
    path.write_bytes(box.export(file_type="glb"))


def test_textured_box_silhouette_depth_and_texture_orientation(tmp_path: Path) -> None:
    path = tmp_path / "box.glb"
    extents = (1.0, 0.6, 0.8)  # file x, y (up), z
    _textured_box(path, extents)
    poses = _poses([0.0, 35.0, 160.0, 290.0], [0.0, 25.0, 40.0, -8.0])
    mesh, out = _render(path, poses)
    # glTF +y up becomes world +z; world y = -file z. Half extents in world axes, then normalised.
    half_world = np.array([extents[0], extents[2], extents[1]]) / 2
    scale = 0.8 / np.linalg.norm(half_world)
    assert np.allclose(mesh.transform[:3, :3] / scale, [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-9)
    box = Primitive("box", np.zeros(3), np.eye(3), half_world * scale, np.ones((6, 3)))
    analytic = render(SynthObject([box]), poses, _k(), SIZE)
    for b in range(len(poses)):
        truth = analytic.mask[b].numpy()
        wrong = out.mask[b] != truth
        assert not (wrong & ~_border(truth)).any(), f"view {b}: mask differs away from the silhouette"
        inner = truth & ~_border(truth)
        err = np.abs(out.depth[b][inner] - analytic.depth[b].numpy()[inner])
        assert err.max() < 2e-3, err.max()
    # Ray-plane intersection from cameras.py: view 0 (azimuth 0, elevation 0) sees the +x face head on.
    origins, dirs = cameras.pixel_rays(poses[0], _k(), SIZE, SIZE)
    hx = half_world[0] * scale
    t = (hx - origins[..., 0]) / dirs[..., 0]
    z = (t * (dirs * poses[0, :3, 2]).sum(-1)).numpy()
    c = SIZE // 2
    assert out.depth[0, c - 3 : c + 3, c - 3 : c + 3] == pytest.approx(z[c - 3 : c + 3, c - 3 : c + 3], abs=1e-3)
    # Texture: red above the box's middle, blue below (a flipped v or image would swap them).
    rows = np.nonzero(out.mask[0][:, c])[0]
    upper = out.rgba[0, rows[0] + 2, c].astype(int)
    lower = out.rgba[0, rows[-1] - 2, c].astype(int)
    assert upper[0] > upper[2] + 50 and lower[2] > lower[0] + 50, (upper, lower)


def test_multi_part_glb_scene(tmp_path: Path) -> None:
    scene = trimesh.Scene()
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    box.visual.vertex_colors = [230, 20, 20, 255]
    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    ball.visual.vertex_colors = [20, 230, 20, 255]
    scene.add_geometry(box, transform=trimesh.transformations.translation_matrix([-1.0, 0.0, 0.0]))
    scene.add_geometry(ball, transform=trimesh.transformations.translation_matrix([1.0, 0.0, 0.0]))
    path = tmp_path / "scene.glb"
    path.write_bytes(scene.export(file_type="glb"))
    poses = _poses([90.0, 270.0], [10.0, 20.0])  # both parts side by side
    mesh, out = _render(path, poses, antialias=2)
    assert len(mesh.parts) == 2
    centres = (mesh.transform @ np.array([[-1.0, 0, 0, 1], [1.0, 0, 0, 1]]).T).T[:, :3]
    uv, _ = cameras.project(torch.tensor(centres)[None].expand(2, 2, 3), poses, _k())
    for b in range(2):
        (bu, bv), (su, sv) = uv[b].long().tolist()
        red, green = out.rgba[b, bv, bu].astype(int), out.rgba[b, sv, su].astype(int)
        assert out.mask[b, bv, bu] and out.mask[b, sv, su]
        assert red[0] > red[1] + 50 and green[1] > green[0] + 50, (red, green)
    # Antialiased edges: partial alpha exists only along the silhouette.
    alpha = out.rgba[..., 3]
    assert ((alpha > 0) & (alpha < 255)).any()


def test_mesh_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty.obj").write_text("")
    (tmp_path / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    good = trimesh.creation.box().export(file_type="glb")
    (tmp_path / "truncated.glb").write_bytes(good[: len(good) // 3])
    for name, words in (("empty.obj", "empty"), ("points.obj", "no faces"), ("truncated.glb", "cannot load")):
        with pytest.raises(MeshError) as info:
            load_mesh(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and words in str(info.value)


def test_find_meshes_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for rel in ("a/chair.glb", "a/chair.obj", "mug.ply", "notes.txt"):
        (tmp_path / rel).write_bytes(b"x")
    assert [n for n, _ in find_meshes(tmp_path)] == ["a__chair_glb", "a__chair_obj", "mug"]


# ---------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture()
def mesh_dir(tmp_path: Path) -> Path:
    root = tmp_path / "meshes"
    root.mkdir()
    _textured_box(root / "box.glb", (1.0, 0.5, 0.7))
    sphere = trimesh.creation.icosphere(subdivisions=3)
    sphere.visual.vertex_colors = [200, 120, 10, 255]
    sphere.export(root / "ball.ply")
    good = (root / "box.glb").read_bytes()
    (root / "broken.glb").write_bytes(good[:200])
    (root / "empty.obj").write_text("")
    return root


runner = CliRunner()


def test_cli_render_skips_broken_meshes_and_resumes(mesh_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["data", "render", str(mesh_dir), str(out), "--views", "3", "--size", "16", "--quiet", "--seed", "7"]
    result = runner.invoke(app_(), args)
    assert result.exit_code == 0, result.output
    assert "rendered 2, skipped 0 already complete, failed 2" in result.output
    assert "up axis: +y for 3 meshes, +z for 1 mesh (by file type" in result.output  # box, broken, empty; ball.ply
    failures = (out / "failures.txt").read_text().splitlines()
    assert len(failures) == 2
    assert any("broken.glb" in line and "cannot load" in line for line in failures)
    assert any("empty.obj" in line and "empty" in line for line in failures)
    scenes = open_dataset(out)  # strict: what was written is complete and valid
    assert isinstance(scenes, ManifestScenes)  # read through the manifest written at the end
    assert sorted(s.name for s in scenes) == ["ball", "box"]
    assert all(s.num_views == 3 and s.depth_paths and s.mask_paths for s in scenes)
    info = json.loads((out / "dataset.json").read_text())
    assert info["objects"] == 2 and info["failed"] == 2 and info["cameras"]["radius"] == 2.5

    # Resume: complete objects are skipped; a missing one is rendered again; leftovers are cleaned.
    stamp = (out / "box" / "rgb" / "000000.png").stat().st_mtime_ns
    import shutil

    shutil.rmtree(out / "ball")
    (out / "ball.tmp-deadbeef").mkdir()
    result = runner.invoke(app_(), args)
    assert result.exit_code == 0, result.output
    assert "rendered 1, skipped 1 already complete, failed 2" in result.output
    assert (out / "box" / "rgb" / "000000.png").stat().st_mtime_ns == stamp
    assert not (out / "ball.tmp-deadbeef").exists() and (out / "ball" / "intrinsics.txt").exists()
    assert manifest_status(out)[0] is True and len(open_dataset(out)) == 2  # rewritten for the resumed run
    # Other settings in the same folder are refused rather than mixed.
    result = runner.invoke(app_(), args[:-2] + ["--seed", "8"])
    assert result.exit_code != 0 and "seed 7 -> 8" in str(result.exception)


def test_render_blender_format_round_trip(mesh_dir: Path, tmp_path: Path) -> None:
    cfg = RenderConfig(views=4, size=16, format="blender", seed=3,
                       cameras=CameraDistribution(elevation_range=(0.0, 30.0), radius=3.0, fov_deg=35.0))
    summary = render_dataset(mesh_dir, tmp_path / "bl", cfg, progress=False)
    assert sorted(summary.rendered) == ["ball", "box"] and len(summary.failed) == 2
    scenes = open_dataset(tmp_path / "bl")
    assert scenes.format == "blender"
    for scene in scenes:
        poses, k = object_cameras(cfg, scene.name)
        assert torch.allclose(scene.poses.double(), poses, atol=1e-6)
        assert torch.allclose(scene.intrinsics[0].double(), k, atol=1e-5)
        assert scene.mask_paths is not None and scene.depth_paths is not None
        img, _ = load_view(scene, 0, 16)
        assert torch.allclose(img[:, 0, 0], torch.ones(3))  # transparent background composited on white
        _, el, r = cameras.pose_to_spherical(scene.poses.double())
        assert (el >= -1e-3).all() and (el <= 30 + 1e-3).all() and torch.allclose(r, torch.full_like(r, 3.0))


def test_render_colmap_format_matches_the_srn_render(mesh_dir: Path, tmp_path: Path) -> None:
    cams = CameraDistribution(elevation_range=(0.0, 30.0), radius=3.0, fov_deg=35.0)
    colmap_cfg = RenderConfig(views=4, size=16, format="colmap", seed=3, cameras=cams)
    summary = render_dataset(mesh_dir, tmp_path / "cm", colmap_cfg, progress=False)
    assert sorted(summary.rendered) == ["ball", "box"]
    render_dataset(mesh_dir, tmp_path / "srn", RenderConfig(views=4, size=16, seed=3, cameras=cams), progress=False)
    colmap, srn = open_dataset(tmp_path / "cm"), open_dataset(tmp_path / "srn")
    assert colmap.format == "colmap" and [s.name for s in colmap] == [s.name for s in srn]
    for a, b in zip(colmap, srn):
        assert torch.allclose(a.poses, b.poses, atol=1e-5) and torch.allclose(a.intrinsics, b.intrinsics, atol=1e-4)
        assert a.mask_paths is not None and a.depth_paths is None  # COLMAP has no place for depth
        for i in range(a.num_views):
            img_a, _ = load_view(a, i, 16)
            img_b, _ = load_view(b, i, 16)
            assert torch.equal(img_a, img_b)  # composited on white before writing, as loading the RGBA view does
            assert torch.equal(load_view_mask(a, i, 16), load_view_mask(b, i, 16))
    # resumable like the other layouts: a rerun skips both objects
    again = render_dataset(mesh_dir, tmp_path / "cm", colmap_cfg, progress=False)
    assert sorted(again.skipped) == ["ball", "box"]


def test_orbit_cameras(mesh_dir: Path, tmp_path: Path) -> None:
    cfg = RenderConfig(views=6, size=16, cameras=CameraDistribution(mode="orbit", elevation_range=(20.0, 20.0)))
    poses, _ = object_cameras(cfg, "anything")
    az, el, _ = cameras.pose_to_spherical(poses)
    assert torch.allclose(az, torch.arange(6, dtype=torch.float64) * 60, atol=1e-6)
    assert torch.allclose(el, torch.full_like(el, 20.0), atol=1e-6)


def test_missing_egl_is_a_user_error(mesh_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import moderngl

    from novelview.cli import main

    def no_egl(*args: object, **kwargs: object) -> None:
        raise Exception("eglGetDisplay failed")  # noqa: TRY002 -- what a broken driver stack looks like

    monkeypatch.setattr(moderngl, "create_standalone_context", no_egl)
    with pytest.raises(SystemExit) as info:
        main(["data", "render", str(mesh_dir), str(tmp_path / "out"), "--views", "2", "--size", "8", "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "EGL" in err and "apt-get install libegl1 libgl1-mesa-dri" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def app_():
    from novelview.cli import app

    return app


def test_parallel_workers_give_the_same_dataset(mesh_dir: Path, tmp_path: Path) -> None:
    """--workers N (spawned processes) writes exactly the bytes a single process writes."""
    cfg = RenderConfig(views=2, size=12, seed=1)
    serial = render_dataset(mesh_dir, tmp_path / "one", cfg, workers=1, progress=False)
    parallel = render_dataset(mesh_dir, tmp_path / "two", cfg, workers=2, progress=False)
    assert sorted(serial.rendered) == sorted(parallel.rendered) == ["ball", "box"]
    assert sorted(p for p, _ in parallel.failed) == sorted(p for p, _ in serial.failed)

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}

    assert files(tmp_path / "one") == files(tmp_path / "two")


def test_rendered_dataset_trains_a_few_steps(mesh_dir: Path, tmp_path: Path) -> None:
    """Meshes -> `data render` -> `novelview train`: the rendered dataset is real training data."""
    from novelview.checkpoint import load_model
    from novelview.train import TrainConfig, train

    for name in ("broken.glb", "empty.obj"):
        (mesh_dir / name).unlink()
    for i in range(3):  # more objects, so the object-level split leaves some for training
        sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5 + 0.1 * i)
        sphere.visual.vertex_colors = [40 * i, 200, 90, 255]
        sphere.export(mesh_dir / f"ball{i}.ply")
    data = tmp_path / "rendered"
    render_dataset(mesh_dir, data, RenderConfig(views=4, size=16, seed=1), progress=False)
    run = tmp_path / "run"
    result = train(TrainConfig(data=str(data), out=str(run), image_size=16, steps=3, batch_size=4,
                               checkpoint_every=3, sample_every=0, val_every=10**6, progress=False))
    assert result.steps == 3 and np.isfinite(result.final_loss)
    model, config = load_model(result.final_checkpoint)
    assert config.data["radius"] == pytest.approx(2.5)


def test_render_settings_that_cannot_make_a_dataset(mesh_dir: Path, tmp_path: Path) -> None:
    from novelview.errors import ConfigError, DataError

    with pytest.raises(ConfigError, match="views >= 2"):
        RenderConfig(views=1)
    with pytest.raises(ConfigError, match="--workers"):
        render_dataset(mesh_dir, tmp_path / "out", RenderConfig(views=2, size=8), workers=0, progress=False)
    a_mesh = find_meshes(mesh_dir)[0][1]
    with pytest.raises(DataError, match="is a file"):
        render_dataset(a_mesh, tmp_path / "out", RenderConfig(views=2, size=8), progress=False)
    with pytest.raises(ConfigError, match="radius"):
        CameraDistribution(radius=float("inf"))
    assert not (tmp_path / "out").exists()
