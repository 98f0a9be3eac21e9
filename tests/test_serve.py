"""Web demo / HTTP API: a real tiny pipeline behind the app, driven over HTTP.

Everything runs against ``Pipeline.from_checkpoint`` of a randomly initialised ``xunet-tiny`` at 32 px with one or
two denoising steps, so the whole file stays well under a minute on one CPU thread. Tests that need a job to stay
busy wrap the real pipeline in :class:`Gated`, which holds the first denoising step until the test lets it go.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from novelview.checkpoint import CheckpointConfig, save_checkpoint  # noqa: E402
from novelview.errors import NovelviewError  # noqa: E402
from novelview.models.presets import build_model  # noqa: E402
from novelview.pipeline import Pipeline  # noqa: E402
from novelview.serve import schemas  # noqa: E402
from novelview.serve.app import create_app  # noqa: E402
from novelview.serve.server import BackgroundServer  # noqa: E402

STEPS = 2
TERMINAL = {"succeeded", "failed", "cancelled"}
LOCAL = "http://127.0.0.1"  # in-process clients must name a host the server answers to


# ---------------------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------------------


def make_checkpoint(path: Path, preset: str = "xunet-tiny") -> Path:
    """A real checkpoint directory of a random tiny model (what `novelview serve --checkpoint` would load)."""
    torch.manual_seed(0)
    model = build_model(preset, 32)
    with torch.no_grad():
        # Zero-initialised output layers would make a fresh model ignore its input; random ones make each result
        # depend on the job's own image, which is what the cross-talk test needs to see.
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return save_checkpoint(path, model, CheckpointConfig(model=model.config.to_dict()))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def pipeline(checkpoint: Path) -> Pipeline:
    torch.set_num_threads(1)
    return Pipeline.from_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def client(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app shared by the tests that only need a working server (tests of state make their own)."""
    app = create_app(pipeline, results_dir=tmp_path_factory.mktemp("shared") / "results", max_queue=4, video=False)
    with TestClient(app, base_url=LOCAL) as c:
        yield c


class Gated:
    """The real pipeline, but its first denoising step waits for ``release()`` (a job that stays busy)."""

    def __init__(self, inner: Pipeline) -> None:
        self.inner = inner
        self.started = threading.Event()
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def release(self) -> None:
        self.gate.set()

    def _hold(self, progress):
        def hold(done: int, total: int) -> None:
            self.started.set()
            if not self.gate.wait(30):
                raise RuntimeError("test gate never released")
            progress(done, total)

        return hold

    def synthesize(self, *args: Any, progress=None, **kw: Any):
        return self.inner.synthesize(*args, progress=self._hold(progress), **kw)

    def orbit(self, *args: Any, progress=None, **kw: Any):
        return self.inner.orbit(*args, progress=self._hold(progress), **kw)


def image_bytes(seed: int, size: tuple[int, int] = (48, 40), fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def submit(client: Any, data: bytes, name: str = "in.png", **params: Any) -> httpx.Response:
    params.setdefault("steps", STEPS)
    return client.post("/api/jobs", files={"image": (name, data, "image/png")}, data={"params": json.dumps(params)})


def wait(client: Any, job_id: str, timeout: float = 40.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get(f"/api/jobs/{job_id}").json()
        if info["status"] in TERMINAL:
            return info
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event is not None:
            yield event, json.loads(line[6:])
            event = None


# ---------------------------------------------------------------------------------------------------------
# page, health, model
# ---------------------------------------------------------------------------------------------------------


def test_page_is_self_contained(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    texts = [page.text, client.get("/static/app.js").text, client.get("/static/style.css").text]
    for text in texts:  # no CDN, no external font, nothing fetched from elsewhere
        assert "http://" not in text and "https://" not in text and "@import" not in text
    assert client.get("/static/..%2Fapp.py").status_code == 404
    assert client.get("/static/missing.js").status_code == 404


def test_health_and_model_info(client: TestClient, checkpoint: Path) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["worker_alive"] and health["max_queue"] == 4
    model = client.get("/api/model")
    info = model.json()
    assert info["image_size"] == 32 and info["preset"] == "xunet-tiny"
    assert info["lifts"] is False and info["defaults"]["strength"] == 1.0
    assert {"xunet-tiny", "dit-tiny"} <= set(info["presets"])
    assert info["defaults"]["steps"] >= 1 and info["limits"]["max_upload_bytes"] > 0
    assert str(checkpoint.parent) not in model.text  # never a server path


def test_samplers_match_the_pipeline() -> None:
    from novelview.sampling import SAMPLERS

    assert set(schemas.SAMPLERS) == set(SAMPLERS)


def test_openapi_documents_the_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/events", "/api/jobs/{job_id}/result",
                 "/api/jobs/{job_id}/files/{name}", "/api/preprocess", "/api/health", "/api/model"):
        assert path in paths, path
    assert {"get", "delete"} <= set(paths["/api/jobs/{job_id}"])


# ---------------------------------------------------------------------------------------------------------
# happy paths
# ---------------------------------------------------------------------------------------------------------


def test_preprocess_returns_what_the_model_sees(client: TestClient, pipeline: Pipeline) -> None:
    data = image_bytes(1, size=(80, 50))
    r = client.post("/api/preprocess", files={"image": ("x.png", data, "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    seen = pixels(r.content)
    assert seen.shape == (32, 32, 3)
    np.testing.assert_array_equal(seen, np.asarray(pipeline.preprocess(Image.open(io.BytesIO(data)))))


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF", "BMP", "RGBA-PNG"])
def test_common_formats_are_accepted(client: TestClient, fmt: str) -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    if fmt == "RGBA-PNG":
        img, fmt = img.convert("RGBA"), "PNG"
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    # The declared type and name are ignored: the content decides.
    r = client.post("/api/preprocess", files={"image": ("upload.bin", buf.getvalue(), "application/octet-stream")})
    assert r.status_code == 200, r.text
    assert pixels(r.content).shape == (32, 32, 3)


def test_view_job_happy_path_with_progress_stream(client: TestClient) -> None:
    r = submit(client, image_bytes(2), azimuth=90, elevation=10, seed=7)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/api/jobs/{job['id']}"
    assert uuid.UUID(hex=job["id"]).version == 4 and job["seed"] == 7
    with client.stream("GET", job["events_url"]) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(stream.iter_lines()))
    kinds = [e for e, _ in events]
    assert kinds[-1] == "end" and kinds.count("end") == 1
    final = events[-1][1]
    assert final["status"] == "succeeded", final
    done = [d["progress"]["done"] for e, d in events if e == "progress" and d["status"] == "running"]
    assert done == sorted(done) and max(done) >= 1
    assert final["progress"]["done"] == final["progress"]["total"] == STEPS
    names = {f["name"]: f for f in final["files"]}
    assert set(names) == {"input.png", "view_000.png"}
    view = client.get(names["view_000.png"]["url"])
    assert view.status_code == 200 and view.headers["content-type"] == "image/png"
    assert pixels(view.content).shape == (32, 32, 3)
    result = client.get(job["result_url"]).json()
    assert result["seed"] == 7 and [f["name"] for f in result["files"]] == [f["name"] for f in final["files"]]
    # A finished job's stream ends at once with its final state.
    with client.stream("GET", job["events_url"]) as stream:
        assert [e for e, _ in sse_events(stream.iter_lines())] == ["end"]


def test_orbit_job_writes_frames_gif_and_mp4(pipeline: Pipeline, tmp_path: Path) -> None:
    app = create_app(pipeline, results_dir=tmp_path, video=True)
    with TestClient(app, base_url=LOCAL) as client:
        job = submit(client, image_bytes(3), mode="orbit", views=3, steps=1, seed=1).json()
        final = wait(client, job["id"])
        assert final["status"] == "succeeded", final
        assert final["progress"]["total"] == 2  # frame 0 is the input itself; two frames of one step each
        kinds = {f["name"]: f["kind"] for f in final["files"]}
        assert [n for n, k in kinds.items() if k == "view"] == ["view_000.png", "view_001.png", "view_002.png"]
        gif = client.get(f"/api/jobs/{job['id']}/files/orbit.gif")
        assert gif.headers["content-type"] == "image/gif"
        assert getattr(Image.open(io.BytesIO(gif.content)), "n_frames", 1) == 3
        if "orbit.mp4" in kinds:  # imageio-ffmpeg present (it is a core dependency)
            mp4 = client.get(f"/api/jobs/{job['id']}/files/orbit.mp4")
            assert mp4.headers["content-type"] == "video/mp4" and mp4.content[4:8] == b"ftyp"


def test_a_3d_aware_model_takes_strength_and_the_page_learns_it(tmp_path: Path) -> None:
    """End to end on a 3D-aware checkpoint: /api/model says it lifts, a view job with strength 0.5 runs the
    fraction of the steps it names, and strength 1 runs them all."""
    torch.set_num_threads(1)
    lifting = Pipeline.from_checkpoint(make_checkpoint(tmp_path / "d3", "dit-tiny-3d"))
    app = create_app(lifting, results_dir=tmp_path / "results", video=False)
    with TestClient(app, base_url=LOCAL) as client:
        assert client.get("/api/model").json()["lifts"] is True
        finals = [wait(client, submit(client, image_bytes(5), steps=4, seed=2, strength=strength).json()["id"])
                  for strength in (0.5, 1.0)]
    assert [f["status"] for f in finals] == ["succeeded", "succeeded"], finals
    assert [f["params"]["strength"] for f in finals] == [0.5, 1.0]
    assert [f["progress"]["total"] for f in finals] == [2, 4]


def test_two_concurrent_clients_get_their_own_results(pipeline: Pipeline, tmp_path: Path) -> None:
    app = create_app(pipeline, results_dir=tmp_path, max_queue=4, video=False)
    inputs = {"a": (image_bytes(10), 11), "b": (image_bytes(20), 22)}
    results: dict[str, dict[str, Any]] = {}
    with BackgroundServer(app) as url:

        def client_session(key: str) -> None:
            data, seed = inputs[key]
            with httpx.Client(base_url=url, timeout=30) as http:
                job = submit(http, data, seed=seed, azimuth=45).json()
                final = wait(http, job["id"])
                files = {f["name"]: http.get(f["url"]).content for f in final["files"]}
                results[key] = {"info": final, "files": files}

        threads = [threading.Thread(target=client_session, args=(k,)) for k in inputs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert set(results) == {"a", "b"}
        for key, (data, seed) in inputs.items():
            info = results[key]["info"]
            assert info["status"] == "succeeded" and info["seed"] == seed
            expected_input = np.asarray(pipeline.preprocess(Image.open(io.BytesIO(data))))
            np.testing.assert_array_equal(pixels(results[key]["files"]["input.png"]), expected_input)
        a, b = (pixels(results[k]["files"]["view_000.png"]) for k in ("a", "b"))
        assert not np.array_equal(a, b)
        # The same request again, alone, reproduces client a's picture exactly: results belong to their job.
        with httpx.Client(base_url=url, timeout=30) as http:
            again = wait(http, submit(http, inputs["a"][0], seed=11, azimuth=45).json()["id"])
            view = next(f for f in again["files"] if f["name"] == "view_000.png")
            np.testing.assert_array_equal(pixels(http.get(view["url"]).content), a)


# ---------------------------------------------------------------------------------------------------------
# queue, cancellation, failures
# ---------------------------------------------------------------------------------------------------------


def test_full_queue_answers_429_with_retry_after(pipeline: Pipeline, tmp_path: Path) -> None:
    gated = Gated(pipeline)
    app = create_app(gated, results_dir=tmp_path, max_queue=1, video=False, warmup=False)
    with TestClient(app, base_url=LOCAL) as client:
        running = submit(client, image_bytes(1)).json()
        assert gated.started.wait(20)
        queued = submit(client, image_bytes(2))
        assert queued.status_code == 202 and queued.json()["queue_position"] == 1
        refused = submit(client, image_bytes(3))
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "busy" in refused.json()["detail"]
        gated.release()
        assert wait(client, running["id"])["status"] == "succeeded"
        assert wait(client, queued.json()["id"])["status"] == "succeeded"
        assert submit(client, image_bytes(4)).status_code == 202  # room again


def test_cancel_queued_and_running_jobs(pipeline: Pipeline, tmp_path: Path) -> None:
    gated = Gated(pipeline)
    app = create_app(gated, results_dir=tmp_path, max_queue=2, video=False, warmup=False)
    with TestClient(app, base_url=LOCAL) as client:
        running = submit(client, image_bytes(1), steps=5).json()
        assert gated.started.wait(20)
        queued = submit(client, image_bytes(2)).json()
        r = client.delete(f"/api/jobs/{queued['id']}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        r = client.delete(f"/api/jobs/{running['id']}")
        assert r.status_code == 200 and r.json()["status"] == "running"  # stops at its next step
        gated.release()
        final = wait(client, running["id"])
        assert final["status"] == "cancelled" and final["progress"]["done"] < 5
        assert client.get(final["result_url"]).status_code == 409
        assert client.get("/api/health").json()["worker_alive"]
        after = wait(client, submit(client, image_bytes(3)).json()["id"])
        assert after["status"] == "succeeded"
        # DELETE on a finished job removes it and its files.
        assert client.delete(f"/api/jobs/{after['id']}").status_code == 200
        assert client.get(f"/api/jobs/{after['id']}").status_code == 404


class Failing:
    def __init__(self, inner: Pipeline, error: Exception) -> None:
        self.inner, self.error = inner, error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def synthesize(self, *args: Any, **kw: Any):
        raise self.error


def test_pipeline_errors_become_failed_jobs(pipeline: Pipeline, tmp_path: Path, caplog) -> None:
    user = create_app(Failing(pipeline, NovelviewError("elevation 95 is past the pole")), results_dir=tmp_path,
                      warmup=False)
    with TestClient(user, base_url=LOCAL) as client:
        final = wait(client, submit(client, image_bytes(1)).json()["id"])
        assert final["status"] == "failed" and final["error"] == "elevation 95 is past the pole"
    bug = create_app(Failing(pipeline, RuntimeError("secret internals at /srv/x")), results_dir=tmp_path,
                     warmup=False)
    with TestClient(bug, base_url=LOCAL) as client:
        for _ in range(2):  # the worker survives and serves the next job
            final = wait(client, submit(client, image_bytes(1)).json()["id"])
            assert final["status"] == "failed"
            assert "internal error" in final["error"] and "secret" not in final["error"]
        assert client.get("/api/health").json()["worker_alive"]
    assert "secret internals" in caplog.text  # logged server-side


# ---------------------------------------------------------------------------------------------------------
# hostile input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"just some text, not an image", "not a supported image"),
        (image_bytes(1)[:200], "corrupt or truncated"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not a supported image"),
    ],
    ids=["empty", "text", "truncated-png", "eps"],
)
def test_bad_uploads_are_4xx_with_a_message(client: TestClient, data: bytes, message: str) -> None:
    for endpoint in ("/api/jobs", "/api/preprocess"):
        r = client.post(endpoint, files={"image": ("photo.png", data, "image/png")}, data={"params": "{}"})
        assert r.status_code == 422, (endpoint, r.text)
        assert message in r.json()["detail"]


def test_missing_image_is_422(client: TestClient) -> None:
    r = client.post("/api/jobs", data={"params": "{}"})
    assert r.status_code == 422 and "image" in r.json()["detail"]


def test_oversized_and_too_many_pixels(pipeline: Pipeline, tmp_path: Path) -> None:
    app = create_app(pipeline, results_dir=tmp_path, max_upload_bytes=100_000, max_pixels=200 * 200)
    with TestClient(app, base_url=LOCAL) as client:
        big = image_bytes(5, size=(400, 400))  # ~480 KB of noise
        r = client.post("/api/jobs", files={"image": ("big.png", big, "image/png")})
        assert r.status_code == 413 and "the limit is 98 KB" in r.json()["detail"]  # the limit set, not + form

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
            yield b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
            for _ in range(40):
                yield b"\0" * 10_000

        r = client.post("/api/jobs", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"})
        assert r.status_code == 413 and "the limit is 98 KB" in r.json()["detail"]

        wide = io.BytesIO()
        Image.new("RGB", (300, 300), (200, 30, 30)).save(wide, format="PNG")  # a small file, too many pixels
        wide = wide.getvalue()
        r = client.post("/api/preprocess", files={"image": ("wide.png", wide, "image/png")})
        assert r.status_code == 422 and "pixels" in r.json()["detail"]
        assert client.get("/api/health").json()["worker_alive"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 100000}, "steps"),
        ({"guidance": -1}, "guidance"),
        ({"guidance": float("nan")}, "guidance"),
        ({"mode": "orbit", "views": 1}, "views"),
        ({"views": 1000}, "views"),
        ({"elevation": 90}, "elevation"),
        ({"elevation": -90}, "elevation"),
        ({"azimuth": "left"}, "azimuth"),
        ({"seed": -3}, "seed"),
        ({"sampler": "euler"}, "sampler"),
        ({"stepz": 3}, "stepz"),
        ({"mode": "spin"}, "mode"),
        ({"strength": 0}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"strength": 0.5}, "strength"),  # this server's model has no lifting module to render a start from
    ],
)
def test_parameter_validation_is_422_with_a_readable_message(client: TestClient, params, field) -> None:
    r = client.post(
        "/api/jobs", files={"image": ("a.png", image_bytes(1), "image/png")}, data={"params": json.dumps(params)}
    )
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str) and field in detail


@pytest.mark.parametrize("text", ["not json", "[1, 2]", "null", '"steps"'])
def test_params_must_be_a_json_object(client: TestClient, text: str) -> None:
    r = client.post("/api/jobs", files={"image": ("a.png", image_bytes(1), "image/png")}, data={"params": text})
    assert r.status_code == 422 and "params" in r.json()["detail"]


def test_unknown_job_is_404(client: TestClient) -> None:
    missing = uuid.uuid4().hex
    for method, path in [
        ("GET", f"/api/jobs/{missing}"),
        ("GET", f"/api/jobs/{missing}/events"),
        ("GET", f"/api/jobs/{missing}/result"),
        ("GET", f"/api/jobs/{missing}/files/view_000.png"),
        ("DELETE", f"/api/jobs/{missing}"),
    ]:
        r = client.request(method, path)
        assert r.status_code == 404, (method, path, r.status_code)
        assert "no job" in r.json()["detail"]


def test_path_like_ids_and_names_never_read_files(client: TestClient) -> None:
    secret = "TOP-SECRET-CONTENT"
    root = client.app.state.jobs.root  # the server's own results directory
    (root.parent / "secret.png").write_text(secret)  # files next to it and above it
    (root.parent.parent / "secret.png").write_text(secret)
    job = wait(client, submit(client, image_bytes(1)).json()["id"])
    assert job["status"] == "succeeded"
    jid = job["id"]
    probes = [
        "/api/jobs/..%2F..%2Fetc%2Fpasswd",
        "/api/jobs/%2E%2E%2Fsecret.png",
        "/api/jobs/..",
        "/api/jobs/%2Fetc%2Fpasswd/result",
        "/api/jobs/not-a-uuid/files/view_000.png",
        f"/api/jobs/{jid}/files/..%2F..%2Fsecret.png",
        f"/api/jobs/{jid}/files/..%2Fsecret.png",
        f"/api/jobs/{jid}/files/%2Fetc%2Fpasswd",
        f"/api/jobs/{jid}/files/secret.png",
        f"/api/jobs/{jid}/files/view_000.png%00.txt",
        f"/api/jobs/{jid}/files/config.json",
        f"/api/jobs/{jid}-../files/view_000.png",
    ]
    for probe in probes:
        r = client.get(probe)
        assert r.status_code in (404, 422), (probe, r.status_code)
        assert secret not in r.text and "root:" not in r.text
    assert client.get(f"/api/jobs/{jid}/files/view_000.png").status_code == 200


# ---------------------------------------------------------------------------------------------------------
# streaming, isolation, cleanup
# ---------------------------------------------------------------------------------------------------------


def test_event_stream_never_blocks_others_and_a_gone_client_never_stalls_the_worker(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    gated = Gated(pipeline)
    app = create_app(gated, results_dir=tmp_path, video=False, warmup=False)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        job = submit(http, image_bytes(1), steps=3).json()
        assert gated.started.wait(20)
        # Several clients open the stream; one never reads, one hangs up at once.
        lazy = httpx.Client(base_url=url, timeout=10)
        lazy_stream = lazy.stream("GET", job["events_url"])
        lazy_stream.__enter__()
        with httpx.Client(base_url=url, timeout=10) as quitter:
            with quitter.stream("GET", job["events_url"]) as s:
                next(s.iter_lines())
        t0 = time.monotonic()
        for _ in range(5):
            assert http.get("/api/health").status_code == 200
        assert time.monotonic() - t0 < 2.0  # the event loop is free while streams are open
        gated.release()
        final = wait(http, job["id"])  # the worker finished although one client never read a byte
        assert final["status"] == "succeeded"
        lazy_stream.__exit__(None, None, None)
        lazy.close()
        with http.stream("GET", job["events_url"]) as s:
            assert [e for e, _ in sse_events(s.iter_lines())] == ["end"]


def test_apps_are_independent(pipeline: Pipeline, tmp_path: Path) -> None:
    one = create_app(pipeline, results_dir=tmp_path / "one", video=False)
    two = create_app(pipeline, results_dir=tmp_path / "two", video=False)
    with TestClient(one, base_url=LOCAL) as c1, TestClient(two, base_url=LOCAL) as c2:
        job = wait(c1, submit(c1, image_bytes(1)).json()["id"])
        assert job["status"] == "succeeded"
        assert c2.get(f"/api/jobs/{job['id']}").status_code == 404


def test_old_results_are_cleaned_up(pipeline: Pipeline, tmp_path: Path) -> None:
    app = create_app(pipeline, results_dir=tmp_path, max_jobs=2, video=False)
    with TestClient(app, base_url=LOCAL) as client:
        ids = [wait(client, submit(client, image_bytes(i)).json()["id"])["id"] for i in range(3)]
        manager = app.state.jobs
        manager.cleanup()
        assert client.get(f"/api/jobs/{ids[0]}").status_code == 404  # beyond max_jobs: oldest gone
        assert not (manager.root / ids[0]).exists()
        assert client.get(f"/api/jobs/{ids[2]}").status_code == 200
        manager.ttl_s = 0.0  # everything finished is now expired
        manager.cleanup()
        assert all(client.get(f"/api/jobs/{i}").status_code == 404 for i in ids)
        assert not any(manager.root.iterdir())
        root = manager.root
    assert not root.exists()  # the server's results directory goes with the server


def test_cli_binds_to_localhost_by_default() -> None:
    from typer.testing import CliRunner

    from novelview.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "127.0.0.1" in result.output


# ---------------------------------------------------------------------------------------------------------
# fuzzing the OpenAPI schema
# ---------------------------------------------------------------------------------------------------------


def test_schemathesis_fuzz_finds_no_server_errors(pipeline: Pipeline, tmp_path: Path) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    # The fuzzer's in-process client calls the server "testserver".
    app = create_app(pipeline, results_dir=tmp_path, max_queue=2, video=False, allowed_hosts=("testserver",))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    calls = 0
    with TestClient(app, base_url=LOCAL) as client:
        created = submit(client, image_bytes(1)).json()  # also fuzz around a real job, with its token
        real, token = wait(client, created["id"])["id"], created["token"]
        for result in schema.get_all_operations():
            operation = result.ok()
            variants: list[dict[str, Any]] = [{}]
            if "{job_id}" in operation.path:
                variants.append({"path_parameters": {"job_id": real}, "headers": {"Authorization": f"Bearer {token}"}})
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                for extra in variants:
                    if operation.method.lower() == "delete" and extra:
                        continue  # deleting the real job would only make the other variants 404

                    @given(case=operation.as_strategy(mode, **extra))
                    @settings(max_examples=5, deadline=None, database=None, derandomize=True,
                              suppress_health_check=list(HealthCheck))
                    def fuzz(case) -> None:
                        nonlocal calls
                        calls += 1
                        response = case.call()
                        if response.status_code >= 500:
                            failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")
                        case.validate_response(response, checks=[not_a_server_error])

                    try:
                        fuzz()
                    except Unsatisfiable:  # no invalid input exists (e.g. GET /api/health has no parameters)
                        assert mode is GenerationMode.NEGATIVE
    assert not failures, failures
    assert calls >= 40
