"""Guided stories for the trainer UI: chapters of one idea each.

A chapter has a prediction question (asked before the model runs), what the model does (steps,
and optionally one of the six steps applied to the selected alliance), and a takeaway that is
shown only with the numbers that back it: `check` reads the before/after monitors of the
selected alliance and says whether this run showed the idea. Captions never state an outcome
the figures could contradict; they are written from the run's numbers (see Session.reveal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Check = Callable[[dict, dict], bool]  # (monitors before, monitors after) -> the idea showed


@dataclass(frozen=True)
class Chapter:
    title: str
    idea: str  # one idea, in plain words, shown before the reveal
    question: str  # the prediction question
    options: tuple[str, ...]
    steps: int  # how many steps the model runs for the reveal (at most, with `until`)
    action: str | None = None  # a SIX_STEPS label applied to the selected alliance first
    takeaway: str = ""
    check: Check | None = None  # did this run show the takeaway?
    until: Check | None = None  # stop the reveal early once this holds (the moment has come)
    check_at_once: bool = False  # judge the takeaway right after the action, not after the steps


@dataclass(frozen=True)
class Story:
    title: str
    scenario: str
    overrides: dict
    blurb: str
    chapters: tuple[Chapter, ...] = field(default_factory=tuple)


def _fell(key):
    return lambda b, a: a[key] < b[key] - 0.01


def _rose(key):
    return lambda b, a: a[key] > b[key] + 0.01


STORIES: dict[str, Story] = {}

STORIES["The spiral out"] = Story(
    "The spiral out", "dyad.toml",
    {"noise.enabled": True, "mindset.abundance_share": 0.0, "initial.trust": 0.7,
     "initial.openness": 0.7, "differences.rate": 0.4, "seed": 12, "formation.rate": 0},
    "Two companies, one alliance, starting on good terms (trust and openness 0.7); both think "
    "'fear & me'.",
    (
        Chapter("Good terms", "Differences come up in every alliance. 'Fear & me' tends to "
                "avoid them instead of talking them through.",
                "What happens to the unresolved tension between them?",
                ("it grows", "it stays low"), 25,
                takeaway="Avoided differences do not go away: they pile up as tension.",
                check=lambda b, a: a["tension"] > b["tension"] + 0.01
                or a["blames"] > b["blames"],
                until=lambda b, a: a["tension"] > b["tension"] + 0.5 or a["blames"] > b["blames"]),
        Chapter("Blame", "When tension piles up far enough it blows up into blame.",
                "What does blame do to trust?", ("trust falls", "trust holds"), 40,
                takeaway="Blame hits trust on both sides at once.",
                check=lambda b, a: a["blames"] > b["blames"] and a["trust"] < b["trust"],
                until=lambda b, a: a["blames"] > b["blames"]),
        Chapter("The spiral", "Less trust makes people talk less openly; talking less gives "
                "fewer reasons to trust.", "Where do trust and openness go now?",
                ("both down", "they recover"), 15,
                takeaway="Trust and openness pull each other down: the spiral out.",
                check=lambda b, a: a["trust"] < b["trust"] and a["openness"] < b["openness"]),
        Chapter("The end", "A company that keeps seeing too little value grows fed up, and a "
                "fed-up company ends the alliance.", "Does the alliance survive the next 100 "
                "steps?", ("it ends", "it survives"), 100,
                takeaway="Falling is easy. Try 'The turnaround' to see what it takes to climb "
                "back.", check=lambda b, a: a["ended"] and not b["ended"],
                until=lambda b, a: a["ended"]),
    ))

_SIX = (
    ("1 Share perspectives", "Both sides openly share how they see the alliance, starting with "
     "the hardest topic.", "What happens to openness when both sides openly share their "
     "view, starting with the hardest topic?", ("it jumps", "it stays low"),
     "Sharing perspectives opens communication and brings the views closer.",
     _rose("openness")),
    ("2 Neutralize the problem", "They name the problem without blaming anyone.",
     "They put the problem on the table without blame. What happens "
     "to the tension?", ("it is released", "it stays"),
     "A problem shared without blame releases tension.",
     lambda b, a: a["tension"] < b["tension"] - 1e-6),
    ("3 Find the opportunity", "Inside the problem they look for what they could gain together.",
     "They look for the opportunity inside the problem. Does it create "
     "value?", ("value appears", "nothing"),
     "Inside a shared problem there is often an opportunity: value created.",
     lambda b, a: a["value"] > b["value"] + 1e-6),
    ("4 Find new opportunities", "They keep talking openly about what else they could do.",
     "They stay open and look for more. What happens to openness?",
     ("it rises", "it falls back"), "Staying open keeps the exchange going.", _rose("openness")),
    ("5 Mindful of the spiral", "Each side watches its own pull toward 'fear & me'.",
     "They notice the pull of fear and choose 'trust & we'. Does a "
     "mind change?", ("yes", "no"), "Mindsets can move: a mind flipped to 'trust & we'.",
     lambda b, a: (a["mindset_a"], a["mindset_b"]) != (b["mindset_a"], b["mindset_b"])),
    ("6 Be patient", "Nobody expects results next week any more.",
     "They give the alliance time: the patience horizon doubles. Does it survive the "
     "next steps?", ("it survives", "it ends"),
     "Patience buys the time a turnaround needs.",
     lambda b, a: not a["ended"] and a["horizon_min"] >= 200),
)

STORIES["The turnaround"] = Story(
    "The turnaround", "turnaround_left_alone.toml", {"seed": 1},
    "A suspicious alliance that has spiraled out, and the six steps of the practice, one by one.",
    (
        Chapter("Spiraled out", "This alliance started suspicious: trust and openness low.",
                "Left alone for 40 steps, where does it go?", ("further down", "up"), 40,
                takeaway="Left alone, a spiraled-out alliance stays down.",
                check=lambda b, a: a["score"] <= 0.45),
        *(Chapter(label, idea, q, opts, 3, action=label, takeaway=tk, check=ck,
                  check_at_once=not label.startswith("6"))
          for label, idea, q, opts, tk, ck in _SIX),
        Chapter("Let it run", "The six steps are done; now nobody intervenes.",
                "Will it climb on its own?", ("it spirals in", "it falls back"), 40,
                takeaway="Once past the tipping line, trust and openness pull each other up.",
                check=lambda b, a: a["regime"] == "spiral in"),
    ))
