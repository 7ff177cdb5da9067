"""`spiral analyse DIR`: estimate the laws from whatever a sweep holds, with intervals.

- L3 tipping: a logistic fitted to outcome against mindset.abundance_share; the tipping share is
  where it crosses 0.5 (halfway between out and in), with a bootstrap interval (runs resampled
  within each design point).
- L4 hysteresis: when the sweep varies the start (initial.trust, with openness), the tipping share
  from the healthy start (collapse share) and from the collapsed start (recovery share); the gap
  is the hysteresis, with a bootstrap interval.
- L5 survival against patience.horizon from the per-alliance table (outputs = "alliances"):
  Kaplan-Meier curves by horizon, medians, a Cox model, Spearman's rho over runs of each run's
  Kaplan-Meier S(t_ref) (analysis/survival.py); never from ended / formed.
- L6 dose threshold: P(spiral in) against an intervention's dose; the dose at P = 0.5.
- L8 value created against trust across runs, and perceived against created.
- Sobol first-order and total indices with confidence intervals for sobol designs (SALib).
Writes PNG figures, report.md and analysis.json into the report folder.

Before anything is estimated the sweep is checked: every run present, once, ok, and from one
code/library version (provenance_id). Otherwise analysis is refused with one line, unless
--allow-incomplete, in which case report.md, analysis.json, every figure and the printed report
say so first. Every estimate carries its Monte-Carlo error (bootstrap standard error) and, with
--target-width, whether its interval is narrow enough.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from sim.scenario import ScenarioError

SHARE = "mindset.abundance_share"
HORIZON = "patience.horizon"
START = "initial.trust"


def logistic(x, lo, hi, x0, w):
    return lo + (hi - lo) * special.expit((np.asarray(x, float) - x0) / w)


LEVEL = 0.5  # the tipping share is where the fitted curve crosses this outcome level
BOUNDS = (0.0, 1.0)  # the fitted curve's lower and upper ends stay within the outcome's range
MIN_BOOTSTRAP = 50


def crossing(p, level: float = LEVEL) -> float | None:
    """x where logistic(x, *p) = level; None if the curve never reaches it."""
    lo, hi, x0, w = p
    if not lo < level < hi:
        return None
    return float(x0 - w * math.log((hi - lo) / (level - lo) - 1.0))


def _fit(x: np.ndarray, y: np.ndarray):
    """Least-squares logistic with both ends bounded to [0, 1] (the outcomes are shares or
    trust levels) and a positive width; None if the fit fails."""
    xs = np.unique(x)
    lo0 = float(np.clip(np.percentile(y, 5), 0.0, 0.98))
    hi0 = float(np.clip(np.percentile(y, 95), lo0 + 0.01, 1.0))
    mid = (lo0 + hi0) / 2
    means = np.array([y[x == v].mean() for v in xs])
    above = np.flatnonzero(means >= mid)
    x00 = xs[above[0]] if len(above) else xs.mean()
    span = max(np.ptp(xs), 1e-9)
    p0 = [lo0, hi0, x00, max(span / 10, 1e-3)]
    bounds = ([BOUNDS[0], BOUNDS[0], xs.min() - span, 1e-4],
              [BOUNDS[1], BOUNDS[1], xs.max() + span, span * 5 + 1e-3])
    p0 = np.clip(p0, np.array(bounds[0]) + 1e-9, np.array(bounds[1]) - 1e-9)
    try:
        p, _ = optimize.curve_fit(logistic, x, y, p0=p0, bounds=bounds, maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    return p


def fit_tipping(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray] | None:
    """Where a bounded logistic fitted to (x, y) crosses LEVEL (the outcome halfway between
    spiral out and spiral in); None when the data show no rise through it."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(np.unique(x)) < 3 or np.ptp(y) < 1e-9:
        return None
    p = _fit(x, y)
    if p is None or p[1] < p[0]:  # a falling fit: no tipping upward
        return None
    xc = crossing(p)
    if xc is None or not x.min() <= xc <= x.max():  # never an extrapolated tipping point
        return None
    return xc, p


def goodness(x, y, p) -> dict:
    """Goodness of fit of the logistic, against a straight line: R^2, RMSE, AIC of both
    (Gaussian least squares), and whether the data show a genuine S-curve (the logistic wins
    by AIC > 2 and its steepest slope exceeds the line's)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(y)
    rss = float(((y - logistic(x, *p)) ** 2).sum())
    tss = float(((y - y.mean()) ** 2).sum()) or 1e-300
    b, a = np.polyfit(x, y, 1)
    rss_lin = float(((y - (a + b * x)) ** 2).sum())

    def aic(r, k):
        return n * math.log(max(r, 1e-300) / n) + 2 * (k + 1)

    slope = (p[1] - p[0]) / (4 * p[3])
    d_aic = aic(rss_lin, 2) - aic(rss, 4)
    return {"r2": 1 - rss / tss, "rmse": math.sqrt(rss / n), "aic_logistic": aic(rss, 4),
            "aic_linear": aic(rss_lin, 2), "delta_aic": d_aic, "max_slope": float(slope),
            "linear_slope": float(b), "s_curve": bool(d_aic > 2 and slope > abs(b)),
            "steeper_than_identity": bool(d_aic > 2 and slope > abs(b) and slope > 1.0)}


def _resample(groups, rng):
    return np.concatenate([g[rng.integers(len(g), size=len(g))] for g in groups])


def _interval(est: list[float], B: int, target: float | None) -> dict:
    ok = len(est) >= max(10, B // 10)
    lo, hi = (np.percentile(est, [2.5, 97.5]) if ok else (math.nan, math.nan))
    out = {"low": float(lo), "high": float(hi),
           "mc_error": float(np.std(est, ddof=1)) if len(est) > 1 else math.nan,
           "bootstrap_ok": len(est), "bootstrap": B}
    if target is not None:
        out["target_width"] = target
        out["width_ok"] = bool(ok and hi - lo <= target)
    return out


def bootstrap_tipping(df: pd.DataFrame, xcol: str, ycol: str, B: int, rng,
                      target: float | None = None) -> dict | None:
    fit = fit_tipping(df[xcol].to_numpy(), df[ycol].to_numpy())
    if fit is None:
        return None
    x0, params = fit
    groups = [g[[xcol, ycol]].to_numpy() for _, g in df.groupby("point")]
    if max(len(g) for g in groups) == 1:  # one run per point (random, lhs, sobol): resample runs
        groups = [df[[xcol, ycol]].to_numpy()]
    est = []
    for _ in range(B):
        sample = _resample(groups, rng)
        f = fit_tipping(sample[:, 0], sample[:, 1])
        if f is not None:
            est.append(f[0])
    return {"tipping": x0, **_interval(est, B, target), "params": params.tolist(),
            "fit": goodness(df[xcol], df[ycol], params), "n_runs": len(df),
            "n_points": int(df["point"].nunique())}


def spearman_ci(x, y, B: int, rng, target: float | None = None) -> dict:
    x, y = np.asarray(x, float), np.asarray(y, float)
    rho = float(stats.spearmanr(x, y).statistic)
    n = len(x)
    bs = []
    for _ in range(B):
        i = rng.integers(n, size=n)
        r = stats.spearmanr(x[i], y[i]).statistic
        if np.isfinite(r):
            bs.append(r)
    return {"rho": rho, **_interval(bs, B, target), "n": n}


# --- completeness, duplicates, provenance -------------------------------------------------
def check_sweep(df: pd.DataFrame, meta: dict) -> dict:
    """What a referee asks first: are all runs there, once each, from one code version?"""
    n_points = meta.get("n_points")
    reps = meta.get("replicates")
    expected = meta.get("n_runs") or (n_points * reps if n_points and reps else None)
    dup = int(df["run"].duplicated().sum())
    uniq = df.drop_duplicates("run")
    failed = int((uniq["status"] != "ok").sum())
    problems = []
    if expected is None:
        problems.append("sweep.json does not say how many runs the sweep has")
        missing = None
    else:
        missing = expected - int(uniq["run"].between(0, expected - 1).sum())
        if missing:
            problems.append(f"{expected - missing} of {expected} runs present")
    if dup:
        problems.append(f"{dup} duplicated rows (runs written twice)")
    if failed:
        problems.append(f"{failed} runs failed")
    if "provenance_id" in uniq.columns:
        ids = sorted(set(uniq["provenance_id"].dropna()))
    else:
        ids = []
    if len(ids) > 1:
        problems.append(f"mixed provenance: {len(ids)} code/library versions "
                        f"({', '.join(ids[:3])})")
    elif not ids:
        problems.append("no provenance recorded in the runs (made by an older version)")
    if meta.get("forced"):
        problems.append("resumed with --force after a change: "
                        + "; ".join(meta["forced"][-1].get("changed", []))[:200])
    per_point = (uniq[uniq["status"] == "ok"].groupby("point").size()
                 if "point" in uniq.columns else pd.Series(dtype=int))
    return {"expected_runs": expected, "rows": int(len(df)), "unique_runs": int(len(uniq)),
            "duplicates": dup, "failed": failed, "missing": missing, "provenance_ids": ids,
            "runs_per_point": {"min": int(per_point.min()) if len(per_point) else 0,
                               "max": int(per_point.max()) if len(per_point) else 0,
                               "points": int(len(per_point)), "expected": reps,
                               "expected_points": n_points},
            "problems": problems}


class IncompleteSweep(ScenarioError):
    pass


def load_runs(folder: Path) -> tuple[pd.DataFrame, dict]:
    from analysis.sweep import read_runs

    folder = Path(folder)
    if not folder.is_dir():
        raise ScenarioError(str(folder), "", "expected a sweep results folder, got "
                            + ("a file" if folder.exists() else "nothing (no such folder)"))
    t = read_runs(folder)
    if t is None:
        raise ScenarioError(str(folder), "", "expected a sweep results folder with "
                            "runs/part-*.parquet (run `spiral sweep` first)")
    meta_path = folder / "sweep.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if not isinstance(meta, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise ScenarioError(str(meta_path), "", "unreadable sweep.json (empty or not JSON); "
                            "expected the file written by `spiral sweep`") from None
    return t.to_pandas(), meta


def load_checked(folder: Path, allow_incomplete: bool = False):
    """Runs, sweep.json, the completeness check and a warning line (None when clean).
    Refuses an incomplete, duplicated or mixed-provenance sweep unless allow_incomplete."""
    df, meta = load_runs(folder)
    chk = check_sweep(df, meta)
    warning = None
    if chk["problems"]:
        what = "; ".join(chk["problems"])
        if not allow_incomplete:
            raise IncompleteSweep(str(folder), "", f"refused: {what}; expected a complete sweep "
                                  "with one row per run from one code version (finish it with "
                                  "the same `spiral sweep`, or pass --allow-incomplete)")
        warning = (f"WARNING: analysed with --allow-incomplete: {what}. These estimates are "
                   "not those of the complete sweep.")
    return df.drop_duplicates("run", keep="first"), meta, chk, warning


def _fig(path: Path, fig, warning: str | None = None):
    from sim.outputs import write_figure

    if warning:
        fig.suptitle(warning if len(warning) < 110 else warning[:107] + "...", color="#b2182b",
                     fontsize=9)
    write_figure(path, fig)
    return path.name


def _fmt_ci(est: dict, digits: int = 3) -> str:
    if not np.isfinite(est["low"]):
        return "[interval not available]"
    txt = f"[{est['low']:.{digits}f}, {est['high']:.{digits}f}]"
    if "width_ok" in est:
        txt += " (target width met)" if est["width_ok"] else " (wider than the target)"
    return txt


def _p(p: float) -> str:
    return "< 1e-16" if p < 1e-16 else f"= {p:.2g}"


def _direction(low: float, high: float, up: str, down: str, none: str) -> str:
    if np.isfinite(low) and low > 0:
        return up
    if np.isfinite(high) and high < 0:
        return down
    return none


def analyse(folder: Path, report: Path, B: int = 1000, seed: int = 12345,
            allow_incomplete: bool = False, target_width: float | None = None,
            loaded=None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder, report = Path(folder), Path(report)
    df, meta, chk, warning = loaded or load_checked(folder, allow_incomplete)
    report.mkdir(parents=True, exist_ok=True)
    ok = df[df["status"] == "ok"].copy()
    rng = np.random.default_rng(seed)
    res: dict = {}
    if warning:
        res["warning"] = warning
    res.update({"sweep": meta.get("sweep"), "runs": len(df), "failed": chk["failed"],
                "check": chk,
                "method": {"bootstrap_resamples": B, "bootstrap_seed": seed,
                           "interval": "95% percentile bootstrap, runs resampled within each "
                                       "design point",
                           "fit": "least-squares logistic lo + (hi - lo) / (1 + exp(-(x - x0) "
                                  "/ w)) with lo, hi bounded to [0, 1], w > 0",
                           "level": LEVEL, "target_width": target_width}})
    sections: list[str] = []
    flags: list[str] = []
    varied = [c for c in meta.get("parameters", {}) for c in c.split("+")] or []

    def varies(col):
        return col in ok.columns and ok[col].nunique() > 1

    def fig(path, f):
        return _fig(path, f, warning)

    # L3 and L4 ---------------------------------------------------------------------------
    if varies(SHARE):
        branches = {"all runs": ok}
        if varies(START):
            lo_t, hi_t = ok[START].min(), ok[START].max()
            branches = {"healthy start": ok[ok[START] == hi_t],
                        "collapsed start": ok[ok[START] == lo_t]}
        outcomes = [c for c in ("mean_trust", "share_spiral_in", "share_abundance_mindset")
                    if c in ok.columns]
        f, axes = plt.subplots(1, len(outcomes), figsize=(5.5 * len(outcomes), 4.5),
                               constrained_layout=True, squeeze=False)
        l3 = {}
        for ax, ycol in zip(axes[0], outcomes):
            tips = []
            for (label, sub), color in zip(branches.items(), ("#2166ac", "#d6604d")):
                est = bootstrap_tipping(sub, SHARE, ycol, B, rng, target_width)
                l3.setdefault(label, {})[ycol] = est
                ax.scatter(sub[SHARE], sub[ycol], s=10, alpha=0.35, color=color)
                means = sub.groupby(SHARE)[ycol].mean()
                ax.plot(means.index, means.values, "o", color=color, ms=5, label=label)
                if est is not None:
                    xs = np.linspace(sub[SHARE].min(), sub[SHARE].max(), 200)
                    ax.plot(xs, logistic(xs, *est["params"]), color=color, lw=2)
                    ax.axvline(est["tipping"], color=color, ls="--", lw=1)
                    if np.isfinite(est["low"]):
                        ax.axvspan(est["low"], est["high"], color=color, alpha=0.12)
                    tips.append(f"{est['tipping']:.2f}")
            if ycol == "share_abundance_mindset":
                ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="identity")
            name_y = ycol.replace("_", " ")
            title = (f"{name_y} tips at share {' / '.join(tips)}" if tips else
                     f"{name_y}: no crossing of {LEVEL} within the shares tried")
            ax.set(xlabel="abundance share at the start", ylabel=name_y, ylim=(-0.02, 1.02),
                   title=title)
            ax.legend(fontsize=9)
        name = fig(report / "l3_tipping.png", f)
        res["L3"] = l3
        lines = ["## L3 tipping share", "",
                 "A logistic with both ends bounded to [0, 1] fitted to each outcome against "
                 "the starting abundance share; the tipping share is where the fit crosses "
                 f"{LEVEL} (halfway between spiral out and spiral in), with a 95% bootstrap "
                 f"interval ({B} resamples, seed {seed}; runs resampled within each design "
                 "point) and its Monte-Carlo error (bootstrap standard error). R² and ΔAIC "
                 "(line − logistic) give the goodness of fit; *S-curve* means the logistic "
                 "beats a straight line by ΔAIC > 2 and is steeper than it.", "",
                 "| start | outcome | tipping share | 95% interval | MC error | R² | ΔAIC | "
                 "S-curve | runs |", "|---|---|---|---|---|---|---|---|---|"]
        for label, d in l3.items():
            for ycol, est in d.items():
                if est is None:
                    lines.append(f"| {label} | {ycol} | no rise through {LEVEL} within the "
                                 "shares tried | | | | | | |")
                    continue
                g = est["fit"]
                s_curve = "yes" if g["s_curve"] else "**no**"
                if ycol == "share_abundance_mindset":
                    s_curve += " (steeper than identity)" if g["steeper_than_identity"] else \
                        " (**not** steeper than identity)"
                lines.append(f"| {label} | {ycol} | {est['tipping']:.3f} | {_fmt_ci(est)} | "
                             f"{est['mc_error']:.3f} | {g['r2']:.3f} | {g['delta_aic']:.1f} | "
                             f"{s_curve} | {est['n_runs']} |")
                if not g["s_curve"]:
                    flags.append(f"L3 {label} {ycol}: no genuine S-curve (a line fits about "
                                 "as well)")
        lines += ["", f"![tipping]({name})", ""]
        sections += lines
        if len(branches) == 2:
            h = l3["healthy start"].get("mean_trust")
            c = l3["collapsed start"].get("mean_trust")
            if h is not None and c is not None:
                sub_h, sub_c = branches["healthy start"], branches["collapsed start"]
                gaps = []
                groups_h = [g[[SHARE, "mean_trust"]].to_numpy() for _, g in
                            sub_h.groupby("point")]
                groups_c = [g[[SHARE, "mean_trust"]].to_numpy() for _, g in
                            sub_c.groupby("point")]
                for _ in range(B):
                    sh, sc = _resample(groups_h, rng), _resample(groups_c, rng)
                    fh, fc = fit_tipping(sh[:, 0], sh[:, 1]), fit_tipping(sc[:, 0], sc[:, 1])
                    if fh and fc:
                        gaps.append(fc[0] - fh[0])
                gap = c["tipping"] - h["tipping"]
                iv = _interval(gaps, B, target_width)
                res["L4"] = {"collapse_share": h["tipping"], "recovery_share": c["tipping"],
                             "gap": gap, **iv}
                verdict = _direction(iv["low"], iv["high"], "a hysteresis gap beyond noise",
                                     "recovery below collapse (no hysteresis)",
                                     "no gap distinguishable from noise")
                sections += ["## L4 hysteresis", "",
                             "Continuation by branches: the same abundance shares started "
                             "healthy (high trust and openness) and collapsed (low). A healthy "
                             "ecosystem collapses below the collapse share; a collapsed one "
                             "recovers only above the recovery share.", "",
                             f"- collapse share (healthy start): {h['tipping']:.3f} {_fmt_ci(h)}",
                             f"- recovery share (collapsed start): {c['tipping']:.3f} "
                             f"{_fmt_ci(c)}",
                             f"- hysteresis gap (recovery - collapse): {gap:.3f} "
                             f"{_fmt_ci(iv)} (95% bootstrap, MC error {iv['mc_error']:.3f}): "
                             f"{verdict}", ""]
    # L5 ----------------------------------------------------------------------------------
    if varies(HORIZON):
        sections += l5_section(folder, report, ok, meta, B, rng, target_width, res, fig, flags)
    if (folder / "alliances").is_dir():
        sections += pairs_section(folder, report, ok, res, fig)
    # L6 ----------------------------------------------------------------------------------
    dose_cols = [c for c in ok.columns if c.startswith("interventions.") and
                 c.endswith(".dose") and varies(c)]
    for col in dose_cols:
        y = (ok["share_spiral_in"] >= 0.5).astype(float)
        sub = ok.assign(spiral_in=y)
        est = bootstrap_tipping(sub, col, "spiral_in", B, rng, target_width)
        res.setdefault("L6", {})[col] = est
        f, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
        pm = sub.groupby(col)["spiral_in"].mean()
        ax.plot(pm.index, pm.values, "o", color="#762a83", label="share of runs spiraling in")
        if est is not None:
            xs = np.linspace(sub[col].min(), sub[col].max(), 200)
            ax.plot(xs, logistic(xs, *est["params"]), color="#762a83")
            ax.axvline(est["tipping"], ls="--", color="#762a83")
        title = (f"Half the runs turn around above dose {est['tipping']:.3f}" if est else
                 "No dose threshold within the doses tried")
        ax.set(xlabel=col, ylabel="P(spiral in at the end)", ylim=(-0.02, 1.02), title=title)
        name = fig(report / "l6_dose.png", f)
        txt = ("no threshold found" if est is None else
               f"{est['tipping']:.3f} {_fmt_ci(est)} (95% bootstrap, MC error "
               f"{est['mc_error']:.3f}; fit R² {est['fit']['r2']:.3f})")
        sections += ["## L6 intervention dose threshold", "",
                     f"Dose ({col}) at which half the runs end spiraling in: {txt}. Below it "
                     "the alliance relapses; above it, it turns around.", "",
                     f"![dose]({name})", ""]
    # L8 ----------------------------------------------------------------------------------
    if len(ok) >= 5:
        rho = spearman_ci(ok["mean_trust"], ok["value_created"], B, rng, target_width)
        less = float((ok["value_perceived"] <= ok["value_created"] + 1e-9).mean())
        res["L8"] = {"spearman_trust_value": rho, "share_perceived_le_created": less,
                     "perceived_over_created": float(ok["value_perceived"].sum() /
                                                     max(ok["value_created"].sum(), 1e-12))}
        f, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
        ax.scatter(ok["mean_trust"], ok["value_created"], s=10, alpha=0.5, color="#1b7837",
                   label="created")
        ax.scatter(ok["mean_trust"], ok["value_perceived"], s=10, alpha=0.5, color="#762a83",
                   label="perceived")
        title = _direction(rho["low"], rho["high"], "Value rises with trust",
                           "Value falls with trust", "No clear link between trust and value")
        ax.set(xlabel="mean trust", ylabel="value (cumulative)",
               title=f"{title} (Spearman {rho['rho']:.2f})")
        ax.legend()
        name = fig(report / "l8_value.png", f)
        sections += ["## L8 value and trust", "",
                     f"Spearman's rho between mean trust and value created: {rho['rho']:.3f} "
                     f"{_fmt_ci(rho)} (MC error {rho['mc_error']:.3f}). Value perceived / "
                     f"created over all runs: {res['L8']['perceived_over_created']:.3f} "
                     f"(revenue-only views see less); perceived <= created in {less:.0%} of "
                     "runs.", "", f"![value]({name})", ""]
    # Sobol ---------------------------------------------------------------------------------
    if meta.get("design") == "sobol":
        sections += sobol_section(df, meta, report, res, fig, flags)
    if not sections:
        sections = ["No law could be estimated from this sweep: vary "
                    f"{SHARE}, {HORIZON}, an intervention dose, or use a sobol design.", ""]
    rp = chk["runs_per_point"]
    per_point = (f"{rp['min']} runs per design point at each of {rp['points']} points"
                 if rp["min"] == rp["max"] else
                 f"{rp['min']} to {rp['max']} runs per design point over {rp['points']} points")
    prov = meta.get("provenance", {})
    head = []
    if warning:
        head += [f"**{warning}**", ""]
    if flags:
        head += ["**Warning: " + "; ".join(flags) + ".**", ""]
    head += [f"# Sweep report: {meta.get('name', folder.name)}", "",
             f"Sweep file `{meta.get('sweep')}` (sha256 {str(meta.get('sweep_sha256'))[:12]}…), "
             f"design {meta.get('design')}, {res['runs']} runs ({res['failed']} failed; "
             f"{per_point}, {rp['expected']} replicates asked), alliance-spiral "
             f"{prov.get('version', meta.get('version'))} (git "
             f"{str(prov.get('git_revision'))[:10]}{' dirty' if prov.get('git_dirty') else ''}"
             f", Python {prov.get('python')}, numpy "
             f"{(prov.get('dependencies') or {}).get('numpy')}). Parameters varied: "
             f"{', '.join(varied) or '-'}. Seeds: {meta.get('seed_scheme', 'by run index')}.",
             "", f"Method: {res['method']['interval']}; {B} resamples, bootstrap seed {seed}; "
             f"tipping fits: {res['method']['fit']}"
             + (f"; target interval width {target_width}" if target_width else "") + ".", ""]
    if flags:
        res = {"warning": res.get("warning"), "flags": flags, **res}
        if res["warning"] is None:
            del res["warning"]
    return {"results": res, "markdown": "\n".join(head + sections)}


def l5_section(folder, report, ok, meta, B, rng, target, res, fig, flags) -> list[str]:
    """L5 from the per-alliance table: Kaplan-Meier by horizon, Cox, medians; never from
    ended / formed."""
    import matplotlib.pyplot as plt

    from analysis import survival
    from analysis.sweep import read_table

    t = read_table(folder, "alliances")
    if t is None:
        res["L5"] = {"error": "no per-alliance data"}
        return ["## L5 survival against patience", "",
                "Not estimated: survival needs the per-alliance table. Rerun the sweep with "
                '`outputs = "alliances"` (Kaplan-Meier needs each alliance\'s duration and '
                "censoring; ended / formed per run is not a survival estimate).", ""]
    al = t.to_pandas()
    params = [c for c in meta.get("columns", {}) if c in ok.columns and ok[c].nunique() > 1]
    al = al.merge(ok[["run", *params]], on="run", how="inner")
    steps = int(ok["steps"].max())
    t_ref = max(1, steps // 2)
    grp, fitters = survival.by_group(al, HORIZON, t_ref)
    coxr = survival.cox(al, params)
    per_run = survival.per_run_survival(al, t_ref)
    runs = ok.set_index("run").loc[per_run.index]
    rho = spearman_ci(runs[HORIZON], per_run.values, B, rng, target)
    res["L5"] = {"t_ref": t_ref, "horizon": [g["level"] for g in grp["groups"]],
                 "survival": [g["survival_t_ref"] for g in grp["groups"]],
                 "survival_low": [g["survival_low"] for g in grp["groups"]],
                 "survival_high": [g["survival_high"] for g in grp["groups"]],
                 "median_duration": [g["median"] for g in grp["groups"]],
                 "groups": grp["groups"], "logrank": grp.get("logrank"), "cox": coxr,
                 "spearman": rho, "alliances": int(len(al)),
                 "censored_share": float(al["censored"].mean())}
    hr = (coxr or {}).get("covariates", {}).get(HORIZON) if coxr else None
    if hr is not None:
        verdict = ("Survival rises with patience" if hr["high"] < 1 else
                   "Survival falls with patience" if hr["low"] > 1 else
                   "No clear effect of patience on survival")
        verdict += (f" (Cox hazard ratio per SD of horizon {hr['hazard_ratio_per_sd']:.2f} "
                    f"[{hr['low']:.2f}, {hr['high']:.2f}])")
    else:
        verdict = _direction(rho["low"], rho["high"], "Survival rises with patience",
                             "Survival falls with patience",
                             "No clear effect of patience on survival")
    f, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    survival.plot_km(axes[0], fitters, title=verdict if len(verdict) < 70 else
                     verdict.split(" (")[0])
    axes[0].axvline(t_ref, color="grey", ls=":", lw=1)
    survival.plot_hazard(axes[1], al, survival.groups_of(al, HORIZON))
    axes[1].set_title("cumulative hazard by patience horizon")
    name = fig(report / "l5_patience.png", f)
    lines = ["## L5 survival against patience", "",
             f"{verdict}. Kaplan-Meier survival of {len(al):,} alliances "
             f"({res['L5']['censored_share']:.0%} still active at the end: right-censored), "
             "grouped by the patience horizon, with Greenwood 95% intervals; Nelson-Aalen "
             "cumulative hazard beside it.", ""]
    if grp.get("logrank"):
        lines += [f"Log-rank test across horizons: chi² {grp['logrank']['statistic']:.1f}, "
                  f"df {grp['logrank']['df']}, p {_p(grp['logrank']['p'])}.", ""]
    lines += [f"Spearman's rho between horizon and each run's Kaplan-Meier S({t_ref}): "
              f"{rho['rho']:.3f} {_fmt_ci(rho)} ({rho['n']} runs, MC error "
              f"{rho['mc_error']:.3f}).", ""]
    lines += [f"| horizon | alliances | ended | S({t_ref}) | 95% interval | median duration "
              "| 95% interval |", "|---|---|---|---|---|---|---|"]
    for g in grp["groups"]:
        med = ("not reached" if not np.isfinite(g["median"]) else f"{g['median']:.0f}")
        mci = (f"[{g['median_low']:.0f}, {g['median_high']:.0f}]"
               if np.isfinite(g["median_low"]) else "")
        if np.isfinite(g["median_low"]) and not np.isfinite(g["median_high"]):
            mci = f"[{g['median_low']:.0f}, not reached]"
        lines.append(f"| {g['level']} | {g['alliances']} | {g['ended']} | "
                     f"{g['survival_t_ref']:.3f} | [{g['survival_low']:.3f}, "
                     f"{g['survival_high']:.3f}] | {med} | {mci} |")
    if coxr and "covariates" in coxr:
        lines += ["", f"Cox proportional hazards on the swept parameters (standardised; robust "
                  f"errors clustered by run; {coxr['n']:,} alliances, {coxr['events']:,} "
                  f"endings, concordance {coxr['concordance']:.3f}):", "",
                  "| parameter | hazard ratio per SD | 95% interval | p |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['hazard_ratio_per_sd']:.3f} | [{v['low']:.3f}, {v['high']:.3f}] "
                  f"| {v['p']:.2g} |" for k, v in coxr["covariates"].items()]
    lines += ["", f"![patience]({name})", ""]
    return lines


def pairs_section(folder, report, ok, res, fig) -> list[str]:
    """Kaplan-Meier survival by the pair type of the two organizations' starting cultures."""
    import matplotlib.pyplot as plt

    from analysis import survival
    from analysis.sweep import read_table

    t = read_table(folder, "alliances")
    if t is None or "pair" not in t.column_names:
        return []
    al = t.to_pandas()
    al = al[al["run"].isin(ok["run"])]
    if al.empty:
        return []
    t_ref = max(1, int(ok["steps"].max()) // 2)
    grp, fitters = survival.by_group(al, "pair", t_ref)
    res["survival_by_pair"] = grp
    best = max(grp["groups"], key=lambda g: g["survival_t_ref"])
    worst = min(grp["groups"], key=lambda g: g["survival_t_ref"])
    title = (f"{best['level']} pairs last longest" if best is not worst else
             "survival by pair type")
    f, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    survival.plot_km(ax, fitters, title=title,
                     colors=["#1a9850", "#fdae61", "#d73027"][: len(fitters)])
    name = fig(report / "survival_pairs.png", f)
    lines = ["## Alliance survival by pair type", "",
             f"Kaplan-Meier survival of {len(al):,} alliances by the starting cultures of their "
             f"two organizations (censored at the end of the run); S({t_ref}) with Greenwood "
             "95% intervals.", "",
             f"| pair | alliances | ended | S({t_ref}) | 95% interval | median duration |",
             "|---|---|---|---|---|---|"]
    for g in grp["groups"]:
        med = "not reached" if not np.isfinite(g["median"]) else f"{g['median']:.0f}"
        lines.append(f"| {g['level']} | {g['alliances']} | {g['ended']} | "
                     f"{g['survival_t_ref']:.3f} | [{g['survival_low']:.3f}, "
                     f"{g['survival_high']:.3f}] | {med} |")
    if grp.get("logrank"):
        lines += ["", f"Log-rank test across pair types: p {_p(grp['logrank']['p'])}."]
    lines += ["", f"![pairs]({name})", ""]
    return lines


def sobol_section(df, meta, report, res, fig, flags) -> list[str]:
    """Sobol indices at N and at N/2 (the first half of Saltelli's blocks), flagged when
    intervals are wide, totals exceed 1 or the indices move between N/2 and N."""
    import matplotlib.pyplot as plt
    from SALib.analyze import sobol

    names = list(meta["parameters"])
    D = len(names)
    problem = {"num_vars": D, "names": names,
               "bounds": [[v["min"], v["max"]] for v in meta["parameters"].values()]}
    n_points = meta["n_points"]
    N = n_points // (D + 2)
    reps = meta.get("replicates", 1)
    ok = df[df["status"] == "ok"]
    sob, conv = {}, {}
    lines = ["## Sobol indices", "", "First-order (S1) and total (ST) indices with 95% "
             f"confidence intervals (SALib, Saltelli's scheme, N = {N} base samples; outcomes "
             f"averaged over the replicates of each point, {reps} asked). Convergence: the same "
             f"indices from the first N/2 = {N // 2} base samples.", ""]
    wide = []
    for ycol in ("mean_trust", "share_spiral_in", "failure_rate"):
        Yp = ok.groupby("point")[ycol].mean()
        if len(Yp) != n_points or not np.all(np.isfinite(Yp.to_numpy())):
            lines.append(f"{ycol}: incomplete or failed runs; rerun the sweep to finish.")
            continue
        Y = Yp.sort_index().to_numpy(float)
        if np.ptp(Y) < 1e-12:
            lines += [f"{ycol}: the same in every run ({Y[0]:g}); no indices.", ""]
            continue
        si = sobol.analyze(problem, Y, calc_second_order=False, conf_level=0.95, seed=1)
        half = None
        if N >= 4:
            half = sobol.analyze(problem, Y[: (N // 2) * (D + 2)], calc_second_order=False,
                                 conf_level=0.95, seed=1)
        sob[ycol] = {}
        for i, n in enumerate(names):
            d = {"S1": float(si["S1"][i]), "S1_conf": float(si["S1_conf"][i]),
                 "ST": float(si["ST"][i]), "ST_conf": float(si["ST_conf"][i])}
            if half is not None:
                d["ST_half"] = float(half["ST"][i])
                d["S1_half"] = float(half["S1"][i])
            sob[ycol][n] = d
        bad = [n for n, d in sob[ycol].items() if d["ST_conf"] > 0.1 or d["S1_conf"] > 0.1]
        over = [n for n, d in sob[ycol].items() if d["ST"] - d["ST_conf"] > 1 or d["ST"] > 1.05]
        moved = [n for n, d in sob[ycol].items() if "ST_half" in d and
                 abs(d["ST"] - d["ST_half"]) > max(d["ST_conf"], 0.05)]
        conv[ycol] = {"wide": bad, "total_above_1": over, "not_converged": moved}
        if bad or over or moved:
            wide.append(ycol)
        lines += [f"**{ycol}**", "", "| parameter | S1 | ST | ST at N/2 |", "|---|---|---|---|"]
        lines += [f"| {n} | {v['S1']:.3f} ± {v['S1_conf']:.3f} | {v['ST']:.3f} ± "
                  f"{v['ST_conf']:.3f} | {v.get('ST_half', math.nan):.3f} |"
                  for n, v in sob[ycol].items()]
        lines.append("")
    if wide:
        why = []
        for ycol in wide:
            c, d = conv[ycol], sob[ycol]
            parts = []
            if c["wide"]:
                worst = max(max(d[n]["S1_conf"], d[n]["ST_conf"]) for n in c["wide"])
                parts.append(f"intervals up to ±{worst:.2f} ({', '.join(c['wide'])})")
            if c["total_above_1"]:
                parts.append(f"total index above 1 ({', '.join(c['total_above_1'])})")
            if c["not_converged"]:
                parts.append(f"moves between N/2 and N ({', '.join(c['not_converged'])})")
            why.append(f"{ycol}: " + "; ".join(parts))
        flags.append("Sobol indices unreliable (" + " | ".join(why) + "): raise samples (the "
                     "intervals shrink as 1/sqrt(N)) and replicates")
    if sob:
        f, axes = plt.subplots(1, len(sob), figsize=(5 * len(sob), 4.5),
                               constrained_layout=True, squeeze=False)
        for ax, (ycol, d) in zip(axes[0], sob.items()):
            x = np.arange(len(names))
            ax.bar(x - 0.2, [d[n]["S1"] for n in names], 0.4,
                   yerr=[d[n]["S1_conf"] for n in names], label="S1", capsize=3)
            ax.bar(x + 0.2, [d[n]["ST"] for n in names], 0.4,
                   yerr=[d[n]["ST_conf"] for n in names], label="ST", capsize=3)
            ax.set_xticks(x, [n.replace(".", "\n") for n in names], fontsize=8)
            top = max(names, key=lambda n: d[n]["ST"])
            ax.set(title=f"{ycol}: {top} matters most" + (" (unreliable)" if ycol in wide
                                                            else ""))
            ax.legend()
        lines += [f"![sobol]({fig(report / 'sobol.png', f)})", ""]
    res["sobol"] = sob
    res["sobol_convergence"] = conv
    return lines


def finite(o):
    """JSON-safe: NaN and infinities (a median never reached, an interval not available)
    become null."""
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [finite(v) for v in o]
    if isinstance(o, float | np.floating):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def main_analyse(args) -> int:
    from sim.outputs import atomic_write, write_json

    folder = Path(args.dir)
    B = args.bootstrap
    if B < MIN_BOOTSTRAP:
        raise ScenarioError("--bootstrap", "", f"expected at least {MIN_BOOTSTRAP} resamples, "
                            f"got {B}")
    target = getattr(args, "target_width", None)
    if target is not None and not target > 0:
        raise ScenarioError("--target-width", "", f"expected a width > 0, got {target}")
    allow = getattr(args, "allow_incomplete", False)
    loaded = load_checked(folder, allow)  # before anything is written
    report = Path(args.out) if args.out else folder / "report"
    if report.exists() and not report.is_dir():
        raise ScenarioError(str(report), "--out", "expected a folder, got a file")
    out = analyse(folder, report, B, getattr(args, "seed", 12345), allow, target, loaded=loaded)
    atomic_write(report / "report.md", lambda tmp: tmp.write_text(out["markdown"]))
    write_json(report / "analysis.json", finite(out["results"]))
    print(out["markdown"])
    print(f"\nreport: {report / 'report.md'}  (figures and analysis.json beside it)")
    return 0
