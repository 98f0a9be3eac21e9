"""Fixtures shared by the dataset tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from novelview.data.synthetic import SynthConfig, generate

#: Image size of the shared procedural dataset.
SYNTH_SIZE = 24


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small procedural SRN dataset (3 objects x 6 views, seed 3); read-only, copy it to break it."""
    out = tmp_path_factory.mktemp("synth") / "ds"
    generate(out, SynthConfig(objects=3, views=6, size=SYNTH_SIZE, seed=3), progress=False)
    return out


@pytest.fixture()
def synth_copy(synth_dir: Path, tmp_path: Path) -> Path:
    """A private copy to break."""
    return Path(shutil.copytree(synth_dir, tmp_path / "ds"))
