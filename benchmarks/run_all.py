"""Run every benchmark in turn (`make bench`). Each writes benchmarks/results/<name>.json; copy the figures,
with the machine description, into docs/benchmarks.md. Run on a quiet machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["synth.py", "models.py", "xunet_width.py", "train.py", "sample.py", "spacing.py", "serve_load.py"]

if __name__ == "__main__":
    failed = [s for s in SCRIPTS if subprocess.call([sys.executable, str(HERE / s)]) != 0]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")
