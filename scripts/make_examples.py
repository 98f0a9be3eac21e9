"""Write examples/: held-out procedural objects, each an orbit of ground-truth views in SRN layout.

View 0 of each object is the input picture; views 0..N-1 are an even turn around the object at the input's
elevation (the cameras `novelview orbit` and `novelview demo` ask for). The objects come from a seed that no
training set of ours uses, so the shipped model has never seen them.

    python scripts/make_examples.py            # rewrites examples/objects
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from novelview import cameras
from novelview.data.atomic import atomic_directory
from novelview.data.synthetic import SynthConfig, object_name, random_object, render_object_views, write_object_views

EXAMPLE_SEED = 90_210  # training sets use small seeds (0 for the default model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples" / "objects")
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--elevation", type=float, default=20.0)
    parser.add_argument("--start-azimuth", type=float, default=30.0)
    args = parser.parse_args()

    cfg = SynthConfig(objects=args.objects, views=args.views, size=args.size, seed=EXAMPLE_SEED)
    poses = cameras.orbit_poses(args.views, args.elevation, cfg.cameras.radius, args.start_azimuth)
    if args.out.exists():
        shutil.rmtree(args.out)
    with atomic_directory(args.out) as tmp:
        for i in range(args.objects):
            obj = random_object(np.random.default_rng([EXAMPLE_SEED, i, 0]), cfg.max_primitives)
            views = render_object_views(obj, poses, cfg)
            write_object_views(tmp / object_name(i), views)
    print(f"wrote {args.objects} example objects x {args.views} views to {args.out}")


if __name__ == "__main__":
    main()
