"""Load test of the web server: many clients, a tiny model, a bounded queue, hostile pictures.

::

    python benchmarks/serve_load.py                         # 20 clients for 60 s (the real run: a quiet machine)
    python benchmarks/serve_load.py --clients 4 --duration 5 --out /tmp/serve_load.json   # smoke test

Starts ``novelview serve`` in a subprocess on a free localhost port (a random ``xunet-tiny`` checkpoint at
32 px unless ``--checkpoint``), then ``--clients`` threads submit jobs until ``--duration`` has passed: each
waits for its job with the token its submission returned (half follow the SSE stream, half poll), and on
``429`` sleeps for ``Retry-After``. When the time is up, accepted jobs are allowed to finish. Meanwhile the
server's RSS is sampled from ``/proc`` and ``/api/health`` is timed four times a second.

Then the elongated-picture phase: one, then ``--bombs`` at once, PNGs of 1 x 39,000,000 pixels (76 KB each, about
1 GB each to decode) go to ``/api/preprocess``; each must be refused (``422``) before decoding, so the server's
RSS may rise by at most ``--bomb-rss-mb`` and ``/api/health`` keeps answering quickly meanwhile.

Pass criteria (exit code 1 otherwise): the server answers ``/api/health`` at the end; every accepted job
succeeded (none failed, none lost); every refusal was a ``429``; memory stayed bounded: the peak RSS of the
last third of the run is within ``--rss-growth-mb`` of the peak of the first third (a leak grows steadily with
the number of jobs, a bounded server plateaus once the queue and the result store are full); the elongated
PNGs were all refused with the RSS bound kept. Reported: the 429 count, health latency (p50 / p95 / max) under
load and during the elongated PNGs, and RSS before the load, at its peak and after it (idle again).
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
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
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


def elongated_png(width: int = 39_000_000, height: int = 1) -> bytes:
    """A valid grayscale PNG of ``width`` x ``height`` black pixels (zlib shrinks it to about 76 KB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + b"\0" * width for _ in range(height))  # filter byte 0 per row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


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


def wait_polling(http: httpx.Client, job_id: str, token: str, deadline: float) -> Optional[str]:
    while time.monotonic() < deadline:
        status = http.get(f"/api/jobs/{job_id}", headers=bearer(token)).json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            return status
        time.sleep(0.2)
    return None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_sse(http: httpx.Client, job_id: str, token: str, deadline: float) -> Optional[str]:
    with http.stream("GET", f"/api/jobs/{job_id}/events", headers=bearer(token),
                     timeout=max(1.0, deadline - time.monotonic())) as s:
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
            job_id, token = r.json()["id"], r.json()["token"]
            http.cookies.clear()  # like any API client, prove ownership with the token alone
            try:
                status = (wait_sse if use_sse else wait_polling)(http, job_id, token, drain_at)
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


class Sampler:
    """Samples the server's RSS and the latency of ``/api/health`` in the background."""

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid
        self.t0 = time.monotonic()
        self.rss: list[tuple[float, float]] = []
        self.health: list[tuple[float, float]] = []  # (time, seconds; inf = no answer within 5 s)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample_rss, daemon=True),
                         threading.Thread(target=self._sample_health, daemon=True)]

    def __enter__(self) -> "Sampler":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _sample_rss(self) -> None:
        while not self._stop.is_set():
            value = rss_mb(self.pid)
            if value is not None:
                self.rss.append((time.monotonic() - self.t0, value))
            self._stop.wait(0.1)

    def _sample_health(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as http:
            while not self._stop.is_set():
                t = time.monotonic()
                try:
                    ok = http.get("/api/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.health.append((t - self.t0, time.monotonic() - t if ok else float("inf")))
                self._stop.wait(0.25)

    def between(self, series: str, start: float, end: float) -> list[float]:
        return [v for t, v in getattr(self, series) if start <= t <= end]

    def now(self) -> float:
        return time.monotonic() - self.t0


def start_server(args: argparse.Namespace, checkpoint: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "novelview.cli", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
         "--max-queue", str(args.max_queue), "--log-level", "warning"],
        stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env,
    )
    deadline = time.monotonic() + 120
    while True:
        if server.poll() is not None:
            raise SystemExit(f"server exited early:\n{log_path.read_text()}")
        try:
            health = httpx.get(f"{url}/api/health", timeout=2)
            if health.status_code == 200 and health.json().get("ready"):
                return server, url  # model loaded and warmed up: the baseline is the steady state
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("server did not come up in 120 s")
        time.sleep(0.2)


def run_clients(args: argparse.Namespace, url: str) -> Tally:
    stop_at = time.monotonic() + args.duration
    drain_at = stop_at + args.drain
    tally = Tally()
    clients = [threading.Thread(target=client_loop, args=(i, url, args, stop_at, drain_at, tally), daemon=True)
               for i in range(args.clients)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(max(0.0, drain_at - time.monotonic()) + 30)
    return tally


def send_elongated(url: str, count: int) -> list[int]:
    """``count`` simultaneous 1 x 39M-pixel PNGs to /api/preprocess; their status codes."""
    data = elongated_png()
    codes: list[int] = []

    def one() -> None:
        try:
            r = httpx.post(f"{url}/api/preprocess", files={"image": ("strip.png", data, "image/png")}, timeout=120)
            codes.append(r.status_code)
        except httpx.HTTPError:
            codes.append(0)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    return codes


def elongated_phase(args: argparse.Namespace, url: str, sampler: Sampler) -> dict[str, Any]:
    time.sleep(1.0)
    start = sampler.now()
    baseline = max(sampler.between("rss", start - 1.0, start) or [0.0])
    codes = send_elongated(url, 1) + send_elongated(url, args.bombs)
    time.sleep(1.0)  # let the sampler see what came after
    end = sampler.now()
    peak = max(sampler.between("rss", start, end) or [baseline])
    latency = sampler.between("health", start, end)
    return {
        "count": len(codes),
        "status_codes": sorted(set(codes)),
        "all_refused_422": codes != [] and all(c == 422 for c in codes),
        "rss_before_mb": baseline,
        "rss_peak_mb": peak,
        "rss_rise_mb": round(peak - baseline, 1),
        "health_latency_s": latency_summary(latency),
    }


def latency_summary(values: list[float]) -> dict[str, Optional[float]]:
    answered = [v for v in values if v != float("inf")]
    return {"p50": percentile(answered, 50), "p95": percentile(answered, 95),
            "max": max(answered) if answered else None, "unanswered": len(values) - len(answered)}


def main() -> int:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    checkpoint = args.checkpoint or make_checkpoint(tmp / "ckpt", args.preset, args.size)
    log_path = tmp / "server.log"
    server, url = start_server(args, checkpoint, log_path)
    try:
        with Sampler(url, server.pid) as sampler:
            time.sleep(2.0)
            before = sampler.between("rss", 0.0, sampler.now())
            load_start = sampler.now()
            tally = run_clients(args, url)
            load_end = sampler.now()
            wall = load_end - load_start
            time.sleep(3.0)  # idle again: what the finished load left in memory
            after = sampler.between("rss", load_end + 1.0, sampler.now())
            elongated = elongated_phase(args, url, sampler)
        try:
            health = httpx.get(f"{url}/api/health", timeout=5)
            alive = health.status_code == 200 and health.json()["worker_alive"]
        except httpx.HTTPError:
            alive = False
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    load_rss = sampler.between("rss", load_start, load_end)
    result = summarize(args, tally, wall, alive, before, load_rss, after, elongated,
                       sampler.between("health", load_start, load_end))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print_report(args, result)
    if result["passed"]:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"server log: {log_path}")
    return 0 if result["passed"] else 1


def parse_args() -> argparse.Namespace:
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
    ap.add_argument("--bombs", type=int, default=10, help="simultaneous 1 x 39M-pixel PNGs in the second round")
    ap.add_argument("--bomb-rss-mb", type=float, default=100.0, help="allowed RSS rise while they are refused")
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args()


def summarize(args: argparse.Namespace, tally: Tally, wall: float, alive: bool, before: list[float],
              load_rss: list[float], after: list[float], elongated: dict[str, Any],
              health: list[float]) -> dict[str, Any]:
    third = max(1, len(load_rss) // 3)
    first_peak = max(load_rss[:third]) if load_rss else None
    last_peak = max(load_rss[-third:]) if load_rss else None
    succeeded = tally.outcomes.get("succeeded", 0)
    checks = {
        "server_alive": alive,
        "all_accepted_succeeded": succeeded == tally.accepted and not tally.lost,
        "refusals_are_429": not tally.other_refusals,
        "no_transport_errors": not tally.errors,
        "rss_bounded": bool(load_rss) and last_peak - first_peak <= args.rss_growth_mb,  # type: ignore[operator]
        "elongated_pngs_refused": elongated["all_refused_422"],
        "elongated_pngs_rss_bounded": elongated["rss_rise_mb"] <= args.bomb_rss_mb,
    }
    return {
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
        "health_latency_s": latency_summary(health),
        "rss_mb": {
            "before": max(before) if before else None,
            "peak": max(load_rss) if load_rss else None,
            "after": max(after) if after else None,
            "peak_first_third": first_peak,
            "peak_last_third": last_peak,
        },
        "elongated_png": elongated,
        "checks": checks,
        "passed": all(checks.values()),
    }


def print_report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    def fmt(x: Optional[float], nd: int = 1) -> str:
        return "-" if x is None else f"{x:.{nd}f}"

    def lat(d: dict[str, Any]) -> str:
        return f"{fmt(d['p50'], 3)} / {fmt(d['p95'], 3)} / {fmt(d['max'], 3)} s ({d['unanswered']} unanswered)"

    outcomes, rss, el = result["outcomes"], result["rss_mb"], result["elongated_png"]
    rows = [
        ("clients / duration", f"{args.clients} / {args.duration:.0f} s (+ drain, wall {result['wall_s']:.1f} s)"),
        ("job", f"{'orbit of ' + str(args.views) if args.views > 1 else 'one view'}, {args.steps} steps, "
                f"{args.preset} @ {args.size}px, max queue {args.max_queue}"),
        ("submitted", result["submitted"]),
        ("accepted (202)", result["accepted"]),
        ("refused (429)", result["rejected_429"]),
        ("other refusals", len(result["other_refusals"])),
        ("succeeded / failed / cancelled", f"{outcomes.get('succeeded', 0)} / {outcomes.get('failed', 0)} / "
                                           f"{outcomes.get('cancelled', 0)}"),
        ("lost / transport errors", f"{len(result['lost'])} / {len(result['errors'])}"),
        ("throughput", f"{fmt(result['jobs_per_min'])} jobs/min"),
        ("job latency p50 / p95 / max", f"{fmt(result['latency_s']['p50'], 2)} / "
                                        f"{fmt(result['latency_s']['p95'], 2)} / {fmt(result['latency_s']['max'], 2)} s"),
        ("health latency under load", lat(result["health_latency_s"])),
        ("RSS before / peak / after", f"{fmt(rss['before'])} / {fmt(rss['peak'])} / {fmt(rss['after'])} MB"),
        ("RSS peak first / last third", f"{fmt(rss['peak_first_third'])} / {fmt(rss['peak_last_third'])} MB"),
        (f"1 + {args.bombs} PNGs of 1x39M px", f"status {el['status_codes']}, RSS +{el['rss_rise_mb']} MB "
                                               f"(peak {fmt(el['rss_peak_mb'])} MB)"),
        ("health latency meanwhile", lat(el["health_latency_s"])),
    ] + [(f"check: {k}", "ok" if v else "FAILED") for k, v in result["checks"].items()]
    width = max(len(k) for k, _ in rows)
    print("\nserve load test")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(f"\n{'PASSED' if result['passed'] else 'FAILED'}; results in {args.out}")
    print(json.dumps({k: result[k] for k in ("submitted", "accepted", "rejected_429", "outcomes", "checks")}))
    if not result["passed"] and result["errors"]:
        print("first errors:", *result["errors"][:5], sep="\n  ")


if __name__ == "__main__":
    sys.exit(main())
