"""Numeric invariants over random parameter sets (hypothesis), including extremes."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sim.model import AllianceModel
from sim.scenario import GRAPHS, INTERVENTIONS

unit = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 25))
    theta_down = draw(st.floats(0.0, 0.9))
    kind = draw(st.sampled_from(INTERVENTIONS))
    dose = draw(st.integers(1, 200)) if kind == "set_patience" else draw(unit)
    return {
        "steps": draw(st.integers(1, 60)),
        "seed": draw(st.integers(0, 2**31)),
        "ecosystem": {"organizations": n, "graph": draw(st.sampled_from(GRAPHS)),
                      "mean_degree": draw(st.floats(0.5, min(8.0, 2.0 * (n - 1)))),
                      "individuals_per_organization": draw(st.integers(1, 3)),
                      "perspective_dims": draw(st.integers(1, 5))},
        "mindset": {"abundance_share": draw(unit), "theta_down": theta_down,
                    "theta_up": draw(st.floats(theta_down + 0.01, 1.0)),
                    "hurt_rate": draw(unit), "learn_rate": draw(unit), "spread": draw(
                        st.floats(0, 0.5))},
        "initial": {"trust": draw(unit), "openness": draw(unit), "divergence": draw(unit)},
        "negotiation": {"clarity": draw(st.booleans()), "empathy": draw(st.booleans()),
                        "trust_building": draw(st.booleans()),
                        "interests": draw(st.booleans())},
        "talk": {"rate": draw(unit), "noise": draw(unit)},
        "differences": {"rate": draw(st.sampled_from([0.0, 0.2, 5.0, 100.0])),
                        "size": draw(st.sampled_from([0.0, 0.3, 10.0])),
                        "blame_cost": draw(unit)},
        "trust": {"rate": draw(unit), "steepness": draw(st.floats(0, 100))},
        "openness": {"rate": draw(unit), "steepness": draw(st.floats(0, 100))},
        "value": {"memory": draw(st.floats(0, 0.999)), "revenue_share": draw(unit)},
        "patience": {"horizon": draw(st.integers(1, 100))},
        "noise": {"enabled": draw(st.booleans())},
        "formation": {"rate": draw(st.sampled_from([0.0, 0.2, 5.0]))},
        "interventions": [{"step": 1, "kind": kind, "target": "all", "dose": dose}],
    }


def check_state(m: AllianceModel):
    s = m.state
    for name in ("T", "O", "p", "a", "culture", "D", "v", "al_trust", "al_open", "al_value",
                 "al_perceived"):
        arr = getattr(s, name)
        assert np.all(np.isfinite(arr)), name
    for name in ("T", "O", "p", "a", "culture", "al_trust", "al_open"):
        arr = getattr(s, name)
        assert arr.min(initial=0) >= 0.0 and arr.max(initial=0) <= 1.0, name
    assert s.D.min(initial=0) >= 0 and s.v.min(initial=0) >= 0
    assert s.al_value.min(initial=0) >= 0 and s.al_perceived.min(initial=0) >= 0
    # perceived value never exceeds what was created (views and shares are <= 1)
    assert np.all(s.al_perceived <= s.al_value.sum(axis=1) * (1 + 1e-12) + 1e-12)
    # counts: formed = active + ended; active dyads belong to active alliances only
    summ = m.summary()
    assert summ["alliances_formed"] == s.active.sum() + (s.al_ended >= 0).sum()
    assert np.all(s.active[s.d_al])
    assert set(np.unique(s.d_al)) == set(np.flatnonzero(s.active))
    shares = summ["share_spiral_in"] + summ["share_spiral_out"] + summ["share_undecided"]
    assert abs(shares - 1.0) < 1e-12
    assert 0 <= summ["failure_rate"] <= 1
    assert m.graph.number_of_edges() == s.active.sum()


@given(scenarios())
def test_invariants_hold_for_random_parameters(values):
    m = AllianceModel(values)
    m.run()
    check_state(m)


def test_invariants_at_extremes():
    for extreme in ({"differences": {"rate": 100.0, "size": 100.0}},
                    {"talk": {"noise": 1.0, "rate": 1.0}},
                    {"trust": {"rate": 1.0, "steepness": 100.0},
                     "openness": {"rate": 1.0, "steepness": 100.0}},
                    {"initial": {"trust": 0.0, "openness": 0.0, "divergence": 1.0}},
                    {"initial": {"trust": 1.0, "openness": 1.0, "divergence": 0.0}},
                    {"formation": {"rate": 50.0}, "ecosystem": {"organizations": 8}}):
        m = AllianceModel({"steps": 80, **extreme})
        m.run()
        check_state(m)
