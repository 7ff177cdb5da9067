"""Alliance survival from a sweep's per-alliance table (`outputs = "alliances"`), censoring-aware.

An alliance's duration is the steps from its formation to its end; one still active when the run
stops is right-censored at the last step (`censored = true`), never counted as ended or as
surviving forever. With lifelines:

- Kaplan-Meier survival curves S(t) per group (a swept parameter's levels, or quantile bins of a
  continuous one) with Greenwood 95% intervals, and the Nelson-Aalen cumulative hazard;
- median durations with 95% intervals (none when more than half survive to the end);
- S(t_ref) per group at a reference age t_ref (half the run length unless given);
- a Cox proportional-hazards model of the hazard on the swept parameters (standardised), with
  robust standard errors clustered by run (alliances of one run are not independent);
- a multivariate log-rank test across groups;
- per-run survival S(t_ref) (Kaplan-Meier within the run), for rank correlations with a
  parameter over runs.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

MAX_COX_ROWS = 200_000  # a Cox fit on more alliances uses a seeded subsample of this size


def _event(df: pd.DataFrame) -> np.ndarray:
    return ~df["censored"].to_numpy(bool)


def km(df: pd.DataFrame, label: str = "all"):
    from lifelines import KaplanMeierFitter

    k = KaplanMeierFitter(label=str(label))
    k.fit(df["duration"].to_numpy(float), _event(df))
    return k


def median_ci(kmf) -> tuple[float, float, float]:
    """Median duration with its 95% interval (inf: not reached within the runs)."""
    from lifelines.utils import median_survival_times

    med = float(kmf.median_survival_time_)
    ci = median_survival_times(kmf.confidence_interval_)
    lo, hi = (float(ci.iloc[0, 0]), float(ci.iloc[0, 1])) if ci.shape == (1, 2) else (
        math.nan, math.nan)
    return med, lo, hi


def survival_at(kmf, t: float) -> tuple[float, float, float]:
    s = float(kmf.survival_function_at_times(t).iloc[0])
    ci = kmf.confidence_interval_survival_function_
    idx = ci.index.searchsorted(t, side="right") - 1
    lo, hi = (float(ci.iloc[idx, 0]), float(ci.iloc[idx, 1])) if idx >= 0 else (1.0, 1.0)
    return s, lo, hi


def groups_of(df: pd.DataFrame, col: str, max_levels: int = 8) -> pd.Series:
    """A group label per row: the value itself for few levels, else quantile bins."""
    x = df[col]
    if x.nunique() <= max_levels:
        return x
    return pd.qcut(x, q=min(max_levels, 5), duplicates="drop").astype(str)


def by_group(df: pd.DataFrame, col: str, t_ref: float) -> dict:
    """Kaplan-Meier per level of `col`: medians, S(t_ref), counts, and a log-rank test."""
    from lifelines.statistics import multivariate_logrank_test

    g = groups_of(df, col)
    out = {"column": col, "t_ref": t_ref, "groups": []}
    fitters = []
    for level in sorted(g.unique(), key=lambda v: (isinstance(v, str), v)):
        sub = df[g == level]
        k = km(sub, label=f"{col} = {level}")
        med, lo, hi = median_ci(k)
        s, slo, shi = survival_at(k, t_ref)
        out["groups"].append({"level": level.item() if hasattr(level, "item") else level,
                              "alliances": int(len(sub)), "ended": int(_event(sub).sum()),
                              "censored": int((~_event(sub)).sum()),
                              "median": med, "median_low": lo, "median_high": hi,
                              "survival_t_ref": s, "survival_low": slo, "survival_high": shi})
        fitters.append(k)
    if len(out["groups"]) > 1:
        lr = multivariate_logrank_test(df["duration"].to_numpy(float), g.astype(str).to_numpy(),
                                       _event(df))
        out["logrank"] = {"statistic": float(lr.test_statistic), "p": float(lr.p_value),
                          "df": int(lr.degrees_of_freedom)}
    return out, fitters


def cox(df: pd.DataFrame, covariates: list[str], seed: int = 0) -> dict | None:
    """Cox PH on standardised covariates (hazard ratio per standard deviation), robust SEs
    clustered by run. None when the fit is impossible (no events, constant covariates)."""
    from lifelines import CoxPHFitter

    covs = [c for c in covariates if c in df.columns and df[c].nunique() > 1]
    if not covs or _event(df).sum() < 5:
        return None
    d = df[["duration", "censored", "run", *covs]].copy()
    if len(d) > MAX_COX_ROWS:
        d = d.sample(MAX_COX_ROWS, random_state=seed)
    d["event"] = ~d.pop("censored").astype(bool)
    scale = {}
    for c in covs:
        mu, sd = float(d[c].mean()), float(d[c].std(ddof=0))
        scale[c] = (mu, sd)
        d[c] = (d[c].astype(float) - mu) / sd
    cph = CoxPHFitter(penalizer=1e-4)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cph.fit(d, duration_col="duration", event_col="event", cluster_col="run")
    except Exception as e:  # noqa: BLE001 - lifelines raises several types on a degenerate fit
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    s = cph.summary
    res = {"n": int(len(d)), "events": int(d["event"].sum()),
           "concordance": float(cph.concordance_index_), "covariates": {}}
    for c in covs:
        r = s.loc[c]
        res["covariates"][c] = {
            "hazard_ratio_per_sd": float(r["exp(coef)"]),
            "low": float(r["exp(coef) lower 95%"]), "high": float(r["exp(coef) upper 95%"]),
            "p": float(r["p"]), "sd": scale[c][1]}
    return res


def per_run_survival(df: pd.DataFrame, t_ref: float) -> pd.Series:
    """Kaplan-Meier S(t_ref) within each run."""
    out = {}
    for run, sub in df.groupby("run"):
        out[run] = float(km(sub).survival_function_at_times(t_ref).iloc[0])
    return pd.Series(out, name="survival_t_ref")


def plot_km(ax, fitters, title: str | None = None, colors=None):
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    n = max(len(fitters), 2)
    for i, k in enumerate(fitters):
        k.plot_survival_function(ax=ax, ci_show=True, color=colors[i] if colors else
                                 cmap(i / (n - 1)), lw=1.6)
    ax.set(xlabel="alliance age (steps)", ylabel="survival S(t) (Kaplan-Meier)", ylim=(0, 1.02))
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)


def plot_hazard(ax, df: pd.DataFrame, g: pd.Series):
    import matplotlib.pyplot as plt
    from lifelines import NelsonAalenFitter

    cmap = plt.get_cmap("viridis")
    levels = sorted(g.unique(), key=lambda v: (isinstance(v, str), v))
    for i, level in enumerate(levels):
        sub = df[g == level]
        na = NelsonAalenFitter(label=str(level))
        na.fit(sub["duration"].to_numpy(float), _event(sub))
        na.plot_cumulative_hazard(ax=ax, ci_show=False, color=cmap(i / max(len(levels) - 1, 1)))
    ax.set(xlabel="alliance age (steps)", ylabel="cumulative hazard (Nelson-Aalen)")
    ax.legend(fontsize=8)
