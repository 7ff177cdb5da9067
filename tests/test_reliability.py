"""Reliability: fuzzed inputs, size limits, numeric invariants, crash-safe outputs, the UI.

The fuzz targets run >= 1,000 derandomized examples each in `make test`; the "long" variants
(slow marker, also run by `make test`) run more. Counts are reported in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.sweep import load_sweep
from sim import cli
from sim.model import AllianceModel
from sim.scenario import SCHEMA, ScenarioError, check_size, defaults, from_dict, load

from .conftest import SCENARIOS
from .test_invariants import check_state

BASELINE = (SCENARIOS / "baseline.toml").read_text()
LINES = BASELINE.splitlines()
FAST = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 1000)), deadline=None,
                derandomize=True, suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=3000, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

toml_scalars = st.one_of(
    st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(max_size=12), st.sampled_from(["complete", "shock", "all", ""]))
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=3))


def toml_literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else
                                     "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    return "[" + ", ".join(toml_literal(x) for x in v) + "]"


@st.composite
def mutated_scenarios(draw) -> str:
    """baseline.toml with a handful of random edits: values replaced, lines dropped or
    duplicated, keys misspelt, garbage inserted, sections renamed, interventions added."""
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["value", "drop", "dup", "misspell", "garbage", "section",
                                     "intervention", "extends"]))
        line = lines[i]
        if kind == "value" and "=" in line and not line.lstrip().startswith("#"):
            key = line.split("=", 1)[0]
            lines[i] = f"{key}= {toml_literal(draw(toml_values))}"
        elif kind == "drop":
            lines.pop(i)
        elif kind == "dup":
            lines.insert(i, line)
        elif kind == "misspell" and "=" in line and not line.lstrip().startswith("#"):
            key = line.split("=", 1)[0].strip()
            if len(key) > 2:
                j = draw(st.integers(0, len(key) - 2))
                key = key[:j] + key[j + 1] + key[j] + key[j + 2:]
            lines[i] = f"{key} = {line.split('=', 1)[1]}"
        elif kind == "garbage":
            lines.insert(i, draw(st.text(max_size=20)))
        elif kind == "section" and line.startswith("["):
            lines[i] = "[" + draw(st.sampled_from(["ecosytem", "mindset", "noise", "x.y",
                                                   "initial"])) + "]"
        elif kind == "intervention":
            lines += ["[[interventions]]", f"step = {toml_literal(draw(toml_scalars))}",
                      f"kind = {toml_literal(draw(st.sampled_from(['shock', 'scare', 'hug'])))}",
                      f"dose = {toml_literal(draw(toml_scalars))}"]
        elif kind == "extends":
            base = draw(st.sampled_from(["dyad.toml", "nope.toml", "mutant.toml"]))
            lines.insert(0, f"extends = {toml_literal(base)}")
    return "\n".join(lines) + "\n"


def check_cli(tmp_path: Path, args: list[str], capsys, scenario_file: Path | None = None):
    """A run either succeeds with complete outputs or exits 2 with one line naming the file;
    nothing is left behind on failure."""
    out = tmp_path / "out"
    if out.exists():
        for f in out.iterdir():
            f.unlink()
        out.rmdir()
    rc = cli.main([*args, "--out", str(out), "--quiet"])
    cap = capsys.readouterr()
    assert rc in (0, 2), (rc, cap.err)
    assert "Traceback" not in cap.err
    if rc == 2:
        assert cap.err.count("\n") == 1 and cap.err.startswith("error: "), cap.err
        if scenario_file is not None:
            assert str(scenario_file) in cap.err or "--steps" in cap.err or "--seed" in cap.err
        assert not out.exists()
    else:
        assert sorted(p.name for p in out.iterdir()) == [
            "alliances.parquet", "network.graphml", "run.png", "summary.json",
            "timeseries.parquet"]
    return rc


def validate_then_run(capsys, args: list[str], named: Path) -> None:
    """`spiral validate` exits 0, or 2 with one line naming the file; a valid input then runs
    (in-process, a few steps on a small ecosystem, so 1,000 examples stay fast)."""
    rc = cli.main(["validate", *args])
    err = capsys.readouterr().err
    assert rc in (0, 2) and "Traceback" not in err, err
    if rc == 2:
        assert err.count("\n") == 1 and err.startswith("error: ") and str(named) in err, err
        return
    files = [a for a in args if a.endswith(".toml")]
    sets = [a.split("=", 1)[1] for a in args if a.startswith("--set=")]
    sc = load(files[0], sets)
    small = [("steps", min(sc.steps, 3)),
             ("ecosystem.organizations", min(sc.values["ecosystem"]["organizations"], 6))]
    try:
        sc = sc.with_overrides(small)
    except ScenarioError:
        return  # e.g. interventions scheduled after step 3: fine as a file, not as a small run
    m = AllianceModel(sc)
    m.run()
    check_state(m)


def fuzz_scenario_files(tmp_path, capsys, text):
    f = tmp_path / "mutant.toml"
    f.write_text(text)
    (tmp_path / "dyad.toml").write_text((SCENARIOS / "dyad.toml").read_text())
    validate_then_run(capsys, [str(f)], f)


@FAST
@given(mutated_scenarios())
def test_fuzz_mutated_scenario_files(tmp_path_factory, capsys, text):
    fuzz_scenario_files(tmp_path_factory.mktemp("m"), capsys, text)


@pytest.mark.slow
@LONG
@given(mutated_scenarios())
def test_fuzz_mutated_scenario_files_long(tmp_path_factory, capsys, text):
    fuzz_scenario_files(tmp_path_factory.mktemp("m"), capsys, text)


keys = [f"{s}.{k}" if s else k for s in SCHEMA for k in SCHEMA[s]]


@FAST
@given(st.lists(st.tuples(st.one_of(st.sampled_from(keys), st.text(max_size=15)),
                          st.one_of(toml_values.map(toml_literal), st.text(max_size=10))),
                min_size=1, max_size=3))
def test_fuzz_set_overrides(capsys, pairs):
    args = [str(SCENARIOS / "dyad.toml")]
    for k, v in pairs:
        args += [f"--set={k}={v}"]  # (the = form: a value may start with "-")
    validate_then_run(capsys, args, SCENARIOS / "dyad.toml")


def test_cli_run_outputs_or_one_line(tmp_path, capsys):
    """The full `spiral run` path on a sample of good and bad inputs: complete outputs, or
    exit 2 with one line and no output folder."""
    good = [["run", str(SCENARIOS / "dyad.toml"), "--steps", "3"],
            ["run", str(SCENARIOS / "baseline.toml"), "--steps", "2", "--set",
             "ecosystem.graph=complete", "--set", "ecosystem.organizations=5"]]
    bad = [["run", str(SCENARIOS / "dyad.toml"), "--set", "initial.trust=2"],
           ["run", str(SCENARIOS / "dyad.toml"), "--set", "nonsense"],
           ["run", str(SCENARIOS / "dyad.toml"), "--steps", "0"]]
    for args in good:
        assert check_cli(tmp_path, args, capsys) == 0
    for args in bad:
        assert check_cli(tmp_path, args, capsys, SCENARIOS / "dyad.toml") == 2


@FAST
@given(st.dictionaries(st.sampled_from(list(SCHEMA) + ["interventions", "bogus", "steps"]),
                       st.one_of(toml_values, st.dictionaries(
                           st.sampled_from([k for s in SCHEMA for k in SCHEMA[s]] + ["zz"]),
                           toml_values, max_size=4)), max_size=4))
def test_fuzz_random_scenario_dicts(raw):
    """Any dict: either a valid scenario or a ScenarioError naming the key; nothing else."""
    try:
        sc = from_dict(raw, "fuzz")
    except ScenarioError as e:
        assert e.source == "fuzz" and (e.key or e.message)
        return
    assert sc.values["steps"] >= 1


SWEEP_LINES = ['base = "{base}"', 'design = "grid"', "replicates = 2", "seed = 1", "steps = 3",
               "[parameters]", '"mindset.abundance_share" = [0.0, 1.0]']


@FAST
@given(st.lists(st.tuples(st.integers(0, 6), st.sampled_from(["value", "drop", "garbage"]),
                          toml_values), max_size=3))
def test_fuzz_sweep_files(tmp_path_factory, capsys, edits):
    tmp = tmp_path_factory.mktemp("w")
    lines = [ln.format(base=SCENARIOS / "dyad.toml") for ln in SWEEP_LINES]
    for i, kind, v in edits:
        i = min(i, len(lines) - 1)
        if kind == "value" and "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "= " + toml_literal(v)
        elif kind == "drop":
            lines.pop(i)
        else:
            lines.insert(i, toml_literal(v))
    f = tmp / "sweep.toml"
    f.write_text("\n".join(lines) + "\n")
    try:
        sw = load_sweep(f)
    except ScenarioError as e:
        assert str(f) in str(e)
        return
    assert sw.n_runs >= 1


# --- limits ---------------------------------------------------------------------------------
def test_sizes_that_would_exhaust_memory_are_refused_up_front(capsys, tmp_path):
    v = defaults()
    v["ecosystem"].update(organizations=200_000, graph="complete")
    with pytest.raises(ScenarioError) as e:
        check_size(v, "x.toml", limit=2**30)
    assert e.value.key == "ecosystem" and "GiB" in e.value.message and "ties" in e.value.message
    v = defaults()
    v["steps"] = 10**9
    with pytest.raises(ScenarioError) as e:
        check_size(v, "x.toml", limit=2**30)
    assert e.value.key == "steps"
    check_size(defaults(), "x.toml", limit=2**30)  # the baseline fits easily
    assert cli.main(["run", "--set", "ecosystem.organizations=200000", "--set",
                     "ecosystem.graph=complete", "--out", str(tmp_path / "o")]) == 2
    assert "above the limit" in capsys.readouterr().err and not (tmp_path / "o").exists()


# --- numeric invariants over many random parameter sets --------------------------------------
unit = st.floats(0.0, 1.0)


def params_from(pick, integer, choice):
    """A parameter set mixing the extremes: pick(lo, hi) gives lo, hi or a value between,
    integer(lo, hi) an integer in [lo, hi], choice(options) one of them."""
    n = integer(2, 10)
    td = pick(0.0, 0.9)
    return {
        "steps": integer(1, 15), "seed": integer(0, 2**32),
        "ecosystem": {"organizations": n, "graph": choice(
            ["complete", "erdos_renyi", "watts_strogatz"]),
            "mean_degree": pick(0.5, float(n - 1)), "individuals_per_organization":
            integer(1, 2)},
        "mindset": {"abundance_share": pick(0.0, 1.0), "theta_down": td,
                    "theta_up": pick(td + 0.01, 1.0), "hurt_rate": pick(0.0, 1.0),
                    "learn_rate": pick(0.0, 1.0), "betrayal": pick(0.0, 1.0),
                    "peer_pull": pick(0.0, 1.0), "culture_pull": pick(0.0, 1.0)},
        "initial": {"trust": pick(0.0, 1.0), "openness": pick(0.0, 1.0),
                    "divergence": pick(0.0, 1.0)},
        "talk": {"rate": pick(0.0, 1.0), "noise": pick(0.0, 1.0)},
        "differences": {"rate": pick(0.0, 100.0), "size": pick(0.0, 100.0),
                        "blame_cost": pick(0.0, 1.0), "blame_level": pick(0.01, 100.0)},
        "trust": {"rate": pick(0.0, 1.0), "steepness": pick(0.0, 100.0),
                  "w_tension": pick(0.0, 10.0), "w_dispute": pick(0.0, 10.0)},
        "openness": {"rate": pick(0.0, 1.0), "steepness": pick(0.0, 100.0)},
        "value": {"memory": pick(0.0, 0.999), "exchange": pick(0.0, 10.0),
                  "opportunity": pick(0.0, 10.0), "expectation": pick(0.0, 10.0)},
        "patience": {"horizon": integer(1, 50)},
        "noise": {"enabled": choice([False, True])},
        "formation": {"rate": pick(0.0, 20.0)},
        "interventions": [{"step": 1, "kind": choice(
            ["share_perspectives", "neutralize", "shock", "scare", "find_opportunity",
             "coach_mindset"]), "target": "all", "dose": pick(0.0, 1.0)}],
    }


@st.composite
def extreme_params(draw):
    return params_from(
        lambda lo, hi: draw(st.one_of(st.just(lo), st.just(hi), st.floats(lo, hi))),
        lambda lo, hi: draw(st.integers(lo, hi)), lambda opts: draw(st.sampled_from(opts)))


def numpy_params(rng: np.random.Generator) -> dict:
    """params_from with a numpy Generator: each value an extreme (a third of the time each
    end) or uniform between."""
    def pick(lo, hi):
        u = rng.random()
        return lo if u < 1 / 3 else hi if u < 2 / 3 else float(rng.uniform(lo, hi))

    return params_from(pick, lambda lo, hi: int(rng.integers(lo, hi, endpoint=True)),
                       lambda opts: opts[int(rng.integers(len(opts)))])


@pytest.mark.slow
@settings(max_examples=500, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(extreme_params())
def test_invariants_over_parameter_sets_hypothesis(values):
    """Hypothesis searches the extremes (and shrinks a failure to a small example)."""
    m = AllianceModel(values)
    m.run()
    check_state(m)


@pytest.mark.slow
def test_invariants_over_10000_parameter_sets():
    """10,000 parameter sets of the same mix, drawn with numpy (hypothesis's own bookkeeping
    costs more than the runs): each failure names its index, reproducible from the seed."""
    rng = np.random.default_rng(20261201)
    for i in range(10_000):
        values = numpy_params(rng)
        m = AllianceModel(values)
        m.run()
        try:
            check_state(m)
        except AssertionError as e:
            raise AssertionError(f"parameter set {i} (seed 20261201): {values}") from e


# --- crash safety ---------------------------------------------------------------------------
SPIRAL = str(Path(sys.executable).parent / "spiral")


def complete(path: Path) -> bool:
    """Is a file under its final name complete and readable?"""
    try:
        if path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".graphml":
            nx.read_graphml(path)
        elif path.suffix == ".png":
            data = path.read_bytes()
            return data[:8] == b"\x89PNG\r\n\x1a\n" and data[-8:-4] == b"IEND"
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.slow
def test_spiral_run_killed_at_random_moments_leaves_no_incomplete_file(tmp_path):
    rng = random.Random(7)
    kills, checked = 0, 0
    for i in range(15):
        out = tmp_path / f"o{i}"
        p = subprocess.Popen([SPIRAL, "run", str(SCENARIOS / "baseline.toml"), "--quiet",
                              "--steps", "150", "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 3.5))  # start-up, stepping, or writing outputs
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
        if out.exists():
            for f in out.iterdir():
                if not f.name.startswith("."):  # temporary files start with "."
                    assert complete(f), f
                    checked += 1
    assert kills >= 6
    print(f"spiral run: {kills} kills, {checked} final files checked complete")


@pytest.mark.slow
def test_sweep_killed_20_times_then_resumed_equals_uninterrupted(tmp_path):
    import pandas as pd

    from analysis.sweep import read_runs, run_sweep

    f = tmp_path / "s.toml"
    f.write_text(f'base = "{SCENARIOS / "baseline.toml"}"\ndesign = "grid"\nreplicates = 24\n'
                 'seed = 3\nsteps = 80\n[parameters]\n"mindset.abundance_share" = '
                 '[0.0, 0.3, 0.6, 0.9]\n"patience.horizon" = [10, 60]\n')
    ref = tmp_path / "ref"
    run_sweep(load_sweep(f), ref, workers=1, progress=False)
    out = tmp_path / "killed"
    rng = random.Random(11)
    kills = attempts = 0
    while kills < 20 and attempts < 60:
        attempts += 1
        p = subprocess.Popen([SPIRAL, "sweep", str(f), "--out", str(out), "--workers", "2",
                              "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        time.sleep(rng.uniform(0.3, 2.0))
        if p.poll() is None:
            victim = rng.choice(["parent", "group"])
            if victim == "parent":
                os.kill(p.pid, signal.SIGKILL)  # the workers are orphaned and wind down
            else:
                os.killpg(p.pid, signal.SIGKILL)  # parent and workers
            kills += 1
        p.wait()
    r = subprocess.run([SPIRAL, "sweep", str(f), "--out", str(out), "--workers", "2", "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    got = read_runs(out).to_pandas().sort_values("run").reset_index(drop=True)
    want = read_runs(ref).to_pandas().sort_values("run").reset_index(drop=True)
    assert kills == 20
    assert len(got) == 192 and got["run"].is_unique
    pd.testing.assert_frame_equal(got, want)
    print(f"sweep: {kills} kills, then resumed: {len(got)} rows, equal to uninterrupted")


# --- the UI ---------------------------------------------------------------------------------
def test_ui_callback_that_raises_shows_message_and_other_sessions_keep_working(monkeypatch):
    import ipyvuetify as v
    import solara

    from sim.ui import page
    from sim.ui.session import Session

    from .test_ui import _html

    box1, rc1 = solara.render(page.Page(), handle_error=False)
    box2, rc2 = solara.render(page.Page(), handle_error=False)

    def boom(self, n=1):
        raise RuntimeError("simulated failure")

    with monkeypatch.context() as mp:
        mp.setattr(Session, "step", boom)
        rc1.find(v.Btn, children=["Step"]).widget.click()
        assert "Something went wrong with Step (RuntimeError: simulated failure)" in _html(rc1)
    rc1.find(v.Btn, children=["Step"]).widget.click()  # the same session recovers
    assert "<b>step</b> 1" in _html(rc1)
    rc2.find(v.Btn, children=["Step"]).widget.click()  # another session was never affected
    assert "<b>step</b> 1" in _html(rc2)
    rc1.close()
    rc2.close()


def test_interventions_with_extreme_doses_stay_in_bounds():
    m = AllianceModel({"steps": 20, "ecosystem": {"organizations": 8}})
    m.run(5)
    for kind, dose in (("shock", 100.0), ("scare", 1.0), ("coach_mindset", 1.0),
                       ("neutralize", 1.0), ("share_perspectives", 1.0),
                       ("find_opportunity", 1.0), ("set_patience", 1)):
        m.intervene(kind, "all", dose)
        m.step()
        check_state(m)
    assert np.all(m.state.T >= 0)
