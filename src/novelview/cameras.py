"""The one home of camera math in novelview.

Convention (used everywhere, converted on read and nowhere else):

* A pose is a 4x4 **camera-to-world** matrix ``c2w`` in the **OpenCV** convention: camera +x points right,
  +y points down, +z points forward (into the scene). SRN files use this convention as is.
* NeRF/Blender files use OpenGL (+y up, -z forward); :func:`opengl_to_opencv` converts them on read.
* Intrinsics are a 3x3 matrix ``K`` in pixels, for the image size they are stored with. Pixel ``(u, v)``
  has its centre at ``(u + 0.5, v + 0.5)``; ``u`` runs along image columns (x), ``v`` along rows (y).
* The procedural world has **+z up**; objects sit near the origin and cameras look at it. Other datasets may
  use any world frame (the models only see relative poses); statistics of their cameras are taken about the
  point the cameras look at and against the up they share (:func:`capture_spherical`).
* Spherical coordinates: azimuth is measured in the world xy-plane from +x towards +y, elevation from the
  xy-plane towards +z, both in degrees.

All functions take and return torch tensors with arbitrary leading batch dimensions (``[..., 4, 4]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from novelview.errors import PoseError

WORLD_UP = (0.0, 0.0, 1.0)
_GL_TO_CV = (1.0, -1.0, -1.0, 1.0)


def _as_tensor(x: Tensor | Sequence[float] | float, like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.as_tensor(x, dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------


def validate_pose(pose: Tensor, name: str = "pose", atol: float = 1e-3) -> Tensor:
    """Check that ``pose`` holds finite rigid camera-to-world transforms and return it unchanged.

    Rigid means the 3x3 block is orthonormal with determinant +1 (within ``atol``) and the bottom row is
    ``[0, 0, 0, 1]``. ``name`` is used in the error message, so pass the file or argument the pose came from.
    """
    pose = _as_tensor(pose)
    if pose.shape[-2:] != (4, 4):
        hint = "; add the bottom row [0, 0, 0, 1]" if pose.shape[-2:] == (3, 4) else ""
        raise PoseError(f"{name}: expected a 4x4 camera-to-world matrix, got shape {tuple(pose.shape)}{hint}")
    if pose.numel() == 0:
        raise PoseError(f"{name}: no poses (shape {tuple(pose.shape)})")
    if not torch.isfinite(pose).all():
        raise PoseError(f"{name}: pose contains NaN or infinite values")
    p = pose.double()
    bottom = p[..., 3, :]
    expected = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=p.dtype)
    if not torch.allclose(bottom, expected.expand_as(bottom), atol=atol):
        raise PoseError(f"{name}: bottom row must be [0 0 0 1], got {bottom.reshape(-1, 4)[0].tolist()}")
    rot = p[..., :3, :3]
    gram = rot.transpose(-1, -2) @ rot
    err = (gram - torch.eye(3, dtype=p.dtype)).abs().amax()
    if err > atol:
        raise PoseError(
            f"{name}: rotation is not orthonormal (max |R^T R - I| = {err.item():.2e}); "
            "the pose must be a rigid transform without scale or shear"
        )
    det = torch.linalg.det(rot)
    if (det < 0).any():
        raise PoseError(f"{name}: rotation has determinant -1 (a reflection); check the axis convention")
    return pose


def orthonormalize(pose: Tensor) -> Tensor:
    """Project the rotation block to the nearest rotation (SVD); for poses stored with few decimals."""
    u, _, vh = torch.linalg.svd(pose[..., :3, :3])
    rot = u @ vh
    flip = torch.linalg.det(rot) < 0
    if flip.any():
        u = u.clone()
        u[..., :, 2] = torch.where(flip[..., None], -u[..., :, 2], u[..., :, 2])
        rot = u @ vh
    out = pose.clone()
    out[..., :3, :3] = rot
    return out


# ---------------------------------------------------------------------------------------------------------
# Constructing poses
# ---------------------------------------------------------------------------------------------------------


def make_pose(rotation: Tensor, translation: Tensor) -> Tensor:
    """Assemble ``[..., 4, 4]`` from a ``[..., 3, 3]`` rotation and a ``[..., 3]`` translation."""
    batch = rotation.shape[:-2]
    pose = torch.zeros(*batch, 4, 4, dtype=rotation.dtype, device=rotation.device)
    pose[..., :3, :3] = rotation
    pose[..., :3, 3] = translation
    pose[..., 3, 3] = 1.0
    return pose


def look_at(
    eye: Tensor | Sequence[float],
    target: Tensor | Sequence[float] = (0.0, 0.0, 0.0),
    up: Tensor | Sequence[float] = WORLD_UP,
) -> Tensor:
    """OpenCV camera-to-world pose of a camera at ``eye`` looking at ``target`` with ``up`` roughly up.

    When the viewing direction is parallel to ``up`` (a camera straight above the object) the world +y axis is
    used as the up hint instead, so the result is always a valid rotation.
    """
    eye = _as_tensor(eye)
    eye = eye if eye.is_floating_point() else eye.double()
    if eye.shape[-1:] != (3,):
        raise PoseError(f"look_at: eye must be 3-vectors, got shape {tuple(eye.shape)}")
    target = _as_tensor(target, eye).expand_as(eye)
    up = _as_tensor(up, eye).expand_as(eye)
    if not (torch.isfinite(eye).all() and torch.isfinite(target).all()):
        raise PoseError("look_at: eye and target must be finite")
    coincide = (target - eye).norm(dim=-1) < 1e-9
    if coincide.any():
        where = f" (row {int(coincide.flatten().nonzero()[0])})" if coincide.ndim else ""
        raise PoseError(f"look_at: the camera position (eye) equals the target{where}; there is no viewing direction")
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.linalg.cross(forward, up, dim=-1)
    for hint in ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0)):  # the second serves a camera looking along +-y
        degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
        if not degenerate.any():
            break
        alt = torch.tensor(hint, dtype=eye.dtype, device=eye.device).expand_as(eye)
        right = torch.where(degenerate, torch.linalg.cross(forward, alt, dim=-1), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    down = torch.linalg.cross(forward, right, dim=-1)  # +y of an OpenCV camera points down
    rotation = torch.stack([right, down, forward], dim=-1)
    return make_pose(rotation, eye)


def spherical_to_position(azimuth_deg: Tensor, elevation_deg: Tensor, radius: Tensor) -> Tensor:
    """World position at the given azimuth, elevation (degrees) and radius, around the origin, +z up."""
    az = torch.deg2rad(azimuth_deg)
    el = torch.deg2rad(elevation_deg)
    return torch.stack(
        [radius * torch.cos(el) * torch.cos(az), radius * torch.cos(el) * torch.sin(az), radius * torch.sin(el)],
        dim=-1,
    )


def spherical_to_pose(
    azimuth_deg: Tensor | float,
    elevation_deg: Tensor | float,
    radius: Tensor | float,
) -> Tensor:
    """Camera on a sphere around the origin, looking at the origin, world +z up."""
    az = _as_tensor(azimuth_deg)
    el = _as_tensor(elevation_deg, az)
    r = _as_tensor(radius, az)
    try:
        az, el, r = torch.broadcast_tensors(az, el, r)
    except RuntimeError:
        raise PoseError(f"azimuth, elevation and radius do not have matching lengths: {tuple(az.shape)}, "
                        f"{tuple(el.shape)}, {tuple(r.shape)}") from None
    if not torch.isfinite(az).all():
        raise PoseError(f"azimuth must be finite, got {az.flatten().tolist()}")
    if not (el.abs() < 90).all():  # NaN fails this too
        raise PoseError(f"elevation must lie strictly inside (-90, 90) degrees, got {el.flatten().tolist()}")
    if not (torch.isfinite(r) & (r > 0)).all():
        raise PoseError(f"radius must be positive and finite, got {r.flatten().tolist()}")
    return look_at(spherical_to_position(az, el, r))


def pose_to_spherical(pose: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Azimuth and elevation (degrees, azimuth in [0, 360)) and radius of a camera's centre."""
    centre = pose[..., :3, 3]
    radius = centre.norm(dim=-1)
    elevation = torch.rad2deg(torch.asin((centre[..., 2] / radius.clamp_min(1e-12)).clamp(-1, 1)))
    azimuth = torch.rad2deg(torch.atan2(centre[..., 1], centre[..., 0])) % 360.0
    return azimuth, elevation, radius


def orbit_poses(
    n_views: int,
    elevation_deg: float,
    radius: float,
    start_azimuth_deg: float = 0.0,
    end_azimuth_deg: float | None = None,
) -> Tensor:
    """``n_views`` cameras evenly spaced in azimuth at one elevation (a full turn unless an end is given)."""
    if n_views < 1:
        raise PoseError(f"an orbit needs at least one view, got {n_views}")
    if end_azimuth_deg is None:
        azimuths = start_azimuth_deg + torch.arange(n_views, dtype=torch.float64) * (360.0 / n_views)
    else:
        azimuths = torch.linspace(start_azimuth_deg, end_azimuth_deg, n_views, dtype=torch.float64)
    pose = spherical_to_pose(azimuths, torch.full_like(azimuths, elevation_deg), torch.full_like(azimuths, radius))
    return pose.to(torch.get_default_dtype())


def rotate_about_target(pose: Tensor, d_azimuth_deg: float, d_elevation_deg: float) -> Tensor:
    """Move a camera that looks at the origin by a relative azimuth/elevation, keeping its radius.

    This is how "show the object turned by 90 degrees" is turned into a pose for a given input camera.
    """
    az, el, r = pose_to_spherical(pose)
    new_el = el + d_elevation_deg
    if (new_el.abs() >= 90).any():
        raise PoseError(
            f"input elevation {el.flatten().tolist()} + relative elevation {d_elevation_deg} leaves (-90, 90)"
        )
    return spherical_to_pose(az + d_azimuth_deg, new_el, r).to(pose.dtype)


# ---------------------------------------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------------------------------------


def invert_pose(pose: Tensor) -> Tensor:
    """Inverse of a rigid transform (world-to-camera from camera-to-world and back)."""
    rot_t = pose[..., :3, :3].transpose(-1, -2)
    trans = -(rot_t @ pose[..., :3, 3:4])[..., 0]
    return make_pose(rot_t, trans)


def relative_pose(reference: Tensor, pose: Tensor) -> Tensor:
    """``pose`` expressed in the frame of the ``reference`` camera: ``inv(reference) @ pose``.

    The reference camera itself becomes the identity. The models see cameras this way, so the world frame
    a dataset happens to use makes no difference to them.
    """
    return invert_pose(reference) @ pose


def opengl_to_opencv(pose: Tensor) -> Tensor:
    """Convert a camera-to-world pose from OpenGL/Blender axes to OpenCV axes (its own inverse)."""
    flip = torch.tensor(_GL_TO_CV, dtype=pose.dtype, device=pose.device)
    return pose * flip  # scales the columns: flips camera y and z


opencv_to_opengl = opengl_to_opencv


def quaternion_to_rotation(quaternion: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` from unit quaternions ``[..., 4]`` stored ``(w, x, y, z)`` (Hamilton
    convention, as COLMAP writes them)."""
    w, x, y, z = quaternion.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*quaternion.shape[:-1], 3, 3)


def rotation_to_quaternion(rotation: Tensor) -> Tensor:
    """Unit quaternions ``(w, x, y, z)`` with ``w >= 0`` of rotation matrices ``[..., 3, 3]``.

    Each component is recovered from whichever diagonal combination is largest (Shepperd's method), so the
    result stays accurate near 180-degree rotations where ``w`` is small.
    """
    r = rotation
    trace = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    candidates = torch.stack([
        torch.stack([1 + trace, r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                     r[..., 1, 0] - r[..., 0, 1]], -1),
        torch.stack([r[..., 2, 1] - r[..., 1, 2], 1 + 2 * r[..., 0, 0] - trace, r[..., 0, 1] + r[..., 1, 0],
                     r[..., 0, 2] + r[..., 2, 0]], -1),
        torch.stack([r[..., 0, 2] - r[..., 2, 0], r[..., 0, 1] + r[..., 1, 0], 1 + 2 * r[..., 1, 1] - trace,
                     r[..., 1, 2] + r[..., 2, 1]], -1),
        torch.stack([r[..., 1, 0] - r[..., 0, 1], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1],
                     1 + 2 * r[..., 2, 2] - trace], -1),
    ], dim=-2)  # [..., 4, 4]: row i is 4 q_i * q, largest where |q_i| is
    best = torch.stack([trace, r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]], -1).argmax(-1)
    q = torch.take_along_dim(candidates, best[..., None, None], dim=-2)[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def pose_from_world_to_camera(quaternion: Tensor, translation: Tensor) -> Tensor:
    """Camera-to-world pose from a world-to-camera rotation (unit quaternion ``(w, x, y, z)``) and translation,
    ``x_cam = R x_world + t``: COLMAP's ``images.txt`` / ``images.bin``, already in OpenCV axes."""
    return invert_pose(make_pose(quaternion_to_rotation(quaternion), translation))


def pose_to_world_to_camera(pose: Tensor) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`pose_from_world_to_camera`: ``(quaternion (w, x, y, z), translation)``."""
    w2c = invert_pose(pose)
    return rotation_to_quaternion(w2c[..., :3, :3]), w2c[..., :3, 3]


# ---------------------------------------------------------------------------------------------------------
# Intrinsics
# ---------------------------------------------------------------------------------------------------------


def focal_from_fov(fov_deg: float | Tensor, size: float) -> Tensor:
    """Focal length in pixels for a field of view (degrees, in (0, 180)) spanning ``size`` pixels."""
    fov_t = _as_tensor(fov_deg)
    if not ((fov_t > 0) & (fov_t < 180)).all():  # NaN fails too
        raise PoseError(f"fov_deg must lie in (0, 180) degrees, got {fov_t.flatten().tolist()}")
    if not (torch.as_tensor(size) > 0).all():
        raise PoseError(f"the image size the field of view spans must be positive, got {size}")
    return 0.5 * size / torch.tan(0.5 * torch.deg2rad(fov_t))


def fov_from_focal(focal: float | Tensor, size: float) -> Tensor:
    """Field of view in degrees spanned by ``size`` pixels at ``focal`` pixels."""
    return torch.rad2deg(2.0 * torch.atan(0.5 * size / _as_tensor(focal)))


def intrinsics(focal: float | Tensor, cx: float | Tensor, cy: float | Tensor, fy: float | Tensor | None = None) -> Tensor:
    """3x3 pinhole intrinsics in pixels (square pixels unless ``fy`` is given)."""
    fx = _as_tensor(focal)
    fy = fx if fy is None else _as_tensor(fy, fx)
    cx = _as_tensor(cx, fx)
    cy = _as_tensor(cy, fx)
    fx, fy, cx, cy = torch.broadcast_tensors(fx, fy, cx, cy)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    return torch.stack([fx, zero, cx, zero, fy, cy, zero, zero, one], dim=-1).reshape(*fx.shape, 3, 3)


def intrinsics_from_fov(fov_deg: float, height: int, width: int | None = None) -> Tensor:
    """Intrinsics of a centred pinhole camera whose horizontal field of view is ``fov_deg``."""
    width = height if width is None else width
    if not ((torch.as_tensor(height) > 0).all() and (torch.as_tensor(width) > 0).all()):
        raise PoseError(f"image height and width must be positive, got {height} x {width}")
    return intrinsics(focal_from_fov(fov_deg, width), width / 2.0, height / 2.0)


def crop_intrinsics(k: Tensor, top: float, left: float) -> Tensor:
    """Intrinsics after cropping the image to start at pixel row ``top`` and column ``left``."""
    out = k.clone()
    out[..., 0, 2] -= left
    out[..., 1, 2] -= top
    return out


def resize_intrinsics(k: Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> Tensor:
    """Intrinsics after resizing an image from ``old_hw`` to ``new_hw`` (pixel-centre convention kept)."""
    sy = new_hw[0] / old_hw[0]
    sx = new_hw[1] / old_hw[1]
    out = k.clone()
    out[..., 0, :] *= sx
    out[..., 1, :] *= sy
    return out


def center_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the largest centred square in an image."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


# ---------------------------------------------------------------------------------------------------------
# Rays and projection
# ---------------------------------------------------------------------------------------------------------


def pixel_rays(pose: Tensor, k: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """World-space ray origins and unit directions through every pixel centre.

    Returns two tensors of shape ``[..., height, width, 3]``.
    """
    dtype, device = pose.dtype, pose.device
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device) + 0.5,
        torch.arange(width, dtype=dtype, device=device) + 0.5,
        indexing="ij",
    )
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # [H, W, 3]
    k_inv = torch.linalg.inv(k.to(dtype))
    batch = pose.shape[:-2]
    dirs_cam = torch.einsum("...ij,hwj->...hwi", k_inv, pix)
    # contiguous: normalising the strided einsum result directly is ~10x slower (measured, 50x64x64 rays).
    dirs_world = torch.einsum("...ij,...hwj->...hwi", pose[..., :3, :3], dirs_cam).contiguous()
    dirs_world = torch.nn.functional.normalize(dirs_world, dim=-1)
    origins = pose[..., None, None, :3, 3].expand(*batch, height, width, 3)
    return origins, dirs_world


def plucker(origins: Tensor, directions: Tensor) -> Tensor:
    """Plücker coordinates ``(d, o x d)`` of rays, ``[..., 6]``; independent of where on the ray ``o`` lies."""
    d = torch.nn.functional.normalize(directions, dim=-1)
    return torch.cat([d, torch.linalg.cross(origins, d, dim=-1)], dim=-1)


def visible_sphere_radius(distance: float, fov_deg: float) -> float:
    """Radius of the largest sphere around the looked-at point that a camera ``distance`` away with horizontal
    field of view ``fov_deg`` sees whole: where a captured object must lie."""
    return distance * math.sin(math.radians(fov_deg) / 2)


def scene_ray_bounds(distance_min: float, distance_max: float, fov_deg: float) -> tuple[float, float]:
    """``(near, far)`` distances along camera rays that enclose the scene of cameras ``distance_min`` to
    ``distance_max`` from the point they look at (the sphere :func:`visible_sphere_radius` gives)."""
    bound = visible_sphere_radius(distance_min, fov_deg)
    return max(distance_min - bound, 1e-3 * distance_min), distance_max + bound


def world_to_camera(points: Tensor, pose: Tensor) -> Tensor:
    """World points ``[..., N, 3]`` in the frame of camera ``pose`` ``[..., 4, 4]`` (camera-to-world)."""
    w2c = invert_pose(pose)
    return points @ w2c[..., :3, :3].transpose(-1, -2) + w2c[..., None, :3, 3]


def directions_to_camera(directions: Tensor, pose: Tensor) -> Tensor:
    """World directions ``[..., N, 3]`` in the frame of camera ``pose`` (rotation only)."""
    return directions @ pose[..., :3, :3]


def camera_to_pixels(points_cam: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel coordinates ``[..., N, 2]`` (pixel centres at +0.5) and depths ``[..., N]`` of camera-frame points."""
    depth = points_cam[..., 2]
    pix = points_cam @ k.transpose(-1, -2)
    return pix[..., :2] / depth[..., None], depth


def project(points: Tensor, pose: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel coordinates ``[..., N, 2]`` (u, v; continuous, pixel centres at +0.5) and depths ``[..., N]``
    of world points ``[..., N, 3]`` seen by camera ``pose`` with intrinsics ``k``."""
    return camera_to_pixels(world_to_camera(points, pose), k)


def gl_projection(k: Tensor, height: int, width: int, near: float, far: float) -> Tensor:
    """OpenGL projection for an OpenCV camera: ``clip = P @ [x_cam, y_cam, z_cam, 1]``.

    Rasterising with it puts a camera-frame point exactly where :func:`project` says (pixel centres at
    ``u + 0.5, v + 0.5``: NDC ``x = 2u / W - 1``, ``y = 2v / H - 1``), so GL window row ``y`` *is* image row
    ``v`` and pixels read back with ``glReadPixels`` need no vertical flip (the triangle winding flips, so do
    not cull faces by winding). Depth ``z_cam`` in ``[near, far]`` maps to NDC ``[-1, 1]``.
    """
    k = k.double()
    fx, fy, cx, cy = k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2]
    p = torch.zeros(*k.shape[:-2], 4, 4, dtype=torch.float64, device=k.device)
    p[..., 0, 0] = 2.0 * fx / width
    p[..., 0, 2] = 2.0 * cx / width - 1.0
    p[..., 1, 1] = 2.0 * fy / height
    p[..., 1, 2] = 2.0 * cy / height - 1.0
    p[..., 2, 2] = (far + near) / (far - near)
    p[..., 2, 3] = -2.0 * far * near / (far - near)
    p[..., 3, 2] = 1.0
    return p


def angle_between_views(pose_a: Tensor, pose_b: Tensor) -> Tensor:
    """Angle in degrees between two cameras' viewing directions (their optical axes)."""
    za = pose_a[..., :3, 2]
    zb = pose_b[..., :3, 2]
    cos = (torch.nn.functional.normalize(za, dim=-1) * torch.nn.functional.normalize(zb, dim=-1)).sum(-1)
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


# ---------------------------------------------------------------------------------------------------------
# The frame of a capture: where its cameras look and which way is up
# ---------------------------------------------------------------------------------------------------------

#: Below this mean squared sine between the optical axes (about 6 degrees of spread) the axes are treated as
#: parallel: a forward-facing capture, which has no point that every camera looks at. The same bound on the
#: spread of the cameras' x axes decides whether they span a horizontal plane at all.
MIN_AXIS_SPREAD = 0.01
#: Above this mean squared sine of the cameras' x axes out of their best horizontal plane (about 13 degrees of
#: roll) the horizon was not kept level and the cameras say nothing about up.
MAX_HORIZON_TILT = 0.05


class CaptureFrame(NamedTuple):
    """Where the cameras of a capture look and which way is up; batched like the poses (``[...]``)."""

    point: Tensor  # [..., 3] the point the optical axes meet; the world origin where they do not
    up: Tensor  # [..., 3] unit up
    centred: Tensor  # [...] bool: the optical axes do meet in front of the cameras

    @property
    def up_tilt_deg(self) -> Tensor:
        """``[...]`` angle in degrees between this up and world +z (0 for our own data)."""
        return torch.rad2deg(torch.acos(self.up[..., 2].double().clamp(-1, 1)))


def capture_frame(pose: Tensor) -> CaptureFrame:
    """The frame of captures ``[..., V, 4, 4]`` (V views each), from their cameras alone.

    * **Point**: the least-squares point closest to every optical axis, where an object-centric capture looks.
      Our procedural data and SRN put it at the origin; a COLMAP / nerfstudio reconstruction puts the object
      anywhere. Not found (``centred`` False, origin used) when the axes are nearly parallel (a forward-facing
      capture, or a single view) or meet behind most cameras.
    * **Up**: people and renderers keep the horizon level, so every camera's x axis lies in the horizontal
      plane and up is the direction most nearly perpendicular to all of them, signed like the cameras' mean up
      (-y), or, where that is ambiguous, so that the cameras sit above the point. Where the x axes do not pin a
      plane down (all parallel, or rolled at random) the documented convention, world +z, is kept.

    For cameras that look at the origin with +z up (our data, NeRF-synthetic, SRN) this is the origin and +z.
    """
    p = pose.double()
    views = p.shape[-3]
    eye = torch.eye(3, dtype=torch.float64, device=p.device)
    centres = p[..., :3, 3]
    axes = torch.nn.functional.normalize(p[..., :3, 2], dim=-1)
    # sum_i (I - d_i d_i^T) (x - c_i) = 0: the normal equations of the distances from x to the lines.
    projectors = eye - axes[..., :, None] * axes[..., None, :]
    a = projectors.sum(-3)
    meet = torch.linalg.eigvalsh(a)[..., 0] >= MIN_AXIS_SPREAD * views
    point = torch.linalg.solve(torch.where(meet[..., None, None], a, eye), (projectors @ centres[..., None]).sum(-3))
    point = point[..., 0]
    in_front = (((point[..., None, :] - centres) * axes).sum(-1) > 0).double().mean(-1) > 0.5
    centred = meet & in_front
    point = torch.where(centred[..., None], point, torch.zeros_like(point))

    rights = torch.nn.functional.normalize(p[..., :3, 0], dim=-1)
    spread, directions = torch.linalg.eigh(rights.transpose(-1, -2) @ rights)
    up = directions[..., :, 0]
    determined = (spread[..., 1] >= MIN_AXIS_SPREAD * views) & (spread[..., 0] <= MAX_HORIZON_TILT * views)
    camera_up = -p[..., :3, 1].mean(-2)
    agreement = (up * camera_up).sum(-1)
    above = ((centres - point[..., None, :]) @ up[..., :, None])[..., 0].mean(-1)
    sign = torch.where(agreement.abs() > 0.1, agreement.sign(), torch.where(centred, above.sign(), up[..., 2].sign()))
    up = up * torch.where(sign == 0, torch.ones_like(sign), sign)[..., None]
    world_up = torch.tensor(WORLD_UP, dtype=torch.float64, device=p.device).expand_as(up)
    up = torch.where(determined[..., None], up, world_up)
    return CaptureFrame(point.to(pose.dtype), up.to(pose.dtype), centred)


def capture_spherical(pose: Tensor, frame: CaptureFrame | None = None) -> tuple[Tensor, Tensor]:
    """Elevation (degrees) and distance ``[..., V]`` of the cameras of captures ``[..., V, 4, 4]``, measured
    from the point they look at and against their up (``frame``, default :func:`capture_frame`); a capture
    without such a point is measured from the world origin."""
    frame = capture_frame(pose) if frame is None else frame
    offsets = pose[..., :3, 3].double() - frame.point.double()[..., None, :]
    radius = offsets.norm(dim=-1)
    height = (offsets @ frame.up.double()[..., :, None])[..., 0]
    elevation = torch.rad2deg(torch.asin((height / radius.clamp_min(1e-12)).clamp(-1, 1)))
    return elevation.to(pose.dtype), radius.to(pose.dtype)


def object_frame_transform(frame: CaptureFrame) -> Tensor:
    """The rigid ``[4, 4]`` (float64) that moves a capture's world into its object frame, the frame of our own
    data: the point its cameras look at to the origin and its up to +z, by the smallest rotation that does it
    (so a capture already in that frame, NeRF-synthetic or ours, is left as it is). Apply it to camera-to-world
    poses as ``T @ pose``; :func:`invert_pose` brings them back."""
    up = torch.nn.functional.normalize(frame.up.double(), dim=-1)
    z = torch.tensor(WORLD_UP, dtype=torch.float64, device=up.device)
    axis = torch.linalg.cross(up, z, dim=-1)
    sin, cos = axis.norm(), torch.dot(up, z)
    if sin < 1e-12:  # already up, or upside down: a half turn about x
        rotation = torch.eye(3, dtype=torch.float64) if cos > 0 else torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    else:  # Rodrigues' formula about the axis perpendicular to both
        k = axis / sin
        cross = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
        rotation = torch.eye(3, dtype=torch.float64) + sin * cross + (1 - cos) * cross @ cross
    return make_pose(rotation, -(rotation @ frame.point.double()))


def facing_away(pose: Tensor, point: Tensor | Sequence[float] = (0.0, 0.0, 0.0)) -> Tensor:
    """``[...]`` bool: whether each OpenCV camera looks away from ``point`` (its +z axis points away from it),
    as OpenGL / Blender matrices (-z forward) read as OpenCV do when their cameras face the point."""
    p = pose.double()
    target = _as_tensor(point, p).double()
    return ((target - p[..., :3, 3]) * p[..., :3, 2]).sum(-1) < 0


# ---------------------------------------------------------------------------------------------------------
# Lens distortion (read from nerfstudio / instant-ngp transforms; removed when views are loaded)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distortion:
    """Lens distortion as nerfstudio, instant-ngp and COLMAP store it, in normalised image coordinates
    ``x = (u - cx) / fx``, ``y = (v - cy) / fy``.

    * ``"opencv"`` (Brown-Conrady): ``r² = x² + y²``, radial factor ``1 + k1 r² + k2 r⁴ + k3 r⁶ + k4 r⁸``,
      tangential ``x += 2 p1 x y + p2 (r² + 2 x²)``, ``y += p1 (r² + 2 y²) + 2 p2 x y`` (nerfstudio's
      perspective model; COLMAP's OPENCV / RADIAL / SIMPLE_RADIAL are its special cases).
    * ``"fisheye"`` (OpenCV fisheye, equidistant): ``θ = atan(r)``, distorted radius
      ``θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸)``.
    """

    model: str = "opencv"
    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    k4: float = 0.0
    p1: float = 0.0
    p2: float = 0.0

    def __post_init__(self) -> None:
        if self.model not in ("opencv", "fisheye"):
            raise ValueError(f"unknown distortion model {self.model!r}: choose opencv or fisheye")

    @property
    def is_identity(self) -> bool:
        """No distortion at all (an OpenCV model with every coefficient zero); a fisheye never is."""
        return self.model == "opencv" and not any((self.k1, self.k2, self.k3, self.k4, self.p1, self.p2))


def distort(xy: Tensor, distortion: Distortion) -> Tensor:
    """Where the lens puts ideal (pinhole) normalised coordinates ``xy [..., 2]``: distorted ``[..., 2]``."""
    d = distortion
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    if d.model == "fisheye":
        r = r2.sqrt()
        theta = torch.atan(r)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (d.k1 + t2 * (d.k2 + t2 * (d.k3 + t2 * d.k4))))
        scale = torch.where(r > 1e-12, theta_d / r.clamp_min(1e-12), torch.ones_like(r))
        return xy * scale[..., None]
    radial = 1 + r2 * (d.k1 + r2 * (d.k2 + r2 * (d.k3 + r2 * d.k4)))
    xd = x * radial + 2 * d.p1 * x * y + d.p2 * (r2 + 2 * x * x)
    yd = y * radial + d.p1 * (r2 + 2 * y * y) + 2 * d.p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def undistortion_map(k: Tensor, height: int, width: int, distortion: Distortion) -> Tensor:
    """``[H, W, 2]`` (u, v) positions in the *distorted* image, in pixels, of every pixel centre of the
    undistorted image that has the same ``K`` and size: sampling the photo there removes the distortion."""
    k = k.double()
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5, torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij"
    )
    xy = torch.stack([(u - cx) / fx, (v - cy) / fy], dim=-1)
    xy_d = distort(xy, distortion)
    return torch.stack([xy_d[..., 0] * fx + cx, xy_d[..., 1] * fy + cy], dim=-1)


def fov_of(k: Tensor, width: int) -> Tensor:
    """Horizontal field of view (degrees) of intrinsics ``k`` for an image ``width`` pixels wide."""
    return fov_from_focal(k[..., 0, 0], width)


__all__ = [
    "MAX_HORIZON_TILT",
    "MIN_AXIS_SPREAD",
    "WORLD_UP",
    "CaptureFrame",
    "Distortion",
    "angle_between_views",
    "capture_frame",
    "capture_spherical",
    "center_crop_box",
    "crop_intrinsics",
    "distort",
    "facing_away",
    "focal_from_fov",
    "fov_from_focal",
    "fov_of",
    "gl_projection",
    "intrinsics",
    "intrinsics_from_fov",
    "invert_pose",
    "look_at",
    "object_frame_transform",
    "make_pose",
    "opencv_to_opengl",
    "opengl_to_opencv",
    "orbit_poses",
    "orthonormalize",
    "pixel_rays",
    "plucker",
    "pose_to_spherical",
    "project",
    "scene_ray_bounds",
    "visible_sphere_radius",
    "world_to_camera",
    "directions_to_camera",
    "camera_to_pixels",
    "relative_pose",
    "resize_intrinsics",
    "rotate_about_target",
    "spherical_to_pose",
    "spherical_to_position",
    "undistortion_map",
    "validate_pose",
]
