"""Objects the models never train on, from another renderer: the generalisation check of docs/results.md.

    python scripts/make_generalisation_set.py /work/runs/other-renderer --objects 48

The training set (`novelview data synth`) is 1-4 primitives clustered around their centre, ray-cast analytically
with a light from the upper front and ambient 0.35. This set differs in every way that should not matter to a
model that has learned 3D:

* other shapes and other tessellated surfaces: boxes, icospheres, cylinders, cones, tori and capsules, built with
  trimesh and written as GLB files (so they go through the mesh loader's up-axis and scale normalisation);
* other layout: 2-4 parts spread apart on a ring around the centre, instead of one overlapping cluster;
* other renderer and shading: the OpenGL rasteriser of `novelview data render` with 2x2 antialiasing, smooth
  normals on curved parts, a light from the left and behind, ambient 0.5;
* the same camera convention and distribution as the training data (OpenCV poses, radius 2.5, 40 degree field
  of view, elevation -10..45 degrees), as any SRN-layout dataset states its cameras.

Deterministic in ``--seed``. Needs the [render] extra and EGL (see README).
"""

from __future__ import annotations

import argparse
import colorsys
import tempfile
from pathlib import Path

import numpy as np


def _part(rng: np.random.Generator, kind: str):
    """One part of a random kind and size (before the loader scales the whole object into radius 0.8)."""
    import trimesh

    if kind == "box":
        return trimesh.creation.box(extents=rng.uniform(0.4, 1.1, size=3))
    if kind == "sphere":
        return trimesh.creation.icosphere(subdivisions=3, radius=rng.uniform(0.3, 0.55))
    if kind == "cylinder":
        return trimesh.creation.cylinder(radius=rng.uniform(0.15, 0.4), height=rng.uniform(0.5, 1.2), sections=32)
    if kind == "cone":
        return trimesh.creation.cone(radius=rng.uniform(0.25, 0.5), height=rng.uniform(0.5, 1.1), sections=32)
    if kind == "torus":
        major = rng.uniform(0.3, 0.5)
        return trimesh.creation.torus(major_radius=major, minor_radius=major * rng.uniform(0.25, 0.45))
    return trimesh.creation.capsule(radius=rng.uniform(0.15, 0.3), height=rng.uniform(0.3, 0.8), count=[24, 24])


KINDS = ("box", "sphere", "cylinder", "cone", "torus", "capsule")


def random_mesh(rng: np.random.Generator):
    """2-4 parts on a ring of radius 0.5-0.7 around the centre, each with its own colour and a random pose."""
    import trimesh
    from scipy.spatial.transform import Rotation

    n = int(rng.integers(2, 5))
    phase = rng.uniform(0, 2 * np.pi)
    ring = rng.uniform(0.5, 0.7)
    hue0 = rng.random()
    parts = []
    for i in range(n):
        mesh = _part(rng, KINDS[int(rng.integers(len(KINDS)))])
        angle = phase + 2 * np.pi * i / n + rng.uniform(-0.3, 0.3)
        transform = np.eye(4)
        transform[:3, :3] = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
        transform[:3, 3] = [ring * np.cos(angle), rng.uniform(-0.35, 0.35), ring * np.sin(angle)]
        mesh.apply_transform(transform)
        hue = (hue0 + i * 0.381966) % 1.0
        rgb = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 0.9), rng.uniform(0.7, 1.0)))
        mesh.visual.face_colors = np.append(np.round(rgb * 255), 255).astype(np.uint8)
        parts.append(mesh)
    return trimesh.util.concatenate(parts)


def main(argv: list[str] | None = None) -> None:
    from novelview.data.viewpoints import CameraDistribution
    from novelview.render.dataset import RenderConfig, render_dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--objects", type=int, default=48)
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    cfg = RenderConfig(
        views=args.views, size=args.size, cameras=CameraDistribution(), seed=args.seed, antialias=2, up="y",
        light_dir=(-0.6, 0.5, 0.6), ambient=0.5,
    )
    with tempfile.TemporaryDirectory() as meshes:
        for i in range(args.objects):
            random_mesh(rng).export(Path(meshes) / f"other_{i:05d}.glb")
        summary = render_dataset(meshes, args.out, cfg, overwrite=True)
    print(f"{args.out}: {len(summary.rendered)} objects rendered, {len(summary.failed)} failed")


if __name__ == "__main__":
    main()
