"""Alliance summaries, the regime rule, and ecosystem metrics.

Regime rule (docs/model.md, "Regimes"): an alliance's score is (mean trust + mean openness)/2
over its ties; its trend is the score now minus the score `regimes.window` steps ago (or at its
formation if younger). Ended: spiral-out. Score >= in_level and trend >= -trend: spiral-in.
Score <= out_level and trend <= +trend: spiral-out. Anything else: undecided.
"""

from __future__ import annotations

import mesa
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from . import kernel
from .kernel import divergence
from .state import IN, OUT, UNDECIDED, State

__all__ = ["IN", "OUT", "UNDECIDED", "step_metrics"]

SERIES_KEYS = (
    "mean_trust", "mean_openness", "mean_trust_active", "share_spiral_in", "share_spiral_out",
    "share_undecided",
    "value_created", "value_perceived", "value_flow", "alliances_active", "alliances_formed",
    "alliances_ended", "mean_abundance", "share_abundance_mindset", "mean_tension",
    "mean_divergence", "blames", "opportunities", "trusting_component", "to_scarcity",
    "to_abundance", "mean_dissatisfaction",
)


def largest_component(n: int, e: np.ndarray) -> int:
    """Size of the largest connected component of n nodes joined by edges e (k, 2).

    Small graphs: min-label propagation with pointer jumping (a few vectorized passes, no
    sparse-matrix set-up, which dominated small runs); large ones: scipy's csgraph."""
    if len(e) > 20_000:
        g = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
        _, labels = connected_components(g, directed=False)
        return int(np.bincount(labels).max())
    lab = np.arange(n)
    u, v = e[:, 0], e[:, 1]
    while True:
        m = np.minimum(lab[u], lab[v])
        new = lab.copy()
        np.minimum.at(new, u, m)
        np.minimum.at(new, v, m)
        new = new[new]  # jump to the label's label: halves the chains each pass
        if np.array_equal(new, lab):
            break
        lab = new
    return int(np.bincount(lab).max())


def trusting_component(s: State, level: float) -> float:
    """Share of organizations in the largest component joined by trusting active alliances."""
    sel = s.active & (s.al_trust > level)
    n = s.n_org
    if not sel.any():
        return 1.0 / n
    return largest_component(n, s.al_org[sel]) / n


def state_metrics(s: State, p) -> dict[str, float]:
    """The metrics read off the state (numpy; kernel.series computes the same in one compiled
    pass when the compiled kernel is in use)."""
    n = s.n_al
    if n:
        share_in = float(np.mean(s.al_regime == IN))
        share_out = float(np.mean(s.al_regime == OUT))
        share_und = float(np.mean(s.al_regime == UNDECIDED))
    else:
        share_in, share_out, share_und = 0.0, 0.0, 1.0
    d = float(divergence(s).mean()) if len(s.d_al) else 0.0
    ended = int((s.al_ended >= 0).sum())
    return {
        "mean_trust": float(s.al_trust.mean()) if n else 0.0,
        "mean_openness": float(s.al_open.mean()) if n else 0.0,
        "mean_trust_active": float(s.al_trust[s.active].mean()) if n > ended else 0.0,
        "share_spiral_in": share_in,
        "share_spiral_out": share_out,
        "share_undecided": share_und,
        "value_created": float(s.al_value.sum()),
        "value_perceived": float(s.al_perceived.sum()),
        "alliances_active": n - ended,
        "alliances_formed": n,
        "alliances_ended": ended,
        "mean_abundance": float(s.a.mean()),
        "share_abundance_mindset": float(s.m.mean()),
        "mean_tension": float(s.D.mean()) if len(s.D) else 0.0,
        "mean_divergence": float(d),
        "trusting_component": trusting_component(s, p.mindset.trusted_level),
        "mean_dissatisfaction": float(s.al_unsat[s.active].mean()) if n > ended else 0.0,
    }


def step_metrics(s: State, p, ev) -> dict[str, float]:
    """The ecosystem's row for this step. Shares and means are over every alliance formed so
    far; an ended alliance counts as spiral-out with the trust and openness it ended with."""
    st = kernel.series(s, p)
    if st is None:
        st = state_metrics(s, p)
    return {
        "step": s.step,
        "mean_trust": st["mean_trust"],
        "mean_openness": st["mean_openness"],
        "mean_trust_active": st["mean_trust_active"],
        "share_spiral_in": st["share_spiral_in"],
        "share_spiral_out": st["share_spiral_out"],
        "share_undecided": st["share_undecided"],
        "value_created": st["value_created"],
        "value_perceived": st["value_perceived"],
        "value_flow": float(ev.value_flow),
        "alliances_active": st["alliances_active"],
        "alliances_formed": st["alliances_formed"],
        "alliances_ended": st["alliances_ended"],
        "mean_abundance": st["mean_abundance"],
        "share_abundance_mindset": st["share_abundance_mindset"],
        "mean_tension": st["mean_tension"],
        "mean_divergence": st["mean_divergence"],
        "blames": int(len(ev.blamed)),
        "opportunities": int(len(ev.opportunities)),
        "trusting_component": st["trusting_component"],
        "to_scarcity": int(len(ev.to_scarcity)),
        "to_abundance": int(len(ev.to_abundance)),
        "mean_dissatisfaction": st["mean_dissatisfaction"],
    }


class SeriesCollector(mesa.DataCollector):
    """Mesa's DataCollector of the per-step series (model_vars, get_model_vars_dataframe), each
    step appending the model's `last_metrics` row: one dict read per key, instead of a lambda
    call and a deepcopy per key (which dominated small runs). The values are numbers."""

    def __init__(self, keys=SERIES_KEYS):
        super().__init__(model_reporters={k: (lambda m, k=k: m.last_metrics[k]) for k in keys})
        self._series = [(k, self.model_vars[k]) for k in keys]

    def collect(self, model):
        if hasattr(self, "_collection_steps"):
            self._collection_steps.append(model.time)
        row = model.last_metrics
        for k, col in self._series:
            col.append(row[k])

    def collect_rows(self, rows: dict[str, list], times: list[float]) -> None:
        """Append several steps' rows at once (a compiled batch): rows[key] is one list per
        series key, times the model time of each."""
        if hasattr(self, "_collection_steps"):
            self._collection_steps.extend(times)
        for k, col in self._series:
            col.extend(rows[k])


def durations(s: State) -> tuple[np.ndarray, np.ndarray]:
    """Every alliance's age at ending, or its age now if still active (censored)."""
    ended = s.al_ended >= 0
    return np.where(ended, s.al_ended, s.step) - s.al_formed, ~ended


def kaplan_meier(dur: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Kaplan-Meier product-limit estimate: the distinct durations t_i and S(t_i) =
    prod_{t_j <= t_i} (1 - d_j / n_j), d_j endings at t_j, n_j alliances still at risk (duration
    >= t_j). The numbers of lifelines' KaplanMeierFitter (tests/test_metrics.py), without its
    per-fit set-up (20 ms, more than a whole baseline run)."""
    dur = np.asarray(dur, float)
    observed = np.asarray(observed, bool)
    times, inverse = np.unique(dur, return_inverse=True)
    d = np.bincount(inverse, observed, len(times))
    leaving = np.bincount(inverse, None, len(times))
    at_risk = len(dur) - np.concatenate([[0.0], np.cumsum(leaving)[:-1]])
    with np.errstate(divide="ignore"):  # log(0) when all at risk end: S = exp(-inf) = 0
        log_s = np.cumsum(np.log(at_risk - d) - np.log(at_risk))  # lifelines' arithmetic
    return times, np.exp(log_s)


def survival(s: State, failure_age: int) -> dict[str, float | None]:
    """Kaplan-Meier estimates over all alliances formed, censored at the run's end.

    failure_rate_km: the estimated share of alliances ended by age `failure_age`; None when no
    alliance was observed that long (the curve says nothing there). median_duration: the first
    age at which the estimated survival is at most one half; None when it stays above.
    """
    dur, censored = durations(s)
    if not len(dur):
        return {"failure_rate_km": None, "median_duration": None}
    times, surv = kaplan_meier(dur, ~censored)
    fail = None
    if dur.max() >= failure_age:
        k = np.searchsorted(times, failure_age, side="right")  # S at the last time <= age
        fail = float(1.0 - (surv[k - 1] if k else 1.0))
    below = np.flatnonzero(surv <= 0.5)
    return {"failure_rate_km": fail,
            "median_duration": float(times[below[0]]) if len(below) else None}


def hazard_by_age(dur: np.ndarray, ended: np.ndarray, bandwidth: float = 10.0,
                  min_at_risk: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """The hazard of ending by alliance age: lifelines' Nelson-Aalen estimate, kernel-smoothed
    with `bandwidth` steps, at every whole age where at least `min_at_risk` alliances were
    still at risk (beyond that the estimate is noise). Returns (ages, hazard per step)."""
    from lifelines import NelsonAalenFitter

    dur = np.asarray(dur, float)
    ended = np.asarray(ended, bool)
    if not ended.any():
        return np.zeros(0), np.zeros(0)
    naf = NelsonAalenFitter().fit(dur, event_observed=ended)
    h = naf.smoothed_hazard_(bandwidth)
    at_risk = np.array([(dur >= a).sum() for a in range(int(dur.max()) + 1)])
    ages = np.flatnonzero(at_risk >= min_at_risk).astype(float)
    return ages, np.interp(ages, h.index.to_numpy(float), h.iloc[:, 0].to_numpy(float))
