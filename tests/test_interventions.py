"""Each intervention changes the state it should, for the targets it names and no others."""

from __future__ import annotations

import numpy as np
import pytest

from sim.model import AllianceModel
from sim.scenario import ScenarioError


def model(**over):
    base = {"steps": 100, "mindset": {"abundance_share": 0.5}}
    base.update(over)
    m = AllianceModel(base)
    m.run(40)
    return m


def touched(m, orgs):
    s = m.state
    mask = np.zeros(s.n_org, bool)
    mask[orgs] = True
    return mask[s.al_org[s.d_al]].any(axis=1)


def test_share_perspectives_opens_and_converges_only_targets():
    m = model()
    s = m.state
    sel = touched(m, [0, 1])
    O0, d0 = s.O.copy(), np.abs(s.p[s.d_ind[0]] - s.p[s.d_ind[1]]).mean(axis=1)
    m.intervene("share_perspectives", [0, 1], 0.6)
    assert np.allclose(s.O[:, sel], O0[:, sel] + 0.6 * (1 - O0[:, sel]))
    assert np.array_equal(s.O[:, ~sel], O0[:, ~sel])
    d1 = np.abs(s.p[s.d_ind[0]] - s.p[s.d_ind[1]]).mean(axis=1)
    assert d1[sel].mean() < d0[sel].mean()


def test_neutralize_clears_tension():
    m = model()
    s = m.state
    s.D[:] = 1.0
    m.intervene("neutralize", "all", 1.0)
    assert np.all(s.D == 0.0)
    s.D[:] = 1.0
    m.intervene("neutralize", "all", 0.25)
    assert np.allclose(s.D, 0.75)


def test_coach_mindset_raises_latent_abundance_and_flips_with_hysteresis():
    m = model()
    s = m.state
    who = s.org == 3
    a0, m0 = s.a.copy(), s.m.copy()
    m.intervene("coach_mindset", [3], 0.5)
    assert np.allclose(s.a[who], a0[who] + 0.5 * (1 - a0[who]))
    assert np.array_equal(s.a[~who], a0[~who])
    up, down = m.p.mindset.theta_up, m.p.mindset.theta_down
    assert np.array_equal(s.m, np.where(m0, s.a >= down, s.a > up))
    assert np.array_equal(s.ind_to_abundance, (~m0 & s.m).astype(int))  # flips are counted


def test_set_patience_sets_horizon():
    m = model()
    m.intervene("set_patience", [2, 5], 7)
    assert m.state.horizon[2] == 7 and m.state.horizon[5] == 7
    assert m.state.horizon[0] == m.p.patience.horizon != 7
    assert m.organization(2).horizon == 7


def test_shock_raises_tension_and_blame_lowers_trust():
    m = model(noise={"enabled": False})
    s = m.state
    T0 = s.al_trust.copy()
    D0 = s.D.copy()
    m.intervene("shock", "all", 10.0)
    assert np.all(s.D > D0)  # with noise off: the expected tension, (1 - q) (D + dose)
    hit = np.zeros(s.n_al, bool)
    hit[s.d_al[s.D > m.p.differences.blame_level]] = True
    assert hit.sum() >= 10
    m.step()
    assert np.all(s.al_trust[hit] < T0[hit])  # blamed: trust falls both ways
    assert s.al_blames.sum() > 0


def test_scheduled_interventions_run_at_their_step():
    sched = [{"step": 30, "kind": "set_patience", "target": [1], "dose": 999}]
    m = AllianceModel({"steps": 40, "interventions": sched})
    m.run(29)
    assert m.state.horizon[1] == m.p.patience.horizon
    m.step()
    assert m.state.horizon[1] == 999


def test_unknown_intervention_is_a_clear_error():
    m = model()
    with pytest.raises(ScenarioError, match="expected one of share_perspectives"):
        m.intervene("hug", "all", 1.0)


def test_negotiation_principles_set_initial_conditions():
    base = AllianceModel({"mindset": {"abundance_share": 0.5}, "initial": {"spread": 0.0}})
    all4 = AllianceModel({"mindset": {"abundance_share": 0.5}, "initial": {"spread": 0.0},
                          "negotiation": {"clarity": True, "empathy": True,
                                          "trust_building": True, "interests": True}})
    assert np.all(all4.state.p == all4.state.p[0])  # clarity: one shared view
    assert base.state.T.mean() == 0.5 and all4.state.T.mean() == 0.75  # trust-building
    from sim.kernel import claims, talk_rate
    assert talk_rate(all4.p) == 2 * talk_rate(base.p)  # empathy
    assert np.all(claims(all4.state, all4.p) == 0.5)  # interests over positions
    assert claims(base.state, base.p).max() == 0.65


def test_alliance_targeting_touches_only_that_alliance():
    m = model()
    s = m.state
    a = int(np.flatnonzero(s.active)[0])
    O0 = s.O.copy()
    m.intervene("share_perspectives", dose=0.5, alliances=[a])
    sel = s.d_al == a
    assert np.allclose(s.O[:, sel], O0[:, sel] + 0.5 * (1 - O0[:, sel]))
    assert np.array_equal(s.O[:, ~sel], O0[:, ~sel])
    m.intervene("set_patience", dose=9, alliances=[a])
    assert set(np.flatnonzero(s.horizon == 9)) == set(s.al_org[a].tolist())


def test_find_opportunity_adds_value_with_noise_off():
    m = model(noise={"enabled": False})
    s = m.state
    v0 = s.al_value.sum()
    m.intervene("find_opportunity", "all", 1.0)
    assert s.al_value.sum() > v0


def test_shock_clears_confronted_tension_and_adds_to_avoided():
    """A confronted crisis is neutralized with the tension it found (as in step 2); with noise
    off the tension is the expectation (1 - q)(D + dose)."""
    from sim.kernel import confront_prob

    m = model(noise={"enabled": False})
    s = m.state
    s.D[:] = 0.7
    q = confront_prob(s, m.p, s.O[0] * s.O[1])
    m.intervene("shock", "all", 2.0)
    np.testing.assert_allclose(s.D, (1 - q) * (0.7 + 2.0), rtol=1e-12)
    m = model()
    s = m.state
    s.D[:] = 0.7
    m.intervene("shock", "all", 2.0)
    assert set(np.round(np.unique(s.D), 12)) <= {0.0, 2.7}  # cleared, or old + new
    assert (s.D == 0).any() and (s.D > 0).any()


def test_opportunities_from_interventions_are_perceived_like_step_value():
    m = model(noise={"enabled": False})
    s = m.state
    created0, perceived0 = s.al_value.sum(axis=1).copy(), s.al_perceived.copy()
    m.intervene("find_opportunity", "all", 1.0)
    created = s.al_value.sum(axis=1) - created0
    perceived = s.al_perceived - perceived0
    assert created.sum() > 0
    assert np.all(perceived <= created + 1e-12)  # a revenue-only view sees less
    assert np.all(perceived[created > 0] > 0)
    # an abundance pair perceives all of it (claims of one half each, holistic views)
    both = np.flatnonzero(m.state.m[s.d_ind].all(axis=0))
    al = np.unique(s.d_al[both])
    full = np.isin(np.arange(s.n_al), al) & ~np.isin(np.arange(s.n_al),
                                                      s.d_al[~m.state.m[s.d_ind].all(axis=0)])
    np.testing.assert_allclose(perceived[full], created[full], rtol=1e-12)
