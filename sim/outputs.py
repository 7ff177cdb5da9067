"""Run outputs: Parquet tables, summary.json, GraphML and the run figure.

Every file is written to a temporary name in the same folder and then renamed, so a file under
its final name is always complete, even if the process is killed mid-write.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

REGIME_COLORS = {"spiral_in": "#1a9850", "undecided": "#fdae61", "spiral_out": "#d73027"}


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temporary file next to path, then rename it to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _metadata(summary: dict) -> dict[bytes, bytes]:
    keep = ("scenario", "scenario_sha256", "resolved_sha256", "seed", "version", "name")
    return {f"alliance_spiral.{k}".encode(): str(summary[k]).encode() for k in keep}


def write_parquet(path: Path, columns: dict, summary: dict) -> Path:
    table = pa.table({k: pa.array(np.asarray(v).tolist() if np.asarray(v).dtype == object
                                  else np.asarray(v)) for k, v in columns.items()})
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **_metadata(summary)})
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_json(path: Path, data: dict) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o)}")


def write_graphml(path: Path, graph: nx.Graph, summary: dict) -> Path:
    g = graph.copy()
    g.graph.update({k: str(summary[k]) for k in ("scenario", "scenario_sha256", "seed",
                                                  "version", "name")})
    return atomic_write(path, lambda tmp: nx.write_graphml(g, tmp))


def plot_run(model, title: str | None = None):
    """The run figure: trust and openness, regime shares, the phase portrait, value."""
    df = model.timeseries()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), constrained_layout=True)
    ax = axes[0, 0]
    ax.plot(df["step"], df["mean_trust"], color="#2166ac", lw=2, label="mean trust")
    ax.plot(df["step"], df["mean_openness"], color="#b2182b", lw=2, ls="--",
            label="mean openness")
    ax.plot(df["step"], df["share_abundance_mindset"], color="#7f7f7f", lw=1.5, ls=":",
            label="share of people in abundance")
    ax.set(ylim=(0, 1), xlabel="step", title="Trust and openness pull each other")
    ax.legend(loc="best", fontsize=9)

    ax = axes[0, 1]
    ax.stackplot(df["step"], df["share_spiral_in"], df["share_undecided"],
                 df["share_spiral_out"], colors=list(REGIME_COLORS.values()),
                 labels=["spiral in", "undecided", "spiral out (incl. ended)"], alpha=0.85)
    ax.set(ylim=(0, 1), xlim=(df["step"].min(), df["step"].max()), xlabel="step",
           ylabel="share of alliances formed", title="Where the alliances are heading")
    ax.legend(loc="lower left", fontsize=9)

    ax = axes[1, 0]
    portrait(ax, model)

    ax = axes[1, 1]
    ax.plot(df["step"], df["value_created"], color="#1b7837", lw=2, label="value created")
    ax.plot(df["step"], df["value_perceived"], color="#762a83", lw=2, ls="--",
            label="value perceived (revenue-only views see less)")
    ax.set(xlabel="step", ylabel="cumulative value", title="The pie")
    ax2 = ax.twinx()
    ax2.plot(df["step"], df["alliances_active"], color="#999999", lw=1, label="active alliances")
    ax2.set_ylabel("active alliances", color="#777777")
    ax.legend(loc="upper left", fontsize=9)
    fig.suptitle(title or model.scenario_spec.name, fontsize=14)
    return fig


PAIR_NAMES = {2: "abundance pair", 1: "mixed pair", 0: "scarcity pair"}


def portrait_alliance(model) -> int | None:
    """The alliance whose pair the run figure's portrait draws: the first tracked mixed one
    (the bistable case), else the first tracked one."""
    tr = list(model.trajectories())
    if not tr:
        return None
    kinds = model.state.al_mindset[tr].sum(axis=1)
    mixed = [a for a, k in zip(tr, kinds) if k == 1]
    return mixed[0] if mixed else tr[0]


def portrait(ax, model) -> None:
    """Phase portrait: the flow and separatrix of one alliance's own map (dyad.alliance_flow
    and alliance_basin: the kernel's step on that pair with the mindsets it formed with,
    started as the model starts it), and the (trust, openness) paths of the tracked alliances
    of the same pair type."""
    from .dyad import alliance_basin, alliance_flow  # late import: only plots need it

    s = model.state
    a = portrait_alliance(model)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="trust", ylabel="openness")
    if a is None:
        ax.set_title("Phase portrait (no alliance)")
        return
    kind = int(s.al_mindset[a].sum())
    xs, ys, u, v = alliance_flow(s, model.p, a, formation=True)
    ax.streamplot(xs, ys, u, v, color="#cccccc", density=0.9, linewidth=0.7, arrowsize=0.8)
    bx, score = alliance_basin(s, model.p, a, n=41, steps=300, formation=True)
    if score.min() < 0.5 < score.max():
        cs = ax.contour(bx, bx, score, levels=[0.5], colors="#333333", linestyles="--",
                        linewidths=1.2)
        ax.clabel(cs, fmt={0.5: "tipping line"}, fontsize=8)
    for b, (tt, oo) in model.trajectories().items():
        if int(s.al_mindset[b].sum()) != kind:
            continue
        name = {1: "spiral_in", 0: "undecided", -1: "spiral_out"}[int(s.al_regime[b])]
        ax.plot(tt, oo, color=REGIME_COLORS[name], lw=0.8, alpha=0.6)
        ax.plot(tt[-1:], oo[-1:], "o", color=REGIME_COLORS[name], ms=3)
    ax.set_title(f"Phase portrait: {PAIR_NAMES[kind]}s' (trust, openness) paths")
    ax.text(0.97, 0.03, f"flow and tipping line: alliance {a}'s own map, as it formed",
            ha="right",
            fontsize=8, color="#888888", transform=ax.transAxes)


def write_figure(path: Path, fig) -> Path:
    def save(tmp: Path):
        fig.savefig(tmp, dpi=110, format="png")
    try:
        return atomic_write(path, save)
    finally:
        plt.close(fig)


def write_run(model, out: Path) -> dict[str, Path]:
    """All outputs of a finished run into folder out."""
    out = Path(out)
    summary = model.summary()
    ts = model.timeseries()
    paths = {
        "timeseries": write_parquet(out / "timeseries.parquet",
                                    {c: ts[c].to_numpy() for c in ts.columns}, summary),
        "alliances": write_parquet(out / "alliances.parquet", model.alliances(), summary),
        "network": write_graphml(out / "network.graphml", model.network(), summary),
        "figure": write_figure(out / "run.png", plot_run(model)),
    }
    # summary last: its presence marks a complete run folder
    paths["summary"] = write_json(out / "summary.json", summary)
    return paths
