"""The web page end to end: ``ovseg serve`` in its own process on a free loopback port, driven by Debian's
chromium through Playwright (no browser is downloaded). Plus the page's reader and class parser.

CI installs chromium (``.ci/run``); without it this test fails in CI and is skipped elsewhere, saying what
to install. ``OVSEG_SCREENSHOT=docs/images/web-ui.png`` saves a screenshot of the page with a result.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.errors import OvsegError
from ovseg.web import WebLimits, parse_classes, read_upload

CHROMIUM = os.environ.get("OVSEG_CHROMIUM", "/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000


# ---- the page's logic, no browser ----

def test_parse_classes():
    assert parse_classes(" cat, dog ,, person|man|woman ,") == ["cat", "dog", "person|man|woman"]
    assert parse_classes("background, sky") == ["sky"]
    assert len(parse_classes("voc")) == 20
    with pytest.raises(OvsegError, match="at least one class"):
        parse_classes(" , |, ")


def test_read_upload_limits_and_bad_files(tmp_path, photos):
    good = tmp_path / "chelsea.jpg"
    Image.fromarray(photos["chelsea"]).save(good)
    assert read_upload(good, WebLimits()).shape == (300, 451, 3)
    with pytest.raises(OvsegError, match="megapixels"):
        read_upload(good, WebLimits(max_pixels=100_000))
    with pytest.raises(OvsegError, match="MB"):
        read_upload(good, WebLimits(max_upload_mb=0.001))
    (tmp_path / "notes.png").write_text("hello, not an image\n")
    with pytest.raises(OvsegError, match="not an image"):
        read_upload(tmp_path / "notes.png", WebLimits())
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:4000])
    with pytest.raises(OvsegError, match="truncated"):
        read_upload(tmp_path / "cut.jpg", WebLimits())


# ---- end to end in a real browser ----

def _require_browser() -> None:
    """Fail in CI, skip elsewhere, naming what is missing."""
    missing = [] if Path(CHROMIUM).is_file() else [f"chromium at {CHROMIUM} (apt-get install -y chromium)"]
    for module in ("playwright", "gradio"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the Python package {module} (pip install -e '.[test]')")
    if missing:
        message = "the web end-to-end test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ovseg serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"ovseg serve did not answer within {timeout:.0f} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    """(url, process) of ``ovseg serve`` with the tiny checkpoint on a free loopback port."""
    _require_browser()
    tmp = tmp_path_factory.mktemp("serve")
    port, log = _free_port(), tmp / "server.log"
    url = f"http://127.0.0.1:{port}/"
    env = os.environ | {"GRADIO_TEMP_DIR": str(tmp / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "ovseg", "serve", "--resume", str(tiny_checkpoint), "--port", str(port),
           "--device", "cpu"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_until_up(url, proc, log)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server[0])
        page.wait_for_selector("#ovseg-run")
        yield page
        browser.close()


def _segment(page, photo: Path | None, classes: str) -> None:
    if photo is not None:
        page.locator("#ovseg-image input[type=file]").set_input_files(str(photo))
        page.wait_for_selector("#ovseg-image img")
    page.locator("#ovseg-classes textarea").fill(classes)
    page.locator("#ovseg-run").click()


def _legend(page, n: int) -> set[str]:
    """The class names of the legend once it has ``n`` rows."""
    rows = page.locator("#ovseg-legend tr[data-class]")
    page.wait_for_function(f"document.querySelectorAll('#ovseg-legend tr[data-class]').length === {n}")
    return {rows.nth(i).get_attribute("data-class") for i in range(n)}


def test_segment_a_photo(server, page, photos, tmp_path):
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(photos["astronaut"]).save(photo, quality=90)
    page.locator("#ovseg-run").wait_for()
    page.get_by_label("Background class", exact=False).uncheck()
    _segment(page, photo, "person|astronaut|woman, flag, rocket|space shuttle")
    assert _legend(page, 3) == {"person", "flag", "rocket"}
    overlay = page.locator("#ovseg-overlay img")
    overlay.wait_for()
    assert overlay.evaluate("img => img.complete && img.naturalWidth") >= 512  # the photo plus its legend
    assert "image encoded" in page.locator("#ovseg-status").inner_text()
    page.wait_for_selector("#ovseg-groups img")
    if os.environ.get("OVSEG_SCREENSHOT"):
        page.wait_for_timeout(500)  # let the images finish fading in
        page.screenshot(path=os.environ["OVSEG_SCREENSHOT"], full_page=True)
    href = page.locator("#ovseg-mask a[href]").first.get_attribute("href")
    with urllib.request.urlopen(urllib.request.urljoin(server[0], href), timeout=10) as r:
        mask = np.asarray(Image.open(io.BytesIO(r.read())))
    assert mask.shape == (512, 512) and 1 <= mask.min() and mask.max() <= 3  # no background: labels 1..3

    # only the classes change: the cached image encoding answers
    page.get_by_label("Background class", exact=False).check()
    _segment(page, None, "cat, dog")
    assert _legend(page, 2) == {"cat", "dog"}
    page.wait_for_function("document.querySelector('#ovseg-status').innerText.includes('reused')")


def test_bad_uploads_show_an_error_and_the_server_keeps_serving(server, page, photos, tmp_path):
    url, proc = server
    (tmp_path / "notes.txt").write_text("hello, not an image\n")
    page.locator("#ovseg-image input[type=file]").set_input_files(str(tmp_path / "notes.txt"))
    page.get_by_test_id("toast-body").filter(has_text="notes.txt").wait_for()  # refused by the page itself

    (tmp_path / "notes.png").write_text("hello, not an image either\n")  # reaches the server
    _segment(page, tmp_path / "notes.png", "cat")
    page.locator("#ovseg-status [role=alert]", has_text="not an image").wait_for()
    assert page.locator("#ovseg-overlay img").count() == 0

    photo = tmp_path / "chelsea.jpg"
    Image.fromarray(photos["chelsea"]).save(photo)
    (tmp_path / "cut.jpg").write_bytes(photo.read_bytes()[:6000])
    _segment(page, tmp_path / "cut.jpg", "cat")
    page.locator("#ovseg-status [role=alert]", has_text="truncated").wait_for()

    assert proc.poll() is None
    _segment(page, photo, "cat, wall, floor")
    assert _legend(page, 3) == {"cat", "wall", "floor"}
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
