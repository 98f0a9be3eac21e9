"""Data-parallel training across nodes, simulated on one machine: two single-process "nodes" started by two
torchrun agents that meet at one rendezvous, each in its own working folder with its own copy of the dataset."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from novelview import checkpoint as ckpt

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TRAIN = ["train", "--model", "xunet-tiny", "--size", "16", "--steps", "2", "--batch-size", "4", "--lr", "1e-3",
         "--warmup", "1", "--checkpoint-every", "2", "--sample-every", "0", "--val-every", "1000",
         "--prediction", "v", "--no-self-condition"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "synth"
    subprocess.run([sys.executable, "-m", "novelview.cli", "data", "synth", str(out), "--objects", "8", "--views", "4",
                    "--size", "16", "--seed", "2", "--quiet"], env=ENV, check=True, capture_output=True, timeout=300)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and modification time: what a write would change."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_two_nodes_read_their_own_data_and_only_rank_zero_writes(dataset: Path, tmp_path: Path) -> None:
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    for node in nodes:
        shutil.copytree(dataset, node / "data")  # per-node data; the copy keeps modification times, so its manifest
    before = [_state(node / "data") for node in nodes]  # stays current
    assert all((node / "data" / ".novelview" / "manifest.parquet").is_file() for node in nodes)
    port = _free_port()
    agents = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1",
             "--master_addr=127.0.0.1", f"--master_port={port}",
             "-m", "novelview.cli", *TRAIN, "--data", "data", "--out", "run"],
            cwd=node, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for rank, node in enumerate(nodes)
    ]
    outputs = [agent.communicate(timeout=300) for agent in agents]
    for agent, (_, err) in zip(agents, outputs):
        assert agent.returncode == 0, err[-3000:]
        assert "out of date" not in err  # each rank opened its node's copy through the manifest
    assert [_state(node / "data") for node in nodes] == before  # no rank wrote into the data
    run = nodes[0] / "run"
    assert [c.name for c in ckpt.list_checkpoints(run)] == ["step_0000002"]
    assert (run / "log.jsonl").read_text().count('"step"') >= 2
    assert not (nodes[1] / "run").exists()  # rank 1 writes no checkpoint, log or sample

    single = tmp_path / "single"
    proc = subprocess.run([sys.executable, "-m", "novelview.cli", *TRAIN, "--data", str(dataset), "--out", str(single)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(str(ckpt.list_checkpoints(single)[-1] / ckpt.MODEL_FILE))
    b = load_file(str(ckpt.list_checkpoints(run)[-1] / ckpt.MODEL_FILE))
    for key in a:  # the two nodes computed the update of one process with the same global batch
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=f"parameter {key} differs")
