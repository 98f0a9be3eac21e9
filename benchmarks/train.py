"""Training throughput of the real trainer (data loading, forward, backward, AdamW, EMA) per preset.

For each preset x size x precision it runs `novelview.train.train` for --steps steps on a small procedural
dataset and reports images/s measured over the second half of the run (the first half warms up caches and
the allocator). Prints a table and writes benchmarks/results/train.json.

    python benchmarks/train.py                       # tiny + small presets, 32 and 64 px, fp32 and bf16
    python benchmarks/train.py --presets xunet-tiny --sizes 32 --precisions fp32 --steps 20

Run it on a quiet machine: other processes on the same cores distort the numbers badly.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


from _machine import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parents[1]


def measure(data: Path, preset: str, size: int, precision: str, steps: int, batch: int) -> float:
    from novelview.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            data=str(data), out=str(Path(tmp) / "run"), model=preset, image_size=size, steps=steps,
            batch_size=batch, precision=precision, checkpoint_every=10**9, log_every=steps // 2,
            val_every=10**9, sample_every=0, progress=False,
        )
        result = train(cfg)
        records = [json.loads(line) for line in result.log_file.read_text().splitlines()]
    return [r for r in records if "img_per_s" in r][-1]["img_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="xunet-tiny,dit-tiny,xunet-small,dit-small")
    parser.add_argument("--sizes", default="32,64")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train.json")
    args = parser.parse_args()

    from novelview.data.synthetic import SynthConfig, generate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        generate(data, SynthConfig(objects=16, views=8, size=64, seed=0), progress=False)
        for preset in args.presets.split(","):
            for size in map(int, args.sizes.split(",")):
                for precision in args.precisions.split(","):
                    ips = measure(data, preset, size, precision, args.steps, args.batch_size)
                    rows.append({"preset": preset, "size": size, "precision": precision, "img_per_s": ips})
                    print(f"{preset:12s} {size:4d}px {precision:5s} {ips:8.1f} img/s", flush=True)
    result = {
        "machine": machine(),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
