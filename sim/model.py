"""AllianceModel: the one Model API that the CLI, the UI, sweeps and tests drive.

It owns the state arrays, the networkx ecosystem, the schedule of interventions and a Mesa
DataCollector; the dynamics are the kernel's pure array functions.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import mesa
import networkx as nx
import numpy as np

from . import __version__, interventions, kernel, metrics
from .agents import Individual, Organization
from .scenario import INTERVENTIONS, Scenario, ScenarioError, from_dict, load
from .state import REGIME_NAMES, VALUE_KINDS, build

TRACKED = 60  # alliances whose (trust, openness) path is kept for the phase portrait


class AllianceModel(mesa.Model):
    """An ecosystem of organizations whose people's ties spiral in or out.

    scenario: a Scenario, a path to a TOML file, a dict (validated like a file) or None for the
    defaults. seed: overrides the scenario's seed; the model's numpy Generator (Mesa's rng) is
    the only source of randomness, so the same scenario and seed give identical results.
    """

    def __init__(self, scenario: Scenario | str | Path | dict | None = None,
                 seed: int | None = None):
        if scenario is None:
            scenario = from_dict({})
        elif isinstance(scenario, str | Path):
            scenario = load(scenario)
        elif isinstance(scenario, dict):
            scenario = from_dict(scenario)
        if seed is not None:
            scenario = scenario.with_overrides([("seed", int(seed))], "seed")
        self.scenario_spec = scenario
        super().__init__(rng=scenario.seed)
        self.p = scenario.params()
        self.state, self.graph = build(self.p, self.rng)
        self.organizations = Organization.create_agents(self, self.state.n_org,
                                                        list(range(self.state.n_org)))
        self.individuals = Individual.create_agents(self, self.state.n_ind,
                                                    list(range(self.state.n_ind)))
        self.organizations_list = self.organizations.to_list()
        self.individuals_list = self.individuals.to_list()
        self._schedule: dict[int, list[dict]] = defaultdict(list)
        for item in scenario.values["interventions"]:
            every = item.get("every", 0)
            last = item.get("until", scenario.steps)
            steps = range(item["step"], last + 1, every) if every else [item["step"]]
            for t in steps:
                self._schedule[t].append(item)
        # a light record of a few alliances' paths, for the phase portrait
        self._track = np.arange(min(TRACKED, self.state.n_al))
        self._traj = [(self.state.al_trust[self._track].copy(),
                       self.state.al_open[self._track].copy())]
        self.last_events = kernel.Events()
        self.last_metrics = metrics.step_metrics(self.state, self.p, self.last_events)
        self.datacollector = metrics.SeriesCollector(metrics.SERIES_KEYS)
        self.running = True

    def organization(self, i: int) -> Organization:
        return self.organizations_list[i]

    def individual(self, i: int) -> Individual:
        return self.individuals_list[i]

    # --- stepping -----------------------------------------------------------------------
    @property
    def t(self) -> int:
        return self.state.step

    def step(self) -> None:
        s = self.state
        for item in self._schedule.get(s.step + 1, ()):
            interventions.apply(s, self.p, self.rng, item["kind"], item["target"], item["dose"])
        ev = kernel.step(s, self.p, self.rng)
        if len(ev.ended):
            self.graph.remove_edges_from(s.al_org[ev.ended].tolist())
        if len(ev.formed):
            self.graph.add_edges_from(s.al_org[ev.formed].tolist())
        self.last_events = ev
        self.last_metrics = metrics.step_metrics(s, self.p, ev)
        self._traj.append((s.al_trust[self._track].copy(), s.al_open[self._track].copy()))
        self.datacollector.collect(self)
        if s.step >= self.scenario_spec.steps:
            self.running = False

    def run(self, steps: int | None = None, progress=None) -> None:
        """Run `steps` steps (default: the scenario's). progress: a callable(n) per step."""
        for _ in range(self.scenario_spec.steps if steps is None else steps):
            self.step()
            if progress is not None:
                progress(1)

    def intervene(self, kind: str, target="all", dose: float = 1.0, alliances=None) -> None:
        """Apply an intervention now (the UI's buttons): to organizations `target` ("all" or a
        list of ids) or, with `alliances`, to those alliances only."""
        if kind not in INTERVENTIONS:
            raise ScenarioError("intervention", "kind",
                                "expected one of " + ", ".join(INTERVENTIONS) + f", got {kind!r}")
        interventions.apply(self.state, self.p, self.rng, kind, target, float(dose), alliances)
        kernel.summarize_alliances(self.state)

    def schedule(self, kind: str, step: int, target="all", dose: float = 1.0) -> None:
        self._schedule[int(step)].append(
            {"step": int(step), "kind": kind, "target": target, "dose": float(dose)})

    # --- results ------------------------------------------------------------------------
    def timeseries(self):
        """A pandas DataFrame, one row per step (from Mesa's DataCollector)."""
        df = self.datacollector.get_model_vars_dataframe()
        df.insert(0, "step", np.arange(1, len(df) + 1, dtype=np.int64))
        return df.reset_index(drop=True)

    def trajectories(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """(trust, openness) paths of the first TRACKED alliances, from the start."""
        if not len(self._track):
            return {}
        tt = np.stack([t for t, _ in self._traj])
        oo = np.stack([o for _, o in self._traj])
        return {int(a): (tt[:, k], oo[:, k]) for k, a in enumerate(self._track)}

    def alliances(self) -> dict[str, np.ndarray]:
        """One row per alliance ever formed: ids, dates, final state, value by kind, regime."""
        s = self.state
        cols: dict[str, Any] = {
            "alliance": np.arange(s.n_al), "org_a": s.al_org[:, 0], "org_b": s.al_org[:, 1],
            "formed": s.al_formed, "ended": s.al_ended, "trust": s.al_trust,
            "openness": s.al_open, "tension": s.al_tension, "value_level": s.al_level,
        }
        for k, name in enumerate(VALUE_KINDS):
            cols[f"value_{name}"] = s.al_value[:, k]
        cols["value_created"] = s.al_value.sum(axis=1)
        cols["value_perceived"] = s.al_perceived
        cols["blames"] = s.al_blames
        cols["opportunities"] = s.al_opps
        cols["regime"] = np.array([REGIME_NAMES[int(r)] for r in s.al_regime], dtype=object)
        dur, censored = metrics.durations(s)
        cols["duration"] = dur
        cols["censored"] = censored
        names = np.array(["scarcity", "abundance"], dtype=object)
        cols["mindset_a"] = names[s.al_mindset[:, 0].astype(int)]
        cols["mindset_b"] = names[s.al_mindset[:, 1].astype(int)]
        return cols

    def summary(self) -> dict[str, Any]:
        s, sc = self.state, self.scenario_spec
        last = self.last_metrics
        formed = s.n_al
        ended = int((s.al_ended >= 0).sum())
        out = {
            "scenario": sc.path,
            "scenario_sha256": sc.file_sha256,
            "seed": sc.seed,
            "steps": s.step,
            "version": __version__,
            "name": sc.name,
            "resolved_sha256": sc.resolved_sha256(),
            "overrides": {k: v for k, v in sc.overrides},
            "extends": sc.extends,
        }
        for k in ("mean_trust", "mean_openness", "share_spiral_in", "share_spiral_out",
                  "share_undecided", "value_created", "value_perceived"):
            out[k] = last[k]
        out["alliances_formed"] = formed
        out["alliances_ended"] = ended
        out["failure_rate"] = ended / formed if formed else 0.0
        out.update(metrics.survival(s, self.p.outputs.failure_age))
        out["failure_age"] = self.p.outputs.failure_age
        out["mean_abundance"] = last["mean_abundance"]
        out["share_abundance_mindset"] = last["share_abundance_mindset"]
        out["trusting_component"] = last["trusting_component"]
        out["people_to_scarcity"] = int((s.ind_to_scarcity > 0).sum())
        out["people_to_abundance"] = int((s.ind_to_abundance > 0).sum())
        out["parameters"] = sc.values
        return out

    def network(self) -> nx.Graph:
        """The current ecosystem with trust, openness and regime on edges, mindset on nodes."""
        s = self.state
        g = nx.Graph()
        for o in self.organizations:
            g.add_node(o.row, mindset=o.mindset, culture=o.culture, horizon=o.horizon)
        act = np.flatnonzero(s.active)
        g.add_edges_from(
            (int(s.al_org[i, 0]), int(s.al_org[i, 1]),
             {"alliance": int(i), "trust": float(s.al_trust[i]),
              "openness": float(s.al_open[i]), "tension": float(s.al_tension[i]),
              "regime": REGIME_NAMES[int(s.al_regime[i])]})
            for i in act.tolist())
        return g
