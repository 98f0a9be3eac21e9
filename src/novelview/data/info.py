"""`novelview data info`: what a dataset holds and everything wrong with it, found in one pass."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from novelview.data.formats import (
    Problems,
    Scene,
    camera_statistics,
    check_images,
    detect_format,
    manifest_status,
    open_dataset,
)
from novelview.errors import NovelviewError


@dataclass
class DatasetReport:
    path: Path
    format: str = ""
    objects: int = 0
    views: int = 0
    views_per_object: tuple[int, int] = (0, 0)
    resolutions: dict[str, int] = field(default_factory=dict)  # "HxW" -> number of objects
    cameras: dict[str, float] = field(default_factory=dict)
    has_masks: bool = False
    has_depth: bool = False
    distorted_views: int = 0  # views with lens distortion (undistorted when loaded)
    settings: dict[str, Any] = field(default_factory=dict)
    files_checked: int = 0
    manifest: str = ""  # whether the folder has a current manifest (not a problem of the dataset either way)
    splits: str = ""  # which split scheme training and evaluation apply, and its sizes
    notes: list[str] = field(default_factory=list)  # worth a look, but the dataset is usable
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """A dataset with any problem is refused by the (strict) training loader, so it is not usable."""
        return self.objects > 0 and not self.problems

    def lines(self) -> list[str]:
        out = [f"dataset:    {self.path}", f"format:     {self.format or 'unknown'}"]
        if self.objects:
            lo, hi = self.views_per_object
            per = f"{lo}" if lo == hi else f"{lo}-{hi}"
            out.append(f"objects:    {self.objects}")
            out.append(f"views:      {self.views} ({per} per object)")
            out.append("resolution: " + ", ".join(
                f"{r} ({n} object{'s' if n != 1 else ''})" if len(self.resolutions) > 1 else r
                for r, n in self.resolutions.items()))
            c = self.cameras
            if c:
                out.append(f"cameras:    radius {c['radius']:.3f} (min {c['radius_min']:.3f}, max {c['radius_max']:.3f}), "
                           f"elevation {c['elevation_min']:.1f} to {c['elevation_max']:.1f} deg "
                           f"(mean {c['elevation_mean']:.1f}), horizontal FOV {c['fov_deg']:.2f} deg")
                offset, tilt = c.get("look_at_offset", 0.0), c.get("up_tilt_deg", 0.0)
                if offset > 1e-3 * max(c["radius"], 1e-9) or tilt > 0.5:
                    out.append(f"frame:      cameras look at a point {offset:.3f} from the origin, their up is "
                               f"{tilt:.1f} deg from +z (radius and elevation are measured there)")
                if c.get("forward_facing"):
                    out.append(f"            {c['forward_facing']} forward-facing scene(s): no point all cameras "
                               f"look at; their radius is the distance from the origin")
            if self.format == "ring":
                stored = int(self.settings.get("stored_cameras", 0))
                out.append(f"poses:      {stored} object(s) with stored cameras (.npy), {self.objects - stored} "
                           f"with implied 60-degree steps")
            out.append(f"extras:     masks {'yes' if self.has_masks else 'no'}, depth {'yes' if self.has_depth else 'no'}")
            if self.distorted_views:
                out.append(f"lens:       {self.distorted_views} views with lens distortion (undistorted when loaded)")
            gen = self.settings.get("generator")
            if gen:
                out.append(f"generator:  {gen} (seed {self.settings.get('seed')})")
            if self.splits:
                out.append(f"splits:     {self.splits}")
            if self.files_checked:
                out.append(f"checked:    {self.files_checked} files fully decoded")
            out.extend(f"note:       {n}" for n in self.notes)
        if self.manifest:
            out.append(f"manifest:   {self.manifest}")
        if self.problems:
            out.append(f"problems:   {len(self.problems)}")
            out.extend(f"  - {p}" for p in self.problems)
            out.append("status:     UNUSABLE (fix the problems above)")
        else:
            out.append("problems:   none")
            out.append("status:     ok" if self.objects else "status:     UNUSABLE (no objects)")
        return out


def inspect_dataset(path: str | Path, format: str = "auto", decode: bool = True, **reader_args: Any) -> DatasetReport:
    """Read ``path`` leniently and collect every problem (unreadable files, bad poses, missing views, ...).

    The folder itself is read (a manifest would hide the files' problems); whether its manifest is current is
    reported beside. ``decode``: also fully decode every image/mask/depth file (slower, finds truncated files).
    """
    report = DatasetReport(path=Path(path))
    try:
        report.format = detect_format(path) if format == "auto" else format
        report.manifest = manifest_status(path, verify="full")[1]
        scenes = open_dataset(path, format=report.format, strict=False, manifest=False, **reader_args)
    except NovelviewError as err:
        report.problems.append(str(err))
        return report
    problems = Problems(strict=False)
    problems.messages = list(scenes.problems)
    if decode:
        report.files_checked = check_images(scenes, problems)
    report.problems = problems.messages
    report.settings = scenes.settings
    report.objects = len(scenes)
    if scenes:
        counts = [s.num_views for s in scenes]
        report.views = sum(counts)
        report.views_per_object = (min(counts), max(counts))
        report.resolutions = dict(Counter(f"{s.image_size[0]}x{s.image_size[1]}" for s in scenes))
        report.cameras = camera_statistics(scenes)
        report.has_masks = all(s.mask_paths is not None for s in scenes)
        report.has_depth = all(s.depth_paths is not None for s in scenes)
        report.distorted_views = sum(sum(d is not None for d in s.distortion or []) for s in scenes)
        report.splits = describe_splits(scenes)
        report.notes = camera_notes(report.cameras)
    return report


def describe_splits(scenes: Sequence[Scene]) -> str:
    """Which split scheme training and evaluation apply to ``scenes`` (:mod:`novelview.data.views`), with sizes."""
    from novelview.data.views import describe_view_splits, split_objects, split_scheme

    if split_scheme(scenes) == "views":
        return (f"the scene's own, per view ({describe_view_splits(scenes[0])}): training pairs train views, "
                "validation and evaluation score val / test views generated from train views")
    sizes = {k: len(v) for k, v in split_objects(len(scenes)).items()}
    text = (f"by object ({sizes['train']} train, {sizes['val']} val, {sizes['test']} test; default seed and "
            "fractions): a val or test object is never trained on")
    named = sum(s.view_splits is not None for s in scenes)
    if len(scenes) == 1:
        text += ("; a single scene whose files name no view splits is all training (name them: Blender "
                 "transforms_{train,val,test}.json, nerfstudio *_filenames, COLMAP train.txt / val.txt / test.txt)")
    elif named:
        text += f"; {named} scene(s) name their own view splits, which apply to one scene on its own"
    return text


def camera_notes(stats: dict[str, float]) -> list[str]:
    """What the camera statistics suggest is worth checking (not problems: the data can be used as it is)."""
    notes = []
    if stats and stats.get("elevation_max", 0.0) < 0.0:
        notes.append(f"every camera sits below the equator (elevation {stats['elevation_min']:.1f} to "
                     f"{stats['elevation_max']:.1f} deg): the objects are seen from underneath; if they were "
                     "rendered with the wrong up axis, render again (`novelview data render --up y` or `--up z`)")
    return notes


__all__ = ["DatasetReport", "inspect_dataset"]
