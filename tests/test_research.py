"""Research-grade sweeps and analysis (issue 16) and sweep hygiene (issue 17's sweep items):
completeness, provenance, seeds, typed parts, locks, corruption, survival, honest estimators,
scenario discovery, Mesa and EMA Workbench interop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import analysis.sweep as sweep_mod
from analysis.analyse import analyse, fit_tipping, goodness
from analysis.sweep import Lock, load_sweep, read_runs, run_seed, run_sweep
from sim import cli
from sim.scenario import ScenarioError

from .conftest import SCENARIOS

SPIRAL = str(Path(sys.executable).parent / "spiral")
BASE = SCENARIOS / "baseline.toml"


def sweep_file(tmp_path, body: str, name="s.toml", base=BASE) -> Path:
    f = tmp_path / name
    f.write_text(f'base = "{base}"\n' + body)
    return f


TINY = """design = "grid"
replicates = 2
seed = 3
steps = 15
[parameters]
"mindset.abundance_share" = [0, 0.5, 1]
"""


def frame(out) -> pd.DataFrame:
    return read_runs(out).to_pandas().sort_values("run").reset_index(drop=True)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --- data hygiene -------------------------------------------------------------------------
def test_int_and_float_list_gives_one_float_column_and_analyse_runs(tmp_path):
    sw = load_sweep(sweep_file(tmp_path, TINY))
    run_sweep(sw, tmp_path / "o", progress=False, flush_rows=1)  # one part per run
    types = {str(pq.read_schema(f).field("mindset.abundance_share").type)
             for f in (tmp_path / "o" / "runs").glob("part-*.parquet")}
    assert types == {"double"} and len(list((tmp_path / "o" / "runs").glob("*.parquet"))) >= 2
    df = frame(tmp_path / "o")
    assert sorted(set(df["mindset.abundance_share"])) == [0.0, 0.5, 1.0]
    out = analyse(tmp_path / "o", tmp_path / "rep", B=60)
    assert out["results"]["check"]["problems"] == []


def test_grid_values_are_stored_as_written(tmp_path, capsys):
    body = TINY.replace('[0, 0.5, 1]', '{ min = 0.0, max = 1.0, num = 11 }').replace(
        "replicates = 2", "replicates = 1")
    run_sweep(load_sweep(sweep_file(tmp_path, body)), tmp_path / "o", progress=False)
    vals = frame(tmp_path / "o")["mindset.abundance_share"].tolist()
    assert 0.3 in vals and 0.7 in vals and 0.30000000000000004 not in vals
    assert cli.main(["query", str(tmp_path / "o"), 'SELECT count(*) AS n FROM runs WHERE '
                     '"mindset.abundance_share" = 0.3']) == 0
    assert capsys.readouterr().out.split()[-1] == "1"


@pytest.mark.parametrize("params, expected", [
    ('"seed" = [1, 2]', "seed cannot be swept"),
    ('"steps" = [10, 20]', "steps is also set by the sweep's top-level steps"),
    ('"mindset.abundance_share" = [0.2]\n"mindset.abundance_share+initial.trust" = [0.3]',
     'mindset.abundance_share is also set by parameters."mindset.abundance_share"'),
    ('"initial.trust+initial.trust" = [0.3]', "initial.trust is also set"),
])
def test_colliding_sweep_keys_are_refused(tmp_path, capsys, params, expected):
    f = sweep_file(tmp_path, f"steps = 10\n[parameters]\n{params}\n")
    with pytest.raises(ScenarioError) as e:
        load_sweep(f)
    assert expected in str(e.value)
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def test_a_combination_invalid_only_late_in_the_design_is_caught_up_front(tmp_path, capsys):
    # 40 x 30 = 1,200 points; theta_down >= theta_up only for the last theta_down values
    f = sweep_file(tmp_path, '[parameters]\n"mindset.theta_down" = { min = 0.1, max = 0.64, '
                   'num = 40 }\n"mindset.theta_up" = { min = 0.6, max = 0.9, num = 30 }\n')
    with pytest.raises(ScenarioError) as e:
        load_sweep(f)
    assert "theta_up" in str(e.value) and "point 1" in str(e.value)
    idx = int(str(e.value).split("point ")[1].split()[0])
    assert idx >= 1000  # beyond the first 1,000 points
    assert cli.main(["validate", str(f)]) == 2


def test_a_huge_grid_is_refused_before_it_is_built(tmp_path):
    params = "".join(f'"{k}" = {{ min = 0.1, max = 0.2, num = 10 }}\n' for k in (
        "talk.rate", "trust.rate", "openness.rate", "differences.rate", "trust.w_tension",
        "initial.trust", "initial.openness", "mindset.abundance_share", "talk.noise"))
    t0 = time.perf_counter()
    with pytest.raises(ScenarioError) as e:
        load_sweep(sweep_file(tmp_path, "[parameters]\n" + params))
    assert time.perf_counter() - t0 < 5
    assert "1,000,000,000 design points" in str(e.value)


# --- seeds and replicates ------------------------------------------------------------------
def test_adding_replicates_keeps_existing_rows_and_uses_common_random_numbers(tmp_path):
    f = sweep_file(tmp_path, TINY)
    run_sweep(load_sweep(f), tmp_path / "o", progress=False)
    before = frame(tmp_path / "o")
    f.write_text(f.read_text().replace("replicates = 2", "replicates = 4"))
    res = run_sweep(load_sweep(f), tmp_path / "o", progress=False)
    assert res["finished"] == 6 and res["skipped"] == 6  # only the new replicates ran
    after = frame(tmp_path / "o")
    assert len(after) == 12 and after["run"].is_unique
    pd.testing.assert_frame_equal(after.iloc[:6].reset_index(drop=True), before)
    # replicate r has one seed at every point (common random numbers)
    assert (after.groupby("replicate")["seed"].nunique() == 1).all()
    assert after.groupby("replicate")["seed"].first().tolist() == [run_seed(3, r)
                                                                   for r in range(4)]
    meta = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert meta["replicates"] == 4 and meta["n_runs"] == 12
    # and equal to a fresh sweep with 4 replicates
    run_sweep(load_sweep(f), tmp_path / "fresh", progress=False)
    pd.testing.assert_frame_equal(after, frame(tmp_path / "fresh"))


def test_independent_streams_when_asked(tmp_path):
    f = sweep_file(tmp_path, TINY.replace("seed = 3", "seed = 3\ncommon_random_numbers = false"))
    run_sweep(load_sweep(f), tmp_path / "o", progress=False)
    df = frame(tmp_path / "o")
    assert df["seed"].is_unique
    assert df.loc[4, "seed"] == run_seed(3, 1, 1)


def test_until_width_adds_replicates_until_intervals_are_narrow(tmp_path, capsys):
    f = sweep_file(tmp_path, TINY.replace('[0, 0.5, 1]', '[0.6, 0.7]'))
    # a target narrower than 2 replicates give, so replicates must be added
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--quiet", "--workers", "1",
                     "--until-width", "0.01", "--max-replicates", "12"]) in (0, 1)
    df = frame(tmp_path / "o")
    meta = json.loads((tmp_path / "o" / "sweep.json").read_text())
    n = df.groupby("point").size()
    assert (n == meta["replicates"]).all() and meta["replicates"] > 2
    assert df["run"].tolist() == list(range(len(df)))
    half, _ = sweep_mod.mc_half_width(tmp_path / "o", "mean_trust")
    if meta["replicates"] < 12:
        assert 2 * half <= 0.01
    err = capsys.readouterr().err
    assert "widest 95% interval" in err


def test_a_folder_from_the_old_numbering_is_never_resumed(tmp_path, capsys):
    f = sweep_file(tmp_path, TINY)
    run_sweep(load_sweep(f), tmp_path / "o", progress=False)
    meta = json.loads((tmp_path / "o" / "sweep.json").read_text())
    del meta["design_sha256"], meta["provenance"]
    (tmp_path / "o" / "sweep.json").write_text(json.dumps(meta))
    for extra in ([], ["--force"]):
        assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--quiet", *extra]) == 2
        assert "older version" in one_line_error(capsys)


def test_an_empty_sweep_json_is_one_line(tmp_path, capsys):
    f = sweep_file(tmp_path, TINY)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "sweep.json").write_text("")
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "unreadable sweep.json" in one_line_error(capsys)


# --- provenance and resume ---------------------------------------------------------------
def fake_provenance(monkeypatch, **changes):
    real = sweep_mod.code_provenance()
    changed = {**real, **changes}
    from sim.provenance import provenance_id
    changed["provenance_id"] = provenance_id(changed)
    monkeypatch.setattr(sweep_mod, "code_provenance", lambda: changed)


def test_every_run_and_sweep_records_provenance(tmp_path):
    run_sweep(load_sweep(sweep_file(tmp_path, TINY)), tmp_path / "o", progress=False)
    meta = json.loads((tmp_path / "o" / "sweep.json").read_text())
    prov = meta["provenance"]
    for k in ("version", "git_revision", "git_dirty", "code_sha256", "python", "dependencies"):
        assert k in prov
    assert prov["dependencies"]["numpy"] == np.__version__
    assert str(BASE.resolve()) in prov["files"]
    assert set(frame(tmp_path / "o")["provenance_id"]) == {prov["provenance_id"]}
    from sim.model import AllianceModel
    s = AllianceModel(str(BASE), steps=2).summary()
    assert s["provenance"]["code_sha256"] == prov["code_sha256"]


def test_resume_refuses_changed_code_names_it_and_force_is_recorded(tmp_path, monkeypatch,
                                                                    capsys):
    f = sweep_file(tmp_path, TINY)
    sw = load_sweep(f)
    sweep_mod.run_sweep(sw, tmp_path / "o", progress=False)
    # drop the last part to make the sweep unfinished, then change the "code"
    parts = sorted((tmp_path / "o" / "runs").glob("part-*.parquet"))
    df = frame(tmp_path / "o")
    parts[0].unlink()
    sweep_mod._write_part(tmp_path / "o", df.iloc[:3].to_dict("records"), {}, sw.schema())
    fake_provenance(monkeypatch, code_sha256="0" * 64, git_revision="f" * 40)
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert "code_sha256" in err and "git_revision" in err and "--force" in err
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--quiet", "--force"]) == 0
    meta = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert any("code_sha256" in c for c in meta["forced"][0]["changed"])
    # the folder now mixes two code versions: analyse refuses it
    assert frame(tmp_path / "o")["provenance_id"].nunique() == 2
    assert cli.main(["analyse", str(tmp_path / "o"), "--bootstrap", "60"]) == 2
    err = one_line_error(capsys)
    assert "mixed provenance" in err


def test_resume_refuses_an_edited_grand_base(tmp_path, capsys):
    grand = tmp_path / "grand.toml"
    grand.write_text(f'extends = "{BASE}"\n[patience]\nhorizon = 30\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "grand.toml"\n')
    f = sweep_file(tmp_path, TINY, base=child)
    run_sweep(load_sweep(f), tmp_path / "o", progress=False)
    grand.write_text(grand.read_text() + "# an edit\n")
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "grand.toml changed" in one_line_error(capsys)


# --- concurrency, corruption, failures ------------------------------------------------------
def test_second_sweep_on_a_locked_folder_is_refused(tmp_path, capsys):
    f = sweep_file(tmp_path, TINY)
    (tmp_path / "o").mkdir()
    with Lock(tmp_path / "o"):
        assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--quiet"]) == 2
        err = one_line_error(capsys)
        assert "another sweep is writing this folder" in err and f"pid {os.getpid()}" in err
    assert not list((tmp_path / "o").glob("runs/*.parquet"))
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--quiet"]) == 0


def test_truncated_part_is_named_then_quarantined_and_rerun(tmp_path, capsys):
    f = sweep_file(tmp_path, TINY)
    run_sweep(load_sweep(f), tmp_path / "ref", progress=False)
    run_sweep(load_sweep(f), tmp_path / "o", progress=False, flush_rows=2)
    part = sorted((tmp_path / "o" / "runs").glob("part-*.parquet"))[1]
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    for cmd in (["query", str(tmp_path / "o"), "SELECT count(*) FROM runs"],
                ["analyse", str(tmp_path / "o")]):
        assert cli.main(cmd) == 2
        assert part.name in one_line_error(capsys)
    assert not (tmp_path / "o" / "report").exists()
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert "quarantine" in capsys.readouterr().err
    assert (tmp_path / "o" / "quarantine" / f"runs-{part.name}").exists()
    pd.testing.assert_frame_equal(frame(tmp_path / "o"), frame(tmp_path / "ref"))


def test_failed_runs_make_the_sweep_exit_non_zero(tmp_path, monkeypatch, capsys):
    real = sweep_mod.execute

    def flaky(task):
        if task.run in (1, 4):
            task = sweep_mod.Task(**{**task.__dict__, "overrides": [("steps", "boom")]})
        return real(task)

    monkeypatch.setattr(sweep_mod, "execute", flaky)
    f = sweep_file(tmp_path, TINY)
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--quiet",
                     "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "2 of 6 runs failed" in err and "status" in err
    assert cli.main(["analyse", str(tmp_path / "o"), "--bootstrap", "60"]) == 2
    assert "2 runs failed" in one_line_error(capsys)


# --- analyse refuses what it cannot trust ---------------------------------------------------
def test_analyse_refuses_incomplete_and_duplicated_sweeps(tmp_path, capsys):
    f = sweep_file(tmp_path, TINY)
    run_sweep(load_sweep(f), tmp_path / "o", progress=False, flush_rows=2)
    parts = sorted((tmp_path / "o" / "runs").glob("part-*.parquet"))
    shutil.copy(parts[0], tmp_path / "o" / "runs" / "part-dup.parquet")
    n_dup = pq.read_metadata(parts[0]).num_rows
    assert cli.main(["analyse", str(tmp_path / "o"), "--bootstrap", "60"]) == 2
    assert f"{n_dup} duplicated rows" in one_line_error(capsys)
    (tmp_path / "o" / "runs" / "part-dup.parquet").unlink()
    parts[0].unlink()
    assert cli.main(["analyse", str(tmp_path / "o"), "--bootstrap", "60"]) == 2
    err = one_line_error(capsys)
    assert f"{6 - n_dup} of 6 runs present" in err and "--allow-incomplete" in err
    assert not (tmp_path / "o" / "report").exists()
    # allowed: every output says so first
    assert cli.main(["analyse", str(tmp_path / "o"), "--bootstrap", "60",
                     "--allow-incomplete"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**WARNING: analysed with --allow-incomplete: "
                          f"{6 - n_dup} of 6 runs present")
    rep = tmp_path / "o" / "report"
    assert (rep / "report.md").read_text().startswith("**WARNING")
    j = json.loads((rep / "analysis.json").read_text())
    assert next(iter(j)) == "warning" and f"{6 - n_dup} of 6" in j["warning"]
    rp = j["check"]["runs_per_point"]
    assert rp["expected"] == 2 and rp["min"] < 2 and rp["expected_points"] == 3


def test_analyse_bad_arguments_and_non_sweep_folders(tmp_path, capsys):
    f = sweep_file(tmp_path, TINY)
    run_sweep(load_sweep(f), tmp_path / "o", progress=False)
    assert cli.main(["analyse", str(tmp_path / "o"), "--bootstrap", "0"]) == 2
    assert "--bootstrap" in one_line_error(capsys)
    (tmp_path / "plain").mkdir()
    assert cli.main(["analyse", str(tmp_path / "plain")]) == 2
    one_line_error(capsys)
    assert not (tmp_path / "plain" / "report").exists()
    assert cli.main(["analyse", str(tmp_path / "nothing")]) == 2
    one_line_error(capsys)
    assert not (tmp_path / "nothing").exists()


def test_foreign_parts_are_one_line(tmp_path, capsys):
    import pyarrow as pa

    (tmp_path / "o" / "runs").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "o" / "runs" / "part-1.parquet")
    for cmd in (["analyse", str(tmp_path / "o")],
                ["discover", str(tmp_path / "o"), "--outcome", "a > 1"]):
        assert cli.main(cmd) == 2
        assert "not a part written by `spiral sweep`" in one_line_error(capsys)
    assert not (tmp_path / "o" / "report").exists()


def test_all_runs_failed_allowed_says_so_first(tmp_path, monkeypatch, capsys):
    real = sweep_mod.execute
    monkeypatch.setattr(sweep_mod, "execute", lambda task: real(sweep_mod.Task(
        **{**task.__dict__, "overrides": [("steps", "boom")]})))
    f = sweep_file(tmp_path, TINY)
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--quiet",
                     "--workers", "1"]) == 1
    capsys.readouterr()
    assert cli.main(["analyse", str(tmp_path / "o"), "--allow-incomplete",
                     "--bootstrap", "60"]) == 0
    assert capsys.readouterr().out.startswith("**WARNING: analysed with --allow-incomplete: "
                                              "6 runs failed")


# --- honest estimators ---------------------------------------------------------------------
def test_tipping_fit_is_bounded_and_tells_a_line_from_an_s_curve():
    rng = np.random.default_rng(1)
    x = np.repeat(np.linspace(0, 1, 11), 5)
    steep = np.clip(1.0 / (1 + np.exp(-(x - 0.6) / 0.02)) + rng.normal(0, 0.01, x.size), 0, 1)
    xc, p = fit_tipping(x, steep)
    assert 0 <= p[0] <= p[1] <= 1 and abs(xc - 0.6) < 0.03
    g = goodness(x, steep, p)
    assert g["s_curve"] and g["steeper_than_identity"] and g["r2"] > 0.95
    line = 0.2 + 0.6 * x + rng.normal(0, 0.02, x.size)
    fit = fit_tipping(x, line)
    assert fit is not None
    assert not goodness(x, line, fit[1])["s_curve"]


def test_sobol_flags_unreliable_indices_on_the_first_line(tmp_path):
    f = sweep_file(tmp_path, 'design = "sobol"\nsamples = 8\nsteps = 15\nseed = 2\n[parameters]\n'
                   '"mindset.abundance_share" = { min = 0.3, max = 1.0 }\n'
                   '"talk.rate" = { min = 0.05, max = 0.3 }\n')
    run_sweep(load_sweep(f), tmp_path / "o", workers=2, progress=False)
    out = analyse(tmp_path / "o", tmp_path / "rep", B=60)
    conv = out["results"]["sobol_convergence"]
    assert {"mean_trust", "share_spiral_in"} <= set(conv)
    for d in out["results"]["sobol"].values():
        for v in d.values():
            assert "ST_half" in v
    unreliable = [y for y, c in conv.items() if any(c.values())]
    first = out["markdown"].splitlines()[0]
    if unreliable:  # 8 base samples: expected to be flagged, on the first line
        assert "Sobol indices unreliable" in first
    else:
        assert "Sobol" not in first


# --- survival ------------------------------------------------------------------------------
def test_kaplan_meier_and_cox_recover_known_hazards():
    from analysis import survival

    rng = np.random.default_rng(0)
    rows = []
    for run in range(40):
        h = [10, 40][run % 2]  # two "horizons": hazard 1/30 and 1/200 per step
        lam = 1 / 30 if h == 10 else 1 / 200
        t = rng.exponential(1 / lam, 200)
        c = t > 100  # censored at the end of a 100-step run
        rows.append(pd.DataFrame({"run": run, "patience.horizon": h,
                                  "duration": np.minimum(t, 100), "censored": c}))
    df = pd.concat(rows, ignore_index=True)
    grp, fitters = survival.by_group(df, "patience.horizon", 50)
    g10, g40 = grp["groups"]
    assert abs(g10["median"] - 30 * np.log(2)) < 2.5
    assert g10["median_low"] < 30 * np.log(2) < g10["median_high"]
    assert not np.isfinite(g40["median"])  # more than half survive 100 steps
    assert abs(g40["survival_t_ref"] - np.exp(-50 / 200)) < 0.03
    assert grp["logrank"]["p"] < 1e-6
    cox = survival.cox(df, ["patience.horizon"])
    hr = cox["covariates"]["patience.horizon"]
    assert hr["high"] < 1  # the longer horizon has the lower hazard


@pytest.mark.slow
def test_l5_from_alliances_end_to_end(tmp_path):
    f = sweep_file(tmp_path, 'design = "grid"\nreplicates = 3\nseed = 1\nsteps = 120\n'
                   'outputs = "alliances"\n[parameters]\n"patience.horizon" = [5, 20, 80]\n')
    run_sweep(load_sweep(f), tmp_path / "o", workers=2, progress=False)
    al = pq.read_table(tmp_path / "o" / "alliances").to_pandas()
    assert {"run", "alliance", "formed", "ended", "duration", "censored", "pair"} <= set(al)
    assert (al["duration"] >= 0).all() and al["censored"].any() and (~al["censored"]).any()
    assert ((al["ended"] < 0) == al["censored"]).all()
    res = analyse(tmp_path / "o", tmp_path / "rep", B=100)["results"]["L5"]
    assert res["spearman"]["rho"] > 0.5 and res["survival"][-1] > res["survival"][0]
    assert res["cox"]["covariates"]["patience.horizon"]["high"] < 1
    assert (tmp_path / "rep" / "l5_patience.png").exists()


# --- scenario discovery ----------------------------------------------------------------------
def test_prim_finds_the_region_that_makes_alliances_fail(tmp_path, capsys):
    f = sweep_file(tmp_path, 'design = "lhs"\nsamples = 60\nsteps = 60\nseed = 2\n[parameters]\n'
                   '"mindset.abundance_share" = { min = 0.0, max = 1.0 }\n'
                   '"talk.rate" = { min = 0.05, max = 0.3 }\n')
    run_sweep(load_sweep(f), tmp_path / "o", workers=2, progress=False)
    df = frame(tmp_path / "o")
    assert cli.main(["discover", str(tmp_path / "o"), "--outcome", "mean_trust < 0.3"]) == 0
    j = json.loads((tmp_path / "o" / "discover" / "discovery.json").read_text())
    box = j["prim"]["restricted"]
    assert "mindset.abundance_share" in box  # low trust lives at low abundance shares
    lo, hi = box["mindset.abundance_share"]
    inside = df[df["mindset.abundance_share"].between(lo, hi)]
    assert abs((inside["mean_trust"] < 0.3).mean() - j["prim"]["density"]) < 1e-9
    assert hi < df["mindset.abundance_share"].max()
    for name in ("tradeoff.png", "prim_trajectory.csv", "cart_boxes.csv", "discovery.md"):
        assert (tmp_path / "o" / "discover" / name).exists()
    assert cli.main(["discover", str(tmp_path / "o"), "--outcome", "nope >"]) == 2
    one_line_error(capsys)


def test_prim_box_on_a_known_region_with_a_categorical_parameter():
    from analysis.discovery import discover

    rng = np.random.default_rng(4)
    n = 400
    df = pd.DataFrame({"x": rng.random(n), "z": rng.random(n),
                       "graph": rng.choice(["complete", "erdos_renyi"], n), "status": "ok"})
    df["bad"] = (df["x"] < 0.4) & (df["graph"] == "complete")
    res = discover(df, ["x", "z", "graph"], "bad", threshold=0.9)
    box = res["prim"]["restricted"]
    assert res["prim"]["density"] >= 0.9 and res["prim"]["coverage"] > 0.7
    assert abs(box["x"][1] - 0.4) < 0.06 and box["graph"] == ["complete"] and "z" not in box


# --- Mesa and EMA Workbench interop --------------------------------------------------------
def test_mesa_batch_run_gives_distinct_runs_with_flat_columns():
    import mesa

    from sim.model import AllianceModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mesa.batch_run(AllianceModel, {"mindset.abundance_share": [0.2, 0.8],
                                             "steps": 30}, iterations=3, max_steps=30,
                             number_processes=1, display_progress=False)
    df = pd.DataFrame(res)
    assert len(df) == 6 and "mindset.abundance_share" in df and "mean_trust" in df
    assert df["mean_trust"].nunique() == 6  # seed=None: fresh entropy per replicate
    assert (df.groupby("mindset.abundance_share")["mean_trust"].mean().diff().dropna() > 0).all()


def test_mesa_seed_semantics_and_flat_keywords():
    from sim.model import AllianceModel

    a = AllianceModel(str(BASE), steps=5)
    b = AllianceModel(str(BASE), steps=5)
    assert a.scenario_spec.seed == b.scenario_spec.seed == 1  # not given: the scenario's seed
    c, d = AllianceModel(seed=None, steps=5), AllianceModel(rng=None, steps=5)
    assert c.scenario_spec.seed != d.scenario_spec.seed
    c.run()
    again = AllianceModel(seed=c.summary()["seed"], steps=5)  # the recorded seed repeats it
    again.run()
    assert again.summary()["mean_trust"] == c.summary()["mean_trust"]
    m = AllianceModel(**{"mindset.abundance_share": 0.3}, patience__horizon=7, seed=4)
    assert m.scenario_spec.values["mindset"]["abundance_share"] == 0.3
    assert m.scenario_spec.values["patience"]["horizon"] == 7
    with pytest.raises(ScenarioError, match="unknown key"):
        AllianceModel(**{"mindset.abundace_share": 0.3})


def test_mesa_space_and_solaraviz_reset():
    import runpy

    from mesa.discrete_space import Network
    from mesa.visualization.solara_viz import _build_model_init_kwargs

    g = runpy.run_path(str(Path(__file__).parent.parent / "examples" / "mesa_app.py"))
    model = g["model"]
    assert isinstance(model.space, Network)
    assert all(o.cell.coordinate == o.row for o in model.organizations_list)
    assert set(model.space.G.nodes) == set(range(model.state.n_org))
    model.run(100)  # alliances end and form: the cells' connections follow the graph
    edges = {frozenset(e) for e in model.graph.edges}
    conns = {frozenset((c.coordinate, k)) for c in model.space.all_cells for k in c.connections}
    assert conns == edges and model.state.al_ended.max() > 0
    kw = _build_model_init_kwargs(model, {"mindset.abundance_share": 0.2,
                                          "patience.horizon": 40},
                                  add_scenario_when_empty=True,
                                  require_model_accepts_scenario=True)
    fresh = type(model)(**kw)  # what SolaraViz's Reset does
    assert fresh.scenario_spec.values["mindset"]["abundance_share"] == 0.2
    assert fresh.steps == 0 and fresh.scenario_spec.seed != model.scenario_spec.seed
    from mesa.visualization import SpaceRenderer
    r = SpaceRenderer(fresh, backend="matplotlib").setup_agents(g["portray"])
    r.draw_structure()
    r.draw_agents()
    assert len(r.canvas.collections) >= 2  # edges and organizations drawn


def test_ema_workbench_model():
    from ema_workbench import perform_experiments

    from sim import ema

    m = ema.model(str(BASE), {"mindset.abundance_share": (0.0, 1.0),
                              "patience.horizon": (5, 100)}, steps=30)
    assert {u.name for u in m.uncertainties} == {"mindset__abundance_share",
                                                 "patience__horizon"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex, out = perform_experiments(m, scenarios=6)
    assert set(ema.OUTCOMES) <= set(out)
    assert np.isfinite(out["mean_trust"]).all() and len(set(out["mean_trust"])) == 6
    rho = pd.Series(out["mean_trust"]).corr(ex["mindset__abundance_share"], method="spearman")
    assert rho > 0.5
    assert {u.name for u in ema.model().uncertainties} == {
        ema.ema_name(k) for k in ema.DEFAULT_UNCERTAINTIES}


# --- processes -----------------------------------------------------------------------------
@pytest.mark.slow
def test_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path, capsys):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    f = sweep_file(tmp_path, TINY)
    assert cli.main(["sweep", str(f), "--out", str(tmp_path / "o"), "--scheduler",
                     f"tcp://127.0.0.1:{port}", "--quiet"]) == 2
    assert "cannot reach the Dask scheduler" in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


@pytest.mark.slow
def test_workers_die_with_a_killed_parent(tmp_path):
    f = sweep_file(tmp_path, TINY.replace("replicates = 2", "replicates = 200").replace(
        "steps = 15", "steps = 100"))
    p = subprocess.Popen([SPIRAL, "sweep", str(f), "--out", str(tmp_path / "o"), "--workers",
                          "2", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        kids = []
        while time.time() < deadline and len(kids) < 2:
            time.sleep(0.5)
            kids = _children(p.pid)
        assert kids, "no workers started"
        os.kill(p.pid, signal.SIGKILL)  # the parent only
        p.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.2)
        assert not any(_alive(k) for k in kids)
    finally:
        for k in _children(p.pid):
            os.kill(k, signal.SIGKILL)
