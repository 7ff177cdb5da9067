"""The Mesa layer: agents are views onto the state arrays, registered in AgentSets."""

from __future__ import annotations

import numpy as np

from sim.agents import Individual, Organization
from sim.model import AllianceModel


def test_agents_are_mesa_agentsets_over_the_arrays():
    m = AllianceModel({"ecosystem": {"organizations": 12, "individuals_per_organization": 2}})
    assert len(m.organizations) == 12 and len(m.individuals) == 24
    assert set(m.agents_by_type) == {Organization, Individual}
    m.run(20)
    s = m.state
    for ind in m.individuals:
        assert ind.latent_abundance == s.a[ind.row]
        assert ind.mindset == ("abundance" if s.m[ind.row] else "scarcity")
        assert ind.employer == s.org[ind.row]
    org = m.organization(0)
    assert sorted(p.row for p in org.people) == [0, 1]
    assert set(org.partners) == set(m.graph.neighbors(0))


def test_agent_writes_reach_the_kernel():
    m = AllianceModel({"ecosystem": {"organizations": 6}})
    ind = m.individuals_list[0]
    ind.latent_abundance = 0.0
    assert m.state.a[0] == 0.0
    m.organization(1).horizon = 3
    assert m.state.horizon[1] == 3


def test_individual_ties_match_arrays():
    m = AllianceModel({"ecosystem": {"organizations": 8, "individuals_per_organization": 2}})
    m.run(10)
    s = m.state
    for ind in m.individuals_list[:4]:
        t = ind.ties()
        n_rows = (s.d_ind == ind.row).sum()
        assert len(t["partner"]) == n_rows
        assert np.all((t["trust"] >= 0) & (t["trust"] <= 1))


def test_datacollector_has_a_row_per_step():
    m = AllianceModel({"steps": 15})
    m.run()
    df = m.datacollector.get_model_vars_dataframe()
    assert len(df) == 15 and m.running is False
