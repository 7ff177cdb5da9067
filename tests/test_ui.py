"""The trainer UI: the session controller and the Solara page's components."""

from __future__ import annotations

import ipyvuetify as v
import numpy as np
import pytest
import solara

from sim import app, ui_session
from sim.ui_session import SIX_STEPS, STORIES, Session, bench_ui


def test_session_step_narration_and_figures():
    s = Session()
    assert s.model.state.step == 0
    s.step(25)
    assert s.model.state.step == 25
    assert s.narration and s.narration[0].startswith("step 25") or "step 2" in s.narration[0]
    for make in (s.network_figure, s.phase_figure, s.series_figure):
        fig = make()
        assert fig.axes
    st = s.stats()
    assert st["step"] == 25


def test_session_layout_is_computed_once_per_reset():
    s = Session()
    pos = s.pos.copy()
    s.step(10)
    assert np.array_equal(s.pos, pos)  # kept still while the model plays
    s.reset()
    assert np.array_equal(s.pos, pos)  # same graph and seed: same layout


def test_intervention_on_selected_alliance_changes_its_trust_path():
    s = Session()
    s.reset("turnaround_left_alone.toml", {"seed": 2})
    s.step(40)
    a = s.selected
    t_before = s.model.state.al_trust[a]
    s.intervene("1 Share perspectives", "selected")
    assert "1 Share perspectives" in s.narration[0]
    assert s.model.state.al_open[a] > 0.4  # openness jumped
    s.step(5)
    assert s.model.state.al_trust[a] > t_before


def test_bad_input_sets_a_message_and_keeps_the_model(tmp_path, monkeypatch):
    s = Session()
    model = s.model
    assert not s.set_seed("abc")
    assert "seed: expected a whole number" in s.error and s.model is model
    (tmp_path / "broken.toml").write_text("[mindset]\nabundance_share = 3\n")
    monkeypatch.setattr(ui_session, "SCENARIO_DIR", tmp_path)
    assert not s.reset("broken.toml", {})
    assert "mindset.abundance_share: expected a number" in s.error and s.model is model


def test_stories_run_through():
    s = Session()
    for title, story in STORIES.items():
        s.start_story(title)
        pages = 1
        while s.story:
            s.next_page()
            pages += 1
        assert pages == len(story.pages) + 1
    # the turnaround ends spiraling in, as its captions say
    assert s.model.summary()["share_spiral_in"] == 1.0


def test_export_writes_parquet_png_graphml(tmp_path):
    s = Session()
    s.step(5)
    out = s.export(tmp_path / "exp")
    names = {p.name for p in out.iterdir()}
    assert {"timeseries.parquet", "alliances.parquet", "network.graphml", "run.png",
            "ui-network.png", "ui-phase.png", "ui-series.png", "summary.json"} <= names


def test_six_steps_map_to_model_interventions():
    from sim.scenario import INTERVENTIONS

    assert len(SIX_STEPS) == 6
    assert all(kind in INTERVENTIONS for _, kind, _, _ in SIX_STEPS)


def _buttons(rc, label):
    return rc.find(v.Btn, children=[label])


def page_text(rc) -> str:
    """The page's rendered text: markdown templates and alert messages."""
    parts = [w.template for w in rc.find(v.VuetifyTemplate).widgets if isinstance(w.template, str)]
    for w in rc.find(v.Alert).widgets:
        parts += [c for c in w.children if isinstance(c, str)]
    return " ".join(parts)


def test_page_renders_and_step_button_advances_the_model():
    box, rc = solara.render(app.Page(), handle_error=False)
    assert "What just happened" in page_text(rc)
    assert "step</strong> 0" in page_text(rc)
    _buttons(rc, "Step").widget.click()
    _buttons(rc, "Step").widget.click()
    assert "step</strong> 2" in page_text(rc)
    rc.close()


def test_page_intervention_button_adds_narration():
    box, rc = solara.render(app.Page(), handle_error=False)
    _buttons(rc, "Shock").widget.click()
    assert "Shock (alliance" in page_text(rc)
    _buttons(rc, "6 Be patient").widget.click()
    assert "6 Be patient (alliance" in page_text(rc)
    rc.close()


def test_page_bad_seed_shows_message_and_keeps_running():
    box, rc = solara.render(app.Page(), handle_error=False)
    seed = rc.find(v.TextField, label="Seed").widget
    seed.v_model = "not a number"
    seed.fire_event("keyup.enter", None)  # (continuous_update=False: commit on enter/blur)
    assert "seed: expected a whole number" in page_text(rc)
    _buttons(rc, "Step").widget.click()  # still alive
    assert "step</strong> 1" in page_text(rc)
    rc.close()


def test_page_story_buttons_show_captions():
    box, rc = solara.render(app.Page(), handle_error=False)
    _buttons(rc, "The turnaround").widget.click()
    assert "spiraled out" in page_text(rc)
    _buttons(rc, "Next").widget.click()
    assert "openly share perspectives" in page_text(rc)
    rc.close()


@pytest.mark.slow
def test_ui_benchmark_prints_figure(capsys):
    res = bench_ui(organizations=200, steps=5)
    print(f"UI step + redraw at 200 organizations: {res['ms_per_step_and_redraw']:.0f} ms")
    assert res["ms_per_step_and_redraw"] > 0
