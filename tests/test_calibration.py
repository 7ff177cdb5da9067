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
    calibration_scenario,
    finished_generations,
    load_targets,
    prior_tie_counts,
    seed_check,
    stat_trust_asymmetry,
)
from sim import cli
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


def calibrate_args(folder: Path, out: Path, *extra) -> list[str]:
    return ["calibrate", str(folder / "targets.toml"), "--scenario", str(folder / "small.toml"),
            "--population", "4", "--generations", "2", "--ppc", "2", "--quiet",
            "--out", str(out), *extra]


def calibrate(folder: Path, out: Path, *extra, capsys=None, expect: int = 0) -> str:
    """One tiny calibration in this process (the CLI's main; a subprocess only where the
    process itself is under test). Returns what it wrote to stderr."""
    if not (folder / "targets.toml").exists():
        tiny(folder)
    rc = cli.main(calibrate_args(folder, out, *extra))
    err = capsys.readouterr().err if capsys is not None else ""
    assert rc == expect, err[-2000:]
    return err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One tiny calibration (2 local workers, 3 generations) shared by the tests below: its
    outputs are checked, and 1 worker, Dask and a resumed run must give its populations."""
    folder = tmp_path_factory.mktemp("tiny")
    tiny(folder)
    out = folder / "ref"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli.main(calibrate_args(folder, out, "--workers", "2", "--generations", "3"))
    assert rc == 0, err.getvalue()[-2000:]
    return folder, out, err.getvalue()


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
    p = from_dict({"trust": {"erode_rate": 0.3}}).params()
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


# --- the shipped baseline is the calibrated point ---------------------------------------------


def test_shipped_baseline_is_the_recorded_calibrated_point():
    """scenarios/baseline.toml holds the point of the calibration recorded in
    docs/calibration/calibration.json (tools/adopt_calibration.py), of the shipped targets and
    of this baseline's fixed keys; each calibrated key's comment says so."""
    import hashlib

    from analysis.calibration import calibration_scenario, fixed_part_sha256

    rep = json.loads((ROOT / "docs" / "calibration" / "calibration.json").read_text())
    targets = load_targets(ROOT / "data" / "targets.toml")
    assert rep["targets_sha256"] == hashlib.sha256(
        (ROOT / "data" / "targets.toml").read_bytes()).hexdigest()
    sc = calibration_scenario(ROOT / "scenarios" / "baseline.toml", targets)
    assert rep["scenario_fixed_sha256"] == fixed_part_sha256(sc, targets.priors)
    assert rep["calibrated_point_choice"]["method"] == "best"
    lines = (ROOT / "scenarios" / "baseline.toml").read_text().splitlines()
    assert set(rep["calibrated_point"]) == {p.key for p in targets.priors}
    for key, v in rep["calibrated_point"].items():
        section, k = key.split(".", 1)
        assert sc.values[section][k] == v, key
        i = lines.index(f"[{section}]")
        i += next(n for n, ln in enumerate(lines[i:]) if ln.startswith(f"{k} = "))
        comment = [lines[i]]
        while lines[i + 1].startswith(" ") and lines[i + 1].strip().startswith("#"):
            i += 1
            comment.append(lines[i])
        assert any("calibrated (data/targets.toml): posterior 90% interval" in c
                   for c in comment), key


@pytest.mark.slow
def test_shipped_baseline_shows_every_target_on_seeds_from_the_os():
    """Issue 14: the calibrated baseline's patterns hold on seeds that are not in the
    repository. 60 seeds drawn from the OS now (printed, so a failure can be rerun with them);
    each statistic pooled over them, as calibrate computes it with --seeds 60, is consistent with
    the target's published interval: the interval overlaps the estimate +- 3.29 bootstrap
    standard errors. (Asserting the estimate itself inside failed for 3 of 40 sets of 30 seeds:
    the alliance-function gain scatters by 0.024 around 0.36, near the interval's end, 0.40.)"""
    seeds = np.random.default_rng().integers(1, 2**31 - 1, size=60).tolist()
    print(f"seeds from the OS: {seeds}")
    targets = load_targets(ROOT / "data" / "targets.toml")
    sc = calibration_scenario(ROOT / "scenarios" / "baseline.toml", targets)
    rows = seed_check(sc, targets, seeds, n_boot=100)
    for r in rows:
        print(f"{r['target']}: {r['estimate']:.4f} +- {r['se']:.4f} "
              f"[{r['low']}, {r['high']}] inside={r['inside']}")
    assert {r["target"] for r in rows} == {t.name for t in targets.targets}
    for r in rows:
        assert r["consistent"], (r, seeds)
        assert r["se"] >= 0 and r["mc_low"] <= r["estimate"] <= r["mc_high"]


@pytest.mark.slow
def test_seed_check_flags_a_statistic_outside_its_interval(tmp_path):
    """The check can fail: the same runs judged against an interval the alliance-function gain
    does not reach (0.6-0.9) are inconsistent; against the shipped one, consistent; the
    bootstrap is reproducible from the seeds."""
    text = (ROOT / "data" / "targets.toml").read_text()
    text = text.replace('"../scenarios/', f'"{ROOT / "scenarios"}/')
    moved = text.replace("value = 0.26\ninterval = [0.10, 0.40]",
                         "value = 0.75\ninterval = [0.60, 0.90]")
    assert moved != text
    (tmp_path / "shifted.toml").write_text(moved)
    shifted = load_targets(tmp_path / "shifted.toml")
    shipped = load_targets(ROOT / "data" / "targets.toml")
    sc = calibration_scenario(ROOT / "scenarios" / "baseline.toml", shipped)
    seeds = list(range(1, 16))
    got = {r["target"]: r for r in seed_check(sc, shifted, seeds, n_boot=30)}
    ok = {r["target"]: r for r in seed_check(sc, shipped, seeds, n_boot=30)}
    af, af_ok = got["alliance_function"], ok["alliance_function"]
    assert af["estimate"] == af_ok["estimate"] and af["se"] == af_ok["se"] > 0
    assert af["mc_high"] < 0.6 and not af["inside"] and not af["consistent"]
    assert af_ok["consistent"]
    assert all(got[k]["consistent"] == ok[k]["consistent"] for k in got if k != "alliance_function")


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
def test_bad_targets_one_line_exit_2(tmp_path, capsys, edit, words):
    f = tiny(tmp_path, edit(TARGETS))
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert cli.main(["calibrate", str(f), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert not out.exists()  # nothing ran, nothing written
    assert time.perf_counter() - t0 < 60


def test_bad_point_and_unreachable_scheduler_one_line_exit_2(tmp_path, capsys):
    tiny(tmp_path)
    out = tmp_path / "out"
    calibrate(tmp_path, out, "--point", "mean", capsys=capsys, expect=2)
    port = free_port()  # nobody listens there
    err = calibrate(tmp_path, out, "--scheduler", f"tcp://127.0.0.1:{port}", capsys=capsys,
                    expect=2)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no Dask scheduler answers" in lines[0], err
    assert not out.exists()


def test_bad_input_through_the_console_script(tmp_path):
    """The installed command itself: one line on stderr, exit 2."""
    f = tiny(tmp_path, TARGETS.replace("[scale]", "colour = 1\n[scale]"))
    r = subprocess.run([SPIRAL, "calibrate", str(f), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "colour: unknown key" in r.stderr


def test_medoid_is_a_central_particle_and_median_is_not_one():
    from analysis.calibration import Prior, choose_point

    priors = [Prior("a.x", 0.0, 1.0, False, ""), Prior("a.n", 0, 10, True, "")]
    # two correlated clusters: the marginal medians fall between them, where no particle is;
    # the medoid is a member of the heavier one
    df = pd.DataFrame({"a.x": [0.1, 0.12, 0.14, 0.86, 0.88, 0.9], "a.n": [1, 1, 2, 9, 9, 8]})
    w = np.array([0.18, 0.18, 0.18, 0.15, 0.15, 0.16])
    med, info = choose_point("medoid", df, w, priors)
    assert info["particle"] in (0, 1, 2)
    assert med == {"a.x": df["a.x"][info["particle"]], "a.n": df["a.n"][info["particle"]]}
    mode, info = choose_point("mode", df, w, priors)
    assert info["particle"] in (0, 1, 2)
    median, info = choose_point("median", df, w, priors)
    assert "particle" not in info
    assert not any(np.allclose([median["a.x"], median["a.n"]], row)
                   for row in df.to_numpy())


def test_coverage_ratio_is_below_one_exactly_when_the_point_check_covers():
    from analysis.calibration import Target, coverage_ratio

    def target(v):
        return Target("x", "failure_km", v, (0.3, 1.0), "f", "c")

    x = np.linspace(0.0, 1.0, 101)  # simulated 5%, 50%, 95%: 0.05, 0.5, 0.95
    assert coverage_ratio(x, target(0.5)) == 0.0
    assert coverage_ratio(x, target(0.9)) == pytest.approx(0.4 / 0.45)
    assert coverage_ratio(x, target(0.97)) > 1.0
    low = Target("x", "failure_km", 0.1, (0.0, 1.0), "f", "c")  # below the median
    assert coverage_ratio(x, low) == pytest.approx(0.4 / 0.45)
    # seed-free: the same value on every run, judged in units of the tolerance (0.35)
    assert coverage_ratio(np.full(8, 0.8), target(0.5)) == pytest.approx(0.3 / 0.35)


# --- tiny calibrations -----------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_local_calibration_writes_every_output(reference):
    folder, out, err = reference
    for name in ("history.db", "posterior.parquet", "pairplot.png", "ppc.png", "ppc.csv",
                 "point_check.csv", "calibration.json", "calibrated.toml"):
        assert (out / name).is_file(), name
    assert all(f"generation {t}/3" in err for t in (1, 2, 3)), err
    post = pd.read_parquet(out / "posterior.parquet")
    assert len(post) == 4 and post["weight"].sum() == pytest.approx(1.0)
    assert post["patience.end_rate"].between(0.05, 0.4).all()
    rep = json.loads((out / "calibration.json").read_text())
    assert len(rep["generations"]) == 3 and len(rep["epsilon_schedule"]) == 3
    assert all(b <= a for a, b in zip(rep["epsilon_schedule"], rep["epsilon_schedule"][1:]))
    assert all(0 < a <= 1 for a in rep["acceptance_per_generation"])
    assert 1 <= rep["ess_final"] <= 4 + 1e-9
    assert {t["name"] for t in rep["targets"]} == {"failure", "peak", "function", "asym", "ties"}
    assert rep["versions"]["pyabc"] == "0.13.0"
    assert len(rep["ppc"]) == 5 and all("covered" in x for x in rep["ppc"])
    # the calibrated point (--point best): the particle of the final population whose runs on
    # common seeds are closest to the targets (mean distance), as rounded for a scenario file
    ch = rep["calibrated_point_choice"]
    assert ch["method"] == "best" and len(ch["seeds"]) == 20
    scores = [r["mean_distance"] for r in ch["ranking"]]
    assert ch["ranking"][0]["particle"] == ch["particle"] and scores == sorted(scores)
    assert len(ch["ranking"]) == 4  # every particle was scored
    particle = post.iloc[ch["particle"]]
    point = rep["calibrated_point"]
    assert point["patience.end_rate"] == pytest.approx(particle["patience.end_rate"], rel=1e-3)
    assert point["patience.horizon"] == round(particle["patience.horizon"])
    # the point check ran that point on seeds drawn from the OS, recorded
    assert len(rep["seeds"]["point_check"]) == 2 and len(rep["point_check"]) == 5
    asym = next(r for r in rep["point_check"] if r["target"] == "asym")
    assert asym["seed_free"] and asym["sim_q05"] == asym["sim_q95"]
    # calibrated.toml: a scenario `spiral validate` accepts, holding the calibrated point
    assert cli.main(["validate", str(out / "calibrated.toml")]) == 0
    from sim.scenario import load

    sc = load(out / "calibrated.toml")
    assert sc.values["patience"]["end_rate"] == point["patience.end_rate"]
    assert sc.values["patience"]["horizon"] == point["patience.horizon"]
    assert sc.values["ecosystem"]["organizations"] == 16  # the rest is the scenario's
    # the history is a real, queryable SQLite database
    import sqlite3

    with sqlite3.connect(out / "history.db") as db:
        n = db.execute("select count(*) from particles").fetchone()[0]
    assert n >= 12


@pytest.mark.slow
def test_dask_equals_local_and_worker_count_does_not_matter(reference, dask_cluster, capsys):
    """A generation's population depends only on (seed, generation, evaluation id): the first
    two generations with 1 worker and on a Dask cluster equal the reference's (2 workers)."""
    folder, ref, _ = reference
    first_two = populations(ref)
    first_two = first_two[first_two.t < 2].reset_index(drop=True)
    calibrate(folder, folder / "w1", "--workers", "1", capsys=capsys)
    pd.testing.assert_frame_equal(populations(folder / "w1"), first_two)
    err = calibrate(folder, folder / "dask", "--scheduler", dask_cluster, capsys=capsys)
    assert "Dask" in err
    pd.testing.assert_frame_equal(populations(folder / "dask"), first_two)
    rep = json.loads((folder / "dask" / "calibration.json").read_text())
    assert rep["sampler"] == "dask"


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(reference, capsys):
    folder, full, _ = reference
    cut = folder / "cut"
    # the command is killed as a whole process group: this one must be a real process
    cmd = [SPIRAL, *calibrate_args(folder, cut, "--generations", "3")]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline = time.time() + 600
        while finished_generations(cut) < 1:
            assert p.poll() is None, "calibration ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.1)
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the command and its sampler processes
        p.wait(timeout=30)
    kept = finished_generations(cut)
    assert 1 <= kept < 3
    before = populations(cut)
    err = calibrate(folder, cut, "--generations", "3", capsys=capsys)
    assert f"resuming {cut}: {kept} of 3 generations already finished" in err
    after = populations(cut)
    # the finished generations were kept untouched ...
    pd.testing.assert_frame_equal(after[after.t < kept].reset_index(drop=True), before)
    # ... and the result equals the uninterrupted run with the same seed
    pd.testing.assert_frame_equal(after, populations(full))
