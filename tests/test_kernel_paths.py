"""The compiled path (sim/kernel_numba.py) and the numpy path (sim/kernel_numpy.py) compute the
same step: from the same seed they agree to 1e-9 on every state array, step by step, with noise
off and on, and give the same events and regimes. Plus the path selection and its fallback."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from sim import kernel
from sim.model import AllianceModel

ROOT = Path(__file__).resolve().parent.parent

numba_only = pytest.mark.skipif("numba" not in kernel.available(), reason="numba not importable")

# every array of the state, tie rows included (compared after each step)
ARRAYS = ("T", "O", "D", "v", "d_al", "d_ind", "p", "a", "m", "culture", "horizon",
          "ind_to_scarcity", "ind_to_abundance", "al_org", "al_formed", "al_ended", "al_value",
          "al_perceived", "al_unsat", "al_grievance", "al_mindset", "al_trust", "al_open",
          "al_tension", "al_level", "al_hist", "al_regime", "al_blames", "al_opps")
EVENTS = ("avoided", "blamed", "opportunities", "ended", "formed", "to_scarcity",
          "to_abundance")


@contextmanager
def path(name):
    old = kernel.use(name)
    try:
        yield
    finally:
        kernel.use(old)


def scenario(over: dict, noise: bool, steps: int) -> dict:
    values = {"ecosystem": {"organizations": 30}, "noise": {"enabled": noise}, "steps": steps}
    for k, v in over.items():
        values[k] = {**values.get(k, {}), **v} if isinstance(v, dict) else v
    return values


def run_both(values: dict, seed: int):
    """Both paths from the same seed, step by step: (numpy model, numba model, per-step events
    of each)."""
    models, events = {}, {}
    for name in ("numpy", "numba"):
        with path(name):
            m = AllianceModel(copy.deepcopy(values), seed=seed)
            evs = []
            for _ in range(values["steps"]):
                m.step()
                evs.append(m.last_events)
        models[name], events[name] = m, evs
    return models["numpy"], models["numba"], events["numpy"], events["numba"]


def assert_same_state(a, b, what=""):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, (what, name, x.shape, y.shape)
        np.testing.assert_allclose(x.astype(float), y.astype(float), rtol=0, atol=1e-9,
                                   err_msg=f"{what} {name}")


SCENARIOS = {
    "baseline_small": {},
    "two_people_per_org": {"ecosystem": {"individuals_per_organization": 2},
                           "mindset": {"abundance_share": 0.3}},
    "busy_ecosystem": {"ecosystem": {"graph": "erdos_renyi", "mean_degree": 6},
                       "formation": {"rate": 2.0}, "patience": {"end_rate": 0.6, "horizon": 6},
                       "initial": {"trust": 0.3}},
    # the evidence noise's parts: own only, both (each drawn only when its weight is not 0)
    "noise_own_only": {"trust": {"noise_shared": 0.0}, "formation": {"rate": 1.0}},
    "noise_mixed": {"trust": {"noise_shared": 0.5}, "differences": {"rate": 0.8}},
    "interventions": {
        "negotiation": {"interests": True, "empathy": True},
        "interventions": [
            {"step": 5, "kind": "shock", "target": "all", "dose": 4.0},
            {"step": 8, "kind": "neutralize", "target": [0, 1, 2, 3], "dose": 0.7},
            {"step": 10, "kind": "share_perspectives", "target": "all", "dose": 0.5},
            {"step": 12, "kind": "find_opportunity", "target": "all", "dose": 0.8},
            {"step": 15, "kind": "scare", "target": "all", "dose": 0.6},
            {"step": 20, "kind": "coach_mindset", "target": [4, 5, 6], "dose": 0.9},
            {"step": 22, "kind": "set_patience", "target": [1, 2], "dose": 5},
        ]},
}


@numba_only
@pytest.mark.parametrize("noise", [False, True], ids=["noise_off", "noise_on"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_paths_agree_on_every_array_every_step(name, noise):
    values = scenario(SCENARIOS[name], noise, 60)
    a, b, ev_a, ev_b = run_both(values, seed=7)
    assert_same_state(a.state, b.state, name)
    for t, (x, y) in enumerate(zip(ev_a, ev_b), start=1):  # the same things happened
        for key in EVENTS:
            assert np.array_equal(getattr(x, key), getattr(y, key)), (name, t, key)
        assert abs(x.value_flow - y.value_flow) < 1e-9
    ta, tb = a.timeseries(), b.timeseries()
    assert list(ta.columns) == list(tb.columns)
    np.testing.assert_allclose(ta.to_numpy(float), tb.to_numpy(float), rtol=1e-12, atol=1e-9)
    assert a.summary()["share_spiral_in"] == b.summary()["share_spiral_in"]  # the same regimes
    if noise:  # the comparison exercised what it is meant to
        s = a.state
        assert (s.al_ended >= 0).any() and s.n_al > len(a.state.al_formed[s.al_formed == 0])
        assert s.al_blames.sum() > 0 and s.al_opps.sum() > 0


@numba_only
def test_paths_agree_after_every_single_step_with_noise_on():
    """Step by step, not only at the end: the two states never drift apart."""
    values = scenario({"ecosystem": {"individuals_per_organization": 2},
                       "formation": {"rate": 1.0}, "patience": {"end_rate": 0.5}}, True, 1)
    with path("numpy"):
        a = AllianceModel(copy.deepcopy(values), seed=3)
    with path("numba"):
        b = AllianceModel(copy.deepcopy(values), seed=3)
    for t in range(40):
        with path("numpy"):
            a.step()
        with path("numba"):
            b.step()
        assert_same_state(a.state, b.state, f"step {t + 1}")


@numba_only
def test_switching_paths_mid_run_changes_nothing():
    """The compiled path keeps spare room behind the state's arrays; the numpy path replaces
    them. Mixing the two in one run, or replacing an array from outside, gives the same run."""
    values = scenario({"formation": {"rate": 1.5}, "patience": {"end_rate": 0.5}}, True, 1)
    with path("numpy"):
        ref = AllianceModel(copy.deepcopy(values), seed=5)
        for _ in range(30):
            ref.step()
    m = AllianceModel(copy.deepcopy(values), seed=5)
    for t in range(30):
        with path("numba" if t % 7 < 4 else "numpy"):
            m.step()
        if t == 12:
            m.state.T = m.state.T.copy()  # an array replaced from outside
            m.state.al_trust = m.state.al_trust.copy()
    assert_same_state(ref.state, m.state)


def test_the_numpy_path_runs_when_chosen():
    with path("numpy"):
        assert kernel.NAME == "numpy"
        m = AllianceModel(scenario({}, True, 5), seed=1)
        m.run()
        assert m.state.step == 5 and np.isfinite(m.state.T).all()


def test_unknown_path_is_refused():
    with pytest.raises(ValueError, match="SPIRAL_KERNEL"):
        kernel.use("fortran")


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=300)


def test_numpy_fallback_when_numba_is_missing():
    """Without numba the default is the numpy path, and a run works."""
    code = ("import sys; sys.modules['numba'] = None\n"
            "from sim import kernel; from sim.model import AllianceModel\n"
            "m = AllianceModel({'ecosystem': {'organizations': 12}, 'steps': 5}, seed=1); m.run()\n"
            "print(kernel.NAME, kernel.available(), m.state.step)")
    out = _python(code, {"SPIRAL_KERNEL": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["numpy", "['numpy']", "5"]


def test_environment_variable_selects_the_path():
    code = "from sim import kernel; print(kernel.NAME)"
    assert _python(code, {"SPIRAL_KERNEL": "numpy"}).stdout.strip() == "numpy"
    bad = _python(code, {"SPIRAL_KERNEL": "cobol"})
    assert bad.returncode != 0 and "expected one of numba, numpy" in bad.stderr


@numba_only
def test_default_is_compiled_and_compiles_are_cached_on_disk():
    """A fresh process loads the compiled step from the on-disk cache: no compile."""
    code = ("import json\n"
            "from sim import kernel, kernel_numba as kn\n"
            "from sim.model import AllianceModel\n"
            "m = AllianceModel({'ecosystem': {'organizations': 12}, 'steps': 3}, seed=1); m.run()\n"
            "st = kn.ties_step.stats\n"
            "print(json.dumps([kernel.NAME, sum(st.cache_hits.values()),"
            " sum(st.cache_misses.values())]))")
    env = {"SPIRAL_KERNEL": ""}
    first = _python(code, env)  # compiles if the cache is cold, stores it
    assert first.returncode == 0, first.stderr
    name, hits, misses = json.loads(_python(code, env).stdout)
    assert name == "numba" and hits >= 1 and misses == 0


@numba_only
def test_formation_falls_back_when_the_state_has_arrays_it_does_not_know(monkeypatch):
    """The compiled formation writes the known alliance arrays itself; were a new one added to
    state.empty_alliances, it falls back to state.new_alliances: the same run either way."""
    from sim import kernel_numba

    values = scenario({"formation": {"rate": 2.0}}, True, 25)
    _, fast, _, _ = run_both(values, seed=2)
    monkeypatch.setattr(kernel_numba, "_KNOWN_FIELDS", ("al_org",))
    slow, again, _, _ = run_both(values, seed=2)
    assert fast.state.n_al > 25 + 30  # alliances were formed
    assert_same_state(fast.state, again.state)
    assert_same_state(slow.state, again.state)


# A run through compiled batches (AllianceModel.run on the compiled path) is the same run as
# step() called that many times: identical arrays, series, trajectories, graph and clock.
def assert_same_run(a, b):
    for name in ARRAYS:
        x, y = getattr(a.state, name), getattr(b.state, name)
        assert x.shape == y.shape and np.array_equal(x, y), name
    import pandas as pd

    pd.testing.assert_frame_equal(a.timeseries(), b.timeseries())
    assert sorted(a.graph.edges()) == sorted(b.graph.edges())
    assert (a.steps, a.time, a.running) == (b.steps, b.time, b.running)
    ta, tb = a.trajectories(), b.trajectories()
    assert ta.keys() == tb.keys()
    for k in ta:
        assert np.array_equal(ta[k][0], tb[k][0]) and np.array_equal(ta[k][1], tb[k][1])
    sa, sb = a.summary(), b.summary()
    sa.pop("provenance"), sb.pop("provenance")
    assert sa == sb
    assert a.last_metrics == b.last_metrics


BATCH_SCENARIOS = {**SCENARIOS, "baseline_file": None}


@numba_only
@pytest.mark.parametrize("noise", [False, True], ids=["noise_off", "noise_on"])
@pytest.mark.parametrize("name", list(BATCH_SCENARIOS))
def test_batched_run_is_the_stepped_run(name, noise):
    over = BATCH_SCENARIOS[name]
    kw = {}
    if over is None:
        values = str(ROOT / "scenarios" / "baseline.toml")
        kw = {"noise.enabled": noise}
    else:
        values = scenario(over, noise, 80)
    with path("numba"):
        a = AllianceModel(copy.deepcopy(values), seed=7, **kw)
        a.run()
        b = AllianceModel(copy.deepcopy(values), seed=7, **kw)
        for _ in range(b.scenario_spec.steps):
            b.step()
    assert_same_run(a, b)
    assert a.state.n_al > 0


@numba_only
def test_batched_run_when_formations_outgrow_the_room(monkeypatch):
    """No spare room: every formation stops the compiled loop and is done by Python."""
    from sim import kernel_batch, kernel_numba

    monkeypatch.setattr(kernel_batch, "spare_alliances", lambda rate, n: 0)
    monkeypatch.setattr(kernel_batch, "capacity", lambda n: n)
    by_python = []
    form = kernel_numba.form_alliances

    def counted(*args, **kw):
        by_python.append(kw.get("n_new"))
        return form(*args, **kw)

    monkeypatch.setattr(kernel_numba, "form_alliances", counted)
    values = scenario(SCENARIOS["busy_ecosystem"], True, 60)
    with path("numba"):
        a = AllianceModel(copy.deepcopy(values), seed=3)
        a.run(25)
        a.run(35)  # and a second run() continues the same run
        b = AllianceModel(copy.deepcopy(values), seed=3)
        for _ in range(60):
            b.step()
    assert_same_run(a, b)
    pending = [n for n in by_python if n is not None]  # (step() draws its own n_new)
    assert len(pending) >= 2  # the batch stopped and Python formed and grew the buffers
    assert a.state.n_al > len(a.state.al_formed[a.state.al_formed == 0]) + 20  # many formed


@numba_only
def test_batched_run_keeps_other_mesa_events_at_their_time():
    """An event scheduled through Mesa during a run still fires at its time (then the clock
    is advanced by Mesa's own loop)."""
    fired = []

    class Noting(AllianceModel):
        def note(self):
            fired.append((self.time, self.state.step))

    with path("numba"):
        runs = []
        for batched in (True, False):
            m = Noting(scenario({}, True, 40), seed=2)
            m.schedule_event(m.note, at=17)
            if batched:
                m.run()
            else:
                for _ in range(40):
                    m.step()
            runs.append(m)
        assert fired[0] == fired[1] and fired[0][0] == 17  # the same moment of the run
        assert_same_run(*runs)
        runs[0].step()
        assert runs[0].steps == runs[0].state.step == 41


@numba_only
def test_progress_counts_every_step():
    done = []
    with path("numba"):
        m = AllianceModel(scenario({}, True, 130), seed=1)
        m.run(progress=done.append)
    assert sum(done) == 130 and max(done) <= m.BATCH and m.state.step == 130


@numba_only
def test_batch_writes_every_series_key_and_steps_when_a_key_is_new(monkeypatch):
    from sim import kernel_batch, metrics

    assert kernel_batch.SERIES == set(metrics.SERIES_KEYS)
    raw = np.zeros((3, kernel_batch.N_RAW))
    assert set(kernel_batch.metrics_rows(raw, 5, 7)) == kernel_batch.SERIES
    m = AllianceModel(scenario({}, True, 10), seed=1)
    monkeypatch.setattr(metrics, "SERIES_KEYS", metrics.SERIES_KEYS + ("a_new_metric",))
    assert m._batchable(9) == 0


@numba_only
def test_the_vectorized_logistic_is_the_logistic():
    """kernel_numba.logistic_block (blocks of the tie loops) against numpy's 1/(1 + e^-z):
    within 2.3e-16 absolute everywhere, 0 <= S <= 1, monotone, and finite at the extremes
    (clamped past |z| = 700)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from sim import kernel_numba as kn

    def check(z):
        got = z.copy()
        kn.logistic_block(got, len(got))
        with np.errstate(over="ignore"):
            want = 1.0 / (1.0 + np.exp(-z))
        assert np.all(np.abs(got - want) <= 2.3e-16 + 1e-300)
        assert np.all((got >= 0.0) & (got <= 1.0)) and np.all(np.isfinite(got))

    rng = np.random.default_rng(3)
    z = np.concatenate([rng.normal(0, 5, 100_000), rng.uniform(-800, 800, 10_000),
                        [0.0, -0.0, 700.0, -700.0, 701.0, -701.0, 1e300, -1e300, 36.7, -36.7]])
    check(z)
    ramp = np.linspace(-50, 50, 100_001)
    kn.logistic_block(ramp, len(ramp))
    assert np.all(np.diff(ramp) >= 0.0)
    # a partial block leaves the rest of the buffer alone
    buf = np.full(8, 9.0)
    kn.logistic_block(buf, 3)
    assert np.all(buf[3:] == 9.0) and np.all(np.abs(buf[:3] - 1.0 / (1.0 + np.exp(-9.0))) < 3e-16)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=600))
    def prop(xs):
        check(np.array(xs))

    prop()
