"""Checkpoint directories: ``config.json`` + safetensors weights (+ training state), written atomically.

Layout::

    run/checkpoints/step_000100/
        config.json            how to rebuild the model and its noise process (format_version, model, diffusion, data)
        model.safetensors      raw weights
        ema.safetensors        EMA weights (what sampling uses when present)
        training_state.pt      optimizer, LR scheduler, RNG and data-order state (training checkpoints only)

A directory is written under a temporary sibling name and renamed into place only when complete, so a crash at
any moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from novelview.diffusion import DiffusionConfig
from novelview.errors import CheckpointError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "training_state.pt"


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
        return cls(
            model=dict(data["model"]),
            diffusion=diffusion,
            objective=objective,
            data=dict(data.get("data", {})),
            training=dict(data.get("training", {})),
            sampling=_sampling_defaults(data.get("sampling", {}), source),
            format_version=version,
        )


def _sampling_defaults(sampling: Any, source: str) -> dict[str, Any]:
    if sampling is None:
        return {}
    if not isinstance(sampling, dict):
        raise CheckpointError(f"{source}: 'sampling' must be an object such as {{\"guidance\": 2.0}}")
    guidance = sampling.get("guidance")
    if guidance is not None and not (isinstance(guidance, (int, float)) and 0 <= guidance < math.inf):
        raise CheckpointError(f"{source}: sampling.guidance must be a number >= 0, got {guidance!r}")
    return dict(sampling)


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
            torch.save(training_state, tmp / STATE_FILE)
        # config.json last: its presence marks a complete directory for readers that look inside temp dirs.
        with open(tmp / CONFIG_FILE, "w") as f:
            json.dump(config.to_dict(), f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        for name in (MODEL_FILE, EMA_FILE, STATE_FILE):
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
        data = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
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
        return load_file(str(file))
    except Exception as err:  # safetensors raises several types for truncated or foreign files
        raise CheckpointError(f"{file}: unreadable weights ({err})") from None


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
    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"{path}: no {STATE_FILE}; this checkpoint cannot be resumed")
    try:
        state = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated zip, foreign pickle, missing classes: all mean "not our state"
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{file}: unreadable ({detail}); resume from an earlier checkpoint by deleting this "
                              "one") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{file}: not a novelview training state")
    return state


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
    found = [p for p in root.glob("step_*") if p.is_dir() and (p / CONFIG_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))
