"""Careless and hostile input to the CLI and the library: run folders that try to run code, weights and settings
that would produce black pictures, files that are not what they claim, work without bounds, and leftovers of
killed processes. Each ends in one `error:` line (exit 2) or is cleaned up; the server's side is in
test_serve_safety.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from novelview import checkpoint as ckpt
from novelview.data.atomic import held_directory, remove_stale
from novelview.data.synthetic import SynthConfig, generate
from novelview.errors import CheckpointError
from novelview.models.presets import build_model

from test_cli_sample import assert_user_error, run  # same directory; pytest puts it on sys.path

SIZE = 16
SRC = Path(__file__).resolve().parents[1] / "src"




@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("xunet-tiny", SIZE)
    return ckpt.save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", model,
                                ckpt.CheckpointConfig(model=model.config.to_dict()))


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "in.png"
    Image.new("RGB", (24, 20), (200, 40, 40)).save(path)
    return path


def copy_checkpoint(src: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(src, dst))


# ---------------------------------------------------------------------------------------------------------
# training state: JSON + safetensors, never a pickle
# ---------------------------------------------------------------------------------------------------------


def test_training_state_round_trips_exactly_without_pickle(checkpoint: Path, tmp_path: Path) -> None:
    model = build_model("xunet-tiny", SIZE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    state = {"step": 7, "optimizer": optimizer.state_dict(), "ema": OrderedDict(w=torch.arange(3.0)),
             "torch_rng": torch.get_rng_state(), "cuda_rng": None, "nonfinite_total": 2,
             "odd": {"$tensor": (1, 2.5, float("inf")), 3: "x"}}
    path = ckpt.save_checkpoint(tmp_path / "c", model, ckpt.CheckpointConfig(model=model.config.to_dict()),
                                training_state=state)
    assert {p.name for p in path.iterdir()} == {"config.json", "model.safetensors", "training_state.json",
                                                "training_state.safetensors"}
    json.loads((path / "training_state.json").read_text())  # plain JSON
    back = ckpt.load_training_state(path)
    assert back["step"] == 7 and back["nonfinite_total"] == 2 and back["cuda_rng"] is None
    assert back["odd"] == {"$tensor": (1, 2.5, float("inf")), 3: "x"}
    assert torch.equal(back["torch_rng"], state["torch_rng"]) and torch.equal(back["ema"]["w"], torch.arange(3.0))
    saved = state["optimizer"]
    assert back["optimizer"]["param_groups"] == saved["param_groups"]  # tuples (betas) stay tuples
    for index, entry in saved["state"].items():  # integer keys stay integers
        for key, value in entry.items():
            assert torch.equal(back["optimizer"]["state"][index][key], value)
    with pytest.raises(TypeError, match="cannot be stored safely"):
        ckpt.save_checkpoint(tmp_path / "d", model, ckpt.CheckpointConfig(model=model.config.to_dict()),
                             training_state={"step": 1, "f": print})
    assert not (tmp_path / "d").exists()


TRAIN = ("train", "--model", "xunet-tiny", "--size", SIZE, "--batch-size", 4, "--checkpoint-every", 2,
         "--val-every", 0, "--sample-every", 0)


def test_a_planted_pickle_in_a_run_folder_does_not_run_on_resume(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    generate(data, SynthConfig(objects=4, views=4, size=SIZE, seed=0), progress=False)
    run_dir = tmp_path / "run"
    assert run(*TRAIN, "--data", data, "--out", run_dir, "--steps", 2) == 0
    latest = ckpt.list_checkpoints(run_dir)[-1]
    state = ckpt.load_training_state(latest)
    # A training state of an earlier version (a pickle of tensors and plain values) still resumes ...
    for name in ("training_state.json", "training_state.safetensors"):
        (latest / name).unlink()
    torch.save(state, latest / "training_state.pt")
    assert ckpt.load_training_state(latest)["step"] == 2
    # ... but one that asks to build anything else is refused before it can run.
    marker = tmp_path / "planted-code-ran"

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({**state, "step": Planted()}, latest / "training_state.pt")
    capsys.readouterr()
    code = run(*TRAIN, "--data", data, "--out", run_dir, "--steps", 4, "--resume")
    assert_user_error(capsys, code, "refused", "could run code")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        ckpt.load_training_state(latest)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------
# weights and settings that would give black pictures
# ---------------------------------------------------------------------------------------------------------


def test_nan_weights_and_absurd_guidance_are_assert_user_error(checkpoint: Path, picture: Path, tmp_path: Path,
                                                           capsys) -> None:
    sample = ("sample", "--image", picture, "--azimuth", 30, "--steps", 1, "--device", "cpu")
    code = run(*sample, "--checkpoint", checkpoint, "--guidance", "1e30", "--out", tmp_path / "g.png")
    assert_user_error(capsys, code, "guidance", "[0, 20]")
    code = run("export", "--checkpoint", checkpoint, "--out", tmp_path / "e", "--guidance", "1e30")
    assert_user_error(capsys, code, "guidance")

    nan = copy_checkpoint(checkpoint, tmp_path / "nan")
    weights = load_file(str(nan / "model.safetensors"))
    weights[sorted(weights)[3]].view(-1)[0] = float("nan")
    save_file(weights, str(nan / "model.safetensors"))
    code = run(*sample, "--checkpoint", nan, "--out", tmp_path / "n.png")
    assert_user_error(capsys, code, "NaN or infinite", sorted(weights)[3])

    huge = copy_checkpoint(checkpoint, tmp_path / "huge")
    weights = load_file(str(huge / "model.safetensors"))
    save_file({k: v * 1e30 if v.is_floating_point() else v for k, v in weights.items()},
              str(huge / "model.safetensors"))
    code = run(*sample, "--checkpoint", huge, "--out", tmp_path / "h.png")
    assert_user_error(capsys, code, "NaN or infinite values instead of an image")
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*tmp*"))


# ---------------------------------------------------------------------------------------------------------
# files that are not what they claim
# ---------------------------------------------------------------------------------------------------------


def edit_config(path: Path, edit) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def test_broken_checkpoint_files_are_assert_user_error(checkpoint: Path, picture: Path, tmp_path: Path, capsys) -> None:
    sample = ("sample", "--image", picture, "--azimuth", 30, "--steps", 1, "--out", tmp_path / "o.png")
    latin = copy_checkpoint(checkpoint, tmp_path / "latin")
    (latin / "config.json").write_bytes((latin / "config.json").read_bytes().replace(b'"model"', b'"mod\xe9l"', 1))
    assert_user_error(capsys, run(*sample, "--checkpoint", latin), "config.json", "unreadable")

    wide = copy_checkpoint(checkpoint, tmp_path / "wide")
    edit_config(wide, lambda c: c.update(data={"fov_deg": "wide"}))
    assert_user_error(capsys, run(*sample, "--checkpoint", wide), "data.fov_deg", "'wide'")

    huge = copy_checkpoint(checkpoint, tmp_path / "huge")
    edit_config(huge, lambda c: c["model"].update(image_size=100_000))
    t0 = time.monotonic()
    assert_user_error(capsys, run(*sample, "--checkpoint", huge), "image_size", "1024")
    assert time.monotonic() - t0 < 10  # refused up front, nothing allocated

    run_dir = tmp_path / "run"
    copy_checkpoint(checkpoint, run_dir / "checkpoints" / "step_final")
    assert_user_error(capsys, run(*sample, "--checkpoint", run_dir), str(run_dir))
    copy_checkpoint(checkpoint, run_dir / "checkpoints" / "step_0000002")
    assert ckpt.list_checkpoints(run_dir) == [run_dir / "checkpoints" / "step_0000002"]
    assert run(*sample, "--checkpoint", run_dir) == 0


def test_absurd_model_sizes_fail_before_any_work(synth_dir: Path, tmp_path: Path, capsys) -> None:
    for override in ("depth=100000000", "hidden=1000000", "image_size=100000"):
        t0 = time.monotonic()
        code = run("train", "--data", synth_dir, "--out", tmp_path / "r", "--model", "dit-tiny",
                   "--override", override, "--steps", 1)
        assert_user_error(capsys, code)
        assert time.monotonic() - t0 < 10 and not (tmp_path / "r").exists()


def test_unreadable_dataset_json_is_assert_user_error(synth_copy: Path, tmp_path: Path, capsys) -> None:
    (synth_copy / "dataset.json").write_bytes(b'{"generator": "novelview \xff\xfe"}')
    code = run("train", "--data", synth_copy, "--out", tmp_path / "r", "--model", "xunet-tiny", "--steps", 1)
    assert_user_error(capsys, code, "dataset.json")


def test_eps_and_other_formats_outside_the_servers_list_are_refused(checkpoint: Path, tmp_path: Path,
                                                                    capsys) -> None:
    from PIL import Image

    eps = tmp_path / "in.png"  # the name does not matter: the content decides
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    tiff = tmp_path / "in.tif"
    Image.new("RGB", (20, 20)).save(tiff)
    for source in (eps, tiff):
        code = run("sample", "--checkpoint", checkpoint, "--image", source, "--azimuth", 30, "--steps", 1,
                   "--out", tmp_path / "o.png")
        assert_user_error(capsys, code, str(source), "PNG, JPEG, WEBP, GIF, BMP")


def test_orbit_views_are_bounded_before_the_model_loads(picture: Path, tmp_path: Path, capsys) -> None:
    code = run("orbit", "--checkpoint", tmp_path / "missing", "--image", picture, "--views", 100_000,
               "--out", tmp_path / "o.gif")
    assert_user_error(capsys, code, "--views 100000", "at most 360")


# ---------------------------------------------------------------------------------------------------------
# leftovers of killed processes
# ---------------------------------------------------------------------------------------------------------


def test_data_synth_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "novelview.cli", "data", "synth", str(out), "--objects", "2000",
                             "--views", "8", "--size", "32", "--quiet"], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(tmp_path.glob("ds.tmp-*/*")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (left,) = tmp_path.glob("ds.tmp-*")

    held = held_directory(tmp_path, "ds.tmp-")  # a live writer's directory is never taken for a leftover
    generate(out, SynthConfig(objects=2, views=2, size=SIZE, seed=0), progress=False)
    assert not left.exists() and held.path.exists() and (out / "dataset.json").is_file()
    assert remove_stale([held.path]) == [] and held.path.exists()
    held.release()
    assert remove_stale([held.path]) == [held.path] and not held.path.exists()
