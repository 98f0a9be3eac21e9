"""What the server says about its model (``GET /api/model``): names and numbers only, never a server path."""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from novelview.serve import schemas


def max_steps(pipeline: Any) -> int:
    config = getattr(pipeline, "config", None)
    timesteps = getattr(getattr(config, "diffusion", None), "num_train_timesteps", None)
    return min(schemas.MAX_STEPS, int(timesteps)) if isinstance(timesteps, int) and timesteps > 0 else schemas.MAX_STEPS


def preset_name(config: Any) -> Optional[str]:
    """The preset the checkpoint's model was built from, with the fields chosen to differ from it
    (:meth:`~novelview.checkpoint.CheckpointConfig.model_name`)."""
    try:
        return str(config.model_name())
    except Exception:  # noqa: BLE001 - informational only
        return None


def elevation_limits(pipeline: Any) -> tuple[int, int]:
    """The whole-degree relative elevations a job may ask for: the model's canonical input camera sits at the
    training data's mean elevation, and input + relative must stay strictly inside (-90, 90)."""
    try:
        _, lo, hi = pipeline.elevation_range()
    except Exception:  # noqa: BLE001 - a pipeline without cameras: the schema's own bounds
        return -89, 89
    return max(-89, math.floor(lo) + 1), min(89, math.ceil(hi) - 1)


def model_info(pipeline: Any, checkpoint_name: str) -> dict[str, Any]:
    config = getattr(pipeline, "config", None)
    model_cfg = json.loads(json.dumps(dict(getattr(config, "model", {}) or {}), default=list))
    image_size = getattr(pipeline, "image_size", None) or model_cfg.get("image_size") or 0
    low, high = elevation_limits(pipeline)
    return {
        "checkpoint": checkpoint_name,
        "preset": preset_name(config) if model_cfg else None,
        "image_size": int(image_size),
        "objective": str(getattr(config, "objective", "diffusion")),
        "lifts": bool(getattr(pipeline, "lifts", False)),
        "parameters": _parameters(pipeline),
        "camera": _camera(pipeline),
        "presets": _presets(),
        "samplers": list(schemas.SAMPLERS),
        "defaults": _defaults(pipeline).model_dump(mode="json"),
        "limits": {
            "min_steps": 1, "max_steps": max_steps(pipeline),
            "min_views": 2, "max_views": schemas.MAX_VIEWS,
            "min_guidance": 0.0, "max_guidance": schemas.MAX_GUIDANCE,
            "min_elevation": low, "max_elevation": high,
            "max_seed": schemas.MAX_SEED,
        },
    }


def _parameters(pipeline: Any) -> Optional[int]:
    model = getattr(pipeline, "model", None)
    try:
        return int(sum(p.numel() for p in model.parameters())) if model is not None else None
    except Exception:  # noqa: BLE001 - informational only
        return None


def _presets() -> list[str]:
    try:
        from novelview.models.presets import list_presets

        return list(list_presets())
    except Exception:  # noqa: BLE001 - the list is informational; a missing module must not stop the server
        return []


def _camera(pipeline: Any) -> dict[str, float]:
    try:
        camera = dict(pipeline.camera_defaults())
    except Exception:  # noqa: BLE001 - informational only
        return {}
    return {k: v for k, v in camera.items() if isinstance(v, (int, float))}


def _defaults(pipeline: Any) -> schemas.JobParams:
    defaults = schemas.JobParams()
    try:
        # Checkpoints' guidance defaults are held to the same bound as the form's, so the form accepts its default.
        return defaults.model_copy(update={"guidance": float(pipeline.default_guidance())})
    except Exception:  # noqa: BLE001 - keep null: the pipeline picks
        return defaults


def version() -> str:
    try:
        from importlib.metadata import version as package_version

        return package_version("novelview")
    except Exception:  # noqa: BLE001
        return "0"
