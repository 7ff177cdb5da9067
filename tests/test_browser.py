"""Real-browser tests: Debian chromium driven by Playwright against `spiral ui` on localhost.

Each test saves a screenshot under test-output/browser/. The server runs with no network
access to any CDN: the page renders from the assets installed by tools/offline_assets.py.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT, SCENARIOS

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update"]
SHOTS = ROOT / "test-output" / "browser"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI: /usr/bin/chromium is missing (make browser-deps installs it)")
    pytest.skip("Debian chromium not installed (make browser-deps)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenarios")
    for f in SCENARIOS.glob("*.toml"):
        shutil.copy(f, folder)
    (folder / "zz_broken.toml").write_text("[mindset]\nabundance_share = 3\n")
    port = free_port()
    log = open(tmp_path_factory.mktemp("log") / "ui.log", "w")
    p = subprocess.Popen([str(Path(sys.executable).parent / "spiral"), "ui", "--port", str(port),
                          "--host", "127.0.0.1", "--scenarios", str(folder)],
                         stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(120):
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        p.kill()
        raise RuntimeError("spiral ui did not start")
    yield url
    p.terminate()
    p.wait(timeout=30)
    log.close()


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        pg = browser.new_page(viewport={"width": 1500, "height": 1150})
        pg.goto(server)
        pg.wait_for_selector("text=What just happened", timeout=90_000)
        yield pg
        browser.close()


def step_no(pg) -> int:
    text = pg.locator("text=/step\\s+\\d+\\s+·/").first.inner_text()
    return int(re.search(r"step\s+(\d+)", text).group(1))


def phase_src(pg) -> str:
    return pg.locator(".spiral-phase img").first.get_attribute("src") or ""


def test_page_loads(page):
    assert page.locator("text=Ecosystem").count() >= 0
    assert page.locator(".spiral-network img").count() == 1
    assert page.locator(".spiral-phase img").count() == 1
    assert step_no(page) == 0
    page.screenshot(path=SHOTS / "01-loaded.png", full_page=True)


def test_play_runs_several_steps(page):
    page.get_by_role("button", name="Play").click()
    page.wait_for_function("() => /step\\s+([3-9]|\\d\\d+)\\s/.test(document.body.innerText)",
                           timeout=30_000)
    page.get_by_role("button", name="Pause").click()
    n = step_no(page)
    assert n >= 3
    time.sleep(1.0)
    assert step_no(page) <= n + 1  # paused
    page.screenshot(path=SHOTS / "02-played.png", full_page=True)


def test_intervention_changes_narration_and_plotted_trust(page):
    for _ in range(3):
        page.get_by_role("button", name="Step").click()
        time.sleep(0.3)
    before = phase_src(page)
    page.get_by_role("button", name="1 Share perspectives").click()
    page.wait_for_selector("text=/1 Share perspectives \\(alliance/", timeout=20_000)
    page.get_by_role("button", name="Step").click()
    page.wait_for_function("(b) => { const i = document.querySelector('.spiral-phase img');"
                           " return i && i.src !== b; }", arg=before, timeout=20_000)
    assert phase_src(page) != before
    page.screenshot(path=SHOTS / "03-intervention.png", full_page=True)


def test_bad_value_shows_message(page):
    seed = page.get_by_label("Seed")
    seed.fill("abc")
    seed.press("Enter")
    page.wait_for_selector("text=/seed: expected a whole number/", timeout=20_000)
    page.screenshot(path=SHOTS / "04-bad-seed.png", full_page=True)
    page.locator(".v-select__slot").first.click()  # the scenario picker
    page.locator(".v-list-item__title", has_text="zz_broken.toml").click()
    page.wait_for_selector("text=/abundance_share: expected a number/", timeout=20_000)
    page.get_by_role("button", name="Step").click()  # the app keeps running
    page.wait_for_function("() => /step\\s+1\\s/.test(document.body.innerText)",
                           timeout=20_000)
    page.screenshot(path=SHOTS / "05-broken-scenario.png", full_page=True)


def test_turnaround_story(page):
    page.get_by_role("button", name="The turnaround").click()
    page.wait_for_selector("text=/has spiraled out/", timeout=30_000)
    for _ in range(7):
        page.get_by_role("button", name="Next").click()
        time.sleep(0.8)
    page.wait_for_selector("text=/spiral in/", timeout=30_000)
    page.screenshot(path=SHOTS / "06-turnaround.png", full_page=True)
