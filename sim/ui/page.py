"""The trainer UI page: `spiral ui` serves this module with Solara.

A thin layer over sim.ui.session.Session: one Session (one model) per browser session. The page
renders only immutable Views that the session builds under its lock, so drawing never reads the
model while it changes. Play runs on one thread per session: it steps at the chosen rate and
publishes a View at most FPS times a second (render interval decoupled from play interval, as
in Mesa's SolaraViz); it stops when the page closes or disconnects for DISCONNECT_S seconds,
when the kernel closes, or on an error. Every callback runs through `guard`, so a failure shows
a message and leaves the app usable.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from pathlib import Path

import solara

from . import session as ui_session
from .session import ACTIONS, SHOCK, SIX_STEPS, SLIDERS, Session, UserError, View
from .stories import STORIES

if os.environ.get("SPIRAL_SCENARIOS"):  # spiral ui --scenarios DIR
    ui_session.SCENARIO_DIR = Path(os.environ["SPIRAL_SCENARIOS"])

FIRST = os.environ.get("SPIRAL_UI_SCENARIO", "baseline.toml")
FPS = 20.0  # at most this many redraws per second while playing
MAX_SPEED = 40  # steps per second
DISCONNECT_S = 10.0
HERE = Path(__file__).resolve().parent

CSS = (HERE / "page.css").read_text(encoding="utf-8")


@solara.component_vue(str(HERE / "svgview.vue"), vuetify=False)
def SvgView(svg: str, kind: str, under: str = "", event_select=None):
    pass


@solara.component_vue(str(HERE / "fullscreen.vue"))
def FullScreenButton(label: str, event_present=None):
    pass


def _pages_connected(ctx) -> bool:
    try:
        from solara.server.kernel_context import PageStatus

        return any(st == PageStatus.CONNECTED for st in ctx.page_status.values())
    except Exception:  # noqa: BLE001 - outside a server (tests): assume connected
        return True


@solara.component
def Layout(children=[]):  # noqa: B006 - Solara's signature; no app bar, no sidebar
    solara.Column(children=children, style={"padding": "0", "margin": "0"})


@solara.component
def Page():
    sess: Session = solara.use_memo(lambda: _new_session(), dependencies=[])
    first = solara.use_memo(sess.view, dependencies=[])
    # the frame: only the components that read frame.value redraw when it changes
    frame = solara.use_reactive(first)
    playing = solara.use_reactive(False)
    speed = solara.use_reactive(10)
    scope = solara.use_reactive("selected")
    intro = solara.use_reactive(True)
    info = solara.use_reactive(False)
    settings = solara.use_reactive(False)
    present = solara.use_reactive(False)

    def publish():
        frame.set(sess.view())

    def guard(fn, what="that"):
        def run(*args):
            try:
                fn(*args)
            except UserError as e:
                sess.error = str(e)
            except Exception as e:  # noqa: BLE001 - the page must survive any callback error
                traceback.print_exc()
                sess.error = (f"Something went wrong with {what} ({type(e).__name__}: {e}). "
                              f"The app keeps running; Reset starts the run again.")
                playing.set(False)
            try:
                publish()
            except Exception:  # noqa: BLE001
                traceback.print_exc()
        return run

    def loop(cancel: threading.Event):
        if not playing.value:
            return
        try:
            closed = solara.kernel_closed_event()
            from solara.server.kernel_context import get_current_context

            ctx = get_current_context()
        except Exception:  # noqa: BLE001 - no server context (tests)
            closed, ctx = threading.Event(), None
        gone = None
        next_t = next_draw = time.perf_counter()
        while not cancel.is_set() and not closed.is_set():
            now = time.perf_counter()
            if ctx is not None and not _pages_connected(ctx):
                gone = gone or now
                if now - gone > DISCONNECT_S:  # nobody is watching: stop stepping
                    try:
                        playing.set(False)
                    except Exception:  # noqa: BLE001 - the page may be gone for good
                        pass
                    return
            else:
                gone = None
            try:
                was_pending = sess.pending > 0
                sess.step(1)
                if was_pending and not sess.pending:
                    publish()
                    playing.set(False)  # the reveal has run: stop for the room to talk
                    return
                if time.perf_counter() >= next_draw:  # a fixed redraw schedule
                    publish()
                    next_draw = max(next_draw + 1.0 / FPS, time.perf_counter() - 0.5 / FPS)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                sess.error = f"Play stopped: {type(e).__name__}: {e}. Reset starts again."
                try:
                    publish()
                finally:
                    playing.set(False)
                return
            next_t += 1.0 / max(1, min(MAX_SPEED, speed.value))
            wait = next_t - time.perf_counter()
            if wait < -0.5:  # fell behind (a slow machine): do not try to catch up
                next_t, wait = time.perf_counter(), 0.0
            cancel.wait(max(0.0, wait))
        if not closed.is_set():
            publish()

    solara.use_thread(loop, dependencies=[playing.value], intrusive_cancel=False)

    def on_select(payload):
        if isinstance(payload, dict) and "al" in payload:
            sess.select_alliance(payload["al"])
        elif isinstance(payload, dict) and "org" in payload:
            sess.select_org(payload["org"])

    def start_story(title):
        playing.set(False)
        intro.set(False)
        sess.start_story(title)

    start_story = guard(start_story, "the story")

    def predict(option):
        sess.predict(option)
        if sess.pending:
            playing.set(True)

    solara.Style(CSS)
    solara.Title("alliance-spiral: the trust spiral")
    root_classes = ["spiral-app"] + (["spiral-present"] if present.value else [])
    with solara.Div(classes=root_classes):
        _topbar(sess, playing, speed, info, settings, present, start_story, guard)
        LeftColumn(frame, sess, guard, predict, playing, scope)
        Pictures(frame, guard(on_select, "the selection"))
        if settings.value:
            SettingsPanel(frame, sess, guard, settings, playing)
        if info.value:
            _info(info)
        if intro.value:
            _intro(intro, start_story)


def _drawing_failed(e: Exception) -> None:
    traceback.print_exc()
    solara.Error(f"Could not draw this part ({type(e).__name__}: {e}). The app keeps "
                 f"running; Reset starts the run again.")


@solara.component
def LeftColumn(frame, sess, guard, predict, playing, scope):
    v: View = frame.value
    with solara.Div(classes=["spiral-left"]):
        try:
            _story_card(v, sess, guard, predict, playing)
            _interventions(v, sess, guard, scope)
            _monitors(v)
        except Exception as e:  # noqa: BLE001 - a drawing failure must not take the page down
            _drawing_failed(e)


@solara.component
def Pictures(frame, on_select):
    v: View = frame.value
    with solara.Div(classes=["spiral-main"]):
        try:
            with solara.Div(classes=["spiral-pictures"]):
                with solara.Div(classes=["spiral-panel", "spiral-net-panel"]):
                    solara.HTML(tag="div", unsafe_innerHTML=" · ".join(
                        f"<b>{k}</b> {val}" for k, val in v.stats.items()),
                        classes=["spiral-h", "spiral-stats"])
                    SvgView(svg=v.network, kind="network", event_select=on_select)
                    _key(v.title)
                with solara.Div(classes=["spiral-panel", "spiral-phase-panel"]):
                    solara.HTML(tag="div", unsafe_innerHTML=(
                        f"<b>Selected:</b> {_esc(v.selection)}"), classes=["spiral-h"])
                    SvgView(svg=v.phase, under=v.phase_back, kind="phase", event_select=None)
                    solara.HTML(tag="div", unsafe_innerHTML=_esc(v.portrait_note),
                                classes=["spiral-note"])
            with solara.Div(classes=["spiral-bottom"]):
                with solara.Div(classes=["spiral-panel", "spiral-series-panel"]):
                    solara.HTML(tag="div", unsafe_innerHTML=_series_legend(),
                                classes=["spiral-h"])
                    SvgView(svg=v.series, kind="series", event_select=None)
                with solara.Div(classes=["spiral-panel", "spiral-narration"]):
                    solara.HTML(tag="div", unsafe_innerHTML="<b>What just happened</b>",
                                classes=["spiral-h"])
                    solara.HTML(tag="ul", unsafe_innerHTML="".join(
                        f"<li>{_esc(line)}</li>" for line in v.narration))
        except Exception as e:  # noqa: BLE001
            _drawing_failed(e)


def _new_session() -> Session:
    try:
        return Session(scenario=FIRST)
    except Exception:  # noqa: BLE001 - a broken first scenario: fall back to the defaults
        traceback.print_exc()
        s = Session(scenario="baseline.toml")
        s.error = f"Could not open {FIRST}; showing the baseline instead."
        return s


def _esc(text: str) -> str:
    from html import escape

    return escape(str(text))


def _topbar(sess, playing, speed, info, settings, present, start_story, guard):
    with solara.Div(classes=["spiral-top"]):
        solara.HTML(tag="div", unsafe_innerHTML="<b>alliance-spiral</b>",
                    classes=["spiral-brand"])
        solara.Button("Pause" if playing.value else "Play", color="primary",
                      on_click=lambda: playing.set(not playing.value), classes=["spiral-play"])
        solara.Button("Step", on_click=guard(lambda: sess.step(1), "Step"),
                      disabled=playing.value, classes=["spiral-step"])
        solara.Button("Reset", on_click=guard(lambda: (playing.set(False), sess.reset()),
                                              "Reset"), classes=["spiral-reset"])
        with solara.Div(classes=["spiral-speed"]):
            solara.SliderInt("steps/s", value=speed, min=1, max=MAX_SPEED)
        with solara.Div(classes=["spiral-topright"]):
            for title in STORIES:
                solara.Button(title, outlined=True, classes=["spiral-story"],
                              on_click=lambda t=title: start_story(t))
            solara.Button("Sandbox", outlined=True, classes=["spiral-settings"],
                          on_click=lambda: settings.set(not settings.value))
            solara.Button("Info", outlined=True, classes=["spiral-info"],
                          on_click=lambda: info.set(True))
            FullScreenButton(label="Exit full screen" if present.value else "Present",
                             event_present=lambda on: present.set(bool(on)))
            fname = f"ui-{sess.scenario.removesuffix('.toml')}.zip"

            def data():
                try:
                    return sess.export_zip()[1]
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    sess.error = f"Export failed: {type(e).__name__}: {e}"
                    return b""

            with solara.FileDownload(data, filename=fname, mime_type="application/zip"):
                solara.Button("Export", outlined=True, classes=["spiral-export"])


def _story_card(v, sess, guard, predict, playing):
    with solara.Div(classes=["spiral-panel", "spiral-story-card"]):
        if v.error:
            with solara.Div(classes=["spiral-error"]):
                solara.HTML(tag="div", unsafe_innerHTML=_esc(v.error))
                solara.Button("OK", small=True, text=True, on_click=guard(sess.clear_error))
        st = v.story
        if st is None:
            solara.HTML(tag="div", unsafe_innerHTML=(
                "<b>Sandbox.</b> Play, click an alliance, try the six steps. Pick a story at the "
                "top for a guided tour."), classes=["spiral-caption"])
            return
        solara.HTML(tag="div", unsafe_innerHTML=(
            f"<b>{_esc(st['title'])}</b> · chapter {st['n']} of {st['of']}: "
            f"{_esc(st['chapter'])}"), classes=["spiral-h"])
        solara.HTML(tag="div", unsafe_innerHTML=_esc(f"{st['blurb']} {st['idea']}".strip()),
                    classes=["spiral-caption"])
        if not st["revealed"]:
            solara.HTML(tag="div", unsafe_innerHTML=f"<b>Predict:</b> {_esc(st['question'])}",
                        classes=["spiral-question"])
            with solara.Row(classes=["spiral-options"]):
                for opt in st["options"]:
                    solara.Button(opt, color="primary", outlined=True, classes=["spiral-predict"],
                                  on_click=guard(lambda o=opt: predict(o), "the prediction"))
        else:
            solara.HTML(tag="div", unsafe_innerHTML=_esc(st["reveal"]),
                        classes=["spiral-caption", "spiral-reveal"])
            if not st["pending"]:
                solara.Button("Finish → sandbox" if st["last"] else "Next", color="primary",
                              classes=["spiral-next"],
                              on_click=guard(lambda: (playing.set(False), sess.next_chapter()),
                                             "Next"))


def _interventions(v, sess, guard, scope):
    with solara.Div(classes=["spiral-panel", "spiral-actions"]):
        with solara.Row(classes=["spiral-scope"]):
            solara.HTML(tag="b", unsafe_innerHTML="Apply to")
            solara.ToggleButtonsSingle(value=scope, values=["selected", "everyone"])
        with solara.Div(classes=["spiral-grid"]):
            for a in (*SIX_STEPS, SHOCK):
                disabled = scope.value == "selected" and not v.can_intervene
                solara.Button(a.label, outlined=True, classes=["spiral-intervene"],
                              disabled=disabled,
                              on_click=guard(lambda lb=a.label: sess.intervene(lb, scope.value),
                                             a.label))
        if scope.value == "selected" and not v.can_intervene and v.monitors:
            solara.HTML(tag="div", unsafe_innerHTML=(
                f"{_esc(v.monitors['name'])} ended at step {v.monitors['ended_at']}: click a "
                f"live alliance, or apply to everyone."), classes=["spiral-note"])


def _monitors(v):
    m = v.monitors
    with solara.Div(classes=["spiral-panel", "spiral-monitors"]):
        if not m:
            solara.HTML(tag="div", unsafe_innerHTML="No alliance selected.")
            return
        o0, o1 = m["orgs"]
        cells = [("trust", f"{m['trust']:.2f}"), ("openness", f"{m['openness']:.2f}"),
                 ("tension", f"{m['tension']:.2f}"), ("value", f"{m['value']:.2f}")]
        html = "".join(f"<div>{k} <b>{val}</b></div>" for k, val in cells)
        for o, mind, k in ((o0, m["mindset_a"], 0), (o1, m["mindset_b"], 1)):
            if m.get("unsat") is not None:
                pat = (f"fed up <b>{m['unsat'][k]:.0%}</b> · patience {m['horizon'][k]} "
                       f"steps")
            elif m.get("patience_left") is not None:
                pat = (f"patience left <b>{m['patience_left'][k]}</b> of {m['horizon'][k]} "
                       f"steps")
            else:
                pat = f"patience {m['horizon'][k]} steps"
            html += f"<div class='full'>company {o}: <b>{_esc(mind)}</b> · {pat}</div>"
        status = f"ended at step {m['ended_at']}" if m["ended"] else m["regime"]
        html += f"<div class='full'>status <b>{_esc(status)}</b> · age {m['age']} steps</div>"
        solara.HTML(tag="div", unsafe_innerHTML=html, classes=["spiral-montable"])


def _key(title: str):
    solara.HTML(tag="div", classes=["spiral-key"], unsafe_innerHTML=(
        f"<b>{_esc(title)}</b> — click a line (alliance) or a dot (company).<br>"
        "<span class='dot' style='background:#1a9850'></span> company thinks 'trust &amp; we' "
        "<span class='dot' style='background:#d73027'></span> 'fear &amp; me' "
        "<span class='bar' style='background:linear-gradient(90deg,#d73027,#e8b400,#1a9850)'>"
        "</span> alliance trust low → high (thicker = more) "
        "<span class='dash'></span> ended lately "
        "<span class='ring'></span> selected"))


def _series_legend() -> str:
    items = [("#1f5fbf", "solid", "mean trust"), ("#8e44ad", "dashed", "mean openness"),
             ("#1a9850", "solid", "share spiral in"), ("#d73027", "solid", "share spiral out"),
             ("#1f5fbf", "dotted", "selected alliance trust")]
    return "<b>Over time</b> " + " ".join(
        f"<span class='sw' style='border-top:3px {st} {c}'></span>{t}" for c, st, t in items) \
        + " <span class='sw' style='border-top:2px dashed #111'></span>intervention"


@solara.component
def SeedInput(seed: int, sess, guard, playing):
    text = solara.use_reactive(str(seed))

    def commit(t):
        if str(t).strip() == str(sess.model.scenario_spec.seed):
            return  # unchanged (or the field being put back after a rejected value)
        playing.set(False)
        try:
            sess.set_seed(t)
        finally:  # a rejected value is replaced by the seed in use
            text.set(str(sess.model.scenario_spec.seed))

    solara.InputText("Seed", value=text, continuous_update=False,
                     on_value=guard(commit, "the seed"))


@solara.component
def SandboxSlider(label, key, lo, hi, step, value, sess, guard, playing):
    """A slider that starts a new run; a rejected value snaps back to the one in use."""
    whole = isinstance(step, int)
    cast = int if whole else (lambda x: round(float(x), 4))
    pos = solara.use_reactive(cast(value))  # follows `value` when the run changes

    def in_use():
        return cast(ui_session._get(sess.model.scenario_spec.values, key))

    def commit(x):
        if cast(x) == in_use():
            return  # unchanged, or the slider being put back after a rejected value
        playing.set(False)
        try:
            sess.set_param(key, cast(x))
        finally:
            pos.set(in_use())

    text = f"{label}: {int(value)}" if whole else f"{label}: {float(value):.2f}"
    if whole:
        solara.SliderInt(text, value=pos, min=lo, max=hi, step=step,
                         on_value=guard(commit, label))
    else:
        solara.SliderFloat(text, value=pos, min=lo, max=hi, step=step,
                           on_value=guard(commit, label))


@solara.component
def SettingsPanel(frame, sess, guard, settings, playing):
    v: View = frame.value
    with solara.Div(classes=["spiral-overlay", "spiral-settings-panel"]):
        solara.HTML(tag="h2", unsafe_innerHTML="Sandbox settings (a change starts a new run)")
        titles = solara.use_memo(lambda: dict(ui_session.scenario_choices()), dependencies=[])
        current = next((t for t, f in titles.items() if f == v.scenario), v.scenario)
        solara.Select("Scenario", values=list(titles), value=current,
                      on_value=guard(lambda t: (playing.set(False),
                                                sess.pick_scenario(titles.get(t, t))),
                                     "the scenario"))
        SeedInput(v.params["seed"], sess, guard, playing)
        for label, key, lo, hi, step in SLIDERS:
            SandboxSlider(label, key, lo, hi, step, v.params[key], sess, guard, playing)
        solara.Button("Close", color="primary", on_click=lambda: settings.set(False),
                      classes=["spiral-close"])


INFO = """
<h2>What is it?</h2>
<p>A simulation of strategic alliances between companies. Each line is an alliance; each dot is a
company. On every alliance, people trust each other more or less and talk more or less openly.
Trust and openness feed each other: up together (the <b>spiral in</b>) or down together (the
<b>spiral out</b>).</p>
<h2>How it works</h2>
<p>People think either <b>'trust &amp; we'</b> (grow the pie together, talk problems through, see
every kind of value, be patient) or <b>'fear &amp; me'</b> (divide a fixed pie, avoid problems,
count only revenue, be impatient). Differences come up at random. Talked through, they can become
opportunities and value; avoided, they pile up as tension until it blows up into blame. A company
that sees too little value for longer than its patience ends the alliance. Mindsets shift slowly
with good experience and fast with bad.</p>
<h2>Things to notice</h2>
<ul><li>The phase portrait (right) is the selected alliance's own map: with its people as they
are now and no tension, the green area holds the starts that spiral in, the red area those that
spiral out, and the arrows show the next step. A real alliance also carries tension and
grievances, so it can move against the arrows; the note under the picture says when.</li>
<li>Falling is fast; climbing back is slow.</li>
<li>Mindsets move: watch the dots change colour as experience accumulates.</li></ul>
<h2>Things to try</h2>
<ul><li>Select a spiraled-out alliance and apply the six steps in order, then press Play.</li>
<li>Shock everyone, then watch which alliances recover.</li>
<li>In the sandbox, lower the share of 'trust &amp; we' companies until the ecosystem tips.</li>
<li>Export: a zip with the run's data, the pictures and a scenario file that replays this session
with <code>spiral run</code>.</li></ul>
"""

INTRO = """
<h1>The trust spiral</h1>
<p class='lead'>Alliances between companies live or die on trust and open talk — and each one feeds
the other.</p>
<div class='spiral-two'>
<div class='we'><h2>'trust &amp; we'</h2><ul><li>grow the pie together</li><li>talk problems
through</li><li>see every kind of value</li><li>be patient</li></ul></div>
<div class='me'><h2>'fear &amp; me'</h2><ul><li>divide a fixed pie</li><li>avoid problems</li>
<li>count only revenue</li><li>want results now</li></ul></div></div>
<p><b>Spiral in:</b> shared views → trust → open talk → opportunities → value → more trust.<br>
<b>Spiral out:</b> differences avoided → tension → blame → less trust → less talk → no value.</p>
"""


def _info(info):
    with solara.Div(classes=["spiral-overlay", "spiral-info-panel"]):
        solara.HTML(tag="div", unsafe_innerHTML=INFO)
        solara.Button("Close", color="primary", on_click=lambda: info.set(False),
                      classes=["spiral-close"])


def _intro(intro, start_story):
    with solara.Div(classes=["spiral-overlay", "spiral-intro"]):
        solara.HTML(tag="div", unsafe_innerHTML=INTRO)
        with solara.Row(classes=["spiral-intro-buttons"]):
            for title in STORIES:
                solara.Button(f"Story: {title}", color="primary",
                              on_click=lambda t=title: start_story(t),
                              classes=["spiral-intro-story"])
            solara.Button("Sandbox", outlined=True, on_click=lambda: intro.set(False),
                          classes=["spiral-intro-sandbox"])


__all__ = ["Page", "Layout", "ACTIONS"]
