"""`spiral bench --ui`: how fast the trainer UI feels, measured in the browser.

Server: one step plus building the frame (Session.step + Session.view) at 200 organizations.
Browser (Debian chromium via Playwright, when installed): the time from a click on Step to the
redrawn figures painted (median over clicks) at 200 organizations, and the redraws per second
of Play at 60 organizations. Figures, never assertions: the machines are shared and noisy.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from .session import SCENARIO_DIR, bench_ui

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update"]

# JS: click Step n times; each time wait until the series and the network are redrawn, then for
# the next animation frame (painted); return the milliseconds of each click.
STEP_JS = """async (n) => {
  const btn = () => [...document.querySelectorAll('button')].find(
      b => b.innerText.trim() === 'Step');
  const html = (k) => { const e = document.querySelector('.spiral-' + k + ' .spiral-svgwrap');
                        return e ? e.innerHTML : ''; };
  const out = [];
  for (let i = 0; i < n; i++) {
    const s0 = html('series'), n0 = html('network');
    const t0 = performance.now();
    btn().click();
    await new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error('no redraw in 10 s')), 10000);
      const check = () => {
        if (html('series') !== s0 && html('network') !== n0) { clearTimeout(t); res(); }
        else requestAnimationFrame(check);
      };
      check();
    });
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    out.push(performance.now() - t0);
    await new Promise(r => setTimeout(r, 150));
  }
  return out;
}"""

# JS: count redraws of the series during `ms` milliseconds
FPS_JS = """async (ms) => {
  let frames = 0;
  const target = document.querySelector('.spiral-series .spiral-svgwrap');
  const obs = new MutationObserver(() => { frames += 1; });
  obs.observe(target, {childList: true, subtree: true, characterData: true});
  await new Promise(r => setTimeout(r, ms));
  obs.disconnect();
  return frames;
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(folder: Path, first: str):
    """Start `spiral ui` on a free port; returns (process, url)."""
    port = _free_port()
    exe = Path(sys.executable).parent / "spiral"
    p = subprocess.Popen([str(exe), "ui", first, "--port", str(port), "--host", "127.0.0.1",
                          "--scenarios", str(folder)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=2)
            return p, url
        except OSError:
            time.sleep(0.5)
    p.kill()
    raise RuntimeError("spiral ui did not start")


def scenario_folder(tmp: Path) -> Path:
    for f in SCENARIO_DIR.glob("*.toml"):
        shutil.copy(f, tmp)
    for n in (60, 200):
        (tmp / f"bench{n}.toml").write_text(
            f'# bench{n}.toml: the baseline with {n} organizations.\nextends = "baseline.toml"\n'
            f'name = "bench{n}"\n[ecosystem]\norganizations = {n}\n')
    return tmp


def open_page(pw, url: str, width=1366, height=768):
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_selector(".spiral-network svg", timeout=120_000)
    if page.locator(".spiral-intro-sandbox").count():
        page.locator(".spiral-intro-sandbox").click()
    return browser, page


def _step_no(page) -> int:
    import re

    return int(re.search(r"step\s+(\d+)", page.locator(".spiral-stats").inner_text()).group(1))


def browser_bench(clicks: int = 15, play_s: float = 6.0) -> dict:
    from playwright.sync_api import sync_playwright

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        folder = scenario_folder(Path(tmp))
        for n, first in ((200, "bench200.toml"), (60, "bench60.toml")):
            proc, url = serve(folder, first)
            try:
                browser, page = open_page(pw, url)
                page.evaluate(STEP_JS, 3)  # warm-up (the portrait's cache, first paints)
                if n == 200:
                    ms = page.evaluate(STEP_JS, clicks)
                    out["step_to_figures_ms_median_200"] = float(np.median(ms))
                    out["step_to_figures_ms_p90_200"] = float(np.percentile(ms, 90))
                    out["step_to_figures_ms_all_200"] = [round(x, 1) for x in ms]
                else:
                    # the default speed is 10 steps/s; the slider's End key sets the top speed
                    page.locator(".spiral-speed .v-slider__thumb-container").first.focus()
                    page.keyboard.press("End")
                    page.get_by_role("button", name="Play").click()
                    time.sleep(1.0)
                    s0 = _step_no(page)
                    frames = page.evaluate(FPS_JS, int(play_s * 1000))
                    out["play_redraws_per_s_60"] = frames / play_s
                    out["play_steps_per_s_60"] = (_step_no(page) - s0) / play_s
                    page.get_by_role("button", name="Pause").click()
                browser.close()
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    return out


def main_bench_ui(args) -> int:
    res = bench_ui(200, args.steps)
    print(f"UI server: one step plus the frame (three SVGs, monitors) at 200 organizations: "
          f"{res['server_ms_median']:.1f} ms median, {res['server_ms_max']:.1f} ms max, "
          f"{res['frame_bytes'] / 1000:.0f} kB per frame ({args.steps} steps)")
    if Path(CHROMIUM).exists():
        b = browser_bench()
        res.update(b)
        print(f"UI browser (chromium, 1366x768): Step click to redrawn figures at 200 "
              f"organizations: {b['step_to_figures_ms_median_200']:.0f} ms median, "
              f"{b['step_to_figures_ms_p90_200']:.0f} ms p90 (goal <= 150 ms median)")
        print(f"UI browser: Play at top speed, 60 organizations: "
              f"{b['play_redraws_per_s_60']:.1f} redraws/s (goal >= 10), "
              f"{b['play_steps_per_s_60']:.1f} steps/s")
    else:
        print("UI browser: /usr/bin/chromium missing (make browser-deps); browser figure skipped")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
        print(f"written: {args.json}")
    return 0
