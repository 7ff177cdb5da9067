"""`spiral analyse DIR`: estimate the laws from whatever a sweep holds, with intervals.

- L3 tipping: a logistic fitted to outcome against mindset.abundance_share; the tipping share is
  where it crosses 0.5 (halfway between out and in), with a bootstrap interval (runs resampled
  within each design point).
- L4 hysteresis: when the sweep varies the start (initial.trust, with openness), the tipping share
  from the healthy start (collapse share) and from the collapsed start (recovery share); the gap
  is the hysteresis, with a bootstrap interval.
- L5 survival (1 - failure_rate) against patience.horizon, with Spearman's rho.
- L6 dose threshold: P(spiral in) against an intervention's dose; the dose at P = 0.5.
- L8 value created against trust across runs, and perceived against created.
- Sobol first-order and total indices with confidence intervals for sobol designs (SALib).
Writes PNG figures, report.md and analysis.json into the report folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

from sim.scenario import ScenarioError

SHARE = "mindset.abundance_share"
HORIZON = "patience.horizon"
START = "initial.trust"


def logistic(x, lo, hi, x0, w):
    return lo + (hi - lo) / (1.0 + np.exp(-(x - x0) / w))


LEVEL = 0.5  # the tipping share is where the fitted curve crosses this outcome level


def crossing(p, level: float = LEVEL) -> float | None:
    """x where logistic(x, *p) = level; None if the curve never reaches it."""
    lo, hi, x0, w = p
    if not lo < level < hi:
        return None
    return float(x0 - w * math.log((hi - lo) / (level - lo) - 1.0))


def fit_tipping(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray] | None:
    """Where a logistic fitted to (x, y) crosses LEVEL (the outcome halfway between spiral out
    and spiral in); None when the data show no rise through it."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(np.unique(x)) < 3 or np.ptp(y) < 1e-9:
        return None
    lo0, hi0 = np.percentile(y, 5), np.percentile(y, 95)
    mid = (lo0 + hi0) / 2
    xs = np.unique(x)
    means = np.array([y[x == v].mean() for v in xs])
    above = np.flatnonzero(means >= mid)
    x00 = xs[above[0]] if len(above) else xs.mean()
    p0 = [lo0, hi0, x00, max(np.ptp(xs) / 10, 1e-3)]
    bounds = ([-1.0, -1.0, xs.min() - np.ptp(xs), 1e-4], [2.0, 2.0, xs.max() + np.ptp(xs),
                                                          np.ptp(xs) * 5 + 1e-3])
    try:
        p, _ = optimize.curve_fit(logistic, x, y, p0=p0, bounds=bounds, maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    if p[1] < p[0]:  # a falling fit: no tipping upward
        return None
    xc = crossing(p)
    if xc is None:
        return None
    return xc, p


def bootstrap_tipping(df: pd.DataFrame, xcol: str, ycol: str, B: int, rng) -> dict | None:
    fit = fit_tipping(df[xcol].to_numpy(), df[ycol].to_numpy())
    if fit is None:
        return None
    x0, params = fit
    groups = [g[[xcol, ycol]].to_numpy() for _, g in df.groupby("point")]
    if max(len(g) for g in groups) == 1:  # one run per point (random, lhs, sobol): resample runs
        groups = [df[[xcol, ycol]].to_numpy()]
    est = []
    for _ in range(B):
        sample = np.concatenate([g[rng.integers(len(g), size=len(g))] for g in groups])
        f = fit_tipping(sample[:, 0], sample[:, 1])
        if f is not None:
            est.append(f[0])
    lo, hi = (np.percentile(est, [2.5, 97.5]) if len(est) >= 10 else (math.nan, math.nan))
    return {"tipping": x0, "low": float(lo), "high": float(hi), "params": params.tolist(),
            "bootstrap_ok": len(est), "n_runs": len(df)}


def spearman_ci(x, y, B: int, rng) -> dict:
    x, y = np.asarray(x, float), np.asarray(y, float)
    rho = float(stats.spearmanr(x, y).statistic)
    n = len(x)
    bs = []
    for _ in range(B):
        i = rng.integers(n, size=n)
        r = stats.spearmanr(x[i], y[i]).statistic
        if np.isfinite(r):
            bs.append(r)
    lo, hi = np.percentile(bs, [2.5, 97.5]) if bs else (math.nan, math.nan)
    return {"rho": rho, "low": float(lo), "high": float(hi), "n": n}


def load_runs(folder: Path) -> tuple[pd.DataFrame, dict]:
    from analysis.sweep import read_runs

    t = read_runs(folder)
    if t is None:
        raise ScenarioError(str(folder), "", "expected a sweep results folder with "
                            "runs/part-*.parquet (run `spiral sweep` first)")
    meta_path = folder / "sweep.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return t.to_pandas(), meta


def _fig(path: Path, fig):
    from sim.outputs import write_figure

    write_figure(path, fig)
    return path.name


def analyse(folder: Path, report: Path, B: int = 1000) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df, meta = load_runs(folder)
    ok = df[df["status"] == "ok"].copy()
    rng = np.random.default_rng(12345)
    res: dict = {"sweep": meta.get("sweep"), "runs": len(df), "failed": int((df["status"] !=
                                                                               "ok").sum())}
    sections: list[str] = []
    varied = [c for c in meta.get("parameters", {}) for c in c.split("+")] or []

    def varies(col):
        return col in ok.columns and ok[col].nunique() > 1

    # L3 and L4 ---------------------------------------------------------------------------
    if varies(SHARE):
        branches = {"all runs": ok}
        if varies(START):
            lo_t, hi_t = ok[START].min(), ok[START].max()
            branches = {"healthy start": ok[ok[START] == hi_t],
                        "collapsed start": ok[ok[START] == lo_t]}
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
        l3 = {}
        for ax, ycol in zip(axes, ("mean_trust", "share_spiral_in")):
            for (label, sub), color in zip(branches.items(), ("#2166ac", "#d6604d")):
                est = bootstrap_tipping(sub, SHARE, ycol, B, rng)
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
            ax.set(xlabel="abundance share at the start", ylabel=ycol.replace("_", " "),
                   ylim=(-0.02, 1.02), title=f"{ycol.replace('_', ' ')} against abundance share")
            ax.legend(fontsize=9)
        name = _fig(report / "l3_tipping.png", fig)
        res["L3"] = l3
        lines = ["## L3 tipping share", "",
                 "A logistic fitted to each outcome against the starting abundance share; the "
                 "tipping share is where the fit crosses 0.5 (halfway between spiral out and "
                 "spiral in), with a 95% bootstrap interval (runs resampled within each design "
                 "point).", "", "| start | outcome | tipping share | 95% "
                 "interval | runs |", "|---|---|---|---|---|"]
        for label, d in l3.items():
            for ycol, est in d.items():
                if est is None:
                    lines.append(f"| {label} | {ycol} | no rise found | | |")
                else:
                    lines.append(f"| {label} | {ycol} | {est['tipping']:.3f} | "
                                 f"[{est['low']:.3f}, {est['high']:.3f}] | {est['n_runs']} |")
        lines += ["", f"![tipping]({name})", ""]
        sections += lines
        if len(branches) == 2:
            h = l3["healthy start"]["mean_trust"]
            c = l3["collapsed start"]["mean_trust"]
            if h is not None and c is not None:
                sub_h, sub_c = branches["healthy start"], branches["collapsed start"]
                gaps = []
                groups_h = [g[[SHARE, "mean_trust"]].to_numpy() for _, g in
                            sub_h.groupby("point")]
                groups_c = [g[[SHARE, "mean_trust"]].to_numpy() for _, g in
                            sub_c.groupby("point")]
                for _ in range(B):
                    sh = np.concatenate([g[rng.integers(len(g), size=len(g))] for g in groups_h])
                    sc = np.concatenate([g[rng.integers(len(g), size=len(g))] for g in groups_c])
                    fh, fc = fit_tipping(sh[:, 0], sh[:, 1]), fit_tipping(sc[:, 0], sc[:, 1])
                    if fh and fc:
                        gaps.append(fc[0] - fh[0])
                gap = c["tipping"] - h["tipping"]
                lo, hi = (np.percentile(gaps, [2.5, 97.5]) if len(gaps) >= 10
                          else (math.nan, math.nan))
                res["L4"] = {"collapse_share": h["tipping"], "recovery_share": c["tipping"],
                             "gap": gap, "low": float(lo), "high": float(hi)}
                sections += ["## L4 hysteresis", "",
                             "Continuation by branches: the same abundance shares started "
                             "healthy (high trust and openness) and collapsed (low). A healthy "
                             "ecosystem collapses below the collapse share; a collapsed one "
                             "recovers only above the recovery share.", "",
                             f"- collapse share (healthy start): {h['tipping']:.3f} "
                             f"[{h['low']:.3f}, {h['high']:.3f}]",
                             f"- recovery share (collapsed start): {c['tipping']:.3f} "
                             f"[{c['low']:.3f}, {c['high']:.3f}]",
                             f"- hysteresis gap (recovery - collapse): {gap:.3f} "
                             f"[{lo:.3f}, {hi:.3f}] (95% bootstrap)", ""]
    # L5 ----------------------------------------------------------------------------------
    if varies(HORIZON):
        ok["survival"] = 1.0 - ok["failure_rate"]
        g = ok.groupby(HORIZON)["survival"]
        m, s, n = g.mean(), g.std(ddof=1).fillna(0), g.count()
        half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * s / np.sqrt(n)
        rho = spearman_ci(ok[HORIZON], ok["survival"], B, rng)
        res["L5"] = {"horizon": m.index.tolist(), "survival": m.tolist(),
                     "half_width": half.tolist(), "spearman": rho}
        fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
        if len(m) <= 15:
            ax.errorbar(m.index, m.values, yerr=half.values, fmt="o-", capsize=3,
                        color="#1b7837")
        else:
            ax.scatter(ok[HORIZON], ok["survival"], s=10, alpha=0.5, color="#1b7837")
        ax.set(xlabel="patience horizon (steps)", ylabel="alliance survival (1 - failure rate)",
               title="Patience buys survival", ylim=(0, 1))
        name = _fig(report / "l5_patience.png", fig)
        sections += ["## L5 survival against patience", "",
                     f"Spearman's rho between horizon and survival: {rho['rho']:.3f} "
                     f"[{rho['low']:.3f}, {rho['high']:.3f}] (95% bootstrap, {rho['n']} runs).",
                     ""]
        if len(m) <= 15:  # a table per horizon only for a handful of levels
            sections += ["| horizon | survival | 95% t-interval |", "|---|---|---|"]
            sections += [f"| {h:g} | {v:.3f} | ±{w:.3f} |" for h, v, w in zip(
                m.index, m.values, half.values)]
        sections += ["", f"![patience]({name})", ""]
    # L6 ----------------------------------------------------------------------------------
    dose_cols = [c for c in ok.columns if c.startswith("interventions.") and
                 c.endswith(".dose") and varies(c)]
    for col in dose_cols:
        y = (ok["share_spiral_in"] >= 0.5).astype(float)
        sub = ok.assign(spiral_in=y)
        est = bootstrap_tipping(sub, col, "spiral_in", B, rng)
        res.setdefault("L6", {})[col] = est
        fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
        pm = sub.groupby(col)["spiral_in"].mean()
        ax.plot(pm.index, pm.values, "o", color="#762a83", label="share of runs spiraling in")
        if est is not None:
            xs = np.linspace(sub[col].min(), sub[col].max(), 200)
            ax.plot(xs, logistic(xs, *est["params"]), color="#762a83")
            ax.axvline(est["tipping"], ls="--", color="#762a83")
        ax.set(xlabel=col, ylabel="P(spiral in at the end)", ylim=(-0.02, 1.02),
               title="Intervention dose threshold")
        name = _fig(report / "l6_dose.png", fig)
        txt = ("no threshold found" if est is None else
               f"{est['tipping']:.3f} [{est['low']:.3f}, {est['high']:.3f}] (95% bootstrap)")
        sections += ["## L6 intervention dose threshold", "",
                     f"Dose ({col}) at which half the runs end spiraling in: {txt}. Below it "
                     "the alliance relapses; above it, it turns around.", "",
                     f"![dose]({name})", ""]
    # L8 ----------------------------------------------------------------------------------
    if len(ok) >= 5:
        rho = spearman_ci(ok["mean_trust"], ok["value_created"], B, rng)
        less = float((ok["value_perceived"] <= ok["value_created"] + 1e-9).mean())
        res["L8"] = {"spearman_trust_value": rho, "share_perceived_le_created": less,
                     "perceived_over_created": float(ok["value_perceived"].sum() /
                                                     max(ok["value_created"].sum(), 1e-12))}
        fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
        ax.scatter(ok["mean_trust"], ok["value_created"], s=10, alpha=0.5, color="#1b7837",
                   label="created")
        ax.scatter(ok["mean_trust"], ok["value_perceived"], s=10, alpha=0.5, color="#762a83",
                   label="perceived")
        ax.set(xlabel="mean trust", ylabel="value (cumulative)", title="Value rises with trust")
        ax.legend()
        name = _fig(report / "l8_value.png", fig)
        sections += ["## L8 value and trust", "",
                     f"Spearman's rho between mean trust and value created: {rho['rho']:.3f} "
                     f"[{rho['low']:.3f}, {rho['high']:.3f}]. Value perceived / created over all "
                     f"runs: {res['L8']['perceived_over_created']:.3f} (revenue-only views see "
                     f"less); perceived <= created in {less:.0%} of runs.", "",
                     f"![value]({name})", ""]
    # Sobol ---------------------------------------------------------------------------------
    if meta.get("design") == "sobol":
        from SALib.analyze import sobol

        names = list(meta["parameters"])
        problem = {"num_vars": len(names), "names": names,
                   "bounds": [[v["min"], v["max"]] for v in meta["parameters"].values()]}
        full = df.sort_values("run")
        reps = meta.get("replicates", 1)
        n_points = meta["n_points"]
        sob = {}
        lines = ["## Sobol indices", "", "First-order (S1) and total (ST) indices with 95% "
                 "confidence intervals (SALib, Saltelli's scheme; outcomes averaged over "
                 f"{reps} replicates per point).", ""]
        for ycol in ("mean_trust", "share_spiral_in", "failure_rate"):
            y = full[ycol].to_numpy(dtype=float)
            if len(y) != n_points * reps or not np.all(np.isfinite(y)):
                lines.append(f"{ycol}: incomplete or failed runs; rerun the sweep to finish.")
                continue
            Y = y.reshape(n_points, reps).mean(axis=1)
            si = sobol.analyze(problem, Y, calc_second_order=False, conf_level=0.95,
                               seed=1)
            sob[ycol] = {n: {"S1": float(si["S1"][i]), "S1_conf": float(si["S1_conf"][i]),
                             "ST": float(si["ST"][i]), "ST_conf": float(si["ST_conf"][i])}
                         for i, n in enumerate(names)}
            lines += [f"**{ycol}**", "", "| parameter | S1 | ST |", "|---|---|---|"]
            lines += [f"| {n} | {v['S1']:.3f} ± {v['S1_conf']:.3f} | {v['ST']:.3f} ± "
                      f"{v['ST_conf']:.3f} |" for n, v in sob[ycol].items()]
            lines.append("")
        if sob:
            fig, axes = plt.subplots(1, len(sob), figsize=(5 * len(sob), 4.5),
                                     constrained_layout=True, squeeze=False)
            for ax, (ycol, d) in zip(axes[0], sob.items()):
                x = np.arange(len(names))
                ax.bar(x - 0.2, [d[n]["S1"] for n in names], 0.4,
                       yerr=[d[n]["S1_conf"] for n in names], label="S1", capsize=3)
                ax.bar(x + 0.2, [d[n]["ST"] for n in names], 0.4,
                       yerr=[d[n]["ST_conf"] for n in names], label="ST", capsize=3)
                ax.set_xticks(x, [n.replace(".", "\n") for n in names], fontsize=8)
                ax.set(title=ycol)
                ax.legend()
            lines += [f"![sobol]({_fig(report / 'sobol.png', fig)})", ""]
        res["sobol"] = sob
        sections += lines
    if not sections:
        sections = ["No law could be estimated from this sweep: vary "
                    f"{SHARE}, {HORIZON}, an intervention dose, or use a sobol design.", ""]
    head = [f"# Sweep report: {meta.get('name', folder.name)}", "",
            f"Sweep file `{meta.get('sweep')}` (sha256 {str(meta.get('sweep_sha256'))[:12]}…), "
            f"design {meta.get('design')}, {res['runs']} runs ({res['failed']} failed), "
            f"alliance-spiral {meta.get('version')}. Parameters varied: "
            f"{', '.join(varied) or '-'}.", ""]
    return {"results": res, "markdown": "\n".join(head + sections)}


def main_analyse(args) -> int:
    from sim.outputs import atomic_write, write_json

    folder = Path(args.dir)
    report = Path(args.out) if args.out else folder / "report"
    report.mkdir(parents=True, exist_ok=True)
    out = analyse(folder, report, args.bootstrap)
    atomic_write(report / "report.md", lambda tmp: tmp.write_text(out["markdown"]))
    write_json(report / "analysis.json", out["results"])
    print(out["markdown"])
    print(f"\nreport: {report / 'report.md'}  (figures and analysis.json beside it)")
    return 0
