"""How long a dataset takes to open, and how much memory, against its object count: manifest vs folder.

::

    python benchmarks/dataset_scale.py                       # 1k, 10k, 100k, 1M objects; the folder read up to 10k
    python benchmarks/dataset_scale.py --scan-max 100000     # also read the 100k-object folder (2.4M files)
    python benchmarks/dataset_scale.py --quick               # smoke test: tiny sizes, seconds

For each size a dataset of SRN objects (``--views`` views each) is made under ``--work``:

* up to ``--scan-max`` objects, a real folder: every object has its own pose files and ``intrinsics.txt``; its
  images are hard links to the views of a pool of ``--pool`` rendered objects (`data synth`), so that images
  cost no disk. `novelview data index` writes its manifest (the ``index s`` column);
* above it, only the pool's folders and a manifest generated from arrays (random cameras, views named as SRN
  names them), whose objects point at the pool's folders in turn: no million folders are written, and the loader
  still decodes real images.

Each path (``manifest``: ``open_dataset`` reading the manifest; ``folder``: reading every object folder) is
measured in a fresh process: seconds to open the dataset, to build the training split (``MultiViewDataset``
with its camera statistics) and to the training loader's first batch (the trainer's seeded sample stream and
batch sampler, ``--batch`` items, ``--workers`` workers), and the process's peak resident memory
(``VmHWM``) after imports, after opening and after the first batch. The page cache is warm: the files were
just written. Targets for a million objects: the manifest opens in under 5 s and 2 GB, and the first batch
arrives in under 10 s. Prints a table and writes benchmarks/results/dataset_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "dataset_scale.json"
TARGETS = {"open_s": 5.0, "open_peak_mb": 2048.0, "first_batch_s": 10.0}


def _peak_mb() -> float:
    """Peak resident memory of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent
    that started the process, which here had just built a million-object manifest."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ---------------------------------------------------------------------------------------------------------
# Making the datasets
# ---------------------------------------------------------------------------------------------------------


def make_pool(work: Path, objects: int, views: int, size: int) -> Path:
    from novelview.data.synthetic import SynthConfig, generate

    pool = work / "pool"
    if not pool.exists():
        generate(pool, SynthConfig(objects=objects, views=views, size=size, seed=0), progress=False, manifest=False)
    return pool


def make_folder(root: Path, objects: int, views: int, pool: Path) -> None:
    """``objects`` SRN objects with their own cameras and hard-linked pool images."""
    from novelview.data.formats.srn import format_pose
    from novelview.data.viewpoints import CameraDistribution

    pool_objects = sorted(p for p in pool.iterdir() if p.is_dir() and not p.name.startswith("."))
    cams = CameraDistribution()
    rng = np.random.default_rng(0)
    for i in range(objects):
        source = pool_objects[i % len(pool_objects)]
        obj = root / f"obj_{i:07d}"
        (obj / "rgb").mkdir(parents=True)
        (obj / "pose").mkdir()
        shutil.copyfile(source / "intrinsics.txt", obj / "intrinsics.txt")
        for v, pose in enumerate(cams.poses(rng, views)):
            os.link(source / "rgb" / f"{v:06d}.png", obj / "rgb" / f"{v:06d}.png")
            (obj / "pose" / f"{v:06d}.txt").write_text(format_pose(pose))


def make_manifest(root: Path, objects: int, views: int, size: int, pool_objects: int) -> None:
    """A manifest of ``objects`` objects with random cameras whose folders are the ``pool_objects`` in ``root``."""
    import pyarrow as pa
    import torch

    from novelview import cameras
    from novelview.data.formats.manifest import (
        MANIFEST_DIR,
        folder_stamp,
        manifest_table,
        root_stamp,
        save_manifest,
    )
    from novelview.data.formats.scene import capture_summary
    from novelview.data.viewpoints import CameraDistribution

    (root / MANIFEST_DIR).mkdir(exist_ok=True)
    folders = [f"obj_{i:07d}" for i in range(pool_objects)]
    stamps = np.array([folder_stamp(root / f) for f in folders], dtype=np.int64)
    cams = CameraDistribution()
    rng = np.random.default_rng(1)
    poses = np.empty((objects * views, 4, 4), dtype=np.float32)
    summary: dict[str, list[np.ndarray]] = {}
    k = cams.intrinsics(size)
    fov = torch.full((1, views), float(cameras.fov_of(k, size)), dtype=torch.float64)
    chunk = 20_000
    for lo in range(0, objects, chunk):
        n = min(chunk, objects - lo)
        az, el = rng.uniform(0, 360, (n, views)), rng.uniform(*cams.elevation_range, (n, views))
        p = cameras.spherical_to_pose(torch.from_numpy(az), torch.from_numpy(el), cams.radius)
        poses[lo * views : (lo + n) * views] = p.reshape(-1, 4, 4).numpy()
        for key, values in capture_summary(p, fov.expand(n, views)).items():
            summary.setdefault(key, []).append(values)
    names = pa.array([f"rgb/{v:06d}.png" for v in range(views)])
    indices = pa.array(np.tile(np.arange(views, dtype=np.int32), objects))
    images = pa.ListArray.from_arrays(pa.array(np.arange(objects + 1, dtype=np.int32) * views),
                                      pa.DictionaryArray.from_arrays(indices, names))
    k_row = np.array([k[0, 0], k[1, 1], k[0, 2], k[1, 2]], dtype=np.float32)
    table = manifest_table(
        names=[f"obj_{i:07d}" for i in range(objects)],
        folders=[folders[i % pool_objects] for i in range(objects)],
        image_hw=np.full((objects, 2), size, dtype=np.int32),
        images=images,
        poses=poses,
        intrinsics=np.broadcast_to(k_row, (objects * views, 4)),
        summary={key: np.concatenate(parts) for key, parts in summary.items()},
        stamps=stamps[np.arange(objects) % pool_objects],
    )
    del poses
    meta = {"format": "srn", "reader_args": {}, "settings": {}, "root": root_stamp(root)}
    save_manifest(root, table, meta)


def prepare(work: Path, objects: int, args: argparse.Namespace, pool: Path) -> dict[str, Any]:
    """The dataset of ``objects`` objects under ``work``; returns how it was made and how long it took."""
    from novelview.data.formats import write_manifest
    from novelview.data.formats.manifest import manifest_path

    root = work / f"objects_{objects}"
    shutil.rmtree(root, ignore_errors=True)
    real = objects <= args.scan_max
    start = time.perf_counter()
    make_folder(root, objects if real else min(args.pool, objects), args.views, pool)
    made = time.perf_counter()
    if real:
        write_manifest(root)
    else:
        make_manifest(root, objects, args.views, args.size, min(args.pool, objects))
    done = time.perf_counter()
    return {"root": str(root), "folder": "real" if real else f"pool of {min(args.pool, objects)}",
            "make_s": round(made - start, 2), ("index_s" if real else "generate_s"): round(done - made, 2),
            "manifest_mb": round(manifest_path(root).stat().st_size / 1e6, 2)}


# ---------------------------------------------------------------------------------------------------------
# Measuring (in a fresh process per path and size)
# ---------------------------------------------------------------------------------------------------------


def measure(root: str, path: str, size: int, batch: int, workers: int) -> dict[str, Any]:
    start = time.perf_counter()
    import torch
    from torch.utils.data import DataLoader

    from novelview.data.formats import ManifestScenes, open_dataset
    from novelview.data.views import MultiViewDataset
    from novelview.train import _RankBatches, _SampleStream  # the trainer's own data order

    imported, base_mb = time.perf_counter(), _peak_mb()
    scenes = open_dataset(root, manifest=path == "manifest")
    if (path == "manifest") != isinstance(scenes, ManifestScenes):
        raise SystemExit(f"{root}: the {path} path was not taken (is the manifest out of date?)")
    opened, open_mb = time.perf_counter(), _peak_mb()
    dataset = MultiViewDataset(scenes, size=size, split="train")
    dataset.camera_stats()
    ready = time.perf_counter()
    loader = DataLoader(_SampleStream(dataset, seed=0), batch_sampler=_RankBatches(0, 1, batch, rank=0, world=1),
                        num_workers=workers, generator=torch.Generator().manual_seed(0))
    first = next(iter(loader))
    batched = time.perf_counter()
    assert first["target_image"].shape == (batch, 3, size, size)
    return {
        "objects": len(scenes), "views": scenes.num_views,
        "import_s": round(imported - start, 3), "open_s": round(opened - imported, 3),
        "ready_s": round(ready - imported, 3), "first_batch_s": round(batched - imported, 3),
        "base_mb": round(base_mb, 1), "open_peak_mb": round(open_mb, 1), "open_added_mb": round(open_mb - base_mb, 1),
        "peak_mb": round(_peak_mb(), 1), "train_items": len(dataset),
    }


def run_child(root: str, path: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", root, path, "--size", str(args.size), "--batch", str(args.batch),
           "--workers", str(args.workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"measuring {path} on {root} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = [("objects", "objects", "{:>9}"), ("path", "path", "{:>9}"), ("open_s", "open s", "{:>8.2f}"),
            ("open_peak_mb", "open peak MB", "{:>12.0f}"), ("open_added_mb", "+MB", "{:>7.0f}"),
            ("ready_s", "split s", "{:>8.2f}"), ("first_batch_s", "1st batch s", "{:>11.2f}"),
            ("peak_mb", "peak MB", "{:>8.0f}"), ("index_s", "index s", "{:>8.1f}"), ("manifest_mb", "file MB", "{:>8.1f}")]
    print(" ".join(f"{title:>{len(fmt.format(0))}}" for _, title, fmt in cols))
    for row in rows:
        cells = []
        for key, _, fmt in cols:
            value = row.get(key)
            blank = row.get("note", "-") if key == "open_s" else "-"
            cells.append(fmt.format(value) if value is not None else f"{blank:>{len(fmt.format(0))}}")
        print(" ".join(cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[1_000, 10_000, 100_000, 1_000_000])
    p.add_argument("--scan-max", type=int, default=10_000, help="largest object count read from its folder")
    p.add_argument("--views", type=int, default=12)
    p.add_argument("--size", type=int, default=64, help="image size on disk and in training")
    p.add_argument("--pool", type=int, default=64, help="rendered objects whose images every object links to")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (the trainer's default is 0)")
    p.add_argument("--work", type=Path, default=None, help="where the datasets go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the datasets")
    p.add_argument("--quick", action="store_true", help="smoke test: 40 and 120 objects of 4 views at 16 px")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", nargs=2, metavar=("ROOT", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.size, args.batch, args.workers)))
        return
    if args.quick:
        args.sizes, args.scan_max, args.views, args.size, args.pool, args.batch = [40, 120], 40, 4, 16, 8, 8

    from _machine import machine  # benchmarks/ is on sys.path when run as a script

    work = args.work or Path(tempfile.mkdtemp(prefix="dataset_scale-"))
    out = args.out or (Path(tempfile.gettempdir()) / "dataset_scale_quick.json" if args.quick else RESULTS)
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    if info["load_average"][0] > 0.5:
        print(f"warning: load average {info['load_average']}: timings are not representative of an idle machine")
    rows = []
    try:
        pool = make_pool(work, args.pool, args.views, args.size)
        for objects in args.sizes:
            made = prepare(work, objects, args, pool)
            print(json.dumps({"objects": objects, **made}), flush=True)
            for path in ("manifest", "folder"):
                row: dict[str, Any] = {"objects": objects, "views": objects * args.views, "path": path}
                if path == "folder" and objects > args.scan_max:
                    row["note"] = "skipped"
                    row["skipped"] = f"above --scan-max {args.scan_max}: {objects * args.views * 2:,} files to write"
                else:
                    row.update(run_child(made["root"], path, args))
                    row["views"] = objects * args.views
                if path == "manifest":
                    row.update({k: v for k, v in made.items() if k != "root"})
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    largest = max((r for r in rows if r["path"] == "manifest"), key=lambda r: r["objects"])
    met = {key: largest[key] < limit for key, limit in TARGETS.items()}
    print(f"targets at {largest['objects']:,} objects (manifest): " +
          ", ".join(f"{key} {largest[key]} < {limit}: {'met' if met[key] else 'MISSED'}" for key, limit in TARGETS.items()))
    result = {"machine": info, "views_per_object": args.views, "image_size": args.size, "pool": args.pool,
              "batch": args.batch, "workers": args.workers, "scan_max": args.scan_max, "quick": args.quick,
              "targets": TARGETS, "targets_met": met, "rows": rows,
              "command": " ".join(["python", "benchmarks/dataset_scale.py", *sys.argv[1:]])}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
