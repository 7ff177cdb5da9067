"""Mesa's own SolaraViz draws and resets AllianceModel (examples/mesa_app.py) in a real browser:
Debian chromium driven by Playwright, screenshots under test-output/browser/."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update"]
SHOTS = ROOT / "test-output" / "browser"

if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium not installed (make browser-deps)", allow_module_level=True)


def test_mesa_solaraviz_draws_and_resets(tmp_path):
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "app.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "solara", "run", "examples/mesa_app.py",
                          "--host", "127.0.0.1", "--port", str(port), "--production",
                          "--no-open"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        SHOTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.goto(url)
            pg.wait_for_selector("text=Reset", timeout=90_000)
            pg.wait_for_selector("text=Time: 0.0", timeout=60_000)
            pg.wait_for_selector("img, svg, canvas", timeout=60_000)
            for _ in range(2):
                pg.get_by_role("button", name="Step").first.click()
                time.sleep(1.0)
            pg.wait_for_selector("text=Time: 2.0", timeout=30_000)
            pg.screenshot(path=SHOTS / "mesa-solaraviz.png", full_page=True)
            pg.get_by_role("button", name="Reset").first.click()
            pg.wait_for_selector("text=Time: 0.0", timeout=30_000)
            pg.screenshot(path=SHOTS / "mesa-solaraviz-reset.png", full_page=True)
            browser.close()
        text = (tmp_path / "app.log").read_text()
        assert "Traceback" not in text, text[-2000:]
    finally:
        p.terminate()
        p.wait(timeout=30)
        log.close()
