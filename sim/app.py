"""The trainer UI: `spiral ui` serves this Solara page.

A thin layer over sim.ui_session.Session (which drives the one Model API). Every callback runs
through `guarded`, so an error shows a message in the page and the server keeps serving.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

import solara

from . import ui_session
from .ui_session import SHOCK, SIX_STEPS, SLIDERS, STORIES, Session

if os.environ.get("SPIRAL_SCENARIOS"):  # spiral ui --scenarios DIR
    ui_session.SCENARIO_DIR = Path(os.environ["SPIRAL_SCENARIOS"])

FIRST = os.environ.get("SPIRAL_UI_SCENARIO", "baseline.toml")


@solara.component
def Plot(make, tick: int, name: str):
    fig = solara.use_memo(make, dependencies=[tick])
    with solara.Div(classes=[f"spiral-{name}"]):
        solara.FigureMatplotlib(fig, dependencies=[tick], format="png")


@solara.component
def Page():
    sess: Session = solara.use_memo(lambda: Session(scenario=FIRST), dependencies=[])
    tick = solara.use_reactive(0)
    playing = solara.use_reactive(False)
    speed = solara.use_reactive(5)  # steps per second while playing
    scope = solara.use_reactive("selected alliance")
    _, rerender = solara.use_state(0)

    def refresh():
        tick.value += 1
        rerender(tick.value)

    def guarded(fn):
        """Run a callback; on any error show it in the page instead of failing the session."""
        def run(*args):
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - the page must survive any callback error
                traceback.print_exc()
                sess.error = f"Something went wrong: {type(e).__name__}: {e}"
                playing.value = False
            refresh()
        return run

    def loop():
        while playing.value:
            t0 = time.perf_counter()
            guarded(sess.step)(1)
            time.sleep(max(0.0, 1.0 / speed.value - (time.perf_counter() - t0)))

    solara.lab.use_task(loop, dependencies=[playing.value], prefer_threaded=True)

    values = sess.model.scenario_spec.values

    def current(key):
        sec, _, k = key.partition(".")
        return values[sec][k]

    def on_slider(key, value):
        sess.set_override(key, value)
        guarded(sess.reset)()

    solara.Title("alliance-spiral")
    with solara.Columns([1, 3], style={"padding": "8px"}):
        # --- controls -------------------------------------------------------------------
        with solara.Column(style={"min-width": "300px"}):
            solara.Markdown("## alliance-spiral")
            if sess.error:
                solara.Error(sess.error, classes=["spiral-error"])
            solara.Select("Scenario", values=ui_session.scenario_files(), value=sess.scenario,
                          on_value=guarded(lambda v: sess.reset(v, {})))
            solara.InputText("Seed", value=str(values["seed"]),
                             on_value=guarded(sess.set_seed), continuous_update=False)
            with solara.Row():
                solara.Button("Reset", on_click=guarded(sess.reset), color="primary",
                              classes=["spiral-reset"])
                solara.Button("Pause" if playing.value else "Play", color="primary",
                              on_click=lambda: playing.set(not playing.value),
                              classes=["spiral-play"])
                solara.Button("Step", on_click=guarded(lambda: sess.step(1)),
                              disabled=playing.value, classes=["spiral-step"])
            solara.SliderInt("Speed (steps per second)", value=speed, min=1, max=20)
            for label, key, lo, hi, step in SLIDERS:
                if isinstance(step, int):
                    solara.SliderInt(f"{label}: {int(current(key))}", value=int(current(key)),
                                     min=lo, max=hi, step=step,
                                     on_value=lambda v, k=key: on_slider(k, v))
                else:
                    solara.SliderFloat(f"{label}: {float(current(key)):.2f}",
                                       value=float(current(key)), min=lo, max=hi, step=step,
                                       on_value=lambda v, k=key: on_slider(k, v))
            solara.Markdown("### Stories")
            with solara.Row():
                for title in STORIES:
                    solara.Button(title, on_click=guarded(lambda t=title: sess.start_story(t)),
                                  outlined=True, classes=["spiral-story"])
            if sess.caption:
                solara.Info(sess.caption, classes=["spiral-caption"])
                solara.Button("Next", on_click=guarded(sess.next_page), color="primary",
                              classes=["spiral-next"])
            solara.Markdown("### Interventions")
            solara.ToggleButtonsSingle(value=scope, values=["selected alliance",
                                                            "whole ecosystem"])
            for label, *_ in (*SIX_STEPS, SHOCK):
                solara.Button(label, outlined=True, classes=["spiral-intervene"],
                              on_click=guarded(lambda lb=label: sess.intervene(
                                  lb, "selected" if scope.value == "selected alliance"
                                  else "all")))
            solara.Button("Export run", on_click=guarded(lambda: sess.export()),
                          classes=["spiral-export"])
        # --- views ----------------------------------------------------------------------
        with solara.Column():
            st = sess.stats()
            solara.Markdown(" · ".join(f"**{k}** {v}" for k, v in st.items()),
                            style={"font-size": "16px"})
            choices = dict(sess.alliance_choices())
            if choices:
                label = next((k for k, v in choices.items() if v == sess.selected),
                             next(iter(choices)))
                solara.Select("Selected alliance", values=list(choices), value=label,
                              on_value=guarded(lambda lb: sess.select(choices[lb])))
            with solara.Columns([1, 1]):
                Plot(sess.network_figure, tick.value, "network")
                Plot(sess.phase_figure, tick.value, "phase")
            with solara.Columns([3, 2]):
                Plot(sess.series_figure, tick.value, "series")
                with solara.Column(classes=["spiral-narration"]):
                    solara.Markdown("### What just happened")
                    solara.Markdown("\n".join(f"- {line}" for line in list(sess.narration)[:12]))
