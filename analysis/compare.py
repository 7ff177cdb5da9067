"""`spiral compare A.toml B.toml [--seeds N]`: the effect of a change, not one noisy run.

Both scenarios run over the same N seeds (each scenario's seed + 0..N-1). The table gives, per
outcome, the mean and a 95% t-interval over seeds for A and for B, and the difference B - A
with a Welch 95% interval. The figure shows the mean trajectories with their bands and the
outcomes side by side.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
from scipy import stats

from sim.model import AllianceModel
from sim.scenario import Scenario, load

OUTCOMES = ("mean_trust", "mean_openness", "share_spiral_in", "share_spiral_out",
            "failure_rate", "value_created", "value_perceived", "mean_abundance")


def t_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high); low = high = mean when there is one value."""
    x = np.asarray(x, float)
    m = float(x.mean())
    if len(x) < 2 or np.all(x == x[0]):
        return m, m, m
    h = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return m, m - h, m + h


def welch_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95):
    """Mean of b - a and its Welch interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return d, d, d
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    dof = (va + vb) ** 2 / ((va**2 / (len(a) - 1) if va else 0) + (vb**2 / (len(b) - 1) if vb
                                                                     else 0))
    h = stats.t.ppf(0.5 + level / 2, dof) * se
    return d, d - h, d + h


def run_many(sc: Scenario, seeds: int, progress=None):
    """Summaries and time series of `seeds` runs of a scenario."""
    summaries, series = [], []
    for i in range(seeds):
        m = AllianceModel(sc, seed=sc.seed + i)
        m.run()
        summaries.append(m.summary())
        series.append(m.timeseries())
        if progress:
            progress(1)
    return summaries, series


def compare(a: Scenario, b: Scenario, seeds: int, progress=None) -> dict:
    res = {}
    for label, sc in (("A", a), ("B", b)):
        res[label] = run_many(sc, seeds, progress)
    rows = []
    for key in OUTCOMES:
        xa = np.array([s[key] for s in res["A"][0]])
        xb = np.array([s[key] for s in res["B"][0]])
        ma, la, ha = t_interval(xa)
        mb, lb, hb = t_interval(xb)
        d, dl, dh = welch_interval(xa, xb)
        rows.append({"outcome": key, "A_mean": ma, "A_low": la, "A_high": ha,
                     "B_mean": mb, "B_low": lb, "B_high": hb,
                     "diff": d, "diff_low": dl, "diff_high": dh})
    return {"rows": rows, "runs": res, "seeds": seeds}


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) >= 100 else f"{v:.3f}"


def table_text(rows, name_a: str, name_b: str) -> str:
    head = f"{'outcome':<18} {name_a[:24]:>26} {name_b[:24]:>26} {'B - A':>26}"
    lines = [head, "-" * len(head)]
    for r in rows:
        def cell(m, lo, hi):
            return f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]"
        lines.append(f"{r['outcome']:<18} {cell(r['A_mean'], r['A_low'], r['A_high']):>26} "
                     f"{cell(r['B_mean'], r['B_low'], r['B_high']):>26} "
                     f"{cell(r['diff'], r['diff_low'], r['diff_high']):>26}")
    return "\n".join(lines)


def table_markdown(rows, name_a: str, name_b: str, seeds: int) -> str:
    out = [f"Mean and 95% interval over {seeds} seeds (t-interval; the difference B - A with a "
           f"Welch interval).", "",
           f"| outcome | A: {name_a} | B: {name_b} | B - A |", "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['outcome']} | {_fmt(r['A_mean'])} [{_fmt(r['A_low'])}, "
                   f"{_fmt(r['A_high'])}] | {_fmt(r['B_mean'])} [{_fmt(r['B_low'])}, "
                   f"{_fmt(r['B_high'])}] | {_fmt(r['diff'])} [{_fmt(r['diff_low'])}, "
                   f"{_fmt(r['diff_high'])}] |")
    return "\n".join(out) + "\n"


def table_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def figure(result: dict, name_a: str, name_b: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"A": "#2166ac", "B": "#d6604d"}
    names = {"A": name_a, "B": name_b}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), constrained_layout=True)
    for key, ax, title in (("mean_trust", axes[0], "Mean trust"),
                           ("share_spiral_in", axes[1], "Share of alliances spiraling in")):
        for label in ("A", "B"):
            series = result["runs"][label][1]
            y = np.stack([s[key].to_numpy() for s in series])
            steps = series[0]["step"].to_numpy()
            m = y.mean(axis=0)
            lo, hi = np.percentile(y, [10, 90], axis=0)
            ax.plot(steps, m, color=colors[label], lw=2, label=f"{label}: {names[label]}")
            ax.fill_between(steps, lo, hi, color=colors[label], alpha=0.2)
        ax.set(title=title + " (mean, 10-90% of seeds)", xlabel="step", ylim=(0, 1))
        ax.legend(fontsize=9)
    ax = axes[2]
    keys = ["mean_trust", "share_spiral_in", "share_spiral_out", "failure_rate",
            "mean_abundance"]
    rows = {r["outcome"]: r for r in result["rows"]}
    x = np.arange(len(keys))
    for j, label in enumerate(("A", "B")):
        m = np.array([rows[k][f"{label}_mean"] for k in keys])
        lo = m - np.array([rows[k][f"{label}_low"] for k in keys])
        hi = np.array([rows[k][f"{label}_high"] for k in keys]) - m
        ax.bar(x + (j - 0.5) * 0.38, m, 0.38, yerr=[lo, hi], color=colors[label], capsize=3,
               label=f"{label}: {names[label]}")
    ax.set_xticks(x, [k.replace("_", "\n") for k in keys], fontsize=8)
    ax.set(title=f"Outcomes at the end (95% interval, {result['seeds']} seeds)", ylim=(0, 1.05))
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    return fig


def main_compare(args) -> int:
    """`spiral compare`; the command-line checks (--seeds >= 1) are sim.cli's."""
    import sys

    from sim.outputs import (
        COMPARE_FILES,
        OutputError,
        first_nonfinite,
        prepare_folder,
        write_figure,
    )
    from sim.scenario import SEED_MAX, ScenarioError

    a = load(args.a, args.set or [])
    b = load(args.b, args.set or [])
    for path, sc in ((args.a, a), (args.b, b)):
        if sc.seed + args.seeds - 1 > SEED_MAX:
            raise ScenarioError(str(path), "seed", f"expected seed + --seeds - 1 <= {SEED_MAX}, "
                                f"got {sc.seed} + {args.seeds} - 1")
    out = Path(args.out) if args.out else Path("runs") / f"compare-{a.name}-vs-{b.name}"
    stage = prepare_folder(out, COMPARE_FILES, 4 * 2**20,
                           label="--out" if args.out else "output folder")
    with stage:
        if args.quiet:
            result = compare(a, b, args.seeds)
        else:
            from tqdm import tqdm
            with tqdm(total=2 * args.seeds, desc="compare", unit="run", leave=False,
                      file=sys.stderr) as bar:
                result = compare(a, b, args.seeds, bar.update)
        for label, path in (("A", args.a), ("B", args.b)):  # no NaN or inf in any output
            for summ in result["runs"][label][0]:
                hit = first_nonfinite({k: summ[k] for k in OUTCOMES})
                if hit is not None:
                    raise ScenarioError(str(path), hit, f"the run with seed {summ['seed']} "
                                        "produced a non-finite value (NaN or inf); expected "
                                        "finite numbers")
        rows = result["rows"]
        md = table_markdown(rows, a.name, b.name, args.seeds)
        try:
            (stage / "compare.md").write_text(md, encoding="utf-8")
            (stage / "compare.csv").write_text(table_csv(rows), encoding="utf-8")
            write_figure(stage / "compare.png", figure(result, a.name, b.name))
        except OSError as e:
            raise OutputError(f"{stage.label} {out}", f"cannot write the results: "
                              f"{e.strerror or e}") from None
        stage.commit()
    print(table_text(rows, f"A: {a.name}", f"B: {b.name}"))
    print(f"results: {out}/  (compare.md, compare.csv)")
    print(f"plot:    {out / 'compare.png'}")
    return 0
