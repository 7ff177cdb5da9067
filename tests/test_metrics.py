"""Ecosystem metrics against independent implementations."""

from __future__ import annotations

import networkx as nx
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sim.metrics import largest_component
from sim.model import AllianceModel

from .conftest import SCENARIOS as ROOT_SCEN


@given(st.integers(1, 80), st.lists(st.tuples(st.integers(0, 79), st.integers(0, 79)),
                                    max_size=120))
def test_largest_component_equals_networkx(n, edges):
    e = np.array([(a % n, b % n) for a, b in edges], dtype=np.int64).reshape(-1, 2)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(e.tolist())
    assert largest_component(n, e) == max(len(c) for c in nx.connected_components(g))


def test_largest_component_large_path_uses_the_same_answer():
    rng = np.random.default_rng(3)
    n = 30_000
    e = rng.integers(0, n, (25_000, 2))
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(e.tolist())
    assert largest_component(n, e) == max(len(c) for c in nx.connected_components(g))


def test_kaplan_meier_is_lifelines_estimate():
    """The summary's Kaplan-Meier (metrics.survival) gives lifelines' numbers: failure by an
    age and median survival, on random censored data with ties, and on real runs."""
    from lifelines import KaplanMeierFitter

    from sim import metrics

    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        dur = rng.integers(0, 40, n).astype(float)
        obs = rng.random(n) < rng.random()
        km = KaplanMeierFitter().fit(dur, event_observed=obs)
        times, surv = metrics.kaplan_meier(dur, obs)
        for age in (0, 5, 17.5, 39, 45):
            want = float(km.survival_function_at_times(age).iloc[0])
            k = np.searchsorted(times, age, side="right")
            assert abs((surv[k - 1] if k else 1.0) - want) < 1e-12
        med = float(km.median_survival_time_)
        below = np.flatnonzero(surv <= 0.5)
        got = float(times[below[0]]) if len(below) else float("inf")
        assert got == med, (dur, obs, got, med)
    for seed in (1, 2):
        m = AllianceModel(str(ROOT_SCEN / "baseline.toml"), seed=seed)
        m.run()
        dur, censored = metrics.durations(m.state)
        km = KaplanMeierFitter().fit(dur, event_observed=~censored)
        s = m.summary()
        assert abs(s["failure_rate_km"]
                   - (1 - float(km.survival_function_at_times(120).iloc[0]))) < 1e-12
        assert s["median_duration"] == float(km.median_survival_time_)
