"""`spiral discover DIR --outcome "failure_rate > 0.5"`: scenario discovery on a sweep.

Which regions of the swept parameters produce the cases of interest? PRIM (patient rule
induction) and CART, both from EMA Workbench (pinned; not re-implemented here), over the sweep's
parameter columns and the boolean outcome given as a pandas expression over the runs table
(metric names as columns; backquote dotted names: `mindset.abundance_share` < 0.5).

Writes into DIR/discover/ (or --out): prim_trajectory.csv (the peeling trajectory: coverage,
density, mass, restricted dimensions per box), prim_box.csv (the limits of the chosen box: the
one with the highest coverage whose density reaches --threshold), cart_boxes.csv and
cart_stats.csv (CART's leaves), tradeoff.png (PRIM's coverage-density trade-off), discovery.md
and discovery.json. Coverage: the share of all cases of interest inside the box; density: the
share of cases of interest among the runs inside the box.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from sim.scenario import ScenarioError


def cases(df: pd.DataFrame, expr: str) -> np.ndarray:
    try:
        y = df.eval(expr)
    except Exception as e:  # noqa: BLE001 - pandas raises many types for a bad expression
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ScenarioError("--outcome", expr, f"cannot evaluate ({msg}); expected a "
                            'condition on the runs\' columns, e.g. "failure_rate > 0.5"') from None
    if not isinstance(y, pd.Series) or y.dtype != bool:
        raise ScenarioError("--outcome", expr, "expected a true/false condition, e.g. "
                            '"failure_rate > 0.5"')
    return y.to_numpy(bool)


def discover(df: pd.DataFrame, columns: list[str], expr: str, threshold: float = 0.8,
             mass_min: float = 0.05) -> dict:
    with warnings.catch_warnings():  # "ipyparallel not installed": not needed here
        warnings.simplefilter("ignore")
        from ema_workbench.analysis import cart, prim

    ok = df[df["status"] == "ok"].reset_index(drop=True)
    x = pd.DataFrame({c: (ok[c].astype(float) if pd.api.types.is_numeric_dtype(ok[c])
                          and not pd.api.types.is_bool_dtype(ok[c])
                          else ok[c].astype(str).astype("category")) for c in columns})
    y = cases(ok, expr)
    n_coi = int(y.sum())
    res = {"outcome": expr, "runs": int(len(ok)), "cases_of_interest": n_coi,
           "parameters": columns, "threshold": threshold}
    if n_coi == 0 or n_coi == len(y):
        res["error"] = (f"{'no' if n_coi == 0 else 'every'} run meets the condition; nothing "
                        "to discover")
        return res
    logging.getLogger("EMA").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = prim.Prim(x, y, mass_min=mass_min)
        box = p.find_box()
        traj = box.peeling_trajectory.copy()
        good = traj[traj["density"] >= threshold]
        i = int(good["coverage"].idxmax()) if len(good) else int(traj["density"].idxmax())
        box.select(i)
        lims = box.box_lims[i]
        res["prim"] = {"box": i, "coverage": float(traj.loc[i, "coverage"]),
                       "density": float(traj.loc[i, "density"]),
                       "mass": float(traj.loc[i, "mass"]),
                       "restricted": _restricted(lims, x),
                       "threshold_met": bool(traj.loc[i, "density"] >= threshold)}
        tradeoff = box.show_tradeoff()
        c = cart.CART(x, y, mass_min=mass_min)
        c.build_tree()
        stats = pd.DataFrame(c.stats)
        boxes = c.boxes
    res["cart"] = {"leaves": len(boxes), "stats": stats.to_dict(orient="records")}
    best = int(stats["density"].idxmax()) if "density" in stats else None
    if best is not None:
        b = boxes[best]
        res["cart"]["best_leaf"] = {"leaf": best, **{k: float(stats.loc[best, k]) for k in
                                                     ("coverage", "density", "mass")},
                                    "limits": _restricted(b, x)}
    res["_tables"] = {"prim_trajectory": traj, "prim_box": lims, "cart_stats": stats,
                      "cart_boxes": pd.concat({f"leaf {k}": b for k, b in enumerate(boxes)})}
    res["_figure"] = tradeoff
    return res


def _restricted(lims: pd.DataFrame, x: pd.DataFrame) -> dict:
    """The box's limits on the parameters it restricts: [low, high] for a number, the kept
    values for a category."""
    out = {}
    for c in lims.columns:
        if c not in x:
            continue
        if isinstance(x[c].dtype, pd.CategoricalDtype):
            kept = lims[c].iloc[0]
            kept = sorted(map(str, kept)) if isinstance(kept, set | frozenset | list) else [
                str(kept)]
            if set(kept) != set(map(str, x[c].cat.categories)):
                out[c] = kept
            continue
        lo, hi = float(lims[c].iloc[0]), float(lims[c].iloc[1])
        if lo > x[c].min() + 1e-12 or hi < x[c].max() - 1e-12:
            out[c] = [lo, hi]
    return out


def _fmt_limits(v) -> tuple[str, str]:
    if len(v) == 2 and all(isinstance(t, float) for t in v):
        return f"{v[0]:g}", f"{v[1]:g}"
    return ", ".join(v), ""


def markdown(res: dict, warning: str | None) -> str:
    head = [f"**{warning}**", ""] if warning else []
    lines = head + ["# Scenario discovery", "",
                    f"Cases of interest: `{res['outcome']}`: {res['cases_of_interest']} of "
                    f"{res['runs']} runs. Parameters: {', '.join(res['parameters'])}. PRIM and "
                    "CART from EMA Workbench.", ""]
    if "error" in res:
        return "\n".join(lines + [res["error"], ""])
    p = res["prim"]
    lines += ["## PRIM", "",
              f"Box {p['box']} of the peeling trajectory (highest coverage with density >= "
              f"{res['threshold']}{'' if p['threshold_met'] else ': not reached, densest box shown'}"
              f"): coverage {p['coverage']:.3f}, density {p['density']:.3f}, mass "
              f"{p['mass']:.3f}.", "", "| parameter | from | to |", "|---|---|---|"]
    lines += ["| {} | {} | {} |".format(k, *_fmt_limits(v)) for k, v in p["restricted"].items()]
    if not p["restricted"]:
        lines.append("| (no restriction) | | |")
    lines += ["", "![trade-off](tradeoff.png)", ""]
    if "best_leaf" in res["cart"]:
        b = res["cart"]["best_leaf"]
        lines += ["## CART", "", f"{res['cart']['leaves']} leaves; the densest, leaf {b['leaf']}: "
                  f"coverage {b['coverage']:.3f}, density {b['density']:.3f}, mass "
                  f"{b['mass']:.3f}.", "", "| parameter | from | to |", "|---|---|---|"]
        lines += ["| {} | {} | {} |".format(k, *_fmt_limits(v)) for k, v in b["limits"].items()]
        lines += ["", "Only the parameters the box restricts are listed; the others span their "
                  "whole range.", ""]
    return "\n".join(lines)


def main_discover(args) -> int:
    from analysis.analyse import finite, load_checked
    from sim.outputs import atomic_write, write_figure, write_json

    folder = Path(args.dir)
    if not 0 < args.threshold <= 1:
        raise ScenarioError("--threshold", "", f"expected a density in (0, 1], got "
                            f"{args.threshold}")
    df, meta, chk, warning = load_checked(folder, args.allow_incomplete)
    columns = [c for c in meta.get("columns", {}) if c in df.columns and df[c].nunique() > 1]
    if not columns:
        raise ScenarioError(str(folder), "", "expected a sweep that varies at least one "
                            "parameter")
    cases(df[df["status"] == "ok"], args.outcome)  # a bad expression fails before any write
    out = Path(args.out) if args.out else folder / "discover"
    res = discover(df, columns, args.outcome, args.threshold)
    out.mkdir(parents=True, exist_ok=True)
    tables = res.pop("_tables", {})
    figure = res.pop("_figure", None)
    for name, t in tables.items():
        atomic_write(out / f"{name}.csv", lambda tmp, t=t: t.to_csv(tmp))
    if figure is not None:
        if warning:
            figure.suptitle(warning[:110], color="#b2182b", fontsize=8)
        write_figure(out / "tradeoff.png", figure)
    if warning:
        res = {"warning": warning, **res}
    write_json(out / "discovery.json", finite(json.loads(json.dumps(res, default=str))))
    md = markdown(res, warning)
    atomic_write(out / "discovery.md", lambda tmp: tmp.write_text(md))
    print(md)
    print(f"\ndiscovery: {out / 'discovery.md'}  (boxes as CSV, tradeoff.png beside it)")
    return 0 if "error" not in res else 1
