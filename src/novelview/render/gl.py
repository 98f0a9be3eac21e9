"""Headless OpenGL rasteriser (moderngl on EGL) for :class:`~novelview.render.mesh.LoadedMesh`.

Cameras are OpenCV camera-to-world poses and pixel intrinsics, turned into GL matrices only by
:func:`novelview.cameras.gl_projection` / :func:`novelview.cameras.invert_pose`, so a rendered pixel is exactly
where :func:`novelview.cameras.project` puts the surface point (pixel centres at +0.5, image row 0 on top).

Outputs per view: RGBA (alpha = coverage; background transparent), depth along the optical axis (the
camera-frame z, interpolated exactly) and a mask. Shading is the procedural dataset's: Lambertian + ambient
with a light direction fixed in the world. Normals are the mesh's vertex normals, made flat at sharp edges by the loader
(:func:`novelview.render.mesh.load_mesh`), or the triangle's own normal where a vertex normal is missing.

``antialias=N`` renders N x N samples per pixel and averages them (colour premultiplied by coverage); the mask
is then coverage >= 0.5 and the depth the mean over the covered samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from novelview import cameras
from novelview.data.synthetic import SynthConfig
from novelview.errors import NovelviewError
from novelview.render.mesh import LoadedMesh

INSTALL_HINT = (
    "install the renderer's dependencies: `pip install 'novelview[render]'` (trimesh, moderngl) and the system "
    "EGL/Mesa libraries (Debian/Ubuntu: `apt-get install libegl1 libgl1-mesa-dri`)"
)


class RenderUnavailable(NovelviewError):
    """Headless OpenGL (EGL) or the [render] extra is missing; the message says what to install."""


_VERTEX = """
#version 330
uniform mat4 u_view;   // world -> OpenCV camera
uniform mat4 u_proj;   // OpenCV camera -> clip (cameras.gl_projection)
in vec3 in_pos;
in vec3 in_normal;
in vec4 in_colour;
in vec2 in_uv;
out vec3 v_world;
out vec3 v_normal;
out vec4 v_colour;
out vec2 v_uv;
out float v_depth;
void main() {
    vec4 cam = u_view * vec4(in_pos, 1.0);
    v_world = in_pos;
    v_normal = in_normal;
    v_colour = in_colour;
    v_uv = in_uv;
    v_depth = cam.z;
    gl_Position = u_proj * cam;
}
"""

_FRAGMENT = """
#version 330
uniform sampler2D u_texture;
uniform vec3 u_light;
uniform float u_ambient;
uniform vec3 u_eye;
in vec3 v_world;
in vec3 v_normal;
in vec4 v_colour;
in vec2 v_uv;
in float v_depth;
layout(location = 0) out vec4 f_colour;
layout(location = 1) out float f_depth;
void main() {
    vec3 face_n = normalize(cross(dFdx(v_world), dFdy(v_world)));
    float len2 = dot(v_normal, v_normal);
    vec3 n = len2 > 1e-12 ? v_normal * inversesqrt(len2) : face_n;
    if (dot(n, u_eye - v_world) < 0.0) n = -n;           // two-sided: face the camera
    vec4 base = v_colour * texture(u_texture, v_uv);
    float shade = u_ambient + (1.0 - u_ambient) * max(dot(n, u_light), 0.0);
    f_colour = vec4(clamp(base.rgb * shade, 0.0, 1.0), 1.0);
    f_depth = v_depth;
}
"""


@dataclass
class MeshViews:
    """``rgba`` uint8 [V, S, S, 4]; ``depth`` float32 [V, S, S] (0 = background); ``mask`` bool [V, S, S]."""

    rgba: np.ndarray
    depth: np.ndarray
    mask: np.ndarray


def create_context():
    """A headless EGL context, or :class:`RenderUnavailable` explaining what to install."""
    try:
        import moderngl
    except ImportError as err:
        raise RenderUnavailable(f"moderngl is not installed ({err}); {INSTALL_HINT}") from None
    try:
        return moderngl.create_standalone_context(backend="egl")
    except Exception as err:  # noqa: BLE001 -- EGL/driver failures come as assorted exception types
        raise RenderUnavailable(f"headless OpenGL (EGL) is unavailable ({type(err).__name__}: {err}); "
                                f"{INSTALL_HINT}") from None


def check_available() -> None:
    """Raise :class:`RenderUnavailable` unless trimesh, moderngl and an EGL context all work."""
    try:
        import trimesh  # noqa: F401
    except ImportError as err:
        raise RenderUnavailable(f"trimesh is not installed ({err}); {INSTALL_HINT}") from None
    create_context().release()


class GLRenderer:
    """Renders meshes at ``size`` x ``size`` pixels; one EGL context per instance (use as a context manager)."""

    def __init__(
        self,
        size: int,
        antialias: int = 1,
        light_dir: tuple[float, float, float] = SynthConfig.light_dir,
        ambient: float = SynthConfig.ambient,
    ) -> None:
        if size < 1 or antialias < 1:
            raise ValueError(f"size and antialias must be positive, got {size}, {antialias}")
        self.size = size
        self.antialias = antialias
        self.ctx = create_context()
        ctx = self.ctx
        self.program = ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        light = np.asarray(light_dir, dtype=np.float64)
        self.program["u_light"].value = tuple((light / np.linalg.norm(light)).tolist())
        self.program["u_ambient"].value = float(ambient)
        side = size * antialias
        self._colour = ctx.texture((side, side), 4, dtype="f1")
        self._depth = ctx.texture((side, side), 1, dtype="f4")
        self._zbuffer = ctx.depth_renderbuffer((side, side))
        self.fbo = ctx.framebuffer(color_attachments=[self._colour, self._depth], depth_attachment=self._zbuffer)
        self._white = ctx.texture((1, 1), 4, data=bytes([255, 255, 255, 255]))

    def __enter__(self) -> GLRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self.ctx is not None:
            self.ctx.release()
            self.ctx = None

    def _upload(self, mesh: LoadedMesh) -> list[tuple]:
        ctx = self.ctx
        draws = []
        for part in mesh.parts:
            n = len(part.positions)
            uv = part.uv if part.uv is not None else np.zeros((n, 2), np.float32)
            data = np.concatenate([part.positions, part.normals, part.colours, uv], axis=1).astype("f4")
            vbo = ctx.buffer(np.ascontiguousarray(data).tobytes())
            vao = ctx.vertex_array(self.program, [(vbo, "3f 3f 4f 2f", "in_pos", "in_normal", "in_colour", "in_uv")])
            if part.texture is not None and part.uv is not None:
                # GL texture row 0 is t = 0 (the bottom); image row 0 is the top.
                tex_data = np.ascontiguousarray(part.texture[::-1])
                tex = ctx.texture((tex_data.shape[1], tex_data.shape[0]), 4, data=tex_data.tobytes())
                tex.build_mipmaps()
                tex.repeat_x = tex.repeat_y = True
            else:
                tex = None
            draws.append((vao, vbo, tex))
        return draws

    def render(self, mesh: LoadedMesh, poses: Tensor, k: Tensor) -> MeshViews:
        """Render ``mesh`` from ``poses`` ``[V, 4, 4]`` (OpenCV c2w) with ``k`` ``[3, 3]`` (pixels at ``size``)."""
        import moderngl

        ctx = self.ctx
        aa, side = self.antialias, self.size * self.antialias
        poses = torch.as_tensor(poses, dtype=torch.float64).reshape(-1, 4, 4)
        k_big = cameras.resize_intrinsics(torch.as_tensor(k, dtype=torch.float64), (self.size,) * 2, (side,) * 2)
        views = cameras.invert_pose(poses)
        radius = poses[:, :3, 3].norm(dim=-1)
        draws = self._upload(mesh)
        out_rgba, out_depth, out_mask = [], [], []
        try:
            self.fbo.use()
            ctx.enable(moderngl.DEPTH_TEST)
            ctx.disable(moderngl.CULL_FACE)
            for i in range(len(poses)):
                near = max(1e-3, float(radius[i]) - 4.0) * 0.5
                far = float(radius[i]) + 4.0
                proj = cameras.gl_projection(k_big, side, side, near, far)
                self.program["u_view"].write(views[i].T.contiguous().numpy().astype("f4").tobytes())
                self.program["u_proj"].write(proj.T.contiguous().numpy().astype("f4").tobytes())
                self.program["u_eye"].value = tuple(poses[i, :3, 3].tolist())
                self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
                for vao, _, tex in draws:
                    (tex or self._white).use(location=0)
                    self.program["u_texture"].value = 0
                    vao.render(moderngl.TRIANGLES)
                rgba = np.frombuffer(self.fbo.read(components=4, attachment=0, dtype="f1"), np.uint8)
                depth = np.frombuffer(self.fbo.read(components=1, attachment=1, dtype="f4"), np.float32)
                rgba, depth, mask = _downsample(rgba.reshape(side, side, 4), depth.reshape(side, side), aa)
                out_rgba.append(rgba)
                out_depth.append(depth)
                out_mask.append(mask)
        finally:
            for vao, vbo, tex in draws:
                vao.release()
                vbo.release()
                if tex is not None:
                    tex.release()
        return MeshViews(np.stack(out_rgba), np.stack(out_depth), np.stack(out_mask))


def _downsample(rgba: np.ndarray, depth: np.ndarray, aa: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average aa x aa sample blocks: colour premultiplied by coverage, depth over covered samples."""
    covered = rgba[..., 3] > 0
    if aa == 1:
        rgb = np.where(covered[..., None], rgba[..., :3], 255).astype(np.uint8)
        out = np.concatenate([rgb, (covered * 255).astype(np.uint8)[..., None]], axis=-1)
        return out, np.where(covered, depth, 0.0).astype(np.float32), covered
    s = rgba.shape[0] // aa
    cov = covered.reshape(s, aa, s, aa).astype(np.float64)
    n = cov.sum(axis=(1, 3))
    alpha = n / (aa * aa)
    rgb = (rgba[..., :3].astype(np.float64) * covered[..., None]).reshape(s, aa, s, aa, 3).sum(axis=(1, 3))
    rgb = np.where(n[..., None] > 0, rgb / np.maximum(n, 1)[..., None], 255.0)
    z = (np.where(covered, depth, 0.0).reshape(s, aa, s, aa)).sum(axis=(1, 3)) / np.maximum(n, 1)
    mask = alpha >= 0.5
    out = np.concatenate([np.round(rgb), np.round(alpha * 255)[..., None]], axis=-1).astype(np.uint8)
    return out, np.where(mask, z, 0.0).astype(np.float32), mask


__all__ = ["INSTALL_HINT", "GLRenderer", "MeshViews", "RenderUnavailable", "check_available", "create_context"]
