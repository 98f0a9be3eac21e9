"""Load a mesh file (GLB/glTF/OBJ/PLY/STL/OFF) with trimesh into flat triangle arrays, normalised.

Normalisation puts the object where `novelview data synth` puts its objects: the bounding-box centre at the
origin, world +z up, and every vertex within :data:`~novelview.data.synthetic.OBJECT_RADIUS` (0.8) of the
origin -- inside the unit sphere and fully in view of a 40 degree camera at distance 2.5.

Up axis: glTF is +y up by specification, and OBJ exports (Blender, ShapeNet, most tools) are +y up too, so
``up="auto"`` rotates those to +z up; PLY/STL/OFF (scanning, 3D printing) are taken as +z up already.

Colours, multiplied together when present: the material's base colour factor (glTF), its base-colour texture
(sampled with the mesh's UVs), and vertex or face colours. Meshes with none of these are light grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from novelview.data.synthetic import OBJECT_RADIUS
from novelview.errors import DataError

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
Y_UP_SUFFIXES = (".glb", ".gltf", ".obj")
DEFAULT_COLOUR = (0.75, 0.75, 0.75, 1.0)
UpAxis = Literal["auto", "y", "z"]

# +y up -> +z up: rotate +90 degrees about x ((x, y, z) -> (x, -z, y)).
_Y_TO_Z = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


class MeshError(DataError):
    """A mesh file that cannot be rendered (unreadable, no faces, non-finite vertices)."""


@dataclass
class MeshPart:
    """Un-indexed triangles (three rows per triangle) sharing one texture."""

    positions: np.ndarray  # [N, 3] float32, normalised world coordinates
    normals: np.ndarray  # [N, 3] float32, vertex normals (may be zero: the renderer then shades flat)
    colours: np.ndarray  # [N, 4] float32 in [0, 1]
    uv: np.ndarray | None  # [N, 2] float32, OpenGL convention (v = 0 at the bottom of the image)
    texture: np.ndarray | None  # [H, W, 4] uint8, row 0 = top of the image


@dataclass
class LoadedMesh:
    path: Path
    parts: list[MeshPart]
    transform: np.ndarray  # [4, 4]: file coordinates -> normalised world coordinates

    @property
    def triangles(self) -> int:
        return sum(len(p.positions) // 3 for p in self.parts)


def _colour_array(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32)
    if arr.size and arr.max() > 1.0:
        arr = arr / 255.0
    if arr.shape[-1] == 3:
        arr = np.concatenate([arr, np.ones((*arr.shape[:-1], 1), np.float32)], axis=-1)
    return arr


def _texture_array(image: Any) -> np.ndarray | None:
    if image is None:
        return None
    try:
        return np.asarray(image.convert("RGBA"), dtype=np.uint8)
    except (AttributeError, OSError, ValueError):
        return None


def _part(mesh: Any) -> MeshPart | None:
    """One trimesh.Trimesh (already in scene coordinates) -> MeshPart (None if it has no faces)."""
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if faces.size == 0:
        return None
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    positions = vertices[faces].reshape(-1, 3)
    try:
        normals = np.asarray(mesh.vertex_normals, dtype=np.float64)[faces].reshape(-1, 3)
    except (ValueError, IndexError):
        normals = np.zeros_like(positions)
    n = len(positions)
    colours = np.tile(np.asarray(DEFAULT_COLOUR, np.float32), (n, 1))
    uv = texture = None
    visual = getattr(mesh, "visual", None)
    kind = getattr(visual, "kind", None)
    if kind == "texture":
        material = getattr(visual, "material", None)
        image = getattr(material, "baseColorTexture", None)
        if image is None:
            image = getattr(material, "image", None)
        factor = getattr(material, "baseColorFactor", None)
        if factor is None and image is None:
            factor = getattr(material, "diffuse", None)  # OBJ/MTL colour without a texture map
        if factor is not None:
            colours = np.tile(_colour_array(factor).reshape(4), (n, 1))
        texture = _texture_array(image)
        if texture is not None and getattr(visual, "uv", None) is not None and len(visual.uv) == len(vertices):
            uv = np.asarray(visual.uv, dtype=np.float64)[faces].reshape(-1, 2)
        else:
            texture = None
        extra = getattr(visual, "vertex_attributes", {}).get("color")
        if extra is not None and len(extra) == len(vertices):
            colours = colours * _colour_array(extra)[faces].reshape(-1, 4)
    elif kind == "vertex":
        colours = _colour_array(visual.vertex_colors)[faces].reshape(-1, 4)
    elif kind == "face":
        colours = np.repeat(_colour_array(visual.face_colors), 3, axis=0)
    return MeshPart(
        positions=positions.astype(np.float32),
        normals=_auto_smooth(positions, normals).astype(np.float32),
        colours=colours.astype(np.float32),
        uv=None if uv is None else uv.astype(np.float32),
        texture=texture,
    )


def _auto_smooth(positions: np.ndarray, normals: np.ndarray, max_angle_deg: float = 40.0) -> np.ndarray:
    """Per triangle corner: keep the vertex normal unless it is more than ``max_angle_deg`` off the triangle's
    own normal (a sharp edge, e.g. a box with shared corner vertices), in which case shade that corner flat.

    Deciding per corner (not per pixel) keeps each triangle's shading continuous.
    """
    tri = positions.reshape(-1, 3, 3)
    face = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    face /= np.maximum(np.linalg.norm(face, axis=-1, keepdims=True), 1e-30)
    corner = normals.reshape(-1, 3, 3)
    length = np.linalg.norm(corner, axis=-1, keepdims=True)
    unit = corner / np.maximum(length, 1e-30)
    cos = (unit * face[:, None, :]).sum(-1, keepdims=True)
    keep = (length > 1e-12) & np.isfinite(cos) & (cos >= np.cos(np.deg2rad(max_angle_deg)))
    return np.where(keep, unit, np.broadcast_to(face[:, None, :], corner.shape)).reshape(-1, 3)


def _scene_meshes(path: Path) -> list[Any]:
    """Every triangle mesh in the file, with its scene-graph transform applied."""
    import trimesh

    try:
        loaded = trimesh.load(str(path), force="scene", process=False)
    except Exception as err:  # noqa: BLE001 -- trimesh's loaders raise anything on bad input
        raise MeshError(f"{path}: cannot load mesh ({type(err).__name__}: {err})") from None
    try:
        geometries = loaded.dump(concatenate=False) if hasattr(loaded, "dump") else [loaded]
    except Exception as err:  # noqa: BLE001
        raise MeshError(f"{path}: cannot read the mesh's scene graph ({type(err).__name__}: {err})") from None
    return [g for g in geometries if hasattr(g, "faces") and hasattr(g, "vertices")]


def up_axis(path: str | Path, up: UpAxis = "auto") -> str:
    """``"y"`` or ``"z"``: the axis of the file at ``path`` taken as up (``auto``: by its suffix, see above)."""
    if up != "auto":
        return up
    return "y" if Path(path).suffix.lower() in Y_UP_SUFFIXES else "z"


def load_mesh(path: str | Path, up: UpAxis = "auto", radius: float = OBJECT_RADIUS) -> LoadedMesh:
    """Load and normalise one mesh file; raises :class:`MeshError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MeshError(f"{path}: mesh file not found")
    if path.stat().st_size == 0:
        raise MeshError(f"{path}: mesh file is empty (0 bytes)")
    parts = [p for p in (_part(m) for m in _scene_meshes(path)) if p is not None]
    if not parts:
        raise MeshError(f"{path}: the file contains no triangles (no faces)")
    everything = np.concatenate([p.positions for p in parts]).astype(np.float64)
    if not np.isfinite(everything).all():
        raise MeshError(f"{path}: vertices contain NaN or infinite coordinates")
    rotation = _Y_TO_Z if up_axis(path, up) == "y" else np.eye(3)
    rotated = everything @ rotation.T
    centre = 0.5 * (rotated.min(axis=0) + rotated.max(axis=0))
    extent = np.linalg.norm(rotated - centre, axis=1).max()
    if not extent > 1e-12:
        raise MeshError(f"{path}: the mesh has zero size (all vertices coincide)")
    scale = radius / extent
    transform = np.eye(4)
    transform[:3, :3] = scale * rotation
    transform[:3, 3] = -scale * centre
    for p in parts:
        p.positions = ((p.positions.astype(np.float64) @ rotation.T - centre) * scale).astype(np.float32)
        p.normals = (p.normals.astype(np.float64) @ rotation.T).astype(np.float32)
    return LoadedMesh(path=path, parts=parts, transform=transform)


def find_meshes(root: str | Path) -> list[tuple[str, Path]]:
    """``(name, path)`` of every mesh file under ``root`` (recursively), names unique and file-system safe.

    The name is the path relative to ``root`` without its suffix, with ``/`` replaced by ``__``; when two
    files differ only by suffix, the suffix is kept in the name.
    """
    root = Path(root)
    if root.is_file():
        raise DataError(f"{root}: is a file; give the folder that holds the meshes")
    if not root.is_dir():
        raise DataError(f"{root}: mesh folder not found")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    stems: dict[str, int] = {}
    for p in files:
        key = str(p.relative_to(root).with_suffix(""))
        stems[key] = stems.get(key, 0) + 1
    out = []
    for p in files:
        rel = p.relative_to(root)
        key = str(rel.with_suffix(""))
        name = key if stems[key] == 1 else f"{key}_{p.suffix.lstrip('.').lower()}"
        out.append((name.replace("/", "__").replace("\\", "__"), p))
    return out


__all__ = ["MESH_SUFFIXES", "LoadedMesh", "MeshError", "MeshPart", "find_meshes", "load_mesh", "up_axis"]
