"""scripts/gpu_check.sh runs unchanged on the CPU (``--device cpu --quick``), so it is known to work before a GPU
is lent to run it for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check"
    proc = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stdout + (out / "log.txt").read_text()[-4000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["ok"] and result["device"] == "cpu" and result["quick"]
    assert all(step["ok"] for step in result["steps"].values()) and len(result["steps"]) == 6
    assert result["environment"]["cuda_available"] is False
    assert result["tests"]["tests"] > 0 and result["tests"]["failed"] == []
    variants = {(r["preset"], r["execution"], r["attention"]) for r in result["models"]["rows"]}
    assert ("dit-tiny", "compiled", "flash") in variants and ("xunet-tiny", "eager", "math") in variants
    assert all(r["train_img_s"] > 0 for r in result["models"]["rows"])
    assert result["training"]["steps"] == 3 and result["training"]["checkpoints"] == ["step_0000003"]
    with Image.open(out / "gpu_check.png") as grid:  # one object: input, 3 generated, 3 ground truth
        assert grid.width > 6 * grid.height
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.png", "log.txt"]
    assert sum(p.stat().st_size for p in out.iterdir()) < 20 * 2**20


def test_gpu_check_refuses_unknown_options(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 2 and "error: unknown option --fast" in proc.stderr
