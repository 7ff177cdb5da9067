"""`spiral calibrate` (issue 14): targets file checks, statistics, tiny ABC-SMC runs (local,
Dask), resume after SIGKILL, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.calibration import (
    Run,
    finished_generations,
    load_targets,
    prior_tie_counts,
    stat_trust_asymmetry,
)
from sim.scenario import from_dict

from .conftest import ROOT, free_port

SPIRAL = str(Path(sys.executable).parent / "spiral")

SMALL_SCENARIO = """
extends = "{base}"
name = "small"
steps = 100
[ecosystem]
organizations = 16
"""

ARM = """
extends = "small.toml"
name = "small_coached"
[[interventions]]
step = 10
every = 25
kind = "coach_mindset"
target = "all"
dose = 0.3
"""

TARGETS = """
description = "tiny test targets"
[scale]
step = "1 month"
failure_age = 48
[arms.alliance_function]
scenario = "coached.toml"
[priors."patience.end_rate"]
low = 0.05
high = 0.4
[priors."patience.horizon"]
low = 6
high = 36
integer = true
[targets.failure]
statistic = "failure_km"
value = 0.5
interval = [0.3, 0.7]
figure = "half fail"
citation = "Dyer, Kale & Singh (2001)"
[targets.peak]
statistic = "hazard_peak_age"
value = 24
interval = [6, 48]
figure = "peak in the first years"
citation = "Fichman & Levinthal (1991)"
[targets.function]
statistic = "alliance_function_gain"
value = 0.26
interval = [0.1, 0.4]
figure = "63% vs 50%"
citation = "Kale, Dyer & Singh (2002)"
[targets.asym]
statistic = "trust_asymmetry"
value = 3.0
interval = [2.0, 4.0]
figure = "three times faster"
citation = "Slovic (1993)"
[targets.ties]
statistic = "prior_tie_lift"
value = 2.5
interval = [1.5, 4.0]
figure = "prior ties raise the chance"
citation = "Gulati (1995)"
"""


def tiny(tmp_path: Path, targets: str = TARGETS) -> Path:
    (tmp_path / "small.toml").write_text(
        SMALL_SCENARIO.format(base=(ROOT / "scenarios" / "baseline.toml").as_posix()))
    (tmp_path / "coached.toml").write_text(ARM)
    f = tmp_path / "targets.toml"
    f.write_text(targets)
    return f


def calibrate(tmp_path, out, *extra, check=True, **kw):
    f = tiny(tmp_path)
    cmd = [SPIRAL, "calibrate", str(f), "--scenario", str(tmp_path / "small.toml"),
           "--population", "4", "--generations", "2", "--ppc", "3", "--out", str(out), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900, **kw)
    if check:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


def populations(out: Path) -> pd.DataFrame:
    """Every stored generation's particles and weights, in a canonical order."""
    import pyabc

    h = pyabc.History(f"sqlite:///{out / 'history.db'}", create=False)
    h.id = 1
    frames = []
    for t in range(h.max_t + 1):
        df, w = h.get_distribution(m=0, t=t)
        df = df.reset_index(drop=True)
        df["w"] = w
        df["t"] = t
        frames.append(df.sort_values(list(df.columns)).reset_index(drop=True))
    return pd.concat(frames, ignore_index=True)


# --- the shipped targets file and the statistics -------------------------------------------


def test_shipped_targets_file_is_complete():
    t = load_targets(ROOT / "data" / "targets.toml")
    stats = {x.statistic for x in t.targets}
    assert {"failure_km", "hazard_peak_age", "alliance_function_gain", "trust_asymmetry",
            "prior_tie_lift"} <= stats
    assert "month" in t.step
    for x in t.targets:
        assert x.citation and x.figure and x.interval[0] <= x.value <= x.interval[1]
    assert t.arms["alliance_function"][0]["kind"] == "coach_mindset"
    assert len(t.priors) >= 5


def test_trust_asymmetry_statistic_is_the_rate_ratio():
    p = from_dict({}).params()
    assert stat_trust_asymmetry(type("R", (), {"params": p})()) == pytest.approx(3.0, rel=0.02)
    q = from_dict({"trust": {"erode_rate": 0.2}}).params()
    assert stat_trust_asymmetry(type("R", (), {"params": q})()) == pytest.approx(2.0, rel=0.02)


def test_prior_tie_counts_by_hand():
    # 4 organizations. Set-up: 0-1 and 1-2. Step 5: 0-1 ends. Step 6: 0-1 forms again (a
    # direct prior tie). Step 7: 0-2 forms (common partner 1, an indirect tie). Step 8: 0-3
    # forms (no tie).
    org = np.array([[0, 1], [1, 2], [0, 1], [0, 2], [0, 3]])
    formed = np.array([0, 0, 6, 7, 8])
    ended = np.array([5, -1, -1, -1, -1])
    run = Run(np.zeros(5), np.zeros(5, bool), org, formed, ended, 4)
    new, hit, expected = prior_tie_counts(run, indirect=False)
    assert (new, hit) == (3, 1)
    # at step 6 the non-partner pairs are 01 02 03 13 23 (5), one of them a former partner (01)
    assert expected > 0.2 - 1e-12
    new, hit, _ = prior_tie_counts(run)
    assert (new, hit) == (3, 2)


# --- bad input: one line, exit 2, before any simulation --------------------------------------


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.replace("[scale]", "colour = 1\n[scale]"), "colour: unknown key"),
    (lambda s: s.replace('value = 0.5\n', 'value = 0.5\ntolerence = 1\n'), "tolerence: unknown key"),
    (lambda s: s.replace("low = 0.05\nhigh = 0.4\n", ""), "empty prior"),
    (lambda s: s.replace("low = 0.05\nhigh = 0.4", "low = 0.4\nhigh = 0.4"), "empty prior"),
    (lambda s: s.split("[priors.")[0] + "[targets" + s.split("[targets", 1)[1],
     "expected at least one prior"),
    (lambda s: s.replace('"failure_km"', '"failure_rate_10y"'), "unknown statistic"),
    (lambda s: s.replace('"patience.end_rate"', '"patience.end_rat"'), "unknown scenario key"),
])
def test_bad_targets_one_line_exit_2(tmp_path, edit, words):
    f = tiny(tmp_path, edit(TARGETS))
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = subprocess.run([SPIRAL, "calibrate", str(f), "--out", str(out)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert not out.exists()  # nothing ran, nothing written
    assert time.perf_counter() - t0 < 60


def test_unreachable_scheduler_one_line_exit_2(tmp_path):
    port = free_port()  # nobody listens there
    out = tmp_path / "out"
    r = calibrate(tmp_path, out, "--scheduler", f"tcp://127.0.0.1:{port}", check=False)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Dask scheduler answers" in lines[0], r.stderr
    assert not out.exists()


# --- tiny calibrations -----------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_local_calibration_writes_every_output(tmp_path):
    out = tmp_path / "cal"
    r = calibrate(tmp_path, out, "--workers", "2")
    for name in ("history.db", "posterior.parquet", "pairplot.png", "ppc.png", "ppc.csv",
                 "calibration.json", "calibrated.toml"):
        assert (out / name).is_file(), name
    assert "generation 1/2" in r.stderr and "generation 2/2" in r.stderr
    post = pd.read_parquet(out / "posterior.parquet")
    assert len(post) == 4 and post["weight"].sum() == pytest.approx(1.0)
    assert post["patience.end_rate"].between(0.05, 0.4).all()
    rep = json.loads((out / "calibration.json").read_text())
    assert len(rep["generations"]) == 2 and len(rep["epsilon_schedule"]) == 2
    assert rep["epsilon_schedule"][1] <= rep["epsilon_schedule"][0]
    assert all(0 < a <= 1 for a in rep["acceptance_per_generation"])
    assert 1 <= rep["ess_final"] <= 4 + 1e-9
    assert {t["name"] for t in rep["targets"]} == {"failure", "peak", "function", "asym", "ties"}
    assert rep["versions"]["pyabc"] == "0.13.0"
    assert len(rep["ppc"]) == 5 and all("covered" in x for x in rep["ppc"])
    # calibrated.toml: a scenario `spiral validate` accepts, holding the posterior median
    v = subprocess.run([SPIRAL, "validate", str(out / "calibrated.toml")], capture_output=True,
                       text=True, cwd=ROOT)
    assert v.returncode == 0, v.stderr
    from sim.scenario import load

    sc = load(out / "calibrated.toml")
    assert sc.values["patience"]["end_rate"] == pytest.approx(
        rep["calibrated_point"]["patience.end_rate"], abs=1e-6)
    assert isinstance(sc.values["patience"]["horizon"], int)
    assert sc.values["ecosystem"]["organizations"] == 16  # the rest is the scenario's
    # the history is a real, queryable SQLite database
    import sqlite3

    with sqlite3.connect(out / "history.db") as db:
        n = db.execute("select count(*) from particles").fetchone()[0]
    assert n >= 8




@pytest.mark.slow
def test_dask_equals_local_and_worker_count_does_not_matter(tmp_path, dask_cluster):
    calibrate(tmp_path, tmp_path / "w1", "--workers", "1", "--ppc", "2")
    calibrate(tmp_path, tmp_path / "w2", "--workers", "2", "--ppc", "2")
    pd.testing.assert_frame_equal(populations(tmp_path / "w1"), populations(tmp_path / "w2"))
    r = calibrate(tmp_path, tmp_path / "dask", "--scheduler", dask_cluster, "--ppc", "2")
    assert "Dask" in r.stderr
    pd.testing.assert_frame_equal(populations(tmp_path / "w1"), populations(tmp_path / "dask"))
    rep = json.loads((tmp_path / "dask" / "calibration.json").read_text())
    assert rep["sampler"] == "dask"


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    full = tmp_path / "full"
    calibrate(tmp_path, full, "--generations", "3", "--ppc", "2")
    cut = tmp_path / "cut"
    f = tiny(tmp_path)
    cmd = [SPIRAL, "calibrate", str(f), "--scenario", str(tmp_path / "small.toml"),
           "--population", "4", "--generations", "3", "--ppc", "2", "--out", str(cut)]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline = time.time() + 600
        while finished_generations(cut) < 1:
            assert p.poll() is None, "calibration ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the command and its sampler processes
        p.wait(timeout=30)
    kept = finished_generations(cut)
    assert 1 <= kept < 3
    before = populations(cut)
    r = calibrate(tmp_path, cut, "--generations", "3", "--ppc", "2")
    assert f"resuming {cut}: {kept} of 3 generations already finished" in r.stderr
    after = populations(cut)
    # the finished generations were kept untouched ...
    pd.testing.assert_frame_equal(after[after.t < kept].reset_index(drop=True), before)
    # ... and the result equals the uninterrupted run with the same seed
    pd.testing.assert_frame_equal(after, populations(full))
