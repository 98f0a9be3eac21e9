"""Checkpoint directories: ``config.json`` + safetensors weights (+ training state), written atomically.

Layout::

    run/checkpoints/step_000100/
        config.json            how to rebuild the model and its noise process (format_version, model, diffusion, data)
        model.safetensors      raw weights
        ema.safetensors        EMA weights (what sampling uses when present)
        training_state.json    optimizer, LR scheduler, RNG and step (training checkpoints only): plain JSON ...
        training_state.safetensors   ... whose tensors are stored here

A directory is written under a temporary sibling name and renamed into place only when complete, so a crash at
any moment leaves either the previous checkpoint or the new one, never half of one.

Nothing in a checkpoint can run code when it is loaded: weights and state tensors are safetensors, everything
else is JSON. Training states of earlier versions (``training_state.pt``, a pickle) are read only through
``torch.load(weights_only=True)``, PyTorch's restricted unpickler that builds tensors and plain containers and
refuses anything else, and only on PyTorch 2.6 or later (earlier versions of that unpickler had a known hole).
Weights that hold NaN or infinity are refused on load.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from novelview.diffusion import DiffusionConfig
from novelview.errors import CheckpointError, ConfigError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "training_state.json"
STATE_TENSORS_FILE = "training_state.safetensors"
LEGACY_STATE_FILE = "training_state.pt"
STATE_FORMAT_VERSION = 1
_CHECKPOINT_NAME = re.compile(r"step_\d+")
#: Model fields set by training from the data and the objective rather than chosen (see train.py).
DERIVED_MODEL_FIELDS = ("preset", "image_size", "pose_scale", "near", "far", "self_condition", "learn_variance")
#: Camera statistics the pipeline reads from ``config.json``'s ``data``, with the range each must lie in.
_CAMERA_RANGES = {"radius": (0.0, math.inf), "fov_deg": (0.0, 180.0), "elevation_mean": (-90.0, 90.0)}


@dataclass
class CheckpointConfig:
    """Everything needed to rebuild a model and use it; serialised as ``config.json``."""

    model: dict[str, Any]
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    objective: str = "diffusion"  # or "regression": a one-step predictor sharing the backbone
    # Camera statistics of the training data: the default input camera of the pipeline comes from here.
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    # Sampling defaults measured for this model (e.g. {"guidance": 2.0}); the library's defaults otherwise.
    sampling: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def image_size(self) -> int:
        return int(self.model["image_size"])

    def model_name(self) -> str:
        """The preset the model was built from, with the fields chosen to differ from it: ``xunet-tiny
        (dropout=0.1)``; ``custom <family>`` only for a model no preset describes. Fields training derives from
        the data and the objective (:data:`DERIVED_MODEL_FIELDS`) are not named."""
        from novelview.models.presets import PRESETS, preset_config

        name = self.model.get("preset")
        if name not in PRESETS:
            return f"custom {self.model.get('family', 'model')}"
        try:
            base = preset_config(name, self.image_size).to_dict()
        except (ConfigError, TypeError, ValueError):
            return str(name)
        changed = [f"{k}={json.dumps(v)}" for k, v in sorted(self.model.items())
                   if k not in DERIVED_MODEL_FIELDS and base.get(k, v) != v]
        return f"{name} ({', '.join(changed)})" if changed else str(name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["diffusion"] = self.diffusion.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config.json") -> "CheckpointConfig":
        if not isinstance(data, dict) or not isinstance(data.get("model", {}), dict):
            raise CheckpointError(f"{source}: expected a JSON object with a 'model' object; not a novelview checkpoint")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise CheckpointError(f"{source}: no integer format_version; this is not a novelview checkpoint")
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: checkpoint format {version} is newer than this novelview understands "
                f"({FORMAT_VERSION}); upgrade novelview"
            )
        if "model" not in data or "image_size" not in data["model"]:
            raise CheckpointError(f"{source}: missing the 'model' section with its image_size")
        try:
            diffusion = DiffusionConfig.from_dict(data.get("diffusion", {}))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: bad diffusion settings: {err}") from None
        objective = data.get("objective", "diffusion")
        if objective == "diffusion":
            # The network's extra input/output channels must match what the samplers will feed and read.
            for flag in ("self_condition", "learn_variance"):
                if bool(data["model"].get(flag, False)) != getattr(diffusion, flag):
                    raise CheckpointError(
                        f"{source}: model.{flag} is {bool(data['model'].get(flag, False))} but diffusion.{flag} "
                        f"is {getattr(diffusion, flag)}; the checkpoint is inconsistent"
                    )
            if data["model"].get("render_skip") and diffusion.prediction != "x0":
                raise CheckpointError(f"{source}: model.render_skip needs x0-prediction, not "
                                      f"{diffusion.prediction!r}; the checkpoint is inconsistent")
        return cls(
            model=dict(data["model"]),
            diffusion=diffusion,
            objective=objective,
            data=_camera_data(data.get("data", {}), source),
            training=dict(data.get("training", {})),
            sampling=_sampling_defaults(data.get("sampling", {}), source),
            format_version=version,
        )


def _sampling_defaults(sampling: Any, source: str) -> dict[str, Any]:
    from novelview.sampling import check_guidance

    if sampling is None:
        return {}
    if not isinstance(sampling, dict):
        raise CheckpointError(f"{source}: 'sampling' must be an object such as {{\"guidance\": 2.0}}")
    guidance = sampling.get("guidance")
    if guidance is not None:
        try:
            check_guidance(guidance, "sampling.guidance")
        except ConfigError as err:
            raise CheckpointError(f"{source}: {err}") from None
    return dict(sampling)


def _camera_data(data: Any, source: str) -> dict[str, Any]:
    """The ``data`` section: the camera statistics the pipeline uses must be numbers in their range."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: 'data' must be an object of camera statistics")
    for key, (lo, hi) in _CAMERA_RANGES.items():
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value < hi:
            raise CheckpointError(f"{source}: data.{key} must be a number in ({lo:g}, {hi:g}), got {value!r}")
    return dict(data)


def default_checkpoint_path() -> Path:
    """The shipped default model (``$NOVELVIEW_CHECKPOINT`` overrides it)."""
    env = os.environ.get("NOVELVIEW_CHECKPOINT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "checkpoints" / "default"


def _state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage; contiguous clones also detach from autograd and DDP wrappers.
    return {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: CheckpointConfig,
    ema: nn.Module | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically and return its path. An existing one at ``path`` is replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the checkpoint should get the usual permissions
    try:
        save_file(_state_dict(model), str(tmp / MODEL_FILE))
        if ema is not None:
            save_file(_state_dict(ema), str(tmp / EMA_FILE))
        if training_state is not None:
            _save_training_state(training_state, tmp)
        # config.json last: its presence marks a complete directory for readers that look inside temp dirs.
        with open(tmp / CONFIG_FILE, "w") as f:
            json.dump(config.to_dict(), f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        for name in (MODEL_FILE, EMA_FILE, STATE_FILE, STATE_TENSORS_FILE):
            if (tmp / name).exists():
                with open(tmp / name, "rb") as f:
                    os.fsync(f.fileno())
        if path.exists():
            # Swap: move the old one aside first so `path` never points at a partial directory.
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def resolve_checkpoint(path: str | Path | None) -> Path:
    """Accept a checkpoint directory or a training run directory (its latest checkpoint); None = default."""
    path = Path(path) if path is not None else default_checkpoint_path()
    if (path / CONFIG_FILE).is_file():
        return path
    found = list_checkpoints(path)
    if found:
        return found[-1]
    if not path.exists():
        hint = ""
        if path == default_checkpoint_path():
            hint = "; the shipped default is missing: train one (scripts/train_default.sh) or pass --checkpoint"
        raise CheckpointError(f"{path}: checkpoint not found{hint}")
    raise CheckpointError(f"{path}: neither a checkpoint (no {CONFIG_FILE}) nor a run directory with checkpoints")


def read_config(path: str | Path) -> CheckpointConfig:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: missing {CONFIG_FILE}; not a complete novelview checkpoint")
    try:
        data = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{cfg_file}: unreadable JSON ({err})") from None
    return CheckpointConfig.from_dict(data, source=str(cfg_file))


def build_from_config(config: CheckpointConfig) -> nn.Module:
    from novelview.models.presets import model_from_config_dict

    try:
        return model_from_config_dict(config.model)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"cannot rebuild the model from config.json: {err}") from None


def load_weights(path: Path, filename: str) -> dict[str, torch.Tensor]:
    file = path / filename
    if not file.is_file():
        raise CheckpointError(f"{path}: missing {filename}")
    try:
        state = load_file(str(file))
    except Exception as err:  # safetensors raises several types for truncated or foreign files
        raise CheckpointError(f"{file}: unreadable weights ({err})") from None
    broken = [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if broken:
        raise CheckpointError(
            f"{file}: {len(broken)} of {len(state)} weight tensors hold NaN or infinite values (first: {broken[0]}); "
            "the training diverged before this checkpoint: use an earlier one"
        )
    return state


def load_model(
    path: str | Path | None = None, use_ema: bool = True, device: str | torch.device = "cpu"
) -> tuple[nn.Module, CheckpointConfig]:
    """Rebuild the model of a checkpoint directory (EMA weights when present and ``use_ema``), in eval mode."""
    path = resolve_checkpoint(path)
    config = read_config(path)
    model = build_from_config(config)
    filename = EMA_FILE if use_ema and (path / EMA_FILE).is_file() else MODEL_FILE
    state = load_weights(path, filename)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensor shapes differ from what config.json describes
        detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err))
        raise CheckpointError(f"{path / filename}: weights do not fit the model in config.json ({detail})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path / filename}: weights do not fit the model in config.json "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    return model.to(device).eval(), config


def export_checkpoint(
    src: str | Path,
    dst: str | Path,
    use_ema: bool = True,
    overwrite: bool = False,
    sampling: dict[str, Any] | None = None,
) -> Path:
    """Write an inference-only copy of a checkpoint: its (EMA) weights as ``model.safetensors`` + config.json.

    No optimizer or training state, so it is small enough to ship (the default model in ``checkpoints/``).
    ``dst`` must be new or empty; an existing checkpoint there is replaced only with ``overwrite``, and nothing
    else is ever replaced (not the run being exported, not a folder of other files). ``sampling`` records
    measured sampling defaults (``{"guidance": 2.0}``) that the pipeline then uses.
    """
    source = resolve_checkpoint(src)
    _check_export_target([Path(src), source], Path(dst), overwrite)
    src = source
    model, config = load_model(src, use_ema=use_ema)
    config.training = {**config.training, "exported_from": src.name, "ema": use_ema and (src / EMA_FILE).is_file()}
    config.sampling = _sampling_defaults({**config.sampling, **(sampling or {})}, "sampling defaults")
    return save_checkpoint(dst, model, config)


def _check_export_target(sources: list[Path], dst: Path, overwrite: bool) -> None:
    target = dst.resolve()
    for source in sources:
        source = source.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise CheckpointError(f"--out {dst}: would replace {source}, which is being exported; choose a new folder")
    if dst.exists() and not dst.is_dir():
        raise CheckpointError(f"--out {dst}: exists and is not a directory")
    if dst.is_dir() and any(dst.iterdir()):
        # Only an inference checkpoint (what export writes) may be replaced: a training checkpoint would lose
        # its optimizer state, and a folder that merely holds a config.json is somebody else's.
        names = {p.name for p in dst.iterdir()}
        if not names <= {CONFIG_FILE, MODEL_FILE, EMA_FILE} or CONFIG_FILE not in names:
            raise CheckpointError(f"--out {dst}: a non-empty folder that is not an exported checkpoint; choose a "
                                  "new folder")
        read_config(dst)
        if not overwrite:
            raise CheckpointError(f"--out {dst}: a checkpoint is already there; pass --overwrite to replace it")


def load_training_state(path: str | Path) -> dict[str, Any]:
    """The ``training_state`` dict a checkpoint was saved with (see the module docstring for what is read how)."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        state = _load_training_state(path)
    elif (path / LEGACY_STATE_FILE).is_file():
        state = _load_legacy_training_state(path / LEGACY_STATE_FILE)
    else:
        raise CheckpointError(f"{path}: no {STATE_FILE}; this checkpoint cannot be resumed")
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path / STATE_FILE}: not a novelview training state")
    return state


def _unreadable(file: Path, err: BaseException) -> CheckpointError:
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    return CheckpointError(f"{file}: unreadable ({detail}); resume from an earlier checkpoint by deleting this one")


def _save_training_state(state: dict[str, Any], directory: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode_state(state, tensors)
    save_file(tensors, str(directory / STATE_TENSORS_FILE))
    with open(directory / STATE_FILE, "w") as f:
        json.dump({"format_version": STATE_FORMAT_VERSION, "state": skeleton}, f)


def _load_training_state(path: Path) -> Any:
    file = path / STATE_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        tensors = load_file(str(path / STATE_TENSORS_FILE))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise _unreadable(file, err) from None
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for truncated or foreign files
        raise _unreadable(path / STATE_TENSORS_FILE, err) from None
    if not isinstance(data, dict) or data.get("format_version") != STATE_FORMAT_VERSION:
        raise CheckpointError(f"{file}: not a novelview training state of format {STATE_FORMAT_VERSION}")
    try:
        return _decode_state(data.get("state"), tensors)
    except (KeyError, TypeError, ValueError) as err:
        raise _unreadable(file, err) from None


def _load_legacy_training_state(file: Path) -> Any:
    version = tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
    if version < (2, 6):
        raise CheckpointError(f"{file}: a training state in the old pickle format, which only PyTorch 2.6 or later "
                              f"reads safely (this is {torch.__version__}); upgrade torch to resume from it")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{file}: refused: this old-format training state holds objects other than tensors "
                              "and plain values, and loading those could run code") from None
    except Exception as err:  # noqa: BLE001 - truncated zips and foreign files alike
        raise _unreadable(file, err) from None


# Tensors go to safetensors under their path in the state; the rest is JSON, with three tagged forms that JSON
# lacks: {"$tensor": key}, {"$tuple": [...]} and {"$dict": [[key, value], ...]} (non-string keys, as the
# optimizer's per-parameter state has).
_TAGS = ("$tensor", "$tuple", "$dict")


def _encode_state(value: Any, tensors: dict[str, torch.Tensor], where: str = "state") -> Any:
    if isinstance(value, torch.Tensor):
        key = f"{len(tensors)}:{where}"  # the counter keeps keys unique whatever the dictionary keys contain
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"$tensor": key}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_encode_state(v, tensors, f"{where}.{i}") for i, v in enumerate(value)]
        return {"$tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        pairs = [(k, _encode_state(v, tensors, f"{where}.{k}")) for k, v in value.items()]
        if all(isinstance(k, str) for k in value) and not any(k in _TAGS for k in value):
            return dict(pairs)
        if not all(k is None or isinstance(k, (bool, int, float, str)) for k in value):
            raise TypeError(f"training state {where}: dictionary keys must be plain values")
        return {"$dict": [list(pair) for pair in pairs]}
    raise TypeError(f"training state {where}: a {type(value).__name__} cannot be stored safely")


def _decode_state(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode_state(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and next(iter(value)) in _TAGS:
        tag, inner = next(iter(value.items()))
        if tag == "$tensor":
            return tensors[inner]
        if tag == "$tuple":
            return tuple(_decode_state(v, tensors) for v in inner)
        return {k: _decode_state(v, tensors) for k, v in inner}
    return {k: _decode_state(v, tensors) for k, v in value.items()}


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint so that a crash midway never leaves a partial directory that looks complete."""
    trash = path.parent / f".{path.name}.trash-{os.getpid()}"
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def remove_partial_checkpoints(run_dir: str | Path) -> None:
    """Delete what killed runs left behind in ``run_dir/checkpoints`` (``.step_N.tmp-*``, ``.step_N.trash-*``).

    Call only while no other process writes checkpoints of this run."""
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for leftover in root.glob(".step_*"):
            if ".tmp-" in leftover.name or ".trash-" in leftover.name:
                shutil.rmtree(leftover, ignore_errors=True)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete training checkpoints of a run, oldest first (temporary directories are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*")
             if _CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir() and (p / CONFIG_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))
