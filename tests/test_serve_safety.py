"""The web server under hostile and careless clients, against the real server (uvicorn on a localhost port).

Job ownership, Host and Origin checks, pictures that would cost memory to decode, generation that goes
non-finite, slow-header clients and the connection cap, SIGTERM with open progress streams, and what a killed
server leaves behind. Promises are listed in docs/security.md.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")

from novelview.checkpoint import CheckpointConfig, save_checkpoint  # noqa: E402
from novelview.cli import main  # noqa: E402
from novelview.errors import CheckpointError  # noqa: E402
from novelview.pipeline import Pipeline  # noqa: E402
from novelview.serve.app import RESULTS_PREFIX, create_app  # noqa: E402
from novelview.serve.server import BackgroundServer, ConnectionLimits  # noqa: E402

from test_serve import (  # noqa: E402,F401  (checkpoint, pipeline: fixtures)
    Gated,
    checkpoint,
    image_bytes,
    pipeline,
    pixels,
    sse_events,
    submit,
    wait,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR of the given size followed by a cut-off IDAT: decodable only by its header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))[:30]


def post_image(http: httpx.Client, path: str, image: bytes, **kw: Any) -> httpx.Response:
    return http.post(path, files={"image": ("x.png", image, "image/png")}, **kw)


# ---------------------------------------------------------------------------------------------------------
# ownership
# ---------------------------------------------------------------------------------------------------------


def test_a_second_client_cannot_see_cancel_or_download_a_job(pipeline: Pipeline, tmp_path: Path) -> None:
    gated = Gated(pipeline)
    app = create_app(gated, results_dir=tmp_path, video=False, warmup=False)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=20) as owner, \
            httpx.Client(base_url=url, timeout=20) as stranger:
        r = submit(owner, image_bytes(1))
        job = r.json()
        jid, token = job["id"], job["token"]
        cookie = r.headers["set-cookie"].lower()
        assert f"path=/api/jobs/{jid}" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert gated.started.wait(20)
        health = stranger.get("/api/health")
        assert health.json()["running"] == 1 and jid not in health.text  # counts, never ids

        def refused(client: httpx.Client, **kw: Any) -> None:
            for method, path in [("GET", f"/api/jobs/{jid}"), ("GET", f"/api/jobs/{jid}/events"),
                                 ("GET", f"/api/jobs/{jid}/result"), ("GET", f"/api/jobs/{jid}/files/input.png"),
                                 ("DELETE", f"/api/jobs/{jid}")]:
                answer = client.request(method, path, **kw)
                assert answer.status_code == 404 and "no job" in answer.json()["detail"], (method, path)

        refused(stranger)
        refused(stranger, headers={"Authorization": "Bearer " + "A" * 43})
        refused(stranger, headers={"Cookie": "job_token=" + token[:-1] + ("A" if token[-1] != "A" else "B")})
        gated.release()
        final = wait(owner, jid)  # the cookie the submission set is the owner's key
        assert final["status"] == "succeeded"
        refused(stranger)
        with httpx.Client(base_url=url, timeout=20, headers={"Authorization": f"Bearer {token}"}) as api:
            view = api.get(f"/api/jobs/{jid}/files/view_000.png")  # the token alone, without the cookie
            assert view.status_code == 200 and pixels(view.content).shape == (32, 32, 3)
            assert api.delete(f"/api/jobs/{jid}").status_code == 200
            assert api.get(f"/api/jobs/{jid}").status_code == 404


# ---------------------------------------------------------------------------------------------------------
# Host and Origin
# ---------------------------------------------------------------------------------------------------------


def test_a_foreign_host_or_origin_is_refused(pipeline: Pipeline, tmp_path: Path) -> None:
    app = create_app(pipeline, results_dir=tmp_path, video=False, warmup=False, allowed_hosts=("demo.example",))
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=20) as http:
        port = url.rsplit(":", 1)[1]
        # DNS rebinding: a name that resolves here but is not this server's.
        for method, path in [("GET", "/"), ("GET", "/api/health"), ("POST", "/api/jobs")]:
            r = http.request(method, path, headers={"Host": f"evil.example:{port}"})
            assert r.status_code == 400 and "--allow-host evil.example" in r.json()["detail"], (method, path)
            assert r.headers["x-content-type-options"] == "nosniff"
        for host in (f"localhost:{port}", f"127.0.0.2:{port}", f"demo.example:{port}", f"DEMO.example.:{port}"):
            assert http.get("/api/health", headers={"Host": host}).status_code == 200, host
        # A page elsewhere posting or deleting through the user's browser.
        evil = {"Origin": "http://evil.example"}
        for headers in (evil, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": f"http://localhost:{port}"}):  # another origin, same machine
            r = post_image(http, "/api/jobs", image_bytes(1), headers=headers)
            assert r.status_code == 403 and "cross-origin" in r.json()["detail"], headers
        assert http.delete(f"/api/jobs/{'0' * 32}", headers=evil).status_code == 403
        assert http.get("/api/health").json()["queued"] == 0 and not any(Path(app.state.jobs.root).iterdir())
        read = http.get("/api/model", headers=evil)  # reading is allowed; no CORS header lets that page see it
        assert read.status_code == 200 and "access-control-allow-origin" not in read.headers
        own = post_image(http, "/api/jobs", image_bytes(1), data={"params": '{"steps": 1}'},
                         headers={"Origin": url, "Sec-Fetch-Site": "same-origin"})
        assert own.status_code == 202, own.text


# ---------------------------------------------------------------------------------------------------------
# pictures that would cost memory
# ---------------------------------------------------------------------------------------------------------


def test_elongated_and_huge_pictures_are_refused_before_decoding(pipeline: Pipeline, tmp_path: Path) -> None:
    app = create_app(pipeline, results_dir=tmp_path, video=False, warmup=False)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=20) as http:
        for width, height in [(39_000_000, 1), (1, 39_000_000), (20_000, 1_000), (3_000, 100)]:
            r = post_image(http, "/api/preprocess", png_header(width, height))
            assert r.status_code == 422, (width, height, r.text)
            assert f"{width}x{height}" in r.json()["detail"] and "aspect" in r.json()["detail"]
        # The same cut-off file at a sane size is decoded, and only then found truncated.
        r = post_image(http, "/api/preprocess", png_header(300, 200))
        assert r.status_code == 422 and "truncated" in r.json()["detail"]
        assert http.get("/api/health").json()["worker_alive"]


def test_large_jpeg_is_decoded_at_reduced_size_with_the_same_picture(pipeline: Pipeline, tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:2400, 0:3200]
    arr = np.stack([(xx * 255 // 3200), (yy * 255 // 2400), ((xx + yy) % 256)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    app = create_app(pipeline, results_dir=tmp_path, video=False, warmup=False)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=20) as http:
        r = post_image(http, "/api/preprocess", buf.getvalue())
        assert r.status_code == 200
    full = np.asarray(pipeline.preprocess(Image.open(io.BytesIO(buf.getvalue()))), dtype=np.float64)
    assert np.abs(pixels(r.content) - full).mean() < 2.0  # within JPEG's own noise of the full decode


# ---------------------------------------------------------------------------------------------------------
# non-finite results
# ---------------------------------------------------------------------------------------------------------


def test_nan_weights_and_absurd_guidance_fail_clearly(checkpoint: Path, pipeline: Pipeline, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = Path(save_checkpoint(tmp_path / "nan", pipeline.model, pipeline.config))
    weights = load_file(str(broken / "model.safetensors"))
    next(t for t in weights.values() if t.is_floating_point()).view(-1)[0] = float("nan")
    save_file(weights, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        create_app(broken, results_dir=tmp_path / "r", warmup=False)

    # Finite weights whose activations overflow: generation itself goes non-finite.
    model = Pipeline.from_checkpoint(checkpoint).model
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e30)  # finite, but two layers of it exceed float32
    overflowing = save_checkpoint(tmp_path / "huge", model, CheckpointConfig(model=model.config.to_dict()))
    app = create_app(overflowing, results_dir=tmp_path / "r", video=False, warmup=False)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        final = wait(http, submit(http, image_bytes(1)).json()["id"])
        assert final["status"] == "failed" and "NaN or infinite" in final["error"] and not final["files"]
        r = submit(http, image_bytes(1), guidance=1e30)
        assert r.status_code == 422 and "guidance" in r.json()["detail"]


# ---------------------------------------------------------------------------------------------------------
# connections
# ---------------------------------------------------------------------------------------------------------


def partial_request(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"GET /api/health HTTP/1.1\r\nHost: {host}:{port}\r\nX-Slow: ".encode())  # never finished
    return sock


def test_slow_header_connections_are_closed_and_connections_are_capped(pipeline: Pipeline, tmp_path: Path) -> None:
    app = create_app(pipeline, results_dir=tmp_path, video=False, warmup=False)
    limits = ConnectionLimits(header_timeout_s=1.0, max_connections=4)
    with BackgroundServer(app, limits=limits) as url:
        slow = [partial_request(url) for _ in range(4)]
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.get("/api/health").status_code == 503  # the cap counts the slow ones
        t0 = time.monotonic()
        for sock in slow:
            assert sock.recv(1024) == b""  # closed by the server, without an answer
            sock.close()
        assert 0.5 < time.monotonic() - t0 < 5.0
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.get("/api/health").status_code == 200
            time.sleep(1.5)  # an idle keep-alive connection between requests is not a slow header
            assert http.get("/api/health").status_code == 200


def test_port_in_use_is_a_one_line_error(capsys: pytest.CaptureFixture[str], checkpoint: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exit:
            main(["serve", "--checkpoint", str(checkpoint), "--port", str(port)])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith("error:") and "already in use" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------------------------------------------------
# a served process: SIGKILL leftovers, SIGTERM with open streams
# ---------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "novelview.cli", "serve", "--checkpoint", str(checkpoint),
                             "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            if httpx.get(f"{url}/api/health", timeout=2).json().get("ready"):
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.1)


def results_dirs(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.iterdir() if p.name.startswith(RESULTS_PREFIX))


@pytest.mark.slow
def test_sigkill_leftovers_are_cleaned_and_sigterm_ends_streams_with_their_last_event(
    checkpoint: Path, tmp_path: Path
) -> None:
    killed, url = start_server(checkpoint, tmp_path)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            assert wait(http, submit(http, image_bytes(1)).json()["id"])["status"] == "succeeded"
    finally:
        killed.kill()
        killed.wait()
    (left,) = results_dirs(tmp_path)
    assert any(left.rglob("input.png"))  # a user's upload, left behind by SIGKILL

    server, url = start_server(checkpoint, tmp_path)
    try:
        assert left not in results_dirs(tmp_path) and len(results_dirs(tmp_path)) == 1
        with httpx.Client(base_url=url, timeout=30) as http:
            job = submit(http, image_bytes(2), mode="orbit", views=48, steps=200).json()
            with http.stream("GET", job["events_url"]) as stream:
                events = sse_events(stream.iter_lines())
                running = next(d for e, d in events if d["progress"]["done"] > 0)
                assert running["status"] == "running"
                server.send_signal(signal.SIGTERM)
                last_event, last = list(events)[-1]
        assert last_event == "end" and last["status"] == "cancelled" and "shutting down" in last["error"]
        assert server.wait(30) == -signal.SIGTERM  # uvicorn re-raises the signal once it has stopped cleanly
    finally:
        if server.poll() is None:
            server.kill()
    assert results_dirs(tmp_path) == []  # a clean stop deletes its results
