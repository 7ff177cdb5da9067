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

from . import __version__, interventions, kernel, metrics, provenance
from .agents import Individual, Organization
from .scenario import INTERVENTIONS, Scenario, ScenarioError, from_dict, known_keys, load
from .state import REGIME_NAMES, VALUE_KINDS, build

TRACKED = 60  # alliances whose (trust, openness) path is kept for the phase portrait
_UNSET = object()  # "not given": the scenario's own seed; an explicit None: fresh entropy


def _fresh_seed() -> int:
    """A seed from OS entropy (Mesa's rng=None), recorded so the run can be repeated."""
    return int(np.random.SeedSequence().generate_state(1)[0])


def _flat_key(name: str) -> str:
    """`mindset.abundance_share` as given, or `mindset__abundance_share` (a Python name)."""
    return name if name in known_keys() else name.replace("__", ".")


def _no_step() -> None:
    """Mesa's step while the clock catches up with a compiled batch (the work is done)."""


class AllianceModel(mesa.Model):
    """An ecosystem of organizations whose people's ties spiral in or out.

    scenario: a Scenario, a path to a TOML file, a dict (validated like a file) or None for the
    defaults; a Mesa `mesa.experimental.scenarios.Scenario` (what Mesa's SolaraViz passes on
    Reset) is accepted too and only its rng is used. Any scenario key can also be given as a
    keyword by its dotted name, `AllianceModel(**{"mindset.abundance_share": 0.3})`, or with
    `__` for the dot (`mindset__abundance_share=0.3`), so `mesa.batch_run` can sweep them.
    seed / rng (Mesa's semantics): an integer overrides the scenario's seed; an explicit None
    draws a fresh seed from OS entropy (recorded in summary()["seed"]), so
    `batch_run(..., iterations=4)` gives 4 different replicates; not given: the scenario's own
    seed. The model's numpy Generator (Mesa's rng) is the only source of randomness, so the
    same scenario and seed give identical results.
    """

    def __init__(self, scenario: Scenario | str | Path | dict | None = None,
                 seed: int | None = _UNSET, *, rng=_UNSET, **params):
        mesa_scenario = None
        if scenario is not None and not isinstance(scenario, Scenario | str | Path | dict):
            from mesa.experimental.scenarios import Scenario as MesaScenario

            if not isinstance(scenario, MesaScenario):
                raise ScenarioError("AllianceModel", "scenario", "expected a Scenario, a TOML "
                                    f"path, a dict or None, got {type(scenario).__name__}")
            mesa_scenario = scenario
            if rng is _UNSET and seed is _UNSET:
                rng = getattr(scenario, "rng", None)
            scenario = None
        if scenario is None:
            scenario = from_dict({})
        elif isinstance(scenario, str | Path):
            scenario = load(scenario)
        elif isinstance(scenario, dict):
            scenario = from_dict(scenario)
        if seed is not _UNSET and rng is not _UNSET and seed is not None and rng is not None:
            raise ScenarioError("AllianceModel", "seed", "expected seed or rng, not both")
        given = seed if seed is not _UNSET and seed is not None else rng
        if given is _UNSET and seed is not _UNSET:
            given = seed  # seed=None given explicitly
        overrides = [(_flat_key(k), v.item() if isinstance(v, np.generic) else v)
                     for k, v in params.items()]
        if given is not _UNSET:
            if given is None:
                given = _fresh_seed()
            elif isinstance(given, np.random.Generator):
                given = int(given.integers(2**32))
            elif isinstance(given, bool) or not isinstance(given, int | np.integer):
                raise ScenarioError("AllianceModel", "seed",
                                    f"expected an integer or None, got {given!r}")
            overrides.append(("seed", int(given)))
        if overrides:
            scenario = scenario.with_overrides(overrides, "AllianceModel")
        self.scenario_spec = scenario
        super().__init__(rng=scenario.seed, **({"scenario": mesa_scenario.__class__(
            rng=scenario.seed)} if mesa_scenario is not None else {}))
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

    @property
    def space(self):
        """The ecosystem as a Mesa discrete-space Network (built on first use): one cell per
        organization, each organization in its cell, so Mesa's SolaraViz space component can
        draw the model. Its graph is the live ecosystem graph."""
        if getattr(self, "_space", None) is None:
            from mesa.discrete_space import Network

            self._space = Network(self.graph, random=self.random, layout=None)
            for org in self.organizations_list:
                cell = self._space._cells[org.row]
                org.cell = cell
                cell.add_agent(org)
        return self._space

    def _sync_space(self, ev) -> None:
        """Keep the Mesa Network's cell connections equal to the live ecosystem graph."""
        cells = self._space._cells
        for a, b in self.state.al_org[ev.ended].tolist():
            if not self.graph.has_edge(a, b) and b in cells[a].connections:
                cells[a].disconnect(cells[b])
                cells[b].disconnect(cells[a])
        for a, b in self.state.al_org[ev.formed].tolist():
            if b not in cells[a].connections:
                cells[a].connect(cells[b], b)
                cells[b].connect(cells[a], a)

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
            interventions.apply(s, self.p, self.rng, item["kind"], item["target"], item["dose"],
                                item.get("alliances"))
        ev = kernel.step(s, self.p, self.rng)
        if len(ev.ended):
            self.graph.remove_edges_from(s.al_org[ev.ended].tolist())
        if len(ev.formed):
            self.graph.add_edges_from(s.al_org[ev.formed].tolist())
        if getattr(self, "_space", None) is not None:
            self._sync_space(ev)
        self.last_events = ev
        self.last_metrics = metrics.step_metrics(s, self.p, ev)
        self._traj.append((s.al_trust[self._track].copy(), s.al_open[self._track].copy()))
        self.datacollector.collect(self)
        if s.step >= self.scenario_spec.steps:
            self.running = False

    def run(self, steps: int | None = None, progress=None) -> None:
        """Run `steps` steps (default: the scenario's). progress: a callable(n), called with
        the number of steps just done.

        The same run as calling step() that many times. On the compiled path the steps
        between scheduled interventions go through one compiled loop (kernel_batch), which
        writes the same series, trajectories and graph; the last step and every step with
        an intervention go through step()."""
        n = self.scenario_spec.steps if steps is None else steps
        while n > 0:
            k = self._batchable(n - 1)
            if k > 0:
                self._run_batch(k)
            else:
                k = 1
                self.step()
            n -= k
            if progress is not None:
                progress(k)

    # steps per compiled batch: long enough that the per-batch costs vanish, short enough
    # that a progress bar moves and a signal (Ctrl-C, SIGTERM: handled between batches) is
    # seen within a fraction of a second: at most BATCH_TIES tie-updates per batch
    BATCH = 1000
    BATCH_TIES = 2_000_000

    def _batchable(self, n: int) -> int:
        """How many of the next n steps can run as one compiled batch (0: none)."""
        if (n <= 0 or kernel.NAME != "numba" or getattr(self, "_space", None) is not None
                or type(self).step is not AllianceModel.step):
            return 0
        from . import kernel_batch

        if (not kernel_batch.usable(self.state, metrics.SERIES_KEYS)
                or not self._only_the_step_is_scheduled()):
            return 0
        t = self.state.step
        most = min(n, self.BATCH, self.BATCH_TIES // max(self.state.T.size, 1))
        k = 0
        while k < most and not self._schedule.get(t + k + 1):
            k += 1
        return k if k >= 2 else 0

    def _run_batch(self, k: int) -> None:
        """k steps in one compiled loop, then the model's records as step() would leave them
        (series rows, trajectories, ecosystem graph, Mesa's clock and step count)."""
        from . import kernel_batch

        s = self.state
        t0, n_al0 = s.step, s.n_al
        raw, tt, oo = kernel_batch.run_steps(s, self.p, self.rng, k, len(self._track))
        rows = kernel_batch.metrics_rows(raw, s.n_org, s.n_ind)
        self.datacollector.collect_rows(rows, [float(self.time + j + 1) for j in range(k)])
        self._traj.extend(zip(tt, oo, strict=True))
        self._replay_graph(t0, n_al0)
        last = {key: col[-1] for key, col in rows.items()}
        last["step"] = s.step
        self.last_metrics = last
        self.last_events = kernel.Events(value_flow=last["value_flow"])
        self._advance_clock(k)
        if s.step >= self.scenario_spec.steps:
            self.running = False

    def _only_the_step_is_scheduled(self) -> bool:
        """Mesa has no event pending but the next step (another event must fire between the
        steps at its time, so such runs go one step at a time)."""
        gen = getattr(self, "_default_schedule", None)
        ev = getattr(gen, "_current_event", None)
        events = getattr(getattr(self, "_event_list", None), "_events", None)
        return (ev is not None and events is not None and len(events) == 1
                and events[0] is ev and ev.time == self.time + 1
                and gen.schedule.end is None and gen.schedule.count is None)

    def _advance_clock(self, k: int) -> None:
        """Mesa's clock and step count as k step() calls leave them: the step's next occurrence
        moves k steps on at once (a batch runs only when the step is Mesa's only event);
        should Mesa's internals differ, its event loop runs k times with nothing to do."""
        if self._only_the_step_is_scheduled():
            gen = self._default_schedule
            self._event_list.remove(gen._current_event)
            self.steps += k
            self.time = self.time + k
            gen._execution_count += k
            gen._schedule_next(self.time + 1)
            return
        user, self._user_step = self._user_step, _no_step
        try:
            self.run_for(k)
        finally:
            self._user_step = user

    def _replay_graph(self, t0: int, n_al0: int) -> None:
        """The ecosystem graph's changes of steps t0+1.., in order: each step's endings, then
        its formations (as step() applies them)."""
        s = self.state
        ended = np.flatnonzero(s.al_ended > t0)
        new = np.arange(n_al0, s.n_al)
        if not len(ended) and not len(new):
            return
        ev = sorted([(int(s.al_ended[i]), 0, int(i)) for i in ended]
                    + [(int(s.al_formed[i]), 1, int(i)) for i in new])
        for _, kind, i in ev:
            a, b = int(s.al_org[i, 0]), int(s.al_org[i, 1])
            if kind == 0:
                if self.graph.has_edge(a, b):
                    self.graph.remove_edge(a, b)
            else:
                self.graph.add_edge(a, b)

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
        out["provenance"] = provenance.run_provenance(sc)
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
