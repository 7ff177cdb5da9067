"""Real-browser tests: Debian chromium driven by Playwright against `spiral ui` on localhost.

Screenshots at 1366x768 (a projector) and 1920x1080 go to test-output/browser/. The server has
no network access to any CDN: the page renders from the assets installed by
tools/offline_assets.py. No timing is asserted (see `spiral bench --ui` for the figures).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT, SCENARIOS, free_port

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update"]
SHOTS = ROOT / "test-output" / "browser"
SPIRAL = str(Path(sys.executable).parent / "spiral")

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI: /usr/bin/chromium is missing (make browser-deps installs it)")
    pytest.skip("Debian chromium not installed (make browser-deps)", allow_module_level=True)




class Server:
    def __init__(self, proc, url, log):
        self.proc, self.url, self.log = proc, url, log

    def solara_pid(self) -> int:
        """`spiral ui` runs solara as its child: the process that steps the models."""
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return int(kids[0]) if kids else self.proc.pid

    def cpu_seconds(self) -> float:
        f = Path(f"/proc/{self.solara_pid()}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def log_text(self) -> str:
        return Path(self.log).read_text(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenarios")
    for f in SCENARIOS.glob("*.toml"):
        shutil.copy(f, folder)
    (folder / "zz_broken.toml").write_text("# zz_broken.toml: a broken file.\n"
                                           "[mindset]\nabundance_share = 3\n")
    port = free_port()
    logpath = tmp_path_factory.mktemp("log") / "ui.log"
    log = open(logpath, "w")
    p = subprocess.Popen([SPIRAL, "ui", "--port", str(port), "--host", "127.0.0.1",
                          "--scenarios", str(folder)], stdout=log, stderr=subprocess.STDOUT,
                         cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        p.kill()
        raise RuntimeError("spiral ui did not start")
    yield Server(p, url, logpath)
    p.terminate()
    p.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def open_page(browser, server, w=1366, h=768, sandbox=True):
    ctx = browser.new_context(viewport={"width": w, "height": h}, accept_downloads=True)
    pg = ctx.new_page()
    pg.goto(server.url)
    pg.wait_for_selector(".spiral-network svg", timeout=120_000)
    if sandbox:
        pg.locator(".spiral-intro-sandbox").click()
        pg.wait_for_selector(".spiral-intro", state="detached")
    return pg


@pytest.fixture
def page(browser, server):
    pg = open_page(browser, server)
    yield pg
    pg.context.close()


def step_no(pg) -> int:
    return int(re.search(r"step\s+(\d+)", pg.locator(".spiral-stats").inner_text()).group(1))


def in_view(pg, selector, w, h):
    box = pg.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} not shown"
    assert box["y"] >= 0 and box["y"] + box["height"] <= h + 1, f"{selector} below the fold"
    assert box["x"] >= 0 and box["x"] + box["width"] <= w + 1, f"{selector} off the side"


SMALLEST_TEXT_JS = """() => {
  let worst = [1e9, ''];
  for (const el of document.querySelectorAll('.spiral-app *')) {
    if (el.closest('.spiral-tip')) continue;
    const r = el.getBoundingClientRect();
    if (!r.width || !r.height) continue;
    let px;
    if (el instanceof SVGTextElement) {
      const m = el.getScreenCTM();
      px = parseFloat(el.getAttribute('font-size')) * Math.hypot(m.a, m.b);
    } else {
      const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
      if (!own) continue;
      px = parseFloat(getComputedStyle(el).fontSize);
    }
    if (px < worst[0]) worst = [px, el.textContent.trim().slice(0, 40)];
  }
  return worst;
}"""


@pytest.mark.parametrize("w,h", [(1366, 768), (1920, 1080)])
def test_story_screen_fits_the_projector_and_reads_from_the_back(browser, server, w, h):
    pg = open_page(browser, server, w, h, sandbox=False)
    assert pg.locator(".spiral-intro h1").inner_text() == "The trust spiral"  # intro first
    pg.screenshot(path=SHOTS / f"01-intro-{w}.png")
    pg.locator(".spiral-intro-story").first.click()  # The spiral out
    pg.wait_for_selector(".spiral-predict")
    for sel in (".spiral-network svg", ".spiral-phase svg", ".spiral-series svg",
                ".spiral-story-card", ".spiral-predict", ".spiral-intervene >> nth=6",
                ".spiral-play", ".spiral-export"):
        in_view(pg, sel, w, h)
    pg.locator(".spiral-predict").first.click()
    pg.wait_for_selector(".spiral-next", timeout=60_000)  # the reveal has played
    in_view(pg, ".spiral-next", w, h)
    assert re.search(r"trust (rose|fell|stayed)", pg.locator(".spiral-reveal").inner_text())
    px, text = pg.evaluate(SMALLEST_TEXT_JS)
    assert px >= 16, f"text of {px:.1f}px: {text!r}"
    net = pg.locator(".spiral-network svg").bounding_box()
    assert net["width"] >= (440 if w == 1366 else 700)
    pg.screenshot(path=SHOTS / f"02-story-{w}.png")
    pg.context.close()


def test_click_an_alliance_selects_highlights_and_shows_its_monitors(page):
    # the midpoint of a live alliance's line, in screen pixels, and what is on top there
    x, y, al = page.evaluate("""() => {
      const hits = [...document.querySelectorAll('.spiral-network .hit')];
      for (const h of hits.slice(5)) {
        const m = h.getScreenCTM();
        const x = m.a * (+h.getAttribute('x1') + +h.getAttribute('x2')) / 2 + m.e;
        const y = m.d * (+h.getAttribute('y1') + +h.getAttribute('y2')) / 2 + m.f;
        const top = document.elementFromPoint(x, y);
        if (top && top.dataset.al !== undefined) return [x, y, top.dataset.tip];
      }
      return [0, 0, ''];
    }""")
    assert al, "no clickable alliance found"
    name = al.split(" · ")[0]  # "alliance 3–7"
    page.mouse.move(x, y)
    page.wait_for_selector(".spiral-tip")  # hover shows its numbers
    assert "trust" in page.locator(".spiral-tip").inner_text()
    page.mouse.click(x, y)
    page.wait_for_function("(n) => document.querySelector('.spiral-phase-panel')"
                           ".innerText.includes(n)", arg=name, timeout=20_000)
    assert name in page.locator(".spiral-phase-panel").inner_text()
    assert page.locator(".spiral-montable").inner_text().count("trust") >= 1
    ringed = page.locator('.spiral-network circle[stroke="#1f5fbf"]').count()
    assert ringed == 2  # both partners ringed
    # the selection stays on that alliance while the model steps
    for _ in range(3):
        page.get_by_role("button", name="Step").click()
    page.wait_for_function("() => /step\\s+3/.test(document.querySelector('.spiral-stats')"
                           ".innerText)", timeout=20_000)
    assert name in page.locator(".spiral-phase-panel").inner_text()
    page.screenshot(path=SHOTS / "03-selected-1366.png")


def test_intervention_shows_at_once_without_a_step(page):
    page.get_by_role("button", name="Step").click()
    page.wait_for_function("() => /step\\s+1/.test(document.querySelector('.spiral-stats')"
                           ".innerText)", timeout=20_000)
    before = page.locator(".spiral-montable").inner_text()
    page.get_by_role("button", name=re.compile("1 Share")).click()
    page.wait_for_selector(".spiral-phase .mark", timeout=20_000)
    assert page.locator(".spiral-series .mark").count() == 1
    assert step_no(page) == 1  # no step was taken
    assert page.locator(".spiral-montable").inner_text() != before
    assert re.search(r"openness rose \d\.\d\d → \d\.\d\d",
                     page.locator(".spiral-narration").inner_text())
    page.screenshot(path=SHOTS / "04-intervention-1366.png")


def test_bad_input_gives_a_message_and_the_previous_state(page):
    page.locator(".spiral-settings").click()
    seed = page.get_by_label("Seed")
    seed.fill("12345678901234567890")
    seed.press("Enter")
    page.wait_for_selector("text=/The seed must be a whole number/", timeout=20_000)
    assert page.get_by_label("Seed").input_value() == "1"
    page.screenshot(path=SHOTS / "05-bad-seed-1366.png")
    page.locator(".spiral-settings-panel .v-select__slot").first.click()
    page.locator(".v-list-item__title", has_text="A broken file").click()
    page.wait_for_selector("text=/abundance_share/", timeout=20_000)
    page.locator(".spiral-close").click()
    page.get_by_role("button", name="Step").click()  # still alive, same run
    page.wait_for_function("() => /step\\s+1/.test(document.querySelector('.spiral-stats')"
                           ".innerText)", timeout=20_000)
    assert "A mixed industry" in page.locator(".spiral-key").inner_text()  # the same run
    page.screenshot(path=SHOTS / "06-broken-scenario-1366.png")


def test_ended_alliance_stays_selected_and_says_so(page):
    page.locator(".spiral-story >> nth=0").click()  # The spiral out
    for _ in range(4):
        page.locator(".spiral-predict").first.click()
        page.wait_for_selector(".spiral-next", timeout=60_000)
        if page.locator(".spiral-next").inner_text().startswith("Finish"):
            break
        page.locator(".spiral-next").click()
        page.wait_for_selector(".spiral-predict", timeout=20_000)
    text = page.locator(".spiral-phase-panel").inner_text()
    assert re.search(r"alliance 0–1 — ended at step \d+", text), text
    assert page.locator(".spiral-intervene").first.is_disabled()
    page.screenshot(path=SHOTS / "07-ended-1366.png")


def test_export_downloads_a_zip_that_replays(page, tmp_path):
    page.get_by_role("button", name="Step").click()
    page.get_by_role("button", name=re.compile("2 Neutralize")).click()
    page.wait_for_selector(".spiral-series .mark", timeout=20_000)
    page.get_by_role("button", name="Step").click()
    page.wait_for_function("() => /step\\s+2/.test(document.querySelector('.spiral-stats')"
                           ".innerText)", timeout=20_000)
    with page.expect_download(timeout=60_000) as dl:
        page.locator(".spiral-export").click()
    data = Path(dl.value.path()).read_bytes()
    z = zipfile.ZipFile(io.BytesIO(data))
    toml = next(n for n in z.namelist() if n.endswith(".toml"))
    summary = json.loads(z.read(next(n for n in z.namelist() if n.endswith("summary.json"))))
    (tmp_path / "ui.toml").write_bytes(z.read(toml))
    out = tmp_path / "replay"
    subprocess.run([SPIRAL, "run", str(tmp_path / "ui.toml"), "--quiet", "--out", str(out)],
                   check=True, capture_output=True)
    again = json.loads((out / "summary.json").read_text())
    for k in ("mean_trust", "mean_openness", "value_created", "alliances_ended", "steps"):
        assert again[k] == summary[k], k
    assert "neutralize" in z.read(toml).decode()


def test_info_panel_and_presentation_mode(page):
    page.locator(".spiral-info").click()
    page.wait_for_selector(".spiral-info-panel")
    for heading in ("What is it?", "How it works", "Things to notice", "Things to try"):
        assert page.locator(f"text={heading}").count() == 1
    page.screenshot(path=SHOTS / "08-info-1366.png")
    page.locator(".spiral-info-panel .spiral-close").click()
    page.locator(".spiral-fullscreen").click()
    page.wait_for_selector(".spiral-present")
    page.screenshot(path=SHOTS / "09-present-1366.png")


MIDPOINT_JS = """(u) => {
  const hits = [...document.querySelectorAll('.spiral-network .hit')];
  if (!hits.length) return null;
  const h = hits[Math.floor(u * hits.length)], m = h.getScreenCTM();
  return [m.a * (+h.getAttribute('x1') + +h.getAttribute('x2')) / 2 + m.e,
          m.d * (+h.getAttribute('y1') + +h.getAttribute('y2')) / 2 + m.f];
}"""


def _random_clicks(pages, seconds: float, rng: random.Random):
    end = time.time() + seconds
    names = ["1 Share", "2 Neutralize", "3 Find", "5 Mindful", "6 Be", "Shock"]
    while time.time() < end:
        pg = rng.choice(pages)
        r = rng.random()
        try:
            if r < 0.5:
                pg.get_by_role("button", name=re.compile(rng.choice(names))).first.click(
                    timeout=5_000)
            elif r < 0.8:  # click the middle of a random alliance's line, as a person would
                xy = pg.evaluate(MIDPOINT_JS, rng.random())
                if xy:
                    pg.mouse.click(*xy)
            else:
                pg.locator(".spiral-scope .v-btn").nth(rng.randrange(2)).click(timeout=5_000)
        except Exception as e:  # noqa: BLE001 - a control may be disabled for a moment
            if "Timeout" not in type(e).__name__:
                raise
        time.sleep(rng.uniform(0.05, 0.4))


def _play_robustly(browser, server, seconds: float):
    pages = [open_page(browser, server), open_page(browser, server)]
    for pg in pages:
        pg.locator(".spiral-speed .v-slider__thumb-container").first.focus()
        pg.keyboard.press("End")  # top speed
        pg.get_by_role("button", name="Play").click()
    start = [step_no(pg) for pg in pages]
    _random_clicks(pages, seconds, random.Random(1))
    for pg, s0 in zip(pages, start):
        assert step_no(pg) > s0 + 10, "play did not advance"
        assert pg.locator("text=/Something went wrong|Traceback|Could not draw/").count() == 0
    pages[0].screenshot(path=SHOTS / "10-played-1366.png")
    for pg in pages:
        pg.context.close()
    # once the tabs are closed, the server goes idle within 30 s
    deadline = time.time() + 30
    while True:
        c0 = server.cpu_seconds()
        time.sleep(3)
        used = (server.cpu_seconds() - c0) / 3
        if used < 0.05 or time.time() > deadline:
            break
    assert used < 0.05, f"server still busy after closing the tabs: {used:.0%} of a core"
    log = server.log_text()
    assert "Traceback" not in log and "Too many renders" not in log, log[-3000:]


def test_play_with_random_clicks_in_two_tabs_then_idle(browser, server):
    _play_robustly(browser, server, seconds=15)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SPIRAL_LONG_PLAY") != "1",
                    reason="10 minutes on its own: SPIRAL_LONG_PLAY=1 make test (make test-long)")
def test_ten_minutes_of_play_with_random_clicks_in_two_tabs(browser, server):
    """The issue's acceptance test. Not in the default `make test`, whose budget is 10 minutes
    in all; `make test-long` runs it (the 15-second version above runs every time)."""
    _play_robustly(browser, server, seconds=600)
