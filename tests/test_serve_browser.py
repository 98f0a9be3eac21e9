"""The demo page in a real browser: Debian's chromium driven by Playwright (never `playwright install`).

Starts the server on a free localhost port with a random tiny checkpoint, uploads an image, runs a short orbit,
watches the progress bar move and the results appear, cancels a longer job, and checks a bad upload shows a
readable error. Screenshots go to tests/artifacts/ (git-ignored) for a human look.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image, ImageDraw

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
pytest.importorskip("fastapi", reason="the [serve] extra is not installed")

from novelview.serve.app import create_app  # noqa: E402
from novelview.serve.server import BackgroundServer  # noqa: E402

from test_serve import make_checkpoint  # noqa: E402  (same directory; pytest puts it on sys.path)

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-quic"]


def object_png() -> bytes:
    """A simple 'object' on white, the kind of picture the demo expects."""
    img = Image.new("RGB", (160, 120), "white")
    draw = ImageDraw.Draw(img)
    draw.ellipse((45, 20, 115, 100), fill=(200, 60, 40))
    draw.rectangle((70, 35, 100, 70), fill=(40, 90, 200))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import torch

    torch.set_num_threads(1)
    checkpoint = make_checkpoint(tmp_path_factory.mktemp("browser") / "tiny")
    app = create_app(checkpoint, results_dir=tmp_path_factory.mktemp("results"))
    with BackgroundServer(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator["sync_api.Browser"]:
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        except Exception as err:  # an unlaunchable chromium is an environment problem, not a page bug
            pytest.skip(f"chromium does not start under Playwright: {err}")
        yield b
        b.close()


@pytest.fixture()
def page(browser: "sync_api.Browser", server: str) -> Iterator["sync_api.Page"]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda err: problems.append(f"page error: {err}"))

    def on_console(msg: "sync_api.ConsoleMessage") -> None:
        # 4xx answers the page handles (a refused upload) are logged by chromium too; CSP violations are not 4xx.
        if msg.type == "error" and "responded with a status of 4" not in msg.text:
            problems.append(f"console {msg.type}: {msg.text}")

    pg.on("console", on_console)
    # Anything not from our server (CDN, fonts) would be a bug: the page must be self-contained.
    local = (server, "blob:" + server, "data:")  # blob: = the preview picture the page made from our own PNG
    pg.on("request", lambda req: None if req.url.startswith(local) else problems.append(f"external: {req.url}"))
    pg.goto(server + "/")
    pg.wait_for_function("() => document.getElementById('model-info').textContent.includes('px')")
    yield pg
    context.close()
    assert not problems, problems


def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    return ARTIFACTS


def upload(page: "sync_api.Page", data: bytes, name: str = "object.png", mime: str = "image/png") -> None:
    page.set_input_files("#file", files=[{"name": name, "mimeType": mime, "buffer": data}])


def test_orbit_end_to_end(page: "sync_api.Page") -> None:
    upload(page, object_png())
    page.wait_for_selector("#preview:not([hidden])")
    # The preview is the server's preprocessed 32x32 picture, shown enlarged.
    assert page.eval_on_selector("#preview", "img => img.complete && img.naturalWidth") == 32
    page.check("input[name=mode][value=orbit]")
    page.fill("#views", "6")
    page.click("summary")
    page.fill("#steps", "8")
    page.fill("#seed", "3")
    page.click("#generate")

    values: list[float] = []
    deadline = time.monotonic() + 90
    while page.is_hidden("#results"):
        assert time.monotonic() < deadline, "no result within 90 s"
        v = page.evaluate("() => { const p = document.getElementById('progress'); "
                          "return p.hasAttribute('value') ? p.value / p.max : -1; }")
        values.append(v)
        time.sleep(0.03)
    moving = sorted({v for v in values if 0 < v < 1})
    assert len(moving) >= 2, f"progress bar never moved: {values}"
    assert page.is_hidden("#error"), page.text_content("#error")
    assert "Done" in page.text_content("#progress-text")

    # Results: the orbit animation, six frames (the first is the input), download links, all loaded.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert page.locator("#animation img").count() == 1
    assert page.locator("#views-grid figure").count() == 6
    names = page.eval_on_selector_all("#downloads a", "as => as.map(a => a.getAttribute('download'))")
    assert {"orbit.gif", "grid.png", "view_005.png"} <= set(names)
    video = page.evaluate("() => fetch('/api/model').then(r => r.json()).then(m => m.video)")
    assert page.locator("#animation video").count() == (1 if video else 0)
    page.screenshot(path=str(artifacts_dir() / "serve_orbit.png"), full_page=True)


def test_cancel_from_the_page(page: "sync_api.Page") -> None:
    upload(page, object_png())
    page.wait_for_selector("#preview:not([hidden])")
    page.check("input[name=mode][value=orbit]")
    page.fill("#views", "24")
    page.click("summary")
    page.fill("#steps", "50")
    page.click("#generate")
    page.wait_for_function(
        "() => document.getElementById('progress-text').textContent.includes('step')", timeout=60_000
    )
    page.click("#cancel")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "Cancelled" in page.text_content("#error")
    assert page.is_enabled("#generate") and page.is_hidden("#cancel")


def test_bad_upload_shows_a_message(page: "sync_api.Page") -> None:
    upload(page, b"this is not an image", name="notes.png")
    page.wait_for_selector("#error:not([hidden])")
    assert "not a supported image" in page.text_content("#error")
    assert page.is_disabled("#generate")
    page.screenshot(path=str(artifacts_dir() / "serve_error.png"), full_page=True)
