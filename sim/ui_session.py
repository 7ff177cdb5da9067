"""The trainer UI's session: one model, its layout, narration and stories, and the figures.

Plain Python over the Model API (no solara here), so it is tested directly and the Solara page
(sim/app.py) stays a thin layer. Nothing here re-implements the model: steps, interventions and
the phase portrait's flow all come from AllianceModel, the kernel and sim.dyad.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from . import dyad  # noqa: E402
from .model import AllianceModel  # noqa: E402
from .scenario import ScenarioError, load  # noqa: E402
from .state import IN, OUT  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_DIR = ROOT / "scenarios"

# The sliders: label, scenario key, min, max, step
SLIDERS = (
    ("Abundance share", "mindset.abundance_share", 0.0, 1.0, 0.05),
    ("Patience horizon (steps)", "patience.horizon", 1, 300, 1),
    ("Difference rate", "differences.rate", 0.0, 1.0, 0.05),
    ("Organizations", "ecosystem.organizations", 2, 200, 1),
    ("Initial trust", "initial.trust", 0.0, 1.0, 0.05),
)

# The six steps of the turnaround practice, and a shock, mapped onto the model's interventions
SIX_STEPS = (
    ("1 Share perspectives", "share_perspectives", 0.5,
     "They openly share perspectives, starting with the hardest topic: openness jumps and their "
     "views move toward each other."),
    ("2 Neutralize the problem", "neutralize", 1.0,
     "They put the problem on the table without blame: the tension of avoided differences is "
     "released."),
    ("3 Find the opportunity", "find_opportunity", 1.0,
     "They look for the opportunity inside the problem: with trust higher, it turns into value."),
    ("4 Find new opportunities", "share_perspectives", 0.3,
     "They stay open and keep looking for new opportunities together."),
    ("5 Mindful of the spiral", "coach_mindset", 0.6,
     "They notice the pull of fear and choose 'trust & we': latent abundance rises."),
    ("6 Be patient", "set_patience", 200,
     "They give the alliance time: the patience horizon becomes 200 steps."),
)
SHOCK = ("Shock", "shock", 3.0, "A crisis: a burst of large differences hits every tie.")

COLORS = {"abundance": "#1a9850", "scarcity": "#d73027", "in": "#1a9850", "out": "#d73027",
          "undecided": "#fdae61", "trust": "#2166ac", "openness": "#b2182b"}


def scenario_files() -> list[str]:
    return sorted(p.name for p in SCENARIO_DIR.glob("*.toml"))


@dataclass
class Story:
    title: str
    scenario: str
    overrides: list[str]
    pages: list[tuple[str, str | None, int]]  # caption, action (a SIX_STEPS label or None), steps


STORIES = {
    "The spiral out": Story(
        "The spiral out", "dyad.toml",
        ["noise.enabled=true", "initial.trust=0.7", "initial.openness=0.7", "seed=6",
         "formation.rate=0"],
        [("Two companies, one alliance: one side holds 'trust & we', the other 'fear & me'. "
          "They start on good terms: trust and openness 0.7, above the separatrix in the "
          "phase portrait.", None, 0),
         ("So far so good. But differences come up, and the scarcity side avoids them: the "
          "problems are not solved, they pile up as tension.", None, 12),
         ("The tension blows up into blame: trust drops both ways at once, and the point in the "
          "phase portrait jumps toward the separatrix.", None, 8),
         ("Less trust means less openness, and less openness means less trust: the spiral runs "
          "down toward the lower left. Little talk, little value.", None, 15),
         ("Seeing no value for too long, the impatient side ends the alliance. Falling was easy. "
          "Try 'The turnaround' to see what it takes to climb back.", None, 30)]),
    "The turnaround": Story(
        "The turnaround", "turnaround_left_alone.toml", ["seed=2"],
        [("This alliance has spiraled out: suspicious from the start, it slid into the lower "
          "left of the phase portrait within 40 steps.", None, 40),
         *[(text, label, 3) for label, _, _, text in SIX_STEPS],
         ("Left to run: trust and openness pull each other up. The alliance is on the other "
          "side of the separatrix now: it spirals in.", None, 40)]),
}


@dataclass
class Session:
    """Everything the page shows, for one browser session."""

    scenario: str = "baseline.toml"
    overrides: dict[str, object] = field(default_factory=dict)
    error: str | None = None
    narration: deque = field(default_factory=lambda: deque(maxlen=60))
    selected: int = 0
    story: str | None = None
    page: int = 0

    def __post_init__(self):
        self.reset()

    # --- model lifecycle ----------------------------------------------------------------
    def reset(self, scenario: str | None = None, overrides: dict | None = None) -> bool:
        """(Re)build the model; on bad input keep the current model and set `error`."""
        scenario = scenario or self.scenario
        overrides = dict(self.overrides if overrides is None else overrides)
        try:
            sc = load(SCENARIO_DIR / scenario, [f"{k}={v}" for k, v in overrides.items()])
            model = AllianceModel(sc)
        except ScenarioError as e:
            self.error = str(e)
            return False
        self.scenario, self.overrides, self.error = scenario, overrides, None
        self.model = model
        self.narration.clear()
        self._history = [(model.state.al_trust.copy(), model.state.al_open.copy())]
        self._flow_cache = {}
        n = model.state.n_org
        self.pos = self._layout(model.graph, model.scenario_spec.seed)
        act = np.flatnonzero(model.state.active)
        self.selected = int(act[0]) if len(act) else 0
        self.say(f"Reset: {model.scenario_spec.name}, {n} organizations, "
                 f"{model.state.n_al} alliances, seed {model.scenario_spec.seed}.")
        return True

    @staticmethod
    def _layout(g: nx.Graph, seed: int) -> np.ndarray:
        """Node positions, computed once per reset and kept still while the model plays."""
        n = g.number_of_nodes()
        if n <= 2:
            return np.array([[-0.6, 0.0], [0.6, 0.0]])[:n]
        # spring_layout seeds a legacy RandomState (< 2**32); scenario seeds go up to 2**63 - 1
        pos = nx.spring_layout(g, seed=seed % 2**32, iterations=60 if n > 100 else 100)
        return np.array([pos[i] for i in range(n)])

    def set_override(self, key: str, value) -> None:
        self.overrides[key] = value

    def set_seed(self, text: str) -> bool:
        try:
            seed = int(str(text).strip())
            if seed < 0:
                raise ValueError
        except ValueError:
            self.error = f"seed: expected a whole number >= 0, got {text!r}"
            return False
        self.overrides["seed"] = seed
        return self.reset()

    # --- stepping -----------------------------------------------------------------------
    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.model.step()
            s = self.model.state
            self._history.append((s.al_trust.copy(), s.al_open.copy()))
            self._narrate(self.model.last_events)

    def say(self, text: str) -> None:
        self.narration.appendleft(f"step {self.model.state.step}: {text}")

    def _name(self, a: int) -> str:
        o = self.model.state.al_org[a]
        return f"alliance {int(o[0])}–{int(o[1])}"

    def _narrate(self, ev) -> None:
        """A plain sentence for each notable event; a few per step, the selected alliance first."""
        s = self.model.state
        lines: list[tuple[int, str]] = []  # (priority, sentence)
        sel = self.selected
        for a in ev.ended:
            lines.append((0, f"{self._name(a)} ended: one side ran out of patience."))
        for a in ev.blamed:
            lines.append((1, f"Tension in {self._name(a)} blew up into blame; trust fell both "
                             f"ways."))
        for i in ev.to_scarcity:
            lines.append((2, f"A boundary spanner of organization {int(s.org[i])} fell into "
                             f"'fear & me'."))
        for i in ev.to_abundance:
            lines.append((2, f"A boundary spanner of organization {int(s.org[i])} came back to "
                             f"'trust & we'."))
        for a in ev.opportunities:
            lines.append((3, f"{self._name(a)} confronted a difference and found an "
                             f"opportunity in it."))
        for a in ev.avoided:
            lines.append((4, f"A difference in {self._name(a)} was avoided, not resolved; "
                             f"tension grows."))
        for a in ev.formed:
            lines.append((3, f"A new alliance formed: {self._name(a)}."))
        mine = [t for p, t in lines if self._name(sel) in t]
        rest = [t for p, t in sorted(lines, key=lambda x: x[0]) if t not in mine]
        for text in reversed((mine + rest)[:4]):
            self.say(text)

    # --- interventions and stories ------------------------------------------------------
    def intervene(self, label: str, scope: str = "selected") -> None:
        """Apply one of the six steps (or the shock) to the selected alliance or everyone."""
        entry = next(x for x in (*SIX_STEPS, SHOCK) if x[0] == label)
        _, kind, dose, text = entry
        if scope == "selected" and self.model.state.active[self.selected]:
            self.model.intervene(kind, dose=dose, alliances=[self.selected])
            who = self._name(self.selected)
        else:
            self.model.intervene(kind, "all", dose)
            who = "the whole ecosystem"
        self.say(f"{label} ({who}): {text}")

    def start_story(self, title: str) -> None:
        st = STORIES[title]
        ov = dict(x.split("=", 1) for x in st.overrides)
        self.story, self.page = title, 0
        self.reset(st.scenario, ov)
        self._play_page()

    def next_page(self) -> None:
        if self.story is None:
            return
        pages = STORIES[self.story].pages
        if self.page + 1 < len(pages):
            self.page += 1
            self._play_page()
        else:
            self.story = None

    def _play_page(self) -> None:
        caption, action, steps = STORIES[self.story].pages[self.page]
        if action:
            self.intervene(action, "selected")
        self.step(steps)

    @property
    def caption(self) -> str | None:
        if self.story is None:
            return None
        return STORIES[self.story].pages[self.page][0]

    # --- views ----------------------------------------------------------------------------
    def alliance_choices(self) -> list[tuple[str, int]]:
        s = self.model.state
        act = np.flatnonzero(s.active)
        return [(f"{self._name(a)} (trust {s.al_trust[a]:.2f})", int(a)) for a in act[:300]]

    def select(self, a: int) -> None:
        self.selected = int(a)

    def network_figure(self) -> Figure:
        s = self.model.state
        fig = Figure(figsize=(6.2, 5.2), dpi=80)
        ax = fig.add_subplot()
        pos = self.pos
        t = s.step
        show = s.active.copy()
        faded = (s.al_ended >= 0) & (t - s.al_ended < 20)  # ended lately: fading out
        cmap = matplotlib.colormaps["RdYlGn"]
        for mask, alpha in ((faded, 0.25), (show, 0.9)):
            idx = np.flatnonzero(mask)
            if len(idx):
                segs = pos[s.al_org[idx]]
                tr = s.al_trust[idx]
                lc = LineCollection(segs, colors=cmap(tr), linewidths=0.5 + 3.0 * tr,
                                    alpha=alpha, linestyles="solid" if alpha > 0.5 else "dotted")
                ax.add_collection(lc)
        if s.n_al and s.active[self.selected]:
            seg = pos[s.al_org[self.selected]]
            ax.plot(seg[:, 0], seg[:, 1], color="#2166ac", lw=6, alpha=0.35, zorder=1)
        share = np.bincount(s.org, s.m.astype(float), s.n_org) / np.maximum(
            np.bincount(s.org, minlength=s.n_org), 1)
        colors = np.where(share >= 0.5, COLORS["abundance"], COLORS["scarcity"])
        deg = np.bincount(s.al_org[s.active].ravel(), minlength=s.n_org)
        size = 25 + 12 * np.sqrt(deg) if s.n_org > 12 else np.full(s.n_org, 400.0)
        ax.scatter(pos[:, 0], pos[:, 1], s=size, c=colors, edgecolors="white", linewidths=0.8,
                   zorder=3)
        if s.n_org <= 12:
            for i, (x, y) in enumerate(pos):
                ax.annotate(str(i), (x, y), ha="center", va="center", fontsize=8, color="white",
                            zorder=4)
        ax.set_title("Ecosystem: nodes by mindset (green abundance, red scarcity), "
                     "edges by trust", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        pad = 0.15 if s.n_org > 12 else 0.35
        ax.set_xlim(pos[:, 0].min() - pad, pos[:, 0].max() + pad)
        ax.set_ylim(pos[:, 1].min() - pad, pos[:, 1].max() + pad)
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.93)  # (tight_layout: slow)
        return fig

    def _flow(self, combo: tuple[bool, bool]):
        """Vector field and basin of the dyad map for this mindset pair, cached per reset."""
        if combo not in self._flow_cache:
            xs, _, dT, dO = dyad.vector_field(self.model.p, combo, n=15)
            bx, score = dyad.basin(self.model.p, combo, n=31, steps=250)
            self._flow_cache[combo] = (xs, dT, dO, bx, score)
        return self._flow_cache[combo]

    def _separatrix(self, combo, bx, score) -> list:
        key = ("sep", combo)
        if key not in self._flow_cache:
            lines = []
            if score.min() < 0.5 < score.max():
                import contourpy

                lines = contourpy.contour_generator(bx, bx, score).lines(0.5)
            self._flow_cache[key] = lines
        return self._flow_cache[key]

    def phase_figure(self) -> Figure:
        s = self.model.state
        fig = Figure(figsize=(5.2, 5.2), dpi=80)
        ax = fig.add_subplot()
        a = self.selected
        if not s.n_al:
            return fig
        sides = s.al_org[a]
        ab = tuple(bool(np.mean(s.m[s.org == o]) >= 0.5) for o in sides)
        xs, dT, dO, bx, score = self._flow(ab)
        ax.quiver(xs, xs, dT, dO, color="#bbbbbb", angles="xy", width=0.004)
        lines = self._separatrix(ab, bx, score)
        if lines:
            for ln in lines:
                ax.plot(ln[:, 0], ln[:, 1], color="#333333", ls="--", lw=1.3)
            ax.text(0.02, 0.97, "dashed: separatrix", transform=ax.transAxes, fontsize=8,
                    va="top", color="#333333")
        if score.max() > 0.8:  # the in attractor exists for this pair
            ax.plot([0.98], [0.98], "*", color=COLORS["in"], ms=14)
        if score.min() < 0.2:  # the out attractor exists
            ax.plot([0.02], [0.02], "*", color=COLORS["out"], ms=14)
        tt = np.array([h[0][a] for h in self._history if len(h[0]) > a])
        oo = np.array([h[1][a] for h in self._history if len(h[1]) > a])
        ax.plot(tt, oo, color="#2166ac", lw=2)
        ax.plot(tt[-1:], oo[-1:], "o", color="#2166ac", ms=9)
        kinds = "-".join("abundance" if x else "scarcity" for x in ab)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="trust", ylabel="openness")
        ax.set_title(f"{self._name(a)} ({kinds}): path over the dyad's flow", fontsize=9)
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.1, top=0.93)
        return fig

    def series_figure(self) -> Figure:
        fig = Figure(figsize=(6.2, 3.4), dpi=80)
        ax = fig.add_subplot()
        data = self.model.datacollector.model_vars
        steps = np.arange(1, len(data["mean_trust"]) + 1)
        if len(steps):
            ax.plot(steps, data["mean_trust"], color=COLORS["trust"], lw=2, label="mean trust")
            ax.plot(steps, data["mean_openness"], color=COLORS["openness"], lw=2, ls="--",
                    label="mean openness")
            ax.plot(steps, data["share_spiral_in"], color=COLORS["in"], lw=1.5,
                    label="share spiral in")
            ax.plot(steps, data["share_spiral_out"], color=COLORS["out"], lw=1.5,
                    label="share spiral out")
        ax.set(ylim=(0, 1.15), xlabel="step")
        if len(steps):
            ax.legend(fontsize=8, loc="upper left", ncols=4, frameon=False)
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.97)
        return fig

    def stats(self) -> dict:
        s = self.model.state
        m = self.model.last_metrics
        a = self.selected
        regime = {IN: "spiral in", OUT: "spiral out"}.get(int(s.al_regime[a]), "undecided") \
            if s.n_al else "-"
        return {"step": s.step, "mean trust": f"{m['mean_trust']:.2f}",
                "spiral in": f"{m['share_spiral_in']:.0%}",
                "active alliances": m["alliances_active"],
                "selected": f"{self._name(a)}: {regime}" if s.n_al else "-"}

    def export(self, folder: Path | None = None) -> Path:
        """The current run: Parquet tables, GraphML, the run figure and the UI's figures."""
        from .outputs import write_run

        sc = self.model.scenario_spec
        folder = folder or ROOT / "runs" / f"ui-{sc.name}-{sc.seed}-step{self.model.state.step}"
        write_run(self.model, folder, extra={"ui-network.png": self.network_figure,
                                             "ui-phase.png": self.phase_figure,
                                             "ui-series.png": self.series_figure})
        self.say(f"Exported to {folder}")
        return folder


def bench_ui(organizations: int = 200, steps: int = 20) -> dict:
    """Mean time of one step plus a redraw of the three figures (rendered to PNG, as the page
    does) at `organizations` organizations."""
    import io

    sess = Session()
    sess.reset("baseline.toml", {"ecosystem.organizations": organizations})
    sess.step(5)
    sess.phase_figure()  # fill the flow cache (once per reset)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        sess.step(1)
        for fig in (sess.network_figure(), sess.phase_figure(), sess.series_figure()):
            fig.savefig(io.BytesIO(), format="png")
        times.append(time.perf_counter() - t0)
    return {"organizations": organizations, "ms_per_step_and_redraw": 1000 * float(
        np.mean(times)), "ms_max": 1000 * float(np.max(times))}
