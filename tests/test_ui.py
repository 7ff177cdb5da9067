"""The trainer UI without a browser: the session controller, its SVG pictures, stories,
export/replay, and the Solara page rendered in-process."""

from __future__ import annotations

import io
import re
import threading
import tomllib
import zipfile

import ipyvuetify as v
import numpy as np
import pytest
import solara

from sim.model import AllianceModel
from sim.scenario import INTERVENTIONS, load
from sim.ui import page, session
from sim.ui.session import ACTIONS, SEED_MAX, SIX_STEPS, Session, UserError
from sim.ui.stories import STORIES


def test_step_builds_a_frame_with_every_live_alliance_clickable():
    s = Session()
    s.step(25)
    vw = s.view()
    assert vw.step == 25 and vw.stats["step"] == 25
    st = s.model.state
    clickable = {int(x) for x in re.findall(r'class="hit" data-al="(\d+)"', vw.network)}
    assert set(np.flatnonzero(st.active).tolist()) <= clickable
    assert len(re.findall(r"<circle data-org=", vw.network)) == st.n_org
    # the series has one point per step on each line
    first = re.search(r'<polyline points="([^"]+)"', vw.series).group(1)
    assert len(first.split()) == 25


def test_layout_is_computed_once_per_reset():
    s = Session()
    xy = s.xy.copy()
    s.step(10)
    assert np.array_equal(s.xy, xy)
    s.reset()
    assert np.array_equal(s.xy, xy)


def test_intervention_shows_at_once_in_monitors_portrait_series_and_narration():
    s = Session()
    s.reset("turnaround_left_alone.toml", {"seed": 2})
    s.step(40)
    a = s.selected_al
    before = s.view()
    text = s.intervene("1 Share perspectives", "selected")
    after = s.view()
    assert after.monitors["openness"] > before.monitors["openness"] + 0.1  # no step needed
    assert f"{after.monitors['openness']:.2f}" in text  # the narration states the new number
    assert after.narration[0].endswith(text)
    assert after.phase != before.phase and 'class="mark"' in after.phase
    assert after.series.count('class="mark"') == 1
    assert s.selected_al == a


def test_six_steps_are_distinct_model_interventions():
    assert len(SIX_STEPS) == 6
    assert all(x.kind in INTERVENTIONS for x in SIX_STEPS)
    assert len({(x.kind, x.dose) for x in SIX_STEPS}) == 6
    s = Session()
    s.reset("turnaround_left_alone.toml", {"seed": 2})
    s.step(40)
    h = max(s.monitors()["horizon"])
    text = s.intervene("6 Be patient", "selected")
    want = max(200, 2 * h)  # patience only grows
    assert s.monitors()["horizon"] == [want, want] and f"→ {want}/{want} steps" in text


def test_an_ended_alliance_stays_selected_and_is_not_silently_replaced():
    s = Session()
    s.start_story("The spiral out")
    s.end_story()
    a = s.selected_al
    for _ in range(200):
        s.step(1)
        if s.model.state.al_ended[a] >= 0:
            break
    end = int(s.model.state.al_ended[a])
    assert end >= 0, "the spiral-out story's alliance should end within 200 steps"
    s.step(3)
    vw = s.view()
    assert s.selected_al == a and f"ended at step {end}" in vw.selection
    assert not vw.can_intervene
    others = s.model.state.al_trust.copy()
    with pytest.raises(UserError, match="ended at step"):
        s.intervene("1 Share perspectives", "selected")
    assert np.array_equal(s.model.state.al_trust, others)  # nobody else was hit


def test_bad_input_gives_a_plain_message_and_keeps_the_previous_state():
    s = Session()
    model, ov = s.model, dict(s.overrides)
    share = model.scenario_spec.values["mindset"]["abundance_share"]
    assert not s.set_seed("abc")
    assert "whole number" in s.error and s.model is model
    assert not s.set_seed("1" * 20)  # a 20-digit seed
    assert str(SEED_MAX) in s.error and s.model is model
    assert not s.set_param("mindset.abundance_share", 3)
    assert "abundance_share" in s.error and s.model is model and s.overrides == ov
    assert s.reset()  # Reset still works: the bad value did not stick
    assert s.error is None and s.model.scenario_spec.values["mindset"]["abundance_share"] == share


def test_broken_scenario_file_keeps_the_model(tmp_path, monkeypatch):
    s = Session()
    model = s.model
    (tmp_path / "broken.toml").write_text("[mindset]\nabundance_share = 3\n")
    monkeypatch.setattr(session, "SCENARIO_DIR", tmp_path)
    assert not s.pick_scenario("broken.toml")
    assert "mindset.abundance_share" in s.error and s.model is model


def test_scenario_picker_shows_titles_not_file_names():
    choices = session.scenario_choices()
    titles = [t for t, _ in choices]
    assert len(set(titles)) == len(titles)
    assert ("A mixed industry of 60 companies", "baseline.toml") in choices
    assert not any(t.endswith(".toml") for t in titles)


@pytest.mark.parametrize("title", list(STORIES))
def test_story_reveals_are_written_from_the_run_numbers(title):
    s = Session()
    assert s.start_story(title)
    n = 0
    while s.story:
        vw = s.view()
        assert vw.story["question"] and not vw.story["revealed"]
        s.predict(vw.story["options"][0])
        s.run_pending()
        m = s.monitors()
        rev = s.reveal()
        assert f"{m['trust']:.2f}" in rev and f"{m['openness']:.2f}" in rev
        assert rev.startswith(f"You predicted: {vw.story['options'][0]}.")
        ch = STORIES[title].chapters[n]
        judged = s._after_action if ch.check_at_once else m  # (at once: right after the action)
        assert ("Takeaway" in rev) == ch.check(s._before, judged)  # shown only when it showed
        s.next_chapter()
        n += 1
    assert n == len(STORIES[title].chapters)


def test_turnaround_story_ends_spiraling_in():
    s = Session()
    s.start_story("The turnaround")
    while s.story:
        s.predict(None)
        s.run_pending()
        s.next_chapter()
    assert s.monitors()["regime"] == "spiral in"


def test_export_zip_replays_exactly_with_spiral_run(tmp_path):
    s = Session()
    s.reset("baseline.toml", {"seed": 3})
    s.step(7)
    s.intervene("1 Share perspectives", "selected")
    s.step(5)
    s.select_alliance(int(np.flatnonzero(s.model.state.active)[5]))
    s.intervene("2 Neutralize the problem", "selected")
    s.intervene("Shock", "everyone")
    s.step(6)
    name, data = s.export_zip()
    z = zipfile.ZipFile(io.BytesIO(data))
    names = {n.split("/", 1)[1] for n in z.namelist()}
    assert {"summary.json", "timeseries.parquet", "alliances.parquet", "network.graphml",
            "run.png", "ui-baseline.toml", "ui-interventions.json", "ui-network.svg",
            "ui-phase.svg", "ui-series.svg"} <= names
    toml = next(n for n in z.namelist() if n.endswith("ui-baseline.toml"))
    (tmp_path / "ui.toml").write_bytes(z.read(toml))
    assert len(tomllib.loads(z.read(toml).decode())["interventions"]) == 3
    replay = AllianceModel(load(tmp_path / "ui.toml"))
    replay.run()
    live, rep = s.model.state, replay.state
    assert rep.step == live.step == 18
    for k in ("al_trust", "al_open", "al_tension", "T", "O", "D", "a", "horizon"):
        assert np.array_equal(getattr(rep, k), getattr(live, k)), k


def test_view_is_consistent_while_another_thread_steps():
    s = Session()
    s.reset("baseline.toml", {"ecosystem.organizations": 40})
    errors, stop = [], threading.Event()
    seen, cond = [], threading.Condition()
    checkpoints = (0, 50, 100)

    def play():
        try:
            for i in range(150):
                # The player waits for a frame at a few steps: the steps are
                # fast enough to finish before the viewer's first frame.
                if i in checkpoints:
                    with cond:
                        if not cond.wait_for(lambda i=i: i in seen, timeout=60):
                            raise TimeoutError(f"no frame at step {i}")
                s.step(1)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            stop.set()

    t = threading.Thread(target=play)
    t.start()
    while not stop.is_set():
        vw = s.view()
        pts = re.search(r'<polyline points="([^"]*)"', vw.series)
        if pts:  # every line has exactly one point per step of this frame
            assert len(pts.group(1).split()) == vw.step
        with cond:
            seen.append(vw.step)
            cond.notify_all()
    t.join()
    assert not errors and s.model.state.step == 150
    assert set(checkpoints) <= set(seen) and seen == sorted(seen)


def test_click_on_an_organization_selects_one_of_its_alliances():
    s = Session()
    st = s.model.state
    o = int(st.al_org[np.flatnonzero(st.active)[3], 1])
    s.select_org(o)
    assert o in st.al_org[s.selected_al].tolist() and s.selected_org == o
    with pytest.raises(ValueError):
        s.select_alliance(10**6)


# --- the Solara page rendered in-process -------------------------------------------------------
def _btn(rc, label):
    return rc.find(v.Btn, children=[label])


def _html(rc) -> str:
    """The page's text: every solara.HTML piece."""
    return " ".join(w.unsafe_innerHTML or "" for w in rc.find(solara.widgets.HTML).widgets)


def test_page_renders_steps_and_intervenes():
    box, rc = solara.render(page.Page(), handle_error=False)
    assert "The trust spiral" in _html(rc)  # the intro screen
    rc.find(v.Btn, class_="spiral-intro-sandbox").widget.click()
    assert "<b>step</b> 0" in _html(rc)
    _btn(rc, "Step").widget.click()
    _btn(rc, "Step").widget.click()
    assert "<b>step</b> 2" in _html(rc)
    _btn(rc, "Shock").widget.click()
    assert "Shock (alliance" in _html(rc)
    rc.close()


def test_page_story_asks_then_reveals():
    box, rc = solara.render(page.Page(), handle_error=False)
    _btn(rc, "Story: The turnaround").widget.click()
    assert "Predict:" in _html(rc) and "chapter 1 of 8" in _html(rc)
    assert "The trust spiral" not in _html(rc)  # the intro is gone
    opts = rc.find(v.Btn, class_="spiral-predict").widgets
    assert len(opts) == 2
    opts[0].click()  # the reveal runs on the play thread; Next is shown once it has run
    rc.find(v.Btn, class_="spiral-next").wait_for(timeout=60)
    assert "You predicted: further down." in _html(rc)
    rc.close()


def test_page_bad_seed_message_and_the_app_keeps_running():
    box, rc = solara.render(page.Page(), handle_error=False)
    rc.find(v.Btn, class_="spiral-intro-sandbox").widget.click()
    rc.find(v.Btn, class_="spiral-settings").widget.click()
    seed = rc.find(v.TextField, label="Seed").widget
    seed.v_model = "12345678901234567890"
    seed.fire_event("keyup.enter", None)
    assert "The seed must be a whole number" in _html(rc)
    assert rc.find(v.TextField, label="Seed").widget.v_model == "1"  # the previous seed
    _btn(rc, "Step").widget.click()
    assert "<b>step</b> 1" in _html(rc)
    assert ACTIONS
    rc.close()


def test_scenario_alliances_key_is_validated(tmp_path):
    from sim.scenario import ScenarioError

    f = tmp_path / "bad.toml"
    f.write_text('[[interventions]]\nstep = 1\nkind = "neutralize"\nalliances = ["x"]\n')
    with pytest.raises(ScenarioError, match=r"interventions\[0\]\.alliances"):
        load(f)
    f.write_text('[[interventions]]\nstep = 1\nkind = "neutralize"\nalliances = [0, 2]\n')
    assert load(f).values["interventions"][0]["alliances"] == [0, 2]


def test_portrait_note_agrees_with_the_alliance_own_map():
    from sim import dyad

    s = Session()
    s.step(30)
    st = s.model.state
    checked = 0
    for a in np.flatnonzero(st.active)[:40:8]:
        s.select_alliance(int(a))
        note = s.view().portrait_note
        xs, score = dyad.alliance_basin(st, s.model.p, int(a), n=25, steps=200)
        side = dyad.predict(xs, score, float(st.al_trust[a]), float(st.al_open[a]))
        assert ("in the green area" in note) == (side >= 0.5), note
        assert ("would spiral in" in note) == (side >= 0.5), note
        checked += 1
    assert checked >= 3


def test_page_slider_rejected_value_snaps_back_and_a_good_one_starts_a_run():
    box, rc = solara.render(page.Page(), handle_error=False)
    rc.find(v.Btn, class_="spiral-intro-sandbox").widget.click()
    rc.find(v.Btn, class_="spiral-settings").widget.click()

    def orgs():
        return next(w for w in rc.find(v.Slider).widgets if "Organizations" in (w.label or ""))

    orgs().v_model = 2  # too few for this graph's mean degree
    assert "Organizations = 2 was not used" in _html(rc)
    assert orgs().v_model == 60 and "60 organizations" in _html(rc)
    orgs().v_model = 30
    assert orgs().v_model == 30 and "30 organizations" in _html(rc)
    _btn(rc, "Reset").widget.click()  # Reset keeps the good value
    assert "30 organizations" in _html(rc)
    rc.close()
