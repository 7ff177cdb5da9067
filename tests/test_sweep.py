"""Sweeps: designs, resumable parts, SIGKILL and resume, Dask, query and analysis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.analyse import analyse, fit_tipping
from analysis.sweep import load_sweep, read_runs, run_seed, run_sweep
from sim import cli
from sim.scenario import ScenarioError

from .conftest import SCENARIOS

SPIRAL = str(Path(sys.executable).parent / "spiral")


def sweep_file(tmp_path, body: str, name="s.toml") -> Path:
    f = tmp_path / name
    f.write_text(f'base = "{SCENARIOS / "baseline.toml"}"\n' + body)
    return f


SMALL = """design = "grid"
replicates = 2
seed = 7
steps = 40
[parameters]
"mindset.abundance_share" = [0.0, 0.5, 1.0]
"patience.horizon" = [10, 60]
"""


def frame(out) -> pd.DataFrame:
    return read_runs(out).to_pandas().sort_values("run").reset_index(drop=True)


def test_grid_sweep_end_to_end(tmp_path):
    sw = load_sweep(sweep_file(tmp_path, SMALL))
    assert sw.n_runs == 12 and len(sw.points) == 6
    res = run_sweep(sw, tmp_path / "out", workers=1, progress=False, flush_rows=5)
    assert res["finished"] == 12 and res["failed"] == 0
    df = frame(tmp_path / "out")
    assert df["run"].tolist() == list(range(12))
    assert set(df["status"]) == {"ok"}
    assert {"run", "mindset.abundance_share", "patience.horizon", "seed", "status",
            "mean_trust", "failure_rate", "share_spiral_in"} <= set(df.columns)
    # replicate-major run numbers; common random numbers: a replicate's seed is the same at
    # every point
    assert df["point"].tolist() == [r % 6 for r in range(12)]
    assert df["replicate"].tolist() == [r // 6 for r in range(12)]
    assert df["seed"].tolist() == [run_seed(7, r // 6) for r in range(12)]
    assert df.groupby("replicate")["seed"].nunique().eq(1).all()
    assert df["seed"].nunique() == 2
    # a row equals `spiral run` of the same scenario and seed
    row = df.iloc[5]
    out = tmp_path / "single"
    assert cli.main(["run", str(SCENARIOS / "baseline.toml"), "--quiet", "--out", str(out),
                     "--set", f"mindset.abundance_share={row['mindset.abundance_share']}",
                     "--set", f"patience.horizon={row['patience.horizon']}",
                     "--steps", "40", "--seed", str(row["seed"])]) == 0
    import json
    single = json.loads((out / "summary.json").read_text())
    for k in ("mean_trust", "failure_rate", "value_created"):
        assert single[k] == row[k]
    # rerun: nothing left to do, still one row per run
    res2 = run_sweep(sw, tmp_path / "out", workers=1, progress=False)
    assert res2["finished"] == 0 and res2["skipped"] == 12
    assert len(frame(tmp_path / "out")) == 12


def test_results_do_not_depend_on_workers(tmp_path):
    sw = load_sweep(sweep_file(tmp_path, SMALL))
    run_sweep(sw, tmp_path / "a", workers=1, progress=False)
    run_sweep(sw, tmp_path / "b", workers=2, progress=False, flush_rows=3)
    pd.testing.assert_frame_equal(frame(tmp_path / "a"), frame(tmp_path / "b"))


def test_chunked_runs_give_the_same_rows(tmp_path, monkeypatch):
    import analysis.sweep as sweep_mod

    sizes = []

    def chunks(todo, workers, scheduler):
        sizes.append(5)
        return 5  # 12 runs: chunks of 5, 5 and 2

    sw = load_sweep(sweep_file(tmp_path, SMALL))
    run_sweep(sw, tmp_path / "a", workers=1, progress=False)
    monkeypatch.setattr(sweep_mod, "chunk_size", chunks)
    res = run_sweep(sw, tmp_path / "b", workers=2, progress=False, flush_rows=4)
    assert sizes and res["finished"] == 12
    pd.testing.assert_frame_equal(frame(tmp_path / "a"), frame(tmp_path / "b"))


@pytest.mark.parametrize("todo,workers,scheduler", [(0, 2, None), (1, 2, None), (31, 2, None),
                                                    (32, 2, None), (10_000, 2, None),
                                                    (10_000, 1, None), (500, 8, None),
                                                    (10_000, 1, "tcp://x:1"), (5, 1, "tcp://x:1")])
def test_chunk_size_is_bounded_and_keeps_every_worker_busy(todo, workers, scheduler):
    from analysis.sweep import chunk_size

    c = chunk_size(todo, workers, scheduler)
    assert 1 <= c <= 64
    if workers <= 1 and not scheduler:
        assert c == 1  # in this process: nothing to save
    elif c > 1:
        assert todo // c >= (64 if scheduler else 8 * workers)  # enough chunks to share


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
    body = SMALL.replace("replicates = 2", "replicates = 6").replace("steps = 40", "steps = 120")
    f = sweep_file(tmp_path, body)
    ref = tmp_path / "ref"
    run_sweep(load_sweep(f), ref, workers=1, progress=False)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kills = 0
    for delay in (1.5, 2.5, 3.5):
        p = subprocess.Popen([SPIRAL, "sweep", str(f), "--out", str(out), "--workers", "2",
                              "--quiet"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # the parent and its workers
            kills += 1
        p.wait()
    assert kills >= 1
    r = subprocess.run([SPIRAL, "sweep", str(f), "--out", str(out), "--workers", "2",
                        "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    got, want = frame(out), frame(ref)
    assert len(got) == 36 and got["run"].is_unique
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.slow
def test_sigterm_to_the_group_ends_workers_quietly_and_resume_completes(tmp_path):
    """`timeout` and a terminal signal the whole process group, and a second signal may follow
    while the parent shuts its pool down: workers that kept the parent's handler (inherited by
    fork) raised KeyboardInterrupt tracebacks, and the parent could hang on them."""
    body = SMALL.replace("replicates = 2", "replicates = 20").replace("steps = 40",
                                                                    "steps = 2000")
    f = sweep_file(tmp_path, body)
    out = tmp_path / "o"
    p = subprocess.Popen([SPIRAL, "sweep", str(f), "--out", str(out), "--workers", "2",
                          "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        time.sleep(3.0)  # start-up done, both workers inside runs
        assert p.poll() is None, "the sweep ended before it could be signalled"
        os.killpg(p.pid, signal.SIGTERM)
        time.sleep(0.05)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
        err = p.communicate(timeout=60)[1]
    finally:  # a hung sweep must not outlive the test
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode != 0 and "interrupted" in err
    assert "Traceback" not in err, err
    r = subprocess.run([SPIRAL, "sweep", str(f), "--out", str(out), "--workers", "2",
                        "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    got = frame(out)
    assert len(got) == 120 and got["run"].is_unique


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    import analysis.sweep as sweep_mod

    real = sweep_mod.execute

    def flaky(task):
        if task.run == 3:
            task = sweep_mod.Task(**{**task.__dict__, "overrides": [("steps", "boom")]})
        return real(task)

    monkeypatch.setattr(sweep_mod, "execute", flaky)
    sw = load_sweep(sweep_file(tmp_path, SMALL))
    res = run_sweep(sw, tmp_path / "out", workers=1, progress=False)
    assert res["failed"] == 1
    df = frame(tmp_path / "out")
    assert len(df) == 12
    assert df.loc[3, "status"].startswith("ScenarioError")
    assert np.isnan(df.loc[3, "mean_trust"])
    assert (df.drop(index=3)["status"] == "ok").all()




@pytest.mark.slow
def test_dask_path_equals_local(tmp_path, dask_cluster, monkeypatch):
    import analysis.sweep as sweep_mod

    sw = load_sweep(sweep_file(tmp_path, SMALL))
    run_sweep(sw, tmp_path / "local", workers=1, progress=False)
    run_sweep(sw, tmp_path / "dask", scheduler=dask_cluster, progress=False)
    pd.testing.assert_frame_equal(frame(tmp_path / "local"), frame(tmp_path / "dask"))
    # and in chunks of several runs per Dask task
    monkeypatch.setattr(sweep_mod, "chunk_size", lambda todo, workers, scheduler: 5)
    run_sweep(sw, tmp_path / "dask5", scheduler=dask_cluster, progress=False)
    pd.testing.assert_frame_equal(frame(tmp_path / "local"), frame(tmp_path / "dask5"))


@pytest.mark.parametrize("design, extra, n", [
    ("random", 'samples = 7\n[parameters]\n"mindset.abundance_share" = { min = 0.2, max = 0.9 }\n'
               '"patience.horizon" = { min = 10, max = 100 }\n', 7),
    ("lhs", 'samples = 8\n[parameters]\n"mindset.abundance_share" = { min = 0.2, max = 0.9 }\n', 8),
    ("sobol", 'samples = 4\n[parameters]\n"mindset.abundance_share" = { min = 0.2, max = 0.9 }\n'
              '"talk.rate" = { min = 0.05, max = 0.3 }\n', 16),
])
def test_designs(tmp_path, design, extra, n):
    sw = load_sweep(sweep_file(tmp_path, f'design = "{design}"\n' + extra))
    assert len(sw.points) == n
    for pt in sw.points:
        assert 0.2 <= pt["mindset.abundance_share"] <= 0.9
        if "patience.horizon" in pt:
            assert isinstance(pt["patience.horizon"], int)
    assert sw.points == load_sweep(sweep_file(tmp_path, f'design = "{design}"\n' + extra)).points
    if design == "lhs":  # one sample per stratum
        strata = sorted(int((v - 0.2) / 0.7 * 8) for v in
                        (p["mindset.abundance_share"] for p in sw.points))
        assert strata == list(range(8))


@pytest.mark.parametrize("body, expected", [
    ('design = "grd"\n[parameters]\n"steps" = [1]\n', "design: expected one of grid, random, "
     "lhs, sobol, got 'grd' (did you mean 'grid'?)"),
    ('[parameters]\n"mindset.abundace_share" = [0.1]\n', 'parameters."mindset.abundace_share": '
     "unknown scenario key (did you mean 'mindset.abundance_share'?)"),
    ('[parameters]\n"mindset.abundance_share" = [0.1, 1.5]\n',
     'parameters."mindset.abundance_share": mindset.abundance_share = 1.5: expected a number'),
    ('[parameters]\n"mindset.abundance_share" = { min = 0.1, max = 0.9 }\n',
     "a grid needs a list of values or a range with num = N"),
    ('design = "sobol"\nsamples = 6\n[parameters]\n"talk.rate" = { min = 0.1, max = 0.2 }\n',
     "samples: expected a power of 2 for sobol, got 6"),
    ('replicates = 0\n[parameters]\n"steps" = [5]\n', "replicates: expected an integer >= 1"),
    ('[parameters]\n', "parameters: expected a table [parameters]"),
    ('colour = 1\n[parameters]\n"steps" = [5]\n', "colour: unknown key"),
])
def test_bad_sweep_files(tmp_path, capsys, body, expected):
    f = sweep_file(tmp_path, body)
    with pytest.raises(ScenarioError) as e:
        load_sweep(f)
    assert expected in str(e.value) and str(f) in str(e.value)
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    assert cli.main(["validate", str(f)]) == 2


def test_other_sweep_in_same_folder_is_refused(tmp_path, capsys):
    a = sweep_file(tmp_path, SMALL, "a.toml")
    b = sweep_file(tmp_path, SMALL.replace("seed = 7", "seed = 8"), "b.toml")
    run_sweep(load_sweep(a), tmp_path / "out", progress=False)
    assert cli.main(["sweep", str(b), "--out", str(tmp_path / "out")]) == 2
    assert "holds results of another sweep" in capsys.readouterr().err


def test_query(tmp_path, capsys):
    sw = load_sweep(sweep_file(tmp_path, SMALL.replace("[parameters]",
                                                       'outputs = "series"\n[parameters]')))
    run_sweep(sw, tmp_path / "out", progress=False, flush_rows=4)
    assert cli.main(["query", str(tmp_path / "out"),
                     'SELECT count(*) AS n, count(DISTINCT run) AS runs FROM runs']) == 0
    assert "12" in capsys.readouterr().out
    assert cli.main(["query", str(tmp_path / "out"), "SELECT run, count(*) AS steps FROM series "
                     "GROUP BY run ORDER BY run", "--csv", str(tmp_path / "s.csv")]) == 0
    s = pd.read_csv(tmp_path / "s.csv")
    assert s["run"].tolist() == list(range(12)) and (s["steps"] == 40).all()
    assert cli.main(["query", str(tmp_path / "out"), "SELECT nope FROM runs"]) == 2


def synthetic(folder: Path, x0: float, seeds: int = 6):
    """A fake sweep folder whose mean_trust is a noisy logistic with midpoint x0."""
    rng = np.random.default_rng(0)
    rows = []
    xs = np.linspace(0, 1, 11)
    for i, x in enumerate(xs):
        for r in range(seeds):
            y = 0.05 + 0.9 / (1 + np.exp(-(x - x0) / 0.06)) + rng.normal(0, 0.03)
            rows.append({"run": i * seeds + r, "point": i, "replicate": r,
                         "mindset.abundance_share": x, "seed": r, "status": "ok",
                         "provenance_id": "synthetic",
                         "mean_trust": y, "share_spiral_in": y, "failure_rate": 1 - y,
                         "value_created": 100 * y, "value_perceived": 90 * y})
    (folder / "runs").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "runs" / "part-1.parquet")
    (folder / "sweep.json").write_text(
        '{"name": "synthetic", "design": "grid", "parameters": {"mindset.abundance_share": '
        f'[0]}}, "n_points": {len(xs)}, "replicates": {seeds}, "n_runs": {len(xs) * seeds}}}')


def test_analysis_recovers_a_known_tipping_point(tmp_path):
    synthetic(tmp_path / "syn", 0.62)
    out = analyse(tmp_path / "syn", tmp_path / "rep", B=300)
    est = out["results"]["L3"]["all runs"]["mean_trust"]
    assert abs(est["tipping"] - 0.62) < 0.02
    assert est["low"] < 0.62 < est["high"] and est["high"] - est["low"] < 0.1
    assert (tmp_path / "rep" / "l3_tipping.png").exists()
    assert "L3 tipping share" in out["markdown"]


def test_fit_tipping_refuses_flat_data():
    assert fit_tipping(np.array([0, 0.5, 1.0]), np.array([0.3, 0.3, 0.3])) is None


@pytest.mark.slow
def test_laws_L3_L4_L5_on_small_real_sweeps(tmp_path):
    l3 = sweep_file(tmp_path, 'design = "grid"\nreplicates = 3\nseed = 1\nsteps = 150\n'
                    '[parameters]\n"mindset.abundance_share" = { min = 0.0, max = 1.0, num = 9 }\n'
                    '"initial.trust+initial.openness" = [0.05, 0.9]\n', "l3.toml")
    run_sweep(load_sweep(l3), tmp_path / "l3", workers=2, progress=False)
    res = analyse(tmp_path / "l3", tmp_path / "r3", B=200)["results"]
    healthy = res["L3"]["healthy start"]["mean_trust"]
    collapsed = res["L3"]["collapsed start"]["mean_trust"]
    # a tipping share is only ever reported inside the shares tried
    for est in (healthy, collapsed):
        assert est is None or 0.0 <= est["tipping"] <= 1.0
    if healthy is not None and collapsed is not None:
        assert healthy["tipping"] < collapsed["tipping"]
        assert res["L4"]["gap"] > 0.1 and res["L4"]["low"] > 0  # hysteresis, beyond noise
    # path dependence at every share: the healthy start ends above the collapsed one, beyond
    # the spread of the replicates
    df = frame(tmp_path / "l3")
    g = df.groupby(["mindset.abundance_share", "initial.trust"])["mean_trust"]
    m, sd = g.mean().unstack(), g.std().unstack()
    assert ((m[0.9] - m[0.05]) > 2 * (sd[0.9] + sd[0.05])).all()
    l5 = sweep_file(tmp_path, 'design = "grid"\nreplicates = 3\nseed = 1\nsteps = 200\n'
                    'outputs = "alliances"\n[parameters]\n'
                    '"patience.horizon" = [5, 20, 80, 300]\n', "l5.toml")
    run_sweep(load_sweep(l5), tmp_path / "l5", workers=2, progress=False)
    res = analyse(tmp_path / "l5", tmp_path / "r5", B=200)["results"]
    assert res["L5"]["spearman"]["rho"] > 0.5
    surv = res["L5"]["survival"]
    assert surv[-1] > surv[0]
