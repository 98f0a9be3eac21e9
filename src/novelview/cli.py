"""`novelview` command line: a thin shell over the Python API.

Every command imports what it needs lazily so ``novelview --help`` stays fast. User errors
(:class:`novelview.errors.NovelviewError`) are printed as one line on stderr with exit code 2, no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from novelview.errors import ConfigError, NovelviewError

app = typer.Typer(
    help="Single-image novel view synthesis with pose-conditional diffusion models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Make, inspect and render multi-view datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# ============================================================== data (issue: foundation)


# ============================================================== models (issue: backbones)


# ============================================================== train


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Dataset directory (any supported format)."),
    out: Path = typer.Option(..., "--out", help="Run directory: checkpoints, logs, samples."),
    model: str = typer.Option("xunet-tiny", "--model", help="Model preset (see `novelview models`)."),
    size: int = typer.Option(32, "--size", help="Image size the model works at."),
    steps: int = typer.Option(10_000, "--steps", help="Total optimizer steps."),
    batch_size: int = typer.Option(32, "--batch-size", help="Global batch, split across processes."),
    lr: float = typer.Option(2e-4, "--lr", help="Peak AdamW learning rate."),
    warmup: int = typer.Option(200, "--warmup", help="Linear warm-up steps."),
    weight_decay: float = typer.Option(0.0, "--weight-decay"),
    grad_clip: float = typer.Option(1.0, "--grad-clip"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 or bf16 (autocast; also on CPU)."),
    ema_decay: float = typer.Option(0.999, "--ema-decay"),
    objective: str = typer.Option("diffusion", "--objective", help="diffusion, or regression (deterministic baseline)."),
    prediction: str = typer.Option("v", "--prediction", help="v, eps or x0 parameterisation."),
    min_snr_gamma: Optional[float] = typer.Option(None, "--min-snr-gamma", help="Min-SNR-gamma loss weighting."),
    schedule_shift: float = typer.Option(0.0, "--schedule-shift", help="Added to the cosine logSNR."),
    learn_variance: bool = typer.Option(False, "--learn-variance", help="Learned variance + hybrid MSE/KL loss."),
    cond_drop: float = typer.Option(0.1, "--cond-drop", help="Condition dropout for classifier-free guidance."),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes."),
    checkpoint_every: int = typer.Option(1000, "--checkpoint-every"),
    keep: int = typer.Option(3, "--keep", help="Training checkpoints to keep."),
    val_every: int = typer.Option(500, "--val-every"),
    sample_every: int = typer.Option(1000, "--sample-every", help="Write a sample grid every N steps (0: never)."),
    override: list[str] = typer.Option([], "--override", help="Model config override KEY=VALUE (JSON value)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
) -> None:
    """Train a model (one process, or many under torchrun / accelerate launch)."""
    import json

    from novelview.diffusion import DiffusionConfig
    from novelview.train import TrainConfig
    from novelview.train import train as run_training

    overrides = {}
    for item in override:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--override expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    try:
        diffusion = DiffusionConfig(
            prediction=prediction,
            min_snr_gamma=min_snr_gamma,
            schedule_shift=schedule_shift,
            learn_variance=learn_variance,
            cond_drop_prob=cond_drop,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    cfg = TrainConfig(
        data=str(data), out=str(out), model=model, model_overrides=overrides, image_size=size,
        objective=objective, diffusion=diffusion, steps=steps, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup, grad_clip=grad_clip, precision=precision,
        ema_decay=ema_decay, seed=seed, num_workers=workers, checkpoint_every=checkpoint_every,
        keep_checkpoints=keep, val_every=val_every, sample_every=sample_every,
    )
    result = run_training(cfg, resume=resume)
    typer.echo(f"final loss {result.final_loss:.4f}; checkpoint {result.final_checkpoint}")


# ============================================================== sample / orbit


# ============================================================== eval


# ============================================================== serve


# ============================================================== demo


# ============================================================== render (data render)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, standalone_mode=True)
    except NovelviewError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
