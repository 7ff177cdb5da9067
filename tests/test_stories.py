"""Every story in scenarios/ validates, runs, and shows its stated expected outcome over seeds."""

from __future__ import annotations

import numpy as np
import pytest

from sim.model import AllianceModel
from sim.scenario import ScenarioError, load

from .conftest import SCENARIOS

SEEDS = range(1, 11)


def runs(name: str, seeds=SEEDS, *overrides):
    out = []
    for sd in seeds:
        m = AllianceModel(load(SCENARIOS / f"{name}.toml", [*overrides, f"seed={sd}"]))
        m.run()
        out.append(m)
    return out


def mean(models, key):
    return float(np.mean([m.summary()[key] for m in models]))


@pytest.mark.slow
def test_joint_venture_principles_spiral_in_positions_spiral_out():
    """The principles tilt the odds a lot; the spiral still decides each run."""
    seeds = range(1, 21)
    good = runs("joint_venture", seeds)
    bad = runs("joint_venture_positions", seeds)
    assert sum(m.summary()["share_spiral_in"] == 1.0 for m in good) >= 13
    assert sum(m.summary()["share_spiral_out"] == 1.0 for m in bad) >= 8
    assert mean(good, "mean_trust") > 0.7
    assert mean(good, "mean_trust") - mean(bad, "mean_trust") > 0.25


def scarcity_side_in_abundance(m) -> bool:
    """Every person of the company that started with a scarcity culture is now in abundance."""
    s = m.state
    return bool(s.m[~s.abundant_start[s.org]].all())


@pytest.mark.slow
def test_turnaround_six_steps_beat_leaving_it_alone():
    turned = runs("turnaround", range(1, 7))
    alone = runs("turnaround_left_alone", range(1, 7))
    assert all(m.summary()["mean_trust"] > 0.6 for m in turned)
    assert all(scarcity_side_in_abundance(m) for m in turned)
    assert sum(m.summary()["mean_trust"] < 0.3 for m in alone) >= 5
    # before the six steps the two runs are the same run
    for a, b in zip(turned, alone):
        ta, tb = a.timeseries()["mean_trust"], b.timeseries()["mean_trust"]
        assert np.array_equal(ta[:11], tb[:11])
        assert ta.iloc[10] < 0.3  # it had spiraled out


@pytest.mark.slow
def test_relational_steps_alone_turn_it_around_by_changing_minds():
    """Issue 12 point 4: share_perspectives, neutralize and find_opportunity, repeated (no
    coach_mindset, no set_patience) turn the spiraled-out mixed alliance around in at least 4
    of 5 seeds, and its scarcity holders end in abundance; left alone it stays out in 4 of 5."""
    kinds = {i["kind"] for i in load(SCENARIOS / "relational_turnaround.toml")
             .values["interventions"]}
    assert kinds == {"share_perspectives", "neutralize", "find_opportunity"}
    seeds = range(11, 16)  # not the seeds the scenario was written with
    turned = runs("relational_turnaround", seeds)
    alone = runs("turnaround_left_alone", seeds)
    for m in turned + alone:
        assert m.state.n_al == 1
        assert m.state.al_mindset[0].sum() == 1  # a mixed pair at formation
        assert m.state.horizon.min() == 240  # the horizon nobody changed
    ok = [m.state.al_regime[0] == 1 and scarcity_side_in_abundance(m) for m in turned]
    assert sum(ok) >= 4, ok
    assert sum(m.state.al_regime[0] == -1 for m in alone) >= 4
    # the minds changed through experience: before the first step they were all in scarcity
    for m in turned:
        assert m.timeseries()["share_abundance_mindset"].iloc[10] == 0.5


@pytest.mark.slow
def test_scarcity_trap_falls_fast_recovers_slowly():
    for m in runs("scarcity_trap", range(1, 5)):
        ts = m.timeseries()
        ab = ts["share_abundance_mindset"].to_numpy()  # row k is step k + 1
        assert ab[98] > 0.9  # step 99, the last step before the crisis
        assert ab[99] < 0.05  # fast: the whole industry falls into fear at once
        assert ab[198] < 0.1  # slow: 100 steps later hardly anyone has climbed back
        assert ab[-1] > max(ab[298], 0.7)  # but they do climb back, carried by trusted ties
        trust = ts["mean_trust_active"].to_numpy()
        assert trust[118] < trust[98] - 0.08  # blame and closing up cost trust at once


@pytest.mark.slow
def test_patience_lowers_failure_rate():
    patient = runs("patient", range(1, 6))
    impatient = runs("impatient", range(1, 6))
    assert mean(patient, "failure_rate") < mean(impatient, "failure_rate") - 0.05
    assert mean(patient, "failure_rate_km") < mean(impatient, "failure_rate_km") - 0.05


@pytest.mark.slow
def test_alliance_function_coaching_raises_trust():
    coached = runs("alliance_function", range(1, 6))
    plain = runs("no_alliance_function", range(1, 6))
    assert mean(coached, "mean_trust") > mean(plain, "mean_trust") + 0.03
    assert mean(coached, "share_abundance_mindset") > mean(plain, "share_abundance_mindset")
    assert mean(coached, "failure_rate") < mean(plain, "failure_rate")


@pytest.mark.slow
def test_ecosystem_health_near_tipping():
    mid = runs("ecosystem_health", range(1, 5))
    low = runs("ecosystem_health", range(1, 5), "mindset.abundance_share=0.25")
    high = runs("ecosystem_health", range(1, 5), "mindset.abundance_share=0.6")
    assert 0.3 < mean(mid, "mean_trust") < 0.7
    assert mean(high, "mean_trust") - mean(low, "mean_trust") > 0.25
    assert mean(low, "mean_trust") < mean(mid, "mean_trust") < mean(high, "mean_trust")


# extends ------------------------------------------------------------------------------------
def test_extends_merges_over_base(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('name = "b"\nsteps = 50\n[mindset]\nabundance_share = 0.2\ntheta_up = 0.7\n'
                    '[[interventions]]\nstep = 3\nkind = "shock"\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\nname = "c"\n[mindset]\nabundance_share = 0.9\n')
    sc = load(child)
    assert sc.values["name"] == "c" and sc.values["steps"] == 50
    assert sc.values["mindset"]["abundance_share"] == 0.9
    assert sc.values["mindset"]["theta_up"] == 0.7  # kept from the base
    assert len(sc.values["interventions"]) == 1  # inherited
    assert sc.extends == [str(base)]
    child.write_text('extends = "base.toml"\ninterventions = []\n')
    assert load(child).values["interventions"] == []  # a list replaces the base's


def test_extends_errors(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('extends = "b.toml"\n')
    b.write_text('extends = "a.toml"\n')
    with pytest.raises(ScenarioError, match=r"extends: expected a chain without cycles, got "
                                            r"a.toml -> b.toml -> a.toml"):
        load(a)
    a.write_text('extends = "missing.toml"\n')
    with pytest.raises(ScenarioError, match="extends: base scenario not found"):
        load(a)
    a.write_text('extends = 3\n')
    with pytest.raises(ScenarioError, match="extends: expected a scenario file name"):
        load(a)
    b.write_text('[mindset]\nabundance_share = 7\n')
    a.write_text('extends = "b.toml"\n')
    with pytest.raises(ScenarioError) as e:
        load(a)
    assert e.value.source == str(b) and e.value.key == "mindset.abundance_share"


def test_story_files_extend_baseline_and_validate():
    for f in SCENARIOS.glob("*.toml"):
        sc = load(f)
        if f.name not in ("baseline.toml", "dyad.toml", "abundance_ecosystem.toml",
                          "scarcity_ecosystem.toml"):
            assert sc.extends, f"{f.name} should extend a base"
        assert "Expected outcome" in f.read_text() or f.name in (
            "baseline.toml", "dyad.toml", "no_alliance_function.toml"), f.name


def test_every_repeats_an_intervention():
    m = AllianceModel({"steps": 30, "interventions": [
        {"step": 5, "every": 10, "kind": "set_patience", "target": [0], "dose": 1}]})
    assert sorted(t for t, items in m._schedule.items() if items) == [5, 15, 25]
