"""The trainer UI's session controller: one model per browser session and everything the page
shows, as plain Python over the public AllianceModel API (no Solara here, so it is tested
directly; sim/ui/page.py is the thin Solara layer).

Thread safety: every method that touches the model takes `self.lock`; `view()` builds an
immutable View under the lock. The page renders only Views, never the model, so the play
thread can step while the browser redraws the last frame.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from .. import dyad
from ..model import AllianceModel
from ..scenario import ScenarioError, load
from . import figures
from .stories import STORIES

ROOT = Path(__file__).resolve().parent.parent.parent
SCENARIO_DIR = ROOT / "scenarios"
SEED_MAX = 2**63 - 1  # as scenario files (the layout folds it into its own range)
REFRESH = 50  # steps between recomputations of the selected alliance's own map
PATH_KEEP = 600  # points of every alliance's (trust, openness) kept for the portrait

# The sandbox sliders: label, scenario key, min, max, step
SLIDERS = (
    ("Share of 'trust & we' companies", "mindset.abundance_share", 0.0, 1.0, 0.05),
    ("Patience horizon (steps)", "patience.horizon", 1, 300, 1),
    ("Differences per step", "differences.rate", 0.0, 1.0, 0.05),
    ("Organizations", "ecosystem.organizations", 2, 200, 1),
    ("Starting trust", "initial.trust", 0.0, 1.0, 0.05),
)


@dataclass(frozen=True)
class Action:
    label: str
    kind: str
    dose: float
    tag: str  # the marker drawn on the figures
    does: str  # what it does, in plain words


# The six steps of the turnaround practice, and a shock, as the model's interventions
SIX_STEPS = (
    Action("1 Share perspectives", "share_perspectives", 0.5, "1",
           "openness rises halfway to full and the two views move toward each other"),
    Action("2 Neutralize the problem", "neutralize", 1.0, "2",
           "the tension of avoided differences is released; a released problem may turn into "
           "an opportunity"),
    Action("3 Find the opportunity", "find_opportunity", 1.0, "3",
           "each tie may turn a problem into value (more likely with more trust)"),
    Action("4 Find new opportunities", "share_perspectives", 0.3, "4",
           "openness rises again, by a smaller step"),
    Action("5 Mindful of the spiral", "coach_mindset", 0.6, "5",
           "people's latent 'trust & we' rises; a mind may flip"),
    Action("6 Be patient", "set_patience", 200, "6",
           "the companies' patience horizon doubles (to at least 200 steps)"),
)
SHOCK = Action("Shock", "shock", 3.0, "S", "a crisis: a large difference hits every tie")
ACTIONS = {a.label: a for a in (*SIX_STEPS, SHOCK)}


def scenario_title(path: Path) -> str:
    """A story title from the scenario's first comment line ('# name.toml: a title.')."""
    try:
        first = path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return path.stem
    m = re.match(r"#\s*[\w.-]+\.toml\s*:\s*(.+?)\.?\s*$", first)
    if not m:
        return path.stem.replace("_", " ")
    t = m.group(1)
    return t[0].upper() + t[1:]


def scenario_choices() -> list[tuple[str, str]]:
    """(title, file name) for the picker, titles unique."""
    out, seen = [], set()
    for p in sorted(SCENARIO_DIR.glob("*.toml")):
        t = scenario_title(p)
        if t in seen:
            t = f"{t} ({p.stem})"
        seen.add(t)
        out.append((t, p.name))
    return out


@dataclass(frozen=True)
class View:
    """One frame: what the page draws, computed under the session lock."""

    version: int
    step: int
    scenario: str
    title: str
    network: str
    phase: str  # the live layer of the portrait
    phase_back: str  # its still layer (changes only with the pair's mindsets)
    series: str
    stats: dict
    monitors: dict
    selection: str
    portrait_note: str
    narration: tuple
    error: str | None
    story: dict | None
    can_intervene: bool
    params: dict
    controls: int


@dataclass
class Session:
    scenario: str = "baseline.toml"
    overrides: dict = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self):
        self.lock = threading.RLock()
        self.version = 0  # changes with every frame
        self.controls = 0  # changes when the sandbox controls must be redrawn
        self.narration: deque[str] = deque(maxlen=60)
        self.story: str | None = None
        self.chapter = 0
        self.answer: str | None = None
        self.revealed = False
        self.pending = 0  # steps still to run for the current chapter's reveal
        self._before: dict | None = None
        self._after_action: dict | None = None
        self._peak = 0.0
        if not self.reset():
            raise ScenarioError(self.scenario, "", self.error or "could not build the model")

    # --- lifecycle --------------------------------------------------------------------------
    def _build(self, scenario: str, overrides: dict) -> AllianceModel:
        sc = load(SCENARIO_DIR / scenario, [f"{k}={_toml_value(v)}" for k, v in overrides.items()])
        return AllianceModel(sc)

    def reset(self, scenario: str | None = None, overrides: dict | None = None) -> bool:
        """(Re)build the model; on bad input keep the running model and set `error`."""
        scenario = scenario or self.scenario
        overrides = dict(self.overrides if overrides is None else overrides)
        try:
            model = self._build(scenario, overrides)
        except (ScenarioError, OSError, ValueError) as e:
            self.error = _plain(e)
            self.version += 1
            return False
        with self.lock:
            self.controls += 1
            self.scenario, self.overrides, self.error = scenario, overrides, None
            self.model = model
            self.ui_log: list[dict] = []  # interventions applied here, for Export and markers
            self.narration.clear()
            s = model.state
            self._paths: deque = deque(maxlen=PATH_KEEP)
            self._path_n = 0
            self._add_point()
            self._series = {k: [] for k in ("mean_trust", "mean_openness", "share_spiral_in",
                                            "share_spiral_out")}
            self._sel_trust: list[float] = []
            self._steps: list[int] = []
            self._flow_cache: dict = {}
            self.xy = figures.scale_positions(self._layout(model.graph, model.scenario_spec.seed))
            act = np.flatnonzero(s.active)
            self.selected_al: int | None = int(act[0]) if len(act) else None
            self.selected_org: int | None = None
            self.story = None if not getattr(self, "_keep_story", False) else self.story
            self.say(f"New run: {self.title()}, {s.n_org} organizations, {s.n_al} alliances, "
                     f"seed {model.scenario_spec.seed}.")
            self.version += 1
        return True

    def _add_point(self) -> None:
        s = self.model.state
        self._paths.append((s.al_trust.astype(np.float32), s.al_open.astype(np.float32)))
        self._path_n += 1

    def title(self) -> str:
        return scenario_title(SCENARIO_DIR / self.scenario)

    @staticmethod
    def _layout(g: nx.Graph, seed: int) -> np.ndarray:
        """Positions computed once per reset; nodes stay still while the model plays."""
        n = g.number_of_nodes()
        if n <= 2:
            return np.array([[0.0, 0.0], [1.0, 0.0]])[:n]
        k = 1.6 / np.sqrt(n)  # spread hubs apart: less of a hairball at 200 organizations
        pos = nx.spring_layout(g, seed=seed % (2**31), k=k, iterations=60 if n > 100 else 100)
        return np.array([pos[i] for i in range(n)])

    def set_param(self, key: str, value) -> bool:
        """A sandbox control changed: rebuild with it, or keep everything and explain."""
        ov = {**self.overrides, key: value}
        ok = self.reset(self.scenario, ov)
        if not ok:
            why = (self.error or "").split("(--set): ", 1)[-1]  # the key's message, no path
            label = next((lb for lb, k, *_ in SLIDERS if k == key), key)
            self.error = (f"{label} = {value} was not used: {why}. The run goes on as "
                          f"before.")
            self.controls += 1  # the page redraws the controls with the values in use
        return ok

    def set_seed(self, text) -> bool:
        t = str(text).strip()
        if not t.isdigit() or len(t) > 19 or int(t) > SEED_MAX:
            self.error = (f"The seed must be a whole number from 0 to {SEED_MAX}; got {t!r}. "
                          f"Kept seed {self.model.scenario_spec.seed}.")
            self.version += 1
            return False
        return self.reset(self.scenario, {**self.overrides, "seed": int(t)})

    def pick_scenario(self, name: str) -> bool:
        self.story = None
        return self.reset(name, {})

    def clear_error(self) -> None:
        self.error = None
        self.version += 1

    # --- stepping ---------------------------------------------------------------------------
    def step(self, n: int = 1) -> None:
        with self.lock:
            m = self.model
            for _ in range(n):
                m.step()
                s = m.state
                self._add_point()
                lm = m.last_metrics
                for k, v in self._series.items():
                    v.append(float(lm[k]))
                self._steps.append(s.step)
                a = self.selected_al
                self._sel_trust.append(float(s.al_trust[a]) if a is not None else np.nan)
                self._narrate(m.last_events)
                if self.pending:
                    self.pending -= 1
                    ch = STORIES[self.story].chapters[self.chapter] if self.story else None
                    if self.selected_al is not None:
                        self._peak = max(self._peak, float(s.al_tension[self.selected_al]))
                    if ch is not None and ch.until is not None and self._before is not None \
                            and ch.until(self._before, self.monitors()):
                        self.pending = 0  # the moment the chapter is about has come
            self.version += 1

    def say(self, text: str) -> None:
        self.narration.appendleft(f"step {self.model.state.step}: {text}")

    def name(self, a: int) -> str:
        o = self.model.state.al_org[a]
        return f"alliance {int(o[0])}–{int(o[1])}"

    def _narrate(self, ev) -> None:
        """A few plain sentences per step, the selected alliance's first."""
        s = self.model.state
        lines: list[tuple[int, str]] = []
        for a in getattr(ev, "ended", ()):
            lines.append((0, f"{self.name(a)} ended: a side ran out of patience."))
        for a in getattr(ev, "blamed", ()):
            lines.append((1, f"Tension in {self.name(a)} blew up into blame; trust fell."))
        for i in getattr(ev, "to_scarcity", ()):
            lines.append((2, f"Someone at company {int(s.org[i])} fell into 'fear & me'."))
        for i in getattr(ev, "to_abundance", ()):
            lines.append((2, f"Someone at company {int(s.org[i])} came back to 'trust & we'."))
        for a in getattr(ev, "opportunities", ()):
            lines.append((3, f"{self.name(a)} talked a difference through: an opportunity."))
        for a in getattr(ev, "formed", ()):
            lines.append((3, f"A new alliance formed: {self.name(a)}."))
        for a in getattr(ev, "avoided", ()):
            lines.append((4, f"A difference in {self.name(a)} was avoided; tension grows."))
        sel = self.name(self.selected_al) if self.selected_al is not None else None
        mine = [t for _, t in lines if sel and sel + " " in t + " "]
        rest = [t for _, t in sorted(lines, key=lambda x: x[0]) if t not in mine]
        for text in reversed((mine + rest)[:3]):
            self.say(text)

    # --- selection --------------------------------------------------------------------------
    def select_alliance(self, a) -> None:
        with self.lock:
            a = int(a)
            if not 0 <= a < self.model.state.n_al:
                raise ValueError(f"no alliance {a}")
            self.selected_al, self.selected_org = a, None
            self._sel_trust = [np.nan] * len(self._steps)
            self.version += 1

    def select_org(self, o) -> None:
        with self.lock:
            o = int(o)
            s = self.model.state
            if not 0 <= o < s.n_org:
                raise ValueError(f"no organization {o}")
            self.selected_org = o
            mine = np.flatnonzero(s.active & ((s.al_org[:, 0] == o) | (s.al_org[:, 1] == o)))
            if len(mine):  # its most trusted active alliance becomes the selected one
                self.selected_al = int(mine[np.argmax(s.al_trust[mine])])
                self._sel_trust = [np.nan] * len(self._steps)
            self.version += 1

    # --- monitors ---------------------------------------------------------------------------
    def monitors(self, a: int | None = None) -> dict:
        """The numbers of one alliance, read from the state (read-only)."""
        s = self.model.state
        a = self.selected_al if a is None else a
        if a is None:
            return {}
        o0, o1 = (int(x) for x in s.al_org[a])
        people = [np.flatnonzero(s.org == o) for o in (o0, o1)]
        ab = [float(np.mean(s.m[p])) if len(p) else 0.0 for p in people]
        lat = [float(np.mean(s.a[p])) if len(p) else 0.0 for p in people]
        horizon = [int(s.horizon[o0]), int(s.horizon[o1])]
        unsat = getattr(s, "al_unsat", None)  # Model v2: dissatisfaction u per side in [0, 1]
        short = getattr(s, "al_short", None)  # Model v1: steps short of expectation
        ended = int(s.al_ended[a])
        reg = {1: "spiral in", -1: "spiral out"}.get(int(s.al_regime[a]), "undecided")
        trust, opn = float(s.al_trust[a]), float(s.al_open[a])
        return {
            "alliance": a, "name": self.name(a), "orgs": (o0, o1), "trust": trust,
            "openness": opn, "tension": float(s.al_tension[a]),
            "value": float(s.al_value[a].sum()), "perceived": float(s.al_perceived[a]),
            "blames": int(s.al_blames[a]), "opportunities": int(s.al_opps[a]),
            "regime": "ended" if ended >= 0 else reg, "ended": ended >= 0,
            "ended_at": ended if ended >= 0 else None,
            "age": (ended if ended >= 0 else s.step) - int(s.al_formed[a]),
            "abundance_a": lat[0], "abundance_b": lat[1],
            "mindset_a": "trust & we" if ab[0] >= 0.5 else "fear & me",
            "mindset_b": "trust & we" if ab[1] >= 0.5 else "fear & me",
            "horizon": horizon, "horizon_min": min(horizon),
            "unsat": ([float(unsat[a, k]) for k in (0, 1)] if unsat is not None else None),
            "patience_left": ([max(0, horizon[k] - int(short[a, k])) for k in (0, 1)]
                              if short is not None else None),
            "score": 0.5 * (trust + opn),
        }

    # --- interventions ----------------------------------------------------------------------
    def intervene(self, label: str, scope: str = "selected") -> str:
        """Apply one of the six steps (or the shock) to the selected alliance or to everyone;
        record it for Export; narrate what changed, in numbers."""
        act = ACTIONS[label]
        with self.lock:
            s = self.model.state
            dose = act.dose
            if act.kind == "set_patience":  # patience only ever grows: double it, at least 200
                who = (s.horizon[s.al_org[self.selected_al]]
                       if scope == "selected" and self.selected_al is not None else s.horizon)
                dose = float(min(10**6, max(act.dose, 2 * int(np.max(who)))))
            if scope == "selected":
                a = self.selected_al
                if a is None:
                    raise UserError("No alliance is selected: click one on the network.")
                if s.al_ended[a] >= 0:
                    raise UserError(f"{self.name(a)} ended at step {int(s.al_ended[a])}; "
                                    f"click a live alliance, or choose 'everyone'.")
                before = self.monitors(a)
                self.model.intervene(act.kind, dose=dose, alliances=[a])
                entry = {"step": s.step + 1, "kind": act.kind, "target": "all",
                         "dose": float(dose), "alliances": [a]}
                who = self.name(a)
            else:
                a = self.selected_al
                before = self.monitors(a) if a is not None else None
                mean_before = _eco(s)
                self.model.intervene(act.kind, "all", dose)
                entry = {"step": s.step + 1, "kind": act.kind, "target": "all",
                         "dose": float(dose)}
                who = "everyone"
            self.ui_log.append({**entry, "label": label, "tag": act.tag, "at": s.step})
            if scope == "selected":
                text = f"{label} ({who}): {describe_change(before, self.monitors(a))}"
            else:
                text = f"{label} ({who}): {describe_eco_change(mean_before, _eco(s))}"
            # the new point at once: the portrait and monitors show the effect before any step
            self._add_point()
            self.ui_log[-1]["pi"] = self._path_n - 1
            self.say(text)
            self.version += 1
            return text

    # --- stories ----------------------------------------------------------------------------
    def start_story(self, title: str) -> bool:
        st = STORIES[title]
        ok = self.reset(st.scenario, dict(st.overrides))
        if ok:
            self.story, self.chapter = title, 0
            self._enter_chapter()
        return ok

    def _enter_chapter(self) -> None:
        self.answer, self.revealed, self.pending = None, False, 0
        self._before = self.monitors()
        self.version += 1

    def predict(self, option: str | None) -> None:
        """The room's answer (or None to skip): run the chapter's action and steps."""
        if self.story is None or self.revealed or self.pending:
            return
        ch = STORIES[self.story].chapters[self.chapter]
        with self.lock:
            self.answer = option
            self._before = self.monitors()
            self._peak = self._before.get("tension", 0.0)
            if ch.action:
                self.intervene(ch.action, "selected")
            self._after_action = self.monitors()
            self.pending = ch.steps
            self.revealed = True
            self.version += 1

    def run_pending(self) -> None:
        """Run the reveal's remaining steps at once (the page plays them instead)."""
        while self.pending:
            self.step(1)

    def next_chapter(self) -> None:
        if self.story is None:
            return
        self.run_pending()
        if self.chapter + 1 < len(STORIES[self.story].chapters):
            self.chapter += 1
            self._enter_chapter()
        else:
            self.say(f"End of '{self.story}'. Sandbox: play, click, intervene freely.")
            self.story = None
            self.version += 1

    def end_story(self) -> None:
        self.story, self.pending = None, 0
        self.version += 1

    def reveal(self) -> str:
        """The reveal caption, written from the run's numbers (before vs now)."""
        if self.story is None or not self.revealed or self._before is None:
            return ""
        ch = STORIES[self.story].chapters[self.chapter]
        now = self.monitors()
        parts = [describe_change(self._before, now)]
        peak = getattr(self, "_peak", 0.0)
        if peak > max(self._before.get("tension", 0), now.get("tension", 0)) + 0.05:
            parts[0] = parts[0].rstrip(".") + f"; on the way, tension peaked at {peak:.2f}."
        if self.pending:
            return f"Running… {self.pending} steps to go. " + parts[0]
        if ch.check is not None:
            after = self._after_action if ch.check_at_once else now
            shown = ch.check(self._before, after)
            if shown:
                parts.append(f"Takeaway: {ch.takeaway}")
            else:
                parts.append("This run did not show the usual pattern this time (the numbers "
                             "above are what happened). Try another seed in the sandbox.")
        if self.answer:
            parts.insert(0, f"You predicted: {self.answer}.")
        return " ".join(parts)

    # --- views ------------------------------------------------------------------------------
    def _flow(self, a: int, combo: tuple[bool, bool]):
        """The portrait's map for alliance a: its own map (dyad.alliance_flow/alliance_basin:
        its people as they are now, a fresh start without tension) where the model offers it,
        else the map of a pair with these two mindsets. Cached; the alliance's own map is
        recomputed when its people change (a mind flips, patience changes, an intervention) or
        every REFRESH steps as latent mindsets drift."""
        s = self.model.state
        own = hasattr(dyad, "alliance_basin") and hasattr(dyad, "alliance_flow")
        if own:
            orgs = s.al_org[a]
            people = np.concatenate([np.flatnonzero(s.org == o) for o in orgs])
            key = ("own", a, tuple(s.m[people].tolist()), tuple(s.horizon[orgs].tolist()),
                   len(self.ui_log), s.step // REFRESH if s.al_ended[a] < 0 else -1)
        else:
            key = ("pair", combo)
        if key not in self._flow_cache:
            if len(self._flow_cache) > 8:
                self._flow_cache.clear()
            if own:
                xs, _, dT, dO = dyad.alliance_flow(s, self.model.p, a, n=13)
                bx, score = dyad.alliance_basin(s, self.model.p, a, n=25, steps=200)
            else:
                xs, _, dT, dO = dyad.vector_field(self.model.p, combo, n=13)
                bx, score = dyad.basin(self.model.p, combo, n=31, steps=250)
            back = figures.phase_back_svg(figures.phase_background(xs, dT, dO, bx, score))
            self._flow_cache[key] = (back, bx, score, xs, dT, dO, own)
        return self._flow_cache[key]

    def portrait(self) -> tuple[str, str]:
        """The phase portrait SVG and an honest note on it, computed from the numbers."""
        s = self.model.state
        a = self.selected_al
        self._phase_back = ""
        if a is None:
            return figures.phase_svg(np.empty(0), np.empty(0), [], False, False, False), ""
        mon = self.monitors(a)
        combo = (mon["mindset_a"] == "trust & we", mon["mindset_b"] == "trust & we")
        bg, bx, score, xs, dT, dO, own = self._flow(a, combo)
        tt = np.array([p[0][a] for p in self._paths if len(p[0]) > a], float)
        oo = np.array([p[1][a] for p in self._paths if len(p[1]) > a], float)
        end = int(s.al_ended[a])  # (an ended alliance keeps its final numbers: the path stops)
        marks = []
        first = self._path_n - len(self._paths)  # path index of the oldest point kept
        skipped = len(self._paths) - len(tt)  # points from before this alliance formed
        for e in self.ui_log:
            if e.get("alliances") in ([a], None):
                i = e["pi"] - first - skipped  # the point drawn right after it was applied
                if 0 <= i < len(tt):
                    marks.append((tt[i], oo[i], e["tag"]))
        self._phase_back = bg
        svg = figures.phase_svg(tt, oo, marks, end >= 0, bool(score.max() > 0.8),
                                bool(score.min() < 0.2))
        # the note: which side it is on, and whether it moves with the arrows
        side = _interp(bx, score, mon["trust"], mon["openness"])
        way = "spiral in" if side >= 0.5 else "spiral out"
        where = (f"in the {'green' if side >= 0.5 else 'red'} area: "
                 + (f"with these people as they are now and no tension, it would {way} from "
                    f"here" if own else f"a calm pair with these two mindsets would {way} from "
                    f"here"))
        note = [f"{mon['name']} ({mon['mindset_a']} / {mon['mindset_b']}) is {where}."]
        if len(tt) >= 3 and end < 0:
            mv = np.array([tt[-1] - tt[-3], oo[-1] - oo[-3]])
            fl = np.array([_interp(xs, dT, tt[-1], oo[-1]), _interp(xs, dO, tt[-1], oo[-1])])
            if np.hypot(*mv) > 0.01 and float(mv @ fl) < 0:
                why = []
                if mon["tension"] > 0.3:
                    why.append(f"tension {mon['tension']:.2f}")
                why.append("its tension, value and grievances differ from the fresh start drawn")
                note.append("It is moving against the arrows right now: " + "; ".join(why) + ".")
        if end >= 0:
            note = [f"{mon['name']} ended at step {end} (×)."]
        return svg, " ".join(note)

    def view(self) -> View:
        with self.lock:
            s = self.model.state
            m = self.model.last_metrics
            act = s.active
            faded = (s.al_ended >= 0) & (s.step - s.al_ended < 20)
            share = np.bincount(s.org, s.m.astype(float), s.n_org) / np.maximum(
                np.bincount(s.org, minlength=s.n_org), 1)
            deg = np.bincount(s.al_org[act].ravel(), minlength=s.n_org)
            tips = {int(a): f"{self.name(a)} · trust {s.al_trust[a]:.2f} · openness "
                            f"{s.al_open[a]:.2f} · tension {s.al_tension[a]:.2f}"
                            + (f" · ended at step {int(s.al_ended[a])}" if s.al_ended[a] >= 0
                               else "")
                    for a in np.flatnonzero(act | faded)}
            org_tips = [f"company {i} · {'trust & we' if share[i] >= 0.5 else 'fear & me'} · "
                        f"{int(deg[i])} alliances · patience {int(s.horizon[i])} steps"
                        for i in range(s.n_org)]
            net = figures.network_svg(self.xy, s.al_org, act, s.al_trust, faded, share >= 0.5,
                                      self.selected_al, self.selected_org, tips, org_tips)
            phase, note = self.portrait()
            steps = np.array(self._steps, float)
            lines = {"mean trust": self._series["mean_trust"],
                     "mean openness": self._series["mean_openness"],
                     "share spiral in": self._series["share_spiral_in"],
                     "share spiral out": self._series["share_spiral_out"],
                     "selected alliance trust": self._sel_trust}
            stride = max(1, len(steps) // 500)  # at most ~500 points per line
            lines = {k: np.asarray(v, float)[::stride] for k, v in lines.items()}
            marks = [(e["at"], e["tag"]) for e in self.ui_log]
            series = figures.series_svg(steps[::stride], lines, marks)
            mon = self.monitors()
            story = None
            if self.story is not None:
                st = STORIES[self.story]
                ch = st.chapters[self.chapter]
                story = {"title": st.title, "chapter": ch.title, "n": self.chapter + 1,
                         "blurb": st.blurb if self.chapter == 0 else "",
                         "of": len(st.chapters), "idea": ch.idea, "question": ch.question,
                         "options": list(ch.options), "revealed": self.revealed,
                         "pending": self.pending, "reveal": self.reveal(),
                         "last": self.chapter + 1 == len(st.chapters)}
            sel = "-"
            if mon:
                sel = mon["name"] + (f" — ended at step {mon['ended_at']}" if mon["ended"]
                                     else f" — {mon['regime']}")
            return View(
                version=self.version, step=s.step, scenario=self.scenario, title=self.title(),
                network=net, phase=phase, phase_back=self._phase_back, series=series,
                stats={"step": s.step, "mean trust": f"{m['mean_trust']:.2f}",
                       "spiral in": f"{m['share_spiral_in']:.0%}",
                       "spiral out": f"{m['share_spiral_out']:.0%}",
                       "alliances": int(m["alliances_active"])},
                monitors=mon, selection=sel, portrait_note=note,
                narration=tuple(list(self.narration)[:8]), error=self.error, story=story,
                can_intervene=bool(mon) and not mon["ended"],
                params={key: _get(self.model.scenario_spec.values, key)
                        for _, key, *_ in SLIDERS} | {"seed": self.model.scenario_spec.seed},
                controls=self.controls)

    # --- export -----------------------------------------------------------------------------
    def replay_scenario(self) -> str:
        """The run as a scenario file: its values, steps = now, and every intervention applied
        in the UI (before the scenario's own at the same step, as they were applied)."""
        with self.lock:
            sc = self.model.scenario_spec
            t = self.model.state.step
            vals = json.loads(json.dumps(sc.values))
            own = []
            for it in vals.get("interventions", []):
                if it["step"] > t:
                    continue
                if "until" in it:
                    it["until"] = min(it["until"], t)
                own.append(it)
            ui = [{k: e[k] for k in ("step", "kind", "target", "dose", "alliances") if k in e}
                  for e in self.ui_log if e["step"] <= t]
            pending = [e for e in self.ui_log if e["step"] > t]
            vals["interventions"] = ui + own
            vals["steps"] = max(1, t)
            vals["name"] = f"ui-{sc.name}"
            head = [f"# ui-{sc.name}.toml: a trainer UI session exported at step {t}.",
                    "#", f"# From {self.scenario}, seed {sc.seed}. Replay it exactly with",
                    f"#   spiral run ui-{sc.name}.toml",
                    f"# {len(ui)} intervention(s) applied in the UI are listed first under "
                    "[[interventions]] (step = the step before which they were applied)."]
            for e in pending:
                head.append(f"# not replayed (clicked after the last step): {e['label']}")
            return "\n".join(head) + "\n\n" + to_toml(vals)

    def export_zip(self) -> tuple[str, bytes]:
        """(file name, zip bytes): scenario to replay, Parquet/JSON/GraphML, run.png and the
        three UI pictures as SVG."""
        import tempfile

        from ..outputs import write_run

        with self.lock:
            sc = self.model.scenario_spec
            t = self.model.state.step
            name = f"ui-{sc.name}-seed{sc.seed}-step{t}"
            view = self.view()
            toml = self.replay_scenario()
            log = json.dumps([{k: v for k, v in e.items()} for e in self.ui_log], indent=1)
            with tempfile.TemporaryDirectory() as tmp:
                write_run(self.model, Path(tmp))
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                    for p in sorted(Path(tmp).iterdir()):
                        z.write(p, f"{name}/{p.name}")
                    z.writestr(f"{name}/ui-{sc.name}.toml", toml)
                    z.writestr(f"{name}/ui-interventions.json", log)
                    z.writestr(f"{name}/ui-network.svg", view.network)
                    z.writestr(f"{name}/ui-phase.svg", figures.compose(view.phase_back,
                                                                       view.phase)
                               if view.phase_back else view.phase)
                    z.writestr(f"{name}/ui-series.svg", view.series)
            self.say(f"Exported {name}.zip ({len(self.ui_log)} interventions recorded).")
            self.version += 1
            return name + ".zip", buf.getvalue()


class UserError(Exception):
    """A message for the room, not a bug."""


def _plain(e: Exception) -> str:
    return str(e) if str(e) else type(e).__name__


def _get(values: dict, key: str):
    sec, _, k = key.partition(".")
    return values[sec][k]


def _eco(s) -> dict:
    act = s.active
    return {"trust": float(s.al_trust[act].mean()) if act.any() else 0.0,
            "openness": float(s.al_open[act].mean()) if act.any() else 0.0,
            "tension": float(s.al_tension[act].mean()) if act.any() else 0.0,
            "abundance": float(s.a.mean()), "horizon": float(s.horizon.mean())}


def describe_eco_change(b: dict, a: dict) -> str:
    names = {"trust": "mean trust", "openness": "mean openness", "tension": "mean tension",
             "abundance": "mean latent 'trust & we'", "horizon": "mean patience horizon"}
    ch = [f"{names[k]} {b[k]:.2f} → {a[k]:.2f}" if k != "horizon" else
          f"{names[k]} {b[k]:.0f} → {a[k]:.0f} steps" for k in names if abs(a[k] - b[k]) > 0.005]
    return (", ".join(ch) + ".") if ch else "no measurable change right away."


def describe_change(b: dict, a: dict) -> str:
    """What changed in an alliance between two monitor readings, in numbers and plain words."""
    if not b or not a:
        return ""
    out = []
    for k in ("trust", "openness", "tension"):
        d = a[k] - b[k]
        out.append(f"{k} {'rose' if d > 0 else 'fell'} {b[k]:.2f} → {a[k]:.2f}"
                   if abs(d) >= 0.005 else f"{k} stayed at {a[k]:.2f}")
    if a["value"] - b["value"] >= 0.005:
        out.append(f"value created +{a['value'] - b['value']:.2f}")
    if a["blames"] > b["blames"]:
        out.append(f"{a['blames'] - b['blames']}× blame")
    if a["opportunities"] > b["opportunities"]:
        out.append(f"{a['opportunities'] - b['opportunities']}× opportunity found")
    for side, who in (("a", a["orgs"][0]), ("b", a["orgs"][1])):
        if a[f"mindset_{side}"] != b[f"mindset_{side}"]:
            out.append(f"company {who} now thinks '{a[f'mindset_{side}']}'")
        elif abs(a[f"abundance_{side}"] - b[f"abundance_{side}"]) > 0.1:
            out.append(f"company {who}'s 'trust & we' {b[f'abundance_{side}']:.2f} → "
                       f"{a[f'abundance_{side}']:.2f}")
    if a["horizon"] != b["horizon"]:
        out.append(f"patience horizon {'/'.join(map(str, b['horizon']))} → "
                   f"{'/'.join(map(str, a['horizon']))} steps")
    if a["ended"] and not b["ended"]:
        out.append(f"it ended at step {a['ended_at']}")
    elif a["regime"] != b["regime"]:
        out.append(f"now {a['regime']}")
    return "; ".join(out) + "."


def _interp(xs: np.ndarray, grid: np.ndarray, t: float, o: float) -> float:
    """Bilinear value of grid (rows = openness) at (t, o)."""
    n = len(xs) - 1
    ft, fo = np.clip(t, 0, 1) * n, np.clip(o, 0, 1) * n
    c, r = min(int(ft), n - 1), min(int(fo), n - 1)
    u, v = ft - c, fo - r
    return float((1 - u) * (1 - v) * grid[r, c] + u * (1 - v) * grid[r, c + 1]
                 + (1 - u) * v * grid[r + 1, c] + u * v * grid[r + 1, c + 1])


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(values: dict) -> str:
    """A resolved scenario dict as TOML: scalars first, then tables, then [[interventions]]."""
    lines = []
    for k, v in values.items():
        if not isinstance(v, dict) and k != "interventions":
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in values.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    for it in values.get("interventions", []):
        lines.append("\n[[interventions]]")
        lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in it.items()]
    return "\n".join(lines) + "\n"


def bench_ui(organizations: int = 200, steps: int = 20) -> dict:
    """Server side of one Step: the model step plus building the frame (three SVGs, monitors)."""
    sess = Session()
    sess.reset("baseline.toml", {"ecosystem.organizations": organizations})
    sess.step(5)
    sess.view()  # fills the portrait's cache (once per reset)
    times, sizes = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        sess.step(1)
        v = sess.view()
        times.append(time.perf_counter() - t0)
        sizes.append(len(v.network) + len(v.phase) + len(v.series))
    return {"organizations": organizations, "server_ms_median": 1000 * float(np.median(times)),
            "server_ms_max": 1000 * float(np.max(times)), "frame_bytes": int(np.mean(sizes))}
