"""Camera conventions: round trips, validation, degenerate look-at, and projection vs. the ray caster."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from novelview import cameras
from novelview.data.synthetic import Primitive, SynthObject, render
from novelview.errors import PoseError



def random_rotation(gen: torch.Generator, n: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(q)
    q[:, :, 2] *= det[:, None]  # proper rotations only
    return q


def random_poses(gen: torch.Generator, n: int) -> torch.Tensor:
    return cameras.make_pose(random_rotation(gen, n), torch.randn(n, 3, generator=gen, dtype=torch.float64) * 3)


@pytest.fixture()
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# ---------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------


def test_spherical_pose_round_trip(gen: torch.Generator) -> None:
    n = 500
    az = torch.rand(n, generator=gen, dtype=torch.float64) * 360
    el = (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * 170  # (-85, 85)
    r = 0.5 + torch.rand(n, generator=gen, dtype=torch.float64) * 10
    pose = cameras.spherical_to_pose(az, el, r)
    cameras.validate_pose(pose)
    az2, el2, r2 = cameras.pose_to_spherical(pose)
    d_az = (az2 - az + 180) % 360 - 180
    assert d_az.abs().max() < 1e-9
    assert (el2 - el).abs().max() < 1e-9
    assert (r2 - r).abs().max() < 1e-9
    # The camera looks at the origin (+z forward in OpenCV) and its image "down" (+y) points towards -z world.
    forward = pose[:, :3, 2]
    centre = pose[:, :3, 3]
    assert torch.allclose(forward, -centre / centre.norm(dim=-1, keepdim=True), atol=1e-12)
    down = pose[:, :3, 1]
    assert (down[:, 2] < 0).all(), "world +z must appear up in the image"


def test_opengl_opencv_round_trip(gen: torch.Generator) -> None:
    pose = random_poses(gen, 200)
    gl = cameras.opencv_to_opengl(pose)
    cameras.validate_pose(gl)
    assert torch.allclose(cameras.opengl_to_opencv(gl), pose, atol=1e-12)
    # Same camera centre; OpenGL looks down its -z and has +y up.
    assert torch.allclose(gl[:, :3, 3], pose[:, :3, 3])
    assert torch.allclose(-gl[:, :3, 2], pose[:, :3, 2], atol=1e-12)
    assert torch.allclose(-gl[:, :3, 1], pose[:, :3, 1], atol=1e-12)
    assert torch.allclose(gl[:, :3, 0], pose[:, :3, 0], atol=1e-12)


def test_relative_pose_composition(gen: torch.Generator) -> None:
    a, b, c = random_poses(gen, 100), random_poses(gen, 100), random_poses(gen, 100)
    eye = torch.eye(4, dtype=torch.float64).expand(100, 4, 4)
    assert torch.allclose(cameras.relative_pose(a, a), eye, atol=1e-10)
    assert torch.allclose(cameras.invert_pose(a) @ a, eye, atol=1e-10)
    assert torch.allclose(a @ cameras.relative_pose(a, b), b, atol=1e-10)
    # Chaining: c seen from a == (b seen from a) composed with (c seen from b).
    assert torch.allclose(cameras.relative_pose(a, c), cameras.relative_pose(a, b) @ cameras.relative_pose(b, c),
                          atol=1e-10)
    # Independent of the world frame.
    w = random_poses(gen, 1)
    assert torch.allclose(cameras.relative_pose(w @ a, w @ b), cameras.relative_pose(a, b), atol=1e-10)


def test_rotate_about_target_moves_azimuth_and_keeps_radius() -> None:
    pose = cameras.spherical_to_pose(30.0, 10.0, 2.5).double()
    moved = cameras.rotate_about_target(pose, 90.0, 5.0)
    az, el, r = cameras.pose_to_spherical(moved)
    assert az.item() == pytest.approx(120.0, abs=1e-4)
    assert el.item() == pytest.approx(15.0, abs=1e-4)
    assert r.item() == pytest.approx(2.5, abs=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------


def test_validate_pose_accepts_rigid(gen: torch.Generator) -> None:
    pose = random_poses(gen, 10)
    assert cameras.validate_pose(pose, name="ok.txt") is pose


def _with_nan(p: torch.Tensor) -> torch.Tensor:
    p[0, 1] = float("nan")
    return p


def _scaled(p: torch.Tensor) -> torch.Tensor:
    p[:3, :3] *= 1.5
    return p


def _reflected(p: torch.Tensor) -> torch.Tensor:
    p[:3, 0] *= -1
    return p


def _bad_bottom_row(p: torch.Tensor) -> torch.Tensor:
    p[3, 0] = 0.5
    return p


@pytest.mark.parametrize(
    "corrupt, words",
    [(_with_nan, "nan"), (_scaled, "orthonormal"), (_reflected, "reflection"), (_bad_bottom_row, "bottom row"),
     (lambda p: p[:3], "4x4")],
    ids=["nan", "scaled", "reflected", "bottom-row", "shape"],
)
def test_validate_pose_rejects(gen: torch.Generator, corrupt, words: str) -> None:
    bad = corrupt(random_poses(gen, 1)[0].clone())
    with pytest.raises(PoseError) as info:
        cameras.validate_pose(bad, name="scene/pose/000007.txt")
    message = str(info.value).lower()
    assert "scene/pose/000007.txt" in message
    assert words in message


def test_look_at_degenerate_straight_above_and_below() -> None:
    for eye in ([0.0, 0.0, 3.0], [0.0, 0.0, -2.0]):
        pose = cameras.look_at(torch.tensor(eye, dtype=torch.float64))
        cameras.validate_pose(pose, name=f"look_at({eye})")
        forward = pose[:3, 2]
        expected = -torch.tensor(eye, dtype=torch.float64) / abs(eye[2])
        assert torch.allclose(forward, expected, atol=1e-12)
    # Near-degenerate (almost straight above) still gives a rigid, finite pose.
    pose = cameras.look_at(torch.tensor([1e-9, 0.0, 3.0], dtype=torch.float64))
    cameras.validate_pose(pose)


def test_spherical_to_pose_rejects_poles_and_bad_radius() -> None:
    with pytest.raises(PoseError, match="elevation"):
        cameras.spherical_to_pose(0.0, 90.0, 2.0)
    with pytest.raises(PoseError, match="radius"):
        cameras.spherical_to_pose(0.0, 10.0, 0.0)


# ---------------------------------------------------------------------------------------------------------
# Intrinsics and projection
# ---------------------------------------------------------------------------------------------------------


def test_fov_focal_round_trip_and_intrinsics_layout() -> None:
    k = cameras.intrinsics_from_fov(40.0, 64)
    assert k[0, 2].item() == 32.0 and k[1, 2].item() == 32.0
    assert cameras.fov_of(k, 64).item() == pytest.approx(40.0, abs=1e-4)
    assert cameras.focal_from_fov(90.0, 100).item() == pytest.approx(50.0, abs=1e-4)


def test_crop_and_resize_intrinsics_follow_the_pixels(gen: torch.Generator) -> None:
    """Projecting after cropping/resizing the intrinsics = cropping/resizing the projected pixel coordinates."""
    pose = cameras.spherical_to_pose(20.0, 15.0, 2.5).double()
    k = cameras.intrinsics(torch.tensor(70.0, dtype=torch.float64), 40.0, 30.0)
    pts = torch.rand(50, 3, generator=gen, dtype=torch.float64) - 0.5
    uv, _ = cameras.project(pts, pose, k)
    uv_c, _ = cameras.project(pts, pose, cameras.crop_intrinsics(k, top=5, left=10))
    assert torch.allclose(uv_c, uv - torch.tensor([10.0, 5.0], dtype=torch.float64), atol=1e-9)
    uv_r, _ = cameras.project(pts, pose, cameras.resize_intrinsics(k, (60, 80), (30, 40)))
    assert torch.allclose(uv_r, uv * 0.5, atol=1e-9)


def _sphere(centre: list[float], radius: float) -> SynthObject:
    return SynthObject([Primitive("sphere", np.array(centre), np.eye(3), np.array([radius]),
                                  np.array([[1.0, 0.0, 0.0]]))])


def test_known_point_projects_where_the_ray_caster_draws_it() -> None:
    """A small sphere off the optical axis: its rendered blob is centred on cameras.project(centre).

    A half-pixel offset or a flipped image axis moves the blob away from the projected point.
    """
    size = 64
    centre = [0.35, -0.25, 0.4]
    poses = cameras.spherical_to_pose(torch.tensor([20.0, 200.0]), torch.tensor([10.0, 35.0]),
                                      torch.tensor([2.5, 2.5])).double()
    k = cameras.intrinsics_from_fov(40.0, size).double()
    out = render(_sphere(centre, 0.06), poses, k, size)
    uv, depth = cameras.project(torch.tensor([centre], dtype=torch.float64).expand(2, 1, 3), poses, k)
    for b in range(2):
        mask = out.mask[b].double()
        assert mask.sum() > 10
        v, u = torch.meshgrid(torch.arange(size, dtype=torch.float64) + 0.5,
                              torch.arange(size, dtype=torch.float64) + 0.5, indexing="ij")
        cu = (mask * u).sum() / mask.sum()
        cv = (mask * v).sum() / mask.sum()
        # The blob of a sphere is (nearly) centred on its projected centre; perspective stretches it slightly.
        assert abs(cu - uv[b, 0, 0]) < 0.25 and abs(cv - uv[b, 0, 1]) < 0.25, (cu, cv, uv[b])
        # The depth map at the blob's centre pixel: the front surface, ~radius nearer than the centre.
        pu, pv = int(uv[b, 0, 0]), int(uv[b, 0, 1])
        assert out.depth[b, pv, pu].item() == pytest.approx(depth[b, 0].item() - 0.06, abs=5e-3)


def test_depth_map_agrees_with_rays() -> None:
    """Every hit pixel's depth, pushed along its ray, reprojects to that pixel's centre at that depth."""
    size = 32
    poses = cameras.spherical_to_pose(torch.tensor([0.0, 77.0, 250.0]), torch.tensor([-10.0, 5.0, 44.0]),
                                      torch.tensor([2.5, 2.0, 3.0])).double()
    k = cameras.intrinsics_from_fov(40.0, size).double()
    out = render(_sphere([0.1, 0.0, -0.1], 0.6), poses, k, size)
    origins, dirs = cameras.pixel_rays(poses, k, size, size)
    forward = poses[:, None, None, :3, 2]
    cos = (dirs * forward).sum(-1)
    points = origins + dirs * (out.depth.double() / cos)[..., None]
    for b in range(len(poses)):
        hit = out.mask[b]
        assert hit.sum() > 50
        uv, z = cameras.project(points[b][hit][None], poses[b : b + 1], k)
        v, u = torch.nonzero(hit, as_tuple=True)
        assert torch.allclose(uv[0, :, 0], u.double() + 0.5, atol=1e-3)
        assert torch.allclose(uv[0, :, 1], v.double() + 0.5, atol=1e-3)
        assert torch.allclose(z[0], out.depth[b][hit].double(), atol=1e-4)
        # The silhouette is exactly the set of rays passing within the radius of the centre.
        c = torch.tensor([0.1, 0.0, -0.1], dtype=torch.float64)
        oc = c - origins[b]
        dist = (oc - (oc * dirs[b]).sum(-1, keepdim=True) * dirs[b]).norm(dim=-1)
        analytic = dist < 0.6
        assert (analytic != hit).sum() <= 2  # only rays grazing the rim (float32 vs float64) may differ


def test_orbit_poses_evenly_spaced() -> None:
    poses = cameras.orbit_poses(8, 20.0, 2.5)
    az, el, _ = cameras.pose_to_spherical(poses.double())
    assert torch.allclose(torch.diff(az), torch.full((7,), 45.0, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(el, torch.full((8,), 20.0, dtype=torch.float64), atol=1e-3)
    assert math.isclose(cameras.angle_between_views(poses[0], poses[4]).item(), 2 * (90 - 20), abs_tol=1e-2)


def test_gl_projection_matches_project(gen: torch.Generator) -> None:
    """NDC -> window coordinates of the GL matrix land where cameras.project puts points (no flip, no offset)."""
    h, w = 48, 64
    k = cameras.intrinsics(torch.tensor(55.0, dtype=torch.float64), 30.0, 20.0, fy=57.0)
    pose = cameras.spherical_to_pose(40.0, 20.0, 2.5).double()
    pts = torch.rand(100, 3, generator=gen, dtype=torch.float64) - 0.5
    uv, depth = cameras.project(pts, pose, k)
    proj = cameras.gl_projection(k, h, w, near=0.5, far=10.0)
    cam = (cameras.invert_pose(pose) @ torch.cat([pts, torch.ones(100, 1, dtype=torch.float64)], -1).T).T
    clip = (proj @ cam.T).T
    ndc = clip[:, :3] / clip[:, 3:]
    window = torch.stack([(ndc[:, 0] + 1) * w / 2, (ndc[:, 1] + 1) * h / 2], -1)
    assert torch.allclose(window, uv, atol=1e-9)
    assert torch.allclose(clip[:, 3], depth, atol=1e-12)
    # near/far planes map to the ends of the depth range
    edge = proj @ torch.tensor([[0, 0, 0.5, 1], [0, 0, 10.0, 1]], dtype=torch.float64).T
    assert torch.allclose(edge[2] / edge[3], torch.tensor([-1.0, 1.0], dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------------
# The frame of a capture
# ---------------------------------------------------------------------------------------------------------


def _orbit_capture(gen: torch.Generator, n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    az = torch.rand(n, generator=gen, dtype=torch.float64) * 360
    el = torch.rand(n, generator=gen, dtype=torch.float64) * 60 - 10
    return cameras.spherical_to_pose(az, el, torch.full_like(az, 2.5)), el


def test_capture_frame_of_an_orbit_is_the_origin_and_plus_z(gen: torch.Generator) -> None:
    poses, elevation = _orbit_capture(gen)
    frame = cameras.capture_frame(poses)
    assert frame.centred and frame.point.abs().max() < 1e-9
    assert torch.allclose(frame.up, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-9)
    el, radius = cameras.capture_spherical(poses)
    assert torch.allclose(el, elevation, atol=1e-9) and torch.allclose(radius, torch.full_like(radius, 2.5))


@pytest.mark.parametrize("scale", [1.0, 0.07, 40.0])
def test_capture_spherical_ignores_the_world_frame(gen: torch.Generator, scale: float) -> None:
    """A reconstruction may put the object anywhere, turned any way, at any scale: elevations stay, distances
    scale with it (COLMAP / nerfstudio captures are not centred like our procedural data)."""
    poses, elevation = _orbit_capture(gen)
    world = random_poses(gen, 1)[0]
    moved = world @ poses
    moved[:, :3, 3] *= scale
    frame = cameras.capture_frame(moved)
    assert torch.allclose(frame.point, world[:3, 3] * scale, atol=1e-9 * max(scale, 1))
    assert torch.allclose(frame.up, world[:3, 2], atol=1e-9)  # the world's +z, carried along
    el, radius = cameras.capture_spherical(moved, frame)
    assert torch.allclose(el, elevation, atol=1e-7)
    assert torch.allclose(radius, torch.full_like(radius, 2.5 * scale))


def test_capture_frame_of_forward_facing_and_degenerate_captures(gen: torch.Generator) -> None:
    """Where the cameras do not determine the frame, the documented convention (origin, +z up) stays."""
    z_up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    # All cameras looking the same way (an LLFF-style capture): no common point, no horizontal plane.
    forward = cameras.make_pose(torch.eye(3, dtype=torch.float64).expand(6, 3, 3),
                                torch.randn(6, 3, generator=gen, dtype=torch.float64) * 0.2)
    frame = cameras.capture_frame(forward)
    assert not frame.centred and torch.equal(frame.point, torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(frame.up, z_up)
    el, radius = cameras.capture_spherical(forward, frame)
    assert torch.allclose(radius, forward[:, :3, 3].norm(dim=-1))
    # Cameras looking away from each other (outward): the axes meet behind them, which is no object.
    eyes = 0.01 * torch.randn(4, 3, generator=gen, dtype=torch.float64)
    targets = torch.tensor([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], dtype=torch.float64)
    assert not cameras.capture_frame(cameras.look_at(eyes, targets)).centred
    # One view, two views 5 degrees apart, a vertical arc at one azimuth: origin-centred, +z-up data keeps
    # its elevations.
    for az, el in [([30.0], [10.0]), ([30.0, 35.0], [30.0, 30.0]), ([40.0] * 5, [-10.0, 0.0, 15.0, 30.0, 40.0])]:
        az_t, el_t = torch.tensor(az, dtype=torch.float64), torch.tensor(el, dtype=torch.float64)
        poses = cameras.spherical_to_pose(az_t, el_t, torch.full_like(az_t, 2.5))
        got, radius = cameras.capture_spherical(poses)
        assert torch.allclose(got, el_t, atol=1e-6) and torch.allclose(radius, torch.full_like(radius, 2.5))
    # Cameras rolled at random say nothing about up.
    az_t = torch.rand(8, generator=gen, dtype=torch.float64) * 360
    poses = cameras.spherical_to_pose(az_t, torch.full_like(az_t, 20.0), torch.full_like(az_t, 2.5))
    roll = torch.rand(8, generator=gen, dtype=torch.float64) * 2 * math.pi
    c, s_ = torch.cos(roll), torch.sin(roll)
    spin = torch.zeros(8, 3, 3, dtype=torch.float64)
    spin[:, 0, 0], spin[:, 0, 1], spin[:, 1, 0], spin[:, 1, 1], spin[:, 2, 2] = c, -s_, s_, c, 1.0
    rolled = poses.clone()
    rolled[:, :3, :3] = poses[:, :3, :3] @ spin  # turn each camera about its optical axis
    assert torch.allclose(cameras.capture_frame(rolled).up, z_up)


def test_capture_frames_batch_like_the_poses(gen: torch.Generator) -> None:
    a, _ = _orbit_capture(gen)
    world = random_poses(gen, 1)[0]
    b = world @ a
    frame = cameras.capture_frame(torch.stack([a, b]))
    assert frame.point.shape == (2, 3) and frame.up.shape == (2, 3) and frame.centred.all()
    assert torch.allclose(frame.up[1], cameras.capture_frame(b).up) and torch.allclose(frame.up[1], world[:3, 2])


def test_quaternion_round_trip_including_half_turns() -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(500, 4, generator=gen, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    half_turns = torch.tensor([[0.0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0.6, 0.8, 0]], dtype=torch.float64)
    q = torch.cat([q, half_turns])
    r = cameras.quaternion_to_rotation(q)
    assert torch.allclose(r.transpose(-1, -2) @ r, torch.eye(3, dtype=torch.float64).expand_as(r), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(len(q), dtype=torch.float64))
    back = cameras.rotation_to_quaternion(r)
    assert torch.allclose(back, q, atol=1e-9)  # w >= 0 picks one of the two; w = 0 ones are given that way


def test_world_to_camera_round_trip() -> None:
    pose = cameras.look_at(torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    q, t = cameras.pose_to_world_to_camera(pose)
    assert torch.allclose(cameras.pose_from_world_to_camera(q, t), pose, atol=1e-12)
    # world-to-camera: the camera centre goes to the origin of camera coordinates
    assert torch.allclose(cameras.quaternion_to_rotation(q) @ pose[:3, 3] + t, torch.zeros(3, dtype=torch.float64),
                          atol=1e-12)
