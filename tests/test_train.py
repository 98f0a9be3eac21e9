"""Training: multi-process equality, exact resume, crash safety, end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from novelview import checkpoint as ckpt
from novelview.errors import ConfigError, NovelviewError
from novelview.train import TrainConfig, load_optimizer_state, lr_factor, make_objective, make_optimizer, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "novelview.cli", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"novelview {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "synth"
    _cli("data", "synth", str(out), "--objects", "12", "--views", "6", "--size", "32", "--seed", "3")
    return out


def _cfg(dataset: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(dataset), out=str(out), model="xunet-tiny", image_size=16, steps=4, batch_size=4, lr=1e-3,
        warmup_steps=2, checkpoint_every=2, log_every=1, val_every=1000, sample_every=0, progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def _weights(run: Path, name: str = ckpt.MODEL_FILE) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.list_checkpoints(run)[-1] / name))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=1e-4, msg=f"parameter {key} differs")


def test_resume_equals_uninterrupted_run(dataset: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    train(_cfg(dataset, straight, steps=6, checkpoint_every=3))
    split = tmp_path / "split"
    train(_cfg(dataset, split, steps=3, checkpoint_every=3))
    train(_cfg(dataset, split, steps=6, checkpoint_every=3), resume=True)
    _assert_same(_weights(straight), _weights(split), atol=1e-6)
    _assert_same(_weights(straight, ckpt.EMA_FILE), _weights(split, ckpt.EMA_FILE), atol=1e-6)
    steps = [json.loads(line)["step"] for line in (split / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == 6


def test_a_3d_aware_run_with_the_render_loss_resumes_exactly(dataset: Path, tmp_path: Path) -> None:
    from novelview.diffusion import DiffusionConfig

    recipe = dict(model="dit-tiny-3d", diffusion=DiffusionConfig(prediction="x0", self_condition=True,
                                                                 render_weight=1.0))
    straight = tmp_path / "straight"
    train(_cfg(dataset, straight, steps=4, checkpoint_every=2, **recipe))
    split = tmp_path / "split"
    train(_cfg(dataset, split, steps=2, checkpoint_every=2, **recipe))
    train(_cfg(dataset, split, steps=4, checkpoint_every=2, **recipe), resume=True)
    _assert_same(_weights(straight), _weights(split), atol=1e-6)
    log = [json.loads(line) for line in (split / "log.jsonl").read_text().splitlines()]
    assert all(record["render"] > 0 for record in log if "render" in record)


def test_lr_schedule_warms_up_holds_then_decays_to_zero(dataset: Path, tmp_path: Path) -> None:
    cfg = _cfg(dataset, tmp_path, steps=100, warmup_steps=10, decay_steps=40)
    factors = [lr_factor(step, cfg) for step in range(cfg.steps)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0
    assert all(f == 1.0 for f in factors[10:60])
    decay = factors[60:]
    assert all(a > b for a, b in zip(decay, decay[1:])) and decay[-1] == pytest.approx(1 / 40)
    constant = _cfg(dataset, tmp_path, steps=100, warmup_steps=10)
    assert [lr_factor(step, constant) for step in range(10, 100)] == [1.0] * 90
    with pytest.raises(ConfigError, match="--decay-steps"):
        _cfg(dataset, tmp_path, steps=10, decay_steps=11)


def test_cooling_down_a_constant_run_equals_the_uninterrupted_schedule(dataset: Path, tmp_path: Path) -> None:
    """A finished constant-LR run resumed with more steps and a decay ends where one run with that schedule does,
    so the shipped model's cool-down needs no retraining from scratch."""
    straight = tmp_path / "straight"
    train(_cfg(dataset, straight, steps=6, checkpoint_every=3, decay_steps=3))
    cooled = tmp_path / "cooled"
    train(_cfg(dataset, cooled, steps=3, checkpoint_every=3))
    train(_cfg(dataset, cooled, steps=6, checkpoint_every=3, decay_steps=3), resume=True)
    _assert_same(_weights(straight), _weights(cooled), atol=1e-6)
    records = [json.loads(line) for line in (cooled / "log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if "lr" in r]
    assert lrs[-1] == 0.0 and lrs[2] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "model, extra",
    # 3DiM's recipe, and the default one: DiT + self-conditioning, whose gradient-free estimate pass must stay out
    # of DDP's collectives (DiT has a buffer, which DDP would broadcast on every wrapped forward) although
    # ranks pick different samples.
    [("xunet-tiny", ["--prediction", "v", "--no-self-condition"]), ("dit-tiny", [])],
)
def test_two_processes_match_one_process(dataset: Path, tmp_path: Path, model: str, extra: list[str]) -> None:
    common = [
        "train", "--data", str(dataset), "--model", model, "--size", "16", "--steps", "3",
        "--batch-size", "4", "--lr", "1e-3", "--warmup", "1", "--checkpoint-every", "3", "--sample-every", "0",
        "--val-every", "1000", *extra,
    ]
    single = tmp_path / "single"
    _cli(*common, "--out", str(single))
    multi = tmp_path / "multi"
    proc = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "novelview.cli", *common, "--out", str(multi),
        ],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One checkpoint written (rank 0 only), equal to the single-process run up to float reassociation.
    _assert_same(_weights(single), _weights(multi), atol=2e-5)


def test_two_processes_end_with_identical_parameters(dataset: Path, tmp_path: Path) -> None:
    """Each rank dumps its own parameters: DDP must keep them bit-identical (the 3DiM reference's bug)."""
    script = tmp_path / "rank_dump.py"
    script.write_text(
        "import os, sys, torch\n"
        "from novelview.train import TrainConfig, lr_factor, train\n"
        f"cfg = TrainConfig(data={str(dataset)!r}, out=sys.argv[1], model='xunet-tiny', image_size=16, steps=3,"
        " batch_size=4,"
        " lr=1e-3, checkpoint_every=3, sample_every=0, val_every=1000, progress=False)\n"
        "res = train(cfg)\n"
        "torch.save(res.model.state_dict(), sys.argv[1] + f\"/rank{os.environ['RANK']}.pt\")\n"
    )
    out = tmp_path / "ranks"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(out / "rank0.pt")
    r1 = torch.load(out / "rank1.pt")
    initial = _fresh_weights()
    assert any(not torch.equal(r0[k], initial[k]) for k in r0), "training changed nothing"
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"ranks disagree on {key}"


def _fresh_weights() -> dict[str, torch.Tensor]:
    from novelview.models.presets import build_model

    torch.manual_seed(0)
    return build_model("xunet-tiny", 16).state_dict()


def test_sigkill_during_checkpointing_leaves_a_loadable_checkpoint(dataset: Path, tmp_path: Path) -> None:
    """Checkpoint at every step, SIGKILL at arbitrary moments, resume, repeat: the latest is always loadable."""
    run = tmp_path / "killed"

    def launch(resume: bool) -> subprocess.Popen:
        args = [
            sys.executable, "-m", "novelview.cli", "train", "--data", str(dataset), "--out", str(run),
            "--size", "16", "--steps", "100000", "--batch-size", "2", "--checkpoint-every", "1", "--keep", "2",
            "--sample-every", "0", "--val-every", "100000", *(["--resume"] if resume else []),
        ]
        return subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    last_step = 0
    for cycle, delay in enumerate((0.05, 0.13, 0.29)):
        proc = launch(resume=cycle > 0)
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                found = ckpt.list_checkpoints(run)
                if found and int(found[-1].name.split("_")[1]) >= last_step + 2:
                    break
                time.sleep(0.02)
            time.sleep(delay)  # now it is somewhere inside a step or a checkpoint write
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        latest = ckpt.list_checkpoints(run)[-1]
        model, config = ckpt.load_model(latest)
        assert config.image_size == 16
        state = ckpt.load_training_state(latest)
        assert state["step"] == int(latest.name.split("_")[1]) > last_step
        last_step = state["step"]


def test_end_to_end_loss_falls_and_checkpoint_samples(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "e2e"
    result = train(_cfg(dataset, run, steps=60, batch_size=8, lr=2e-3, checkpoint_every=60, sample_every=60,
                        val_every=30, warmup_steps=5))
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:5]) / 5, losses
    assert any("val_loss" in r for r in records)
    assert (run / "loss.png").stat().st_size > 0
    assert (run / "samples" / "step_0000060.png").is_file()
    from novelview.pipeline import Pipeline
    from novelview.sampling import SamplingSettings

    pipe = Pipeline.from_checkpoint(result.final_checkpoint)
    image = Path(dataset).glob("*/rgb/000000.png").__next__()
    views = pipe.synthesize(image, azimuth=90.0, elevation=0.0, settings=SamplingSettings(steps=5))
    assert views[0].size == (16, 16)


def test_bad_input_writes_nothing(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match="xunet-huge"):
        train(_cfg(dataset, out, model="xunet-huge"))
    with pytest.raises(NovelviewError, match="nope"):
        train(_cfg(tmp_path / "nope", out))
    with pytest.raises(ConfigError, match="lr"):
        _cfg(dataset, out, lr=-1)
    assert not out.exists()
    proc = _cli("train", "--data", str(dataset), "--out", str(out), "--model", "xunet-huge", check=False)
    assert proc.returncode != 0 and "xunet-huge" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_resume_with_other_image_size_is_refused(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    train(_cfg(dataset, run, steps=2, checkpoint_every=2))
    with pytest.raises(ConfigError, match="image_size"):
        train(_cfg(dataset, run, steps=4, image_size=32), resume=True)


def test_nonfinite_loss_is_skipped_then_stops_with_clear_message(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "nan"
    cfg = _cfg(dataset, run, steps=50, checkpoint_every=2, max_nonfinite=3)
    real_loss = make_objective(cfg)

    def loss_turning_nan(model, batch, step):
        out = real_loss(model, batch, step)
        if step >= 2:  # two good steps (one checkpoint), then a diverged run
            out["loss"] = out["loss"] * float("nan")
        return out

    with pytest.raises(NovelviewError, match="NaN/inf 3 steps in a row"):
        train(cfg, loss_fn=loss_turning_nan)
    weights = _weights(run)
    assert all(torch.isfinite(v).all() for v in weights.values()), "NaN reached the saved weights"


def test_export_writes_small_inference_checkpoint_with_ema_weights(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(dataset, run, steps=2, checkpoint_every=2))
    out = tmp_path / "shipped"
    _cli("export", "--checkpoint", str(run), "--out", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    _assert_same(load_file(str(out / "model.safetensors")), _weights(run, ckpt.EMA_FILE), atol=0)
    model, config = ckpt.load_model(out)
    assert config.training["ema"] is True and config.image_size == 16
    # Never replaces what it should not: the run being exported, a folder of other files, or (without
    # --overwrite) an earlier export.
    before = sorted(str(p) for p in run.rglob("*"))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("precious")
    (notes / "config.json").write_text("{}")  # a common name: not enough to count as a checkpoint
    other_run = tmp_path / "other"
    train(_cfg(dataset, other_run, steps=2, checkpoint_every=2))
    for target, words in [(run, "being exported"), (run / "checkpoints" / "x", "being exported"),
                          (notes, "not an exported checkpoint"), (out, "--overwrite"),
                          (ckpt.list_checkpoints(other_run)[-1], "not an exported checkpoint")]:
        forced = [] if target == out else ["--overwrite"]  # even --overwrite replaces only an exported checkpoint
        proc = _cli("export", "--checkpoint", str(run), "--out", str(target), *forced, check=False)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(str(p) for p in run.rglob("*")) == before and (notes / "thesis.tex").read_text() == "precious"
    _cli("export", "--checkpoint", str(run), "--out", str(out), "--overwrite")


def test_resume_with_other_objective_settings_is_refused(dataset: Path, tmp_path: Path) -> None:
    from novelview.diffusion import DiffusionConfig

    run = tmp_path / "r2"
    train(_cfg(dataset, run, steps=2, checkpoint_every=2))
    with pytest.raises(ConfigError, match="diffusion"):
        train(_cfg(dataset, run, steps=4, diffusion=DiffusionConfig(prediction="eps")), resume=True)
    # a regression run has no diffusion settings to keep: changed defaults must not block its resumption
    reg = tmp_path / "reg"
    train(_cfg(dataset, reg, steps=2, checkpoint_every=2, objective="regression",
               diffusion=DiffusionConfig(prediction="v")))
    train(_cfg(dataset, reg, steps=3, checkpoint_every=3, objective="regression",
               diffusion=DiffusionConfig(prediction="x0", self_condition=True)), resume=True)
    assert ckpt.list_checkpoints(reg)[-1].name.endswith("3")
    with pytest.raises(ConfigError, match="regression_loss"):
        train(_cfg(dataset, reg, steps=4, objective="regression", regression_loss="l1"), resume=True)


def test_skipped_last_step_still_writes_the_final_checkpoint(dataset: Path, tmp_path: Path) -> None:
    cfg = _cfg(dataset, tmp_path / "s", steps=3, checkpoint_every=100)
    real_loss = make_objective(cfg)

    def nan_on_last_step(model, batch, step):
        out = real_loss(model, batch, step)
        if step == 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    result = train(cfg, loss_fn=nan_on_last_step)
    assert result.final_checkpoint.name == "step_0000003" and result.nonfinite_steps == 1


def test_resumed_optimizer_keeps_the_fused_implementation() -> None:
    """A state saved by a foreach AdamW (checkpoints from before the fused one) resumes with the same moments
    and step count, on the fused path."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    old = torch.optim.AdamW(params, lr=1e-3, foreach=True)
    for p in params:
        p.grad = torch.randn_like(p)
    old.step()
    resumed = make_optimizer(params, lr=1e-3, weight_decay=0.0)
    load_optimizer_state(resumed, old.state_dict())
    assert resumed.param_groups[0]["fused"] and not resumed.param_groups[0]["foreach"]
    assert torch.equal(resumed.state[params[0]]["exp_avg"], old.state[params[0]]["exp_avg"])
    assert float(resumed.state[params[1]]["step"]) == 1.0
    resumed.step()  # the fused kernel accepts the restored state


def test_resume_problems_are_named(dataset: Path, tmp_path: Path) -> None:
    """--val-every 0 means never; resuming a finished run or an unreadable state says so."""
    run = tmp_path / "done"
    train(_cfg(dataset, run, steps=2, val_every=0))
    with pytest.raises(ConfigError, match="already at step 2"):
        train(_cfg(dataset, run, steps=2, val_every=0), resume=True)
    state = ckpt.list_checkpoints(run)[-1] / ckpt.STATE_FILE
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(NovelviewError, match="unreadable"):
        train(_cfg(dataset, run, steps=4, val_every=0), resume=True)
    with pytest.raises(ConfigError, match="hidden"):
        train(_cfg(dataset, tmp_path / "o", model="dit-tiny", model_overrides={"hidden": "wide"}))
    assert not (tmp_path / "o").exists()


def test_a_new_run_that_fails_early_leaves_nothing_and_leftovers_are_cleaned(dataset: Path, tmp_path: Path) -> None:
    def unreadable_batch(model, batch, step):
        raise NovelviewError("obj_00003/rgb/000002.png: not a readable image")

    with pytest.raises(NovelviewError, match="not a readable image"):
        train(_cfg(dataset, tmp_path / "fresh"), loss_fn=unreadable_batch)
    assert not (tmp_path / "fresh").exists()
    # Once a step has run, the folder and its log stay (they diagnose the failure); a killed save's temporary
    # folder goes on resume.
    cfg = _cfg(dataset, tmp_path / "interrupted", checkpoint_every=100)
    real_loss = make_objective(cfg)

    def fails_at_step_two(model, batch, step):
        if step == 1:
            raise KeyboardInterrupt
        return real_loss(model, batch, step)

    with pytest.raises(KeyboardInterrupt):
        train(cfg, loss_fn=fails_at_step_two)
    assert (tmp_path / "interrupted" / "train_config.json").exists()
    run = tmp_path / "kept"
    train(_cfg(dataset, run, steps=2))
    leftover = run / "checkpoints" / ".step_0000004.tmp-abc123"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    config = ckpt.list_checkpoints(run)[-1] / ckpt.CONFIG_FILE
    saved = json.loads(config.read_text())
    saved["model"]["pose_scale"] = 1.75  # as if the dataset's statistics had been computed otherwise
    config.write_text(json.dumps(saved))
    result = train(_cfg(dataset, run, steps=4), resume=True)
    assert not leftover.exists() and [p.name for p in ckpt.list_checkpoints(run)][-1] == "step_0000004"
    assert result.model.config.pose_scale == 1.75  # a resumed model keeps the scale its weights learned


def test_warm_up_scales_with_the_run_and_a_resumed_run_keeps_it(dataset: Path, tmp_path: Path) -> None:
    """A short run reaches its learning rate (the default warm-up is 5 % of the run, at most 200 steps), and a
    resumed run with more --steps keeps the warm-up it started with."""
    short = TrainConfig(data="d", out="o", steps=40)
    assert lr_factor(1, short) == 1.0 and lr_factor(0, short) == 0.5  # 2 warm-up steps
    assert lr_factor(199, TrainConfig(data="d", out="o", steps=12_000)) == 1.0
    assert lr_factor(99, TrainConfig(data="d", out="o", steps=12_000)) == 0.5
    run = tmp_path / "w"
    train(_cfg(dataset, run, steps=20, warmup_steps=None, checkpoint_every=20))
    train(_cfg(dataset, run, steps=40, warmup_steps=None, checkpoint_every=20), resume=True)
    settings = json.loads((ckpt.list_checkpoints(run)[-1] / ckpt.CONFIG_FILE).read_text())["training"]
    assert settings["warmup_steps"] == 1  # 5 % of the first run's 20 steps, not of 40


def test_a_corrupt_view_in_the_validation_split_fails_before_the_first_step(dataset: Path, tmp_path: Path) -> None:
    import shutil

    from novelview.data.views import MultiViewDataset

    broken = Path(shutil.copytree(dataset, tmp_path / "broken"))
    shutil.rmtree(broken / ".novelview", ignore_errors=True)  # the manifest describes the intact folder
    val = MultiViewDataset(broken, size=16, split="val")
    victim = val.scenes[0].image_paths[2]
    victim.write_bytes(victim.read_bytes()[:60])  # a truncated PNG: its header still reads
    calls = {"n": 0}

    def counting(model, batch, step):
        calls["n"] += 1
        raise AssertionError("training must not start")

    with pytest.raises(NovelviewError, match=str(victim.name)):
        train(_cfg(broken, tmp_path / "run"), loss_fn=counting)
    assert calls["n"] == 0 and not (tmp_path / "run").exists()


def test_fine_tuning_starts_from_the_pretrained_weights_and_lowers_the_loss(dataset: Path, tmp_path: Path) -> None:
    """--init: the first step's loss is the pretrained model's loss on that batch, the model and objective come
    from the checkpoint (whatever --model says), and training on the new data lowers the loss."""
    from novelview.diffusion import DiffusionConfig
    from novelview.train import make_objective

    pretrained = tmp_path / "pre"
    train(_cfg(dataset, pretrained, model="dit-tiny", steps=6, checkpoint_every=6,
               diffusion=DiffusionConfig(prediction="x0", self_condition=True)))
    model, _ = ckpt.load_model(pretrained)
    cfg = _cfg(dataset, tmp_path / "tuned", model="xunet-tiny", steps=30, init=str(pretrained), lr=3e-3,
               checkpoint_every=30, warmup_steps=0)
    objective = make_objective(dataclasses.replace(cfg, diffusion=DiffusionConfig(prediction="x0",
                                                                                   self_condition=True)))
    seen: list[tuple[float, float]] = []

    def recording(trained, batch, step):
        losses = objective(trained, batch, step)
        if step == 0:
            with torch.no_grad():
                seen.append((losses["loss"].item(), objective(model.train(), batch, 0)["loss"].item()))
        return losses

    result = train(cfg, loss_fn=recording)
    assert seen[0][0] == pytest.approx(seen[0][1], rel=1e-5)
    with pytest.raises(ConfigError, match="--objective diffusion"):
        train(dataclasses.replace(cfg, out=str(tmp_path / "r"), objective="regression"))
    assert result.model.config.family == "dit"  # the checkpoint's model, not --model
    log = [json.loads(line) for line in result.log_file.read_text().splitlines() if '"loss"' in line]
    assert sum(r["loss"] for r in log[-5:]) < sum(r["loss"] for r in log[:5])
