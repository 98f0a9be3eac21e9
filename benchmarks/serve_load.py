"""Load test of the web server: many clients, a tiny model, a bounded queue.

::

    python benchmarks/serve_load.py                         # 20 clients for 60 s (the real run: a quiet machine)
    python benchmarks/serve_load.py --clients 4 --duration 5 --out /tmp/serve_load.json   # smoke test

Starts ``novelview serve`` in a subprocess on a free localhost port (a random ``xunet-tiny`` checkpoint at
32 px unless ``--checkpoint``), then ``--clients`` threads submit jobs until ``--duration`` has passed: each
waits for its job (half follow the SSE stream, half poll), and on ``429`` sleeps for ``Retry-After``. When the
time is up, accepted jobs are allowed to finish. Meanwhile the server's RSS is sampled from ``/proc``.

Pass criteria (exit code 1 otherwise): the server answers ``/api/health`` at the end; every accepted job
succeeded (none failed, none lost); every refusal was a ``429``; and memory stayed bounded: the peak RSS of the
last third of the run is within ``--rss-growth-mb`` of the peak of the first third (a leak grows steadily with
the number of jobs, a bounded server plateaus once the queue and the result store are full).
Prints a table and writes JSON to ``benchmarks/results/serve_load.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import httpx
import numpy as np
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results" / "serve_load.json"


def make_checkpoint(path: Path, preset: str, size: int) -> Path:
    import torch

    from novelview.checkpoint import CheckpointConfig, save_checkpoint
    from novelview.models.presets import build_model

    torch.manual_seed(0)
    model = build_model(preset, size)
    return save_checkpoint(path, model, CheckpointConfig(model=model.config.to_dict()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def image_bytes(rng: random.Random, size: int = 96) -> bytes:
    arr = np.random.default_rng(rng.randrange(2**31)).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    submitted: int = 0
    accepted: int = 0
    rejected_429: int = 0
    other_refusals: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)  # accepted, but never seen finishing
    errors: list[str] = field(default_factory=list)  # transport errors (server down?)
    latencies: list[float] = field(default_factory=list)  # submit -> finished, succeeded jobs

    def add(self, **kw: Any) -> None:
        with self.lock:
            for key, value in kw.items():
                current = getattr(self, key)
                if isinstance(current, list):
                    current.append(value)
                else:
                    setattr(self, key, current + value)

    def outcome(self, status: str) -> None:
        with self.lock:
            self.outcomes[status] = self.outcomes.get(status, 0) + 1


def wait_polling(http: httpx.Client, job_id: str, deadline: float) -> Optional[str]:
    while time.monotonic() < deadline:
        status = http.get(f"/api/jobs/{job_id}").json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            return status
        time.sleep(0.2)
    return None


def wait_sse(http: httpx.Client, job_id: str, deadline: float) -> Optional[str]:
    with http.stream("GET", f"/api/jobs/{job_id}/events", timeout=max(1.0, deadline - time.monotonic())) as s:
        event = None
        for line in s.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "end":
                return json.loads(line[6:])["status"]
            if time.monotonic() > deadline:
                return None
    return None


def client_loop(index: int, url: str, args: argparse.Namespace, stop_at: float, drain_at: float, tally: Tally) -> None:
    rng = random.Random(index)
    use_sse = index % 2 == 0
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < stop_at:
            params = {"steps": args.steps, "seed": rng.randrange(2**31)}
            if args.views > 1:
                params.update(mode="orbit", views=args.views)
            else:
                params.update(azimuth=rng.choice([-90, -30, 30, 90]))
            t0 = time.monotonic()
            try:
                r = http.post("/api/jobs", files={"image": ("x.png", image_bytes(rng), "image/png")},
                              data={"params": json.dumps(params)})
            except httpx.HTTPError as err:
                tally.add(submitted=1, errors=f"submit: {type(err).__name__}: {err}")
                time.sleep(1.0)
                continue
            tally.add(submitted=1)
            if r.status_code == 429:
                tally.add(rejected_429=1)
                retry = float(r.headers.get("retry-after", "1"))
                time.sleep(min(retry, max(0.0, stop_at - time.monotonic()), 5.0) + rng.random() * 0.5)
                continue
            if r.status_code != 202:
                tally.add(other_refusals=f"{r.status_code}: {r.text[:120]}")
                continue
            tally.add(accepted=1)
            job_id = r.json()["id"]
            try:
                status = (wait_sse if use_sse else wait_polling)(http, job_id, drain_at)
            except httpx.HTTPError as err:
                tally.add(errors=f"wait: {type(err).__name__}: {err}")
                status = None
            if status is None:
                tally.add(lost=job_id)
                continue
            tally.outcome(status)
            if status == "succeeded":
                tally.add(latencies=time.monotonic() - t0)


def percentile(values: list[float], q: float) -> Optional[float]:
    return float(np.percentile(values, q)) if values else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds during which clients submit")
    ap.add_argument("--drain", type=float, default=120.0, help="seconds allowed afterwards for accepted jobs")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--views", type=int, default=1, help=">1: orbit jobs of this many frames")
    ap.add_argument("--max-queue", type=int, default=8)
    ap.add_argument("--preset", default="xunet-tiny")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1, help="OMP/torch threads of the server")
    ap.add_argument("--rss-growth-mb", type=float, default=150.0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    checkpoint = args.checkpoint or make_checkpoint(tmp / "ckpt", args.preset, args.size)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    log_path = tmp / "server.log"
    log = open(log_path, "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "novelview.cli", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
         "--max-queue", str(args.max_queue), "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    samples: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise SystemExit(f"server exited early:\n{log_path.read_text()}")
            try:
                health = httpx.get(f"{url}/api/health", timeout=2)
                if health.status_code == 200 and health.json().get("ready"):
                    break  # model loaded and warmed up: the baseline is the steady state
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not come up in 120 s")
            time.sleep(0.2)

        t_start = time.monotonic()
        stop_at = t_start + args.duration
        drain_at = stop_at + args.drain
        sampling = threading.Event()

        def sample_rss() -> None:
            while not sampling.is_set():
                value = rss_mb(server.pid)
                if value is not None:
                    samples.append((time.monotonic() - t_start, value))
                sampling.wait(0.25)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        tally = Tally()
        clients = [
            threading.Thread(target=client_loop, args=(i, url, args, stop_at, drain_at, tally), daemon=True)
            for i in range(args.clients)
        ]
        for c in clients:
            c.start()
        for c in clients:
            c.join(max(0.0, drain_at - time.monotonic()) + 30)
        wall = time.monotonic() - t_start
        try:
            health = httpx.get(f"{url}/api/health", timeout=5)
            alive = health.status_code == 200 and health.json()["worker_alive"]
        except httpx.HTTPError:
            alive = False
        sampling.set()
        sampler.join(2)
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    rss = [v for _, v in samples]
    third = max(1, len(samples) // 3)
    first_peak = max(rss[:third]) if rss else None
    last_peak = max(rss[-third:]) if rss else None
    bounded = rss != [] and last_peak - first_peak <= args.rss_growth_mb  # type: ignore[operator]
    succeeded = tally.outcomes.get("succeeded", 0)
    checks = {
        "server_alive": alive,
        "all_accepted_succeeded": succeeded == tally.accepted and not tally.lost,
        "refusals_are_429": not tally.other_refusals,
        "no_transport_errors": not tally.errors,
        "rss_bounded": bool(bounded),
    }
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "wall_s": round(wall, 2),
        "submitted": tally.submitted,
        "accepted": tally.accepted,
        "rejected_429": tally.rejected_429,
        "other_refusals": tally.other_refusals[:20],
        "outcomes": tally.outcomes,
        "lost": tally.lost[:20],
        "errors": tally.errors[:20],
        "jobs_per_min": round(succeeded / wall * 60, 2) if wall > 0 else None,
        "latency_s": {
            "p50": percentile(tally.latencies, 50),
            "p95": percentile(tally.latencies, 95),
            "max": max(tally.latencies) if tally.latencies else None,
            "mean": statistics.fmean(tally.latencies) if tally.latencies else None,
        },
        "rss_mb": {
            "start": rss[0] if rss else None,
            "peak": max(rss) if rss else None,
            "end": rss[-1] if rss else None,
            "peak_first_third": first_peak,
            "peak_last_third": last_peak,
            "samples": [(round(t, 2), round(v, 1)) for t, v in samples[:: max(1, len(samples) // 200)]],
        },
        "checks": checks,
        "passed": all(checks.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    def fmt(x: Optional[float], nd: int = 1) -> str:
        return "-" if x is None else f"{x:.{nd}f}"

    lat = result["latency_s"]
    rows = [
        ("clients / duration", f"{args.clients} / {args.duration:.0f} s (+ drain, wall {wall:.1f} s)"),
        ("job", f"{'orbit of ' + str(args.views) if args.views > 1 else 'one view'}, {args.steps} steps, "
                f"{args.preset} @ {args.size}px, max queue {args.max_queue}"),
        ("submitted", tally.submitted),
        ("accepted (202)", tally.accepted),
        ("refused (429)", tally.rejected_429),
        ("other refusals", len(tally.other_refusals)),
        ("succeeded / failed / cancelled", f"{succeeded} / {tally.outcomes.get('failed', 0)} / "
                                           f"{tally.outcomes.get('cancelled', 0)}"),
        ("lost / transport errors", f"{len(tally.lost)} / {len(tally.errors)}"),
        ("throughput", f"{fmt(result['jobs_per_min'])} jobs/min"),
        ("latency p50 / p95 / max", f"{fmt(lat['p50'], 2)} / {fmt(lat['p95'], 2)} / {fmt(lat['max'], 2)} s"),
        ("RSS start / peak / end", f"{fmt(result['rss_mb']['start'])} / {fmt(result['rss_mb']['peak'])} / "
                                   f"{fmt(result['rss_mb']['end'])} MB"),
        ("RSS peak first / last third", f"{fmt(first_peak)} / {fmt(last_peak)} MB"),
    ] + [(f"check: {k}", "ok" if v else "FAILED") for k, v in checks.items()]
    width = max(len(k) for k, _ in rows)
    print("\nserve load test")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(f"\n{'PASSED' if result['passed'] else 'FAILED'}; results in {args.out}")
    if result["passed"]:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"server log: {log_path}")
    print(json.dumps({k: result[k] for k in ("submitted", "accepted", "rejected_429", "outcomes", "checks")}))
    if not result["passed"] and tally.errors:
        print("first errors:", *tally.errors[:5], sep="\n  ")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
