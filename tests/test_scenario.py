"""Scenario files: schema, defaults, overrides and the exact one-line errors (exit code 2)."""

from __future__ import annotations

import tomllib

import pytest

from sim import cli
from sim.scenario import SCHEMA, ScenarioError, defaults, load, parse_override

from .conftest import SCENARIOS


def spiral(*args):
    return cli.main([str(a) for a in args])


def write(tmp_path, text, name="s.toml"):
    f = tmp_path / name
    f.write_text(text)
    return f


def test_every_scenario_file_validates(capsys):
    files = sorted(SCENARIOS.glob("*.toml"))
    assert {f.name for f in files} >= {"baseline.toml", "dyad.toml", "abundance_ecosystem.toml",
                                       "scarcity_ecosystem.toml"}
    assert spiral("validate", *files) == 0
    assert capsys.readouterr().out.count(": ok") == len(files)


def test_baseline_lists_every_key_at_its_default():
    raw = tomllib.loads((SCENARIOS / "baseline.toml").read_text())
    d = defaults()
    for section, keys in SCHEMA.items():
        for k in keys:
            if section == "":
                if k not in ("name", "description"):
                    assert raw[k] == d[k], k
            else:
                assert raw[section][k] == d[section][k], f"{section}.{k}"


def test_every_key_in_every_scenario_is_commented():
    for f in SCENARIOS.glob("*.toml"):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            s = line.strip()
            if "=" in s and not s.startswith("#"):
                assert "#" in s, f"{f.name}:{n} key without a comment: {s}"


@pytest.mark.parametrize("text, expected", [
    ('name = "x"\n[ecosystem]\norganisations = 5\n',
     "ecosystem.organisations: unknown key (did you mean 'organizations'?)"),
    ('name = "x"\nsteps = "a"\n', "steps: expected an integer >= 1, got 'a'"),
    ('steps = 0\n', "steps: expected an integer >= 1, got 0"),
    ('steps = 2.5\n', "steps: expected an integer >= 1, got 2.5"),
    ('[ecosystem]\norganizations = 1\n',
     "ecosystem.organizations: expected an integer >= 2 and <= 200000, got 1"),
    ('[ecosystem]\ngraph = "ring"\n', "ecosystem.graph: expected one of complete, erdos_renyi, "
     "barabasi_albert, watts_strogatz, powerlaw_cluster, got 'ring'"),
    ('[ecosystem]\ngraph = "complet"\n', "(did you mean 'complete'?)"),
    ('[ecosystem]\nmean_degree = 0\n', "ecosystem.mean_degree: expected a number > 0"),
    ('[mindset]\nabundance_share = 1.5\n',
     "mindset.abundance_share: expected a number >= 0 and <= 1, got 1.5"),
    ('[mindset]\nabundance_share = "half"\n', "mindset.abundance_share: expected a number"),
    ('[mindset]\nabundance_share = true\n', "mindset.abundance_share: expected a number"),
    ('[initial]\ntrust = -0.1\n', "initial.trust: expected a number >= 0 and <= 1, got -0.1"),
    ('[patience]\nhorizon = 0\n', "patience.horizon: expected an integer >= 1"),
    ('[noise]\nenabled = "no"\n', "noise.enabled: expected true or false, got 'no'"),
    ('mindest = 3\n', "mindest: unknown key (did you mean 'mindset'?)"),
    ('ecosystem = 3\n', "ecosystem: expected a table [ecosystem], got 3"),
    ('name = \n', "TOML syntax error"),
    ('[[interventions]]\nstep = 5\nkind = "shok"\n',
     "interventions[0].kind: expected one of share_perspectives, neutralize, coach_mindset, "
     "set_patience, shock, scare, find_opportunity, got 'shok' (did you mean 'shock'?)"),
    ('[[interventions]]\nstep = 5000\nkind = "shock"\n',
     "interventions[0].step: expected an integer from 1 to steps (300), got 5000"),
    ('[[interventions]]\nstep = 5\nkind = "shock"\ntarget = [99]\n',
     "interventions[0].target: expected \"all\" or a non-empty list of organization ids from 0 "
     "to 59, got [99]"),
    ('[[interventions]]\nstep = 5\nkind = "neutralize"\ndose = 2\n',
     "interventions[0].dose: expected a number from 0 to 1 for neutralize, got 2"),
    ('[[interventions]]\nstep = 5\nkind = "set_patience"\ndose = 0.5\n',
     "interventions[0].dose: expected a whole number of steps >= 1 for set_patience"),
    ('[[interventions]]\nstep = 5\nkind = "shock"\nfoo = 1\n',
     "interventions[0].foo: unknown key"),
    ('[mindset]\ntheta_down = 0.7\ntheta_up = 0.6\n',
     "mindset.theta_up: expected a number >= mindset.theta_down (0.7), got 0.6"),
])
def test_bad_scenario_one_line_exit_2_no_output(tmp_path, capsys, text, expected):
    f = write(tmp_path, text)
    out = tmp_path / "out"
    assert spiral("run", f, "--out", out, "--quiet") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # exactly one line
    assert err.startswith(f"error: {f}: ")
    assert expected in err
    assert "Traceback" not in err
    assert not out.exists()
    assert spiral("validate", f) == 2


@pytest.mark.parametrize("override, expected", [
    ("ecosystem.graph=ring", "(--set): ecosystem.graph: expected one of"),
    ("mindset.abundance_share=1.5", "(--set): mindset.abundance_share: expected a number >= 0"),
    ("noise.enabled=maybe", "(--set): noise.enabled: expected true or false, got 'maybe'"),
    ("mindest.abundance_share=1",
     "(--set): mindest.abundance_share: unknown key (did you mean 'mindset.abundance_share'?)"),
    ("foo", "(--set): foo: expected KEY=VALUE"),
])
def test_bad_override(tmp_path, capsys, override, expected):
    out = tmp_path / "out"
    assert spiral("run", SCENARIOS / "baseline.toml", "--set", override, "--out", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and str(SCENARIOS / "baseline.toml") in err
    assert not out.exists()


def test_missing_file_and_bad_cli_args(tmp_path, capsys):
    assert spiral("run", tmp_path / "none.toml") == 2
    assert "none.toml: file not found" in capsys.readouterr().err
    assert spiral("run", "--steps", "x") == 2
    assert "--steps: invalid int value" in capsys.readouterr().err
    assert spiral("run", "--steps", "0", "--out", tmp_path / "o") == 2
    assert "steps: expected an integer >= 1, got 0" in capsys.readouterr().err


def test_overrides_parse_as_toml_values():
    assert parse_override("mindset.abundance_share=0.3") == ("mindset.abundance_share", 0.3)
    assert parse_override("ecosystem.graph=complete") == ("ecosystem.graph", "complete")
    assert parse_override("noise.enabled=false") == ("noise.enabled", False)
    assert parse_override('name="a b"') == ("name", "a b")
    assert parse_override("steps=12") == ("steps", 12)


def test_overrides_apply_and_are_recorded():
    sc = load(SCENARIOS / "baseline.toml", ["mindset.abundance_share=0.3", "ecosystem.graph=complete",
                                             "noise.enabled=false"])
    assert sc.values["mindset"]["abundance_share"] == 0.3
    assert sc.values["ecosystem"]["graph"] == "complete"
    assert sc.values["noise"]["enabled"] is False
    assert sc.overrides == [("mindset.abundance_share", 0.3), ("ecosystem.graph", "complete"),
                            ("noise.enabled", False)]


def test_int_given_for_float_and_whole_float_for_int():
    sc = load(SCENARIOS / "baseline.toml", ["initial.trust=1", "steps=10.0"])
    assert sc.values["initial"]["trust"] == 1.0 and isinstance(sc.values["initial"]["trust"], float)
    assert sc.values["steps"] == 10 and isinstance(sc.values["steps"], int)


def test_scenario_error_names_file_and_key():
    with pytest.raises(ScenarioError) as e:
        load(SCENARIOS / "baseline.toml", ["patience.horizon=-3"])
    assert e.value.key == "patience.horizon"
    assert "baseline.toml" in e.value.source
