"""EMA Workbench interop: `sim.ema.model()` returns a ready ema_workbench Model.

Uncertainties are scenario keys (EMA names must be Python identifiers, so the dot becomes `__`:
`mindset__abundance_share`); outcomes are the summary metrics a sweep keeps. Each experiment runs
AllianceModel with the base scenario, the sampled values and a seed: the scenario's own seed by
default (common random numbers across experiments), or `seed` as an uncertainty or lever.

    from ema_workbench import perform_experiments
    from sim import ema
    m = ema.model("scenarios/baseline.toml", {"mindset.abundance_share": (0.0, 1.0),
                                              "patience.horizon": (5, 200)}, steps=100)
    experiments, outcomes = perform_experiments(m, scenarios=50)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .scenario import SCHEMA, Scenario, ScenarioError, from_dict, known_keys, load

OUTCOMES = ("mean_trust", "mean_openness", "share_spiral_in", "share_spiral_out",
            "share_undecided", "value_created", "value_perceived", "alliances_formed",
            "alliances_ended", "failure_rate", "mean_abundance", "share_abundance_mindset",
            "trusting_component")


def ema_name(key: str) -> str:
    return key.replace(".", "__")


def _spec(key: str):
    parts = key.split(".")
    return SCHEMA[""].get(parts[0]) if len(parts) == 1 else SCHEMA.get(parts[0], {}).get(parts[1])


# Keys that vary independently (no combination of them is invalid), over ranges that keep the
# model meaningful: the default uncertainties. Pass your own dict for others (any scenario key).
DEFAULT_UNCERTAINTIES = {
    "mindset.abundance_share": (0.0, 1.0),
    "patience.horizon": (5, 200),
    "differences.rate": (0.05, 0.5),
    "talk.rate": (0.05, 0.3),
    "trust.w_tension": (0.0, 1.0),
    "initial.trust": (0.05, 0.95),
    "initial.openness": (0.05, 0.95),
}


def default_uncertainties() -> dict[str, tuple[float, float]]:
    return {k: v for k, v in DEFAULT_UNCERTAINTIES.items() if k in known_keys()}


class Runner:
    """The experiment function (picklable, for EMA's multiprocessing evaluator)."""

    def __init__(self, values: dict, path: str, steps: int | None, outcomes):
        self.values, self.path, self.steps, self.outcomes = values, path, steps, tuple(outcomes)

    def __call__(self, **kwargs) -> dict[str, Any]:
        from .model import AllianceModel

        seed = kwargs.pop("seed", None)
        params = {k.replace("__", "."): v for k, v in kwargs.items()}
        if self.steps is not None:
            params["steps"] = self.steps
        sc = Scenario(self.values, self.path)
        m = AllianceModel(sc, **({"seed": int(seed)} if seed is not None else {}), **params)
        m.run()
        s = m.summary()
        return {k: float(s[k]) for k in self.outcomes}


def model(scenario: str | Path | dict | Scenario | None = None,
          uncertainties: dict[str, tuple[float, float]] | None = None,
          outcomes=OUTCOMES, steps: int | None = None, name: str = "alliance_spiral"):
    """An ema_workbench Model over AllianceModel (see the module docstring)."""
    import warnings

    with warnings.catch_warnings():  # "ipyparallel not installed": not needed here
        warnings.simplefilter("ignore")
        from ema_workbench import IntegerParameter, Model, RealParameter, ScalarOutcome

    if scenario is None:
        base = from_dict({})
    elif isinstance(scenario, Scenario):
        base = scenario
    elif isinstance(scenario, dict):
        base = from_dict(scenario)
    else:
        base = load(scenario)
    unc = default_uncertainties() if uncertainties is None else dict(uncertainties)
    params = []
    for key, (lo, hi) in unc.items():
        s = _spec(key)
        if key != "seed" and s is None and not key.startswith("interventions."):
            raise ScenarioError("sim.ema.model", key, "unknown scenario key")
        if key == "seed" or (s is not None and s.kind == "int"):
            params.append(IntegerParameter(ema_name(key), int(lo), int(hi)))
        else:
            params.append(RealParameter(ema_name(key), float(lo), float(hi)))
    m = Model(name, function=Runner(base.values, base.path, steps, outcomes))
    m.uncertainties = params
    m.outcomes = [ScalarOutcome(k) for k in outcomes]
    return m
