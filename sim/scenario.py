"""Scenario files: the schema, TOML loading, defaults, validation and --set overrides.

One table (SCHEMA) names every key, its type, range, default and a one-line meaning. Loading,
validation, the UI's sliders and the docs all read that table, so a key exists in one place.
Every problem is raised as a ScenarioError naming the file, the key and what was expected.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

GRAPHS = ("complete", "erdos_renyi", "barabasi_albert", "watts_strogatz", "powerlaw_cluster")
INTERVENTIONS = ("share_perspectives", "neutralize", "coach_mindset", "set_patience", "shock",
                 "scare", "find_opportunity")


class ScenarioError(Exception):
    """Bad scenario input; str() is the one line shown to the user."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key, self.message = source, key, message
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(_one_line(where + message))


def _one_line(text: str) -> str:
    """Escape line breaks and other control characters: an error is always one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Key:
    """One scenario key: type, default, allowed range and what it means."""

    kind: str  # "int", "float", "bool", "str", "choice"
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo excluded (e.g. mean_degree > 0)
    choices: tuple[str, ...] = ()


def _f(default, help, lo=0.0, hi=1.0, lo_open=False):
    return Key("float", default, help, lo, hi, lo_open)


def _i(default, help, lo=1, hi=None):
    return Key("int", default, help, lo, hi)


# Safety bounds (reliability round 2): seeds are what numpy's SeedSequence takes and what fits an
# int64 column; a blame_level below BLAME_LEVEL_MIN makes tension / blame_level (the number of
# blames in a step) so large that the int64 blame counts wrap and hurt_rate * blames turns into
# inf or NaN. With tension per step bounded by differences.rate * size (<= 10^4) and shocks
# (<= 100 each), 0.01 keeps a step's count below 10^7.
SEED_MAX = 2**63 - 1
BLAME_LEVEL_MIN = 0.01
NAME_MAX = 100  # characters in a scenario name (it becomes a folder name: runs/<name>-<seed>)
TEXT_MAX = 10_000  # characters in any other string value
FILE_MAX = 1 << 20  # bytes in a scenario file
EXTENDS_MAX = 32  # files in an extends chain

# Section -> key -> Key. Top-level keys live under "".
SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "name": Key("str", "scenario", "short name; the default output folder is runs/<name>-<seed>"),
        "description": Key("str", "", "what this scenario shows"),
        "steps": _i(300, "number of steps to run"),
        "seed": Key("int", 1, "random seed: same scenario and seed give identical results",
                    0, SEED_MAX),
    },
    "ecosystem": {
        "organizations": _i(60, "number of organizations (nodes)", lo=2, hi=200_000),
        "graph": Key("choice", "powerlaw_cluster", "network generator", choices=GRAPHS),
        "mean_degree": _f(4.0, "mean number of alliances per organization", 0.0, 10_000.0,
                          lo_open=True),
        "individuals_per_organization": _i(1, "boundary spanners per organization", hi=64),
        "rewire": _f(0.1, "watts_strogatz: rewiring probability"),
        "triangles": _f(0.5, "powerlaw_cluster: probability of closing a triangle"),
        "perspective_dims": _i(3, "number of topics a perspective covers (K)", hi=32),
    },
    "mindset": {
        "abundance_share": _f(0.5, "share of organizations whose culture starts in abundance"),
        "abundance_level": _f(0.8, "starting culture (latent abundance) of abundance organizations"),
        "scarcity_level": _f(0.2, "starting culture of scarcity organizations"),
        "spread": _f(0.05, "standard deviation of people's latent abundance around their culture",
                     0.0, 0.5),
        "theta_down": _f(0.5, "latent abundance below which an abundance holder flips to scarcity"),
        "theta_up": _f(0.65, "latent abundance above which a scarcity holder flips back"),
        "learn_rate": _f(0.003896, "climb of latent abundance per step with all ties trusted, "
                                "times (1 - a)"),
        "hurt_rate": _f(0.6, "fall of latent abundance per quarrel on all ties, times a"),
        "betrayal": _f(1.0, "fall of latent abundance when all own ties end, times a"),
        "trusted_level": _f(0.7, "trust above which a tie counts as a good experience"),
        "culture_pull": _f(0.005, "pull of a person's latent abundance toward the culture"),
        "peer_pull": _f(0.01, "contagion: pull toward partners' latent abundance, times trust"),
        "culture_follow": _f(0.01, "rate at which the culture follows its people"),
        "learn_opportunity": _f(1.0, "weight of an opportunity found together in learning, "
                                     "relative to a trusted tie", 0.0, 100.0),
    },
    "initial": {
        "trust": _f(0.5, "starting trust on every tie"),
        "openness": _f(0.5, "starting openness on every tie"),
        "divergence": _f(0.3, "spread of starting perspectives (0 = everyone sees alike)"),
        "spread": _f(0.2, "standard deviation of an alliance's first impression, shifting its "
                          "starting trust and openness together", 0.0, 1.0),
    },
    "negotiation": {
        "clarity": Key("bool", False, "shared definitions: alliances start with equal perspectives"),
        "empathy": Key("bool", False, "standing in the partner's shoes: talk.rate x empathy_factor"),
        "trust_building": Key("bool", False, "problem solving test-driven: trust starts higher"),
        "interests": Key("bool", False, "interests over positions: everyone claims half the pie"),
        "empathy_factor": _f(2.0, "multiplier of talk.rate under empathy", 1.0, 10.0),
        "trust_boost": _f(0.25, "added to initial trust under trust_building"),
    },
    "talk": {
        "rate": _f(0.15, "mu: how far a perspective moves toward a partner's per step"),
        "noise": _f(0.03, "sigma: perspective drift per step when nobody talks openly"),
    },
    "differences": {
        "rate": _f(0.08163, "lambda: expected differences per pair of people per step", 0.0, 100.0),
        "size": _f(0.3, "zeta: mean size of one difference", 0.0, 100.0),
        "confront_abundance": _f(0.6, "chance an abundance holder confronts a difference"),
        "confront_scarcity": _f(0.1, "chance a scarcity holder confronts a difference"),
        "open_talk": _f(0.6, "chance anyone raises a difference because talk is fully open "
                             "(times the mutual exchange x)"),
        "blame_level": _f(1.5, "tension at which avoided differences blow up into blame",
                          BLAME_LEVEL_MIN, 100.0),
        "blame_cost": _f(0.5, "fraction of trust lost both ways in a blame"),
        "opportunity_trust": _f(0.05, "trust gained both ways when a difference becomes an "
                                      "opportunity"),
    },
    "trust": {
        "rate": _f(0.10, "beta: speed of trust toward a higher target (building)"),
        "erode_rate": _f(0.2861, "speed of trust toward a lower target (eroding)"),
        "noise": _f(0.3, "standard deviation of the noise in each step's evidence (signals "
                         "of the partner read imperfectly)", 0.0, 10.0),
        "noise_shared": _f(1.0, "share of that noise's variance common to all ties of one side "
                                "of an alliance (the partner company's month)"),
        "steepness": _f(8.0, "k_T: steepness of the trust response", 0.0, 100.0),
        "w_openness": _f(1.0, "weight of the partner's openness", 0.0, 10.0),
        "openness_ref": _f(0.5, "partner openness that is neutral for trust"),
        "w_value": _f(0.6, "weight of perceived value", 0.0, 10.0),
        "value_ref": _f(0.1, "perceived value that is neutral for trust", 0.0, 10.0),
        "w_divergence": _f(1.2, "weight of perspective divergence", 0.0, 10.0),
        "divergence_ref": _f(0.1, "divergence that is neutral for trust"),
        "w_tension": _f(0.3, "weight of unresolved tension", 0.0, 10.0),
        "w_dispute": _f(0.5, "weight of claims over the whole pie", 0.0, 10.0),
        "bias_abundance": _f(0.25, "trust bias of an abundance holder (-theta_T)", -5.0, 5.0),
        "bias_scarcity": _f(0.0, "trust bias of a scarcity holder (demands more evidence)",
                            -5.0, 5.0),
    },
    "openness": {
        "rate": _f(0.2, "alpha: speed of openness toward its target"),
        "steepness": _f(8.0, "k_O: steepness of the openness response", 0.0, 100.0),
        "threshold": _f(0.5, "theta_O: trust at which openness is neutral"),
        "bias_abundance": _f(1.0, "openness bias b of an abundance holder", -20.0, 20.0),
        "bias_scarcity": _f(-0.2, "openness bias b of a scarcity holder", -20.0, 20.0),
    },
    "value": {
        "exchange": _f(0.1, "value created per step by full mutual exchange", 0.0, 10.0),
        "opportunity": _f(0.5, "value created by one opportunity", 0.0, 10.0),
        "memory": _f(0.9, "how much of last step's value level is remembered", 0.0, 0.999),
        "revenue_share": _f(0.4, "share of created value that is immediate revenue"),
        "claim_scarcity": _f(0.65, "share of the pie a scarcity holder claims", 0.5, 1.0),
        "expectation": _f(0.2106, "perceived value level an organization expects", 0.0, 10.0),
    },
    "patience": {
        "horizon": _i(20, "steps over which an organization judges an alliance (its patience)",
                      hi=10**6),
        "close_bias": _f(-1.0, "openness bias of a fully dissatisfied side (it changes strategy)",
                         -20.0, 0.0),
        "end_rate": _f(0.2941, "chance per step that a fully dissatisfied side ends the alliance"),
        "w_blame": _f(1.0, "dissatisfaction signal of one quarrel per dyad (vs a full "
                           "shortfall of value)", 0.0, 100.0),
    },
    "noise": {
        "enabled": Key("bool", True, "false: no random draw after set-up (deterministic map)"),
    },
    "formation": {
        "rate": _f(0.4, "expected new alliances per step", 0.0, 1000.0),
        "closure": _f(0.5259, "chance a new partner is a trusted partner's partner"),
    },
    "outputs": {
        "failure_age": _i(120, "alliance age (steps) at which failure_rate_km is read off the "
                               "Kaplan-Meier curve", hi=10**6),
    },
    "regimes": {
        "window": _i(20, "steps of recent trajectory the regime rule looks at", hi=10_000),
        "in_level": _f(0.6, "score (trust+openness)/2 at or above which an alliance is in"),
        "out_level": _f(0.4, "score at or below which an alliance is out"),
        "trend": _f(0.05, "change of score over the window that overrides a level"),
    },
}

INTERVENTION_KEYS = {
    "step": "step at which it is applied (1 = before the first step's dynamics)",
    "kind": "one of " + ", ".join(INTERVENTIONS),
    "target": '"all" or a list of organization ids (0-based)',
    "dose": "strength: 0..1 for most kinds; steps for set_patience",
    "alliances": "optional: only these alliances (ids in order of formation), instead of target",
    "every": "optional: repeat every this many steps ...",
    "until": "optional: ... up to and including this step (default: the last step)",
}
TOP_LEVEL_EXTRA = ("interventions", "extends")


def defaults() -> dict[str, Any]:
    """A full scenario dict of defaults (nested by section)."""
    out: dict[str, Any] = {}
    for section, keys in SCHEMA.items():
        target = out if section == "" else out.setdefault(section, {})
        for k, spec in keys.items():
            target[k] = spec.default
    out["interventions"] = []
    return out


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _num(x, kind: str) -> str:
    return str(int(x)) if kind == "int" else f"{x:g}"


def _type_name(spec: Key) -> str:
    if spec.kind == "choice":
        return "one of " + ", ".join(spec.choices)
    if spec.kind in ("int", "float"):
        lo = "" if spec.lo is None else (f"> {_num(spec.lo, spec.kind)}" if spec.lo_open
                                         else f">= {_num(spec.lo, spec.kind)}")
        hi = "" if spec.hi is None else f"<= {_num(spec.hi, spec.kind)}"
        rng = " and ".join(x for x in (lo, hi) if x)
        noun = "an integer" if spec.kind == "int" else "a number"
        return f"{noun} {rng}".strip()
    return {"bool": "true or false", "str": "a string"}[spec.kind]


def _short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to about `limit` characters (a 5,000-character name is not echoed)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _check_text(source: str, dotted: str, value: str) -> str:
    """Any string value: encodable as UTF-8 (no lone surrogates from a non-UTF-8 argv), no
    control characters (they break GraphML/XML and terminals; line breaks and tabs are fine in
    a description), bounded length. `name` must also be a safe folder name."""
    is_name = dotted == "name"
    limit = NAME_MAX if is_name else TEXT_MAX
    if len(value) > limit:
        raise ScenarioError(source, dotted, f"expected at most {limit:,} characters, got "
                            f"{len(value):,}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ScenarioError(source, dotted, f"expected UTF-8 text, got {_short(value)}") from None
    allowed = "" if is_name else "\n\t"
    for c in value:
        if not (c.isprintable() or c == " " or c in allowed):
            raise ScenarioError(source, dotted, f"expected text without control characters, "
                                f"got {c!r} in {_short(value)}")
    if is_name:
        if not value.strip() or "/" in value or "\\" in value or value.startswith("."):
            raise ScenarioError(source, dotted, "expected a name usable as a folder name (not "
                                "empty, no '/' or '\\', not starting with '.'), got "
                                + _short(value))
    return value


def _check_value(source: str, dotted: str, spec: Key, value: Any) -> Any:
    try:
        return _checked(spec, value, source, dotted)
    except _Bad:
        raise ScenarioError(source, dotted,
                            f"expected {_type_name(spec)}, got {_short(value)}") from None


class _Bad(Exception):
    """A value of the wrong type or out of range (the message is written by _check_value)."""


def _checked(spec: Key, value: Any, source: str = "", dotted: str = "") -> Any:
    bad = _Bad
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if spec.kind in ("str", "choice"):
        if not isinstance(value, str):
            raise bad
        if spec.kind == "str":
            return _check_text(source, dotted, value)
        if spec.kind == "choice" and value not in spec.choices:
            raise ScenarioError(source, dotted, f"expected {_type_name(spec)}, got "
                                f"{_short(value)}" + _suggest(value, spec.choices))
        return value
    # numbers: bool is an int in Python, refuse it explicitly
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad
    if spec.kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise bad
            value = int(value)
    else:
        try:
            value = float(value)
        except OverflowError:  # a TOML integer of hundreds of digits
            raise bad from None
        if value != value or value in (float("inf"), float("-inf")):
            raise bad
    if spec.lo is not None and (value < spec.lo or (spec.lo_open and value == spec.lo)):
        raise bad
    if spec.hi is not None and value > spec.hi:
        raise bad
    return value


def _check_interventions(source: str, items: Any, steps: int, n_orgs: int) -> list[dict]:
    if not isinstance(items, list):
        raise ScenarioError(source, "interventions",
                            "expected a list of tables written as [[interventions]]")
    out = []
    for i, item in enumerate(items):
        where = f"interventions[{i}]"
        if not isinstance(item, dict):
            raise ScenarioError(source, where, "expected a table with step, kind, target, dose")
        for k in item:
            if not isinstance(k, str):
                raise ScenarioError(source, f"{where}.{k!r}", "expected a key name (a string)")
            if k not in INTERVENTION_KEYS:
                raise ScenarioError(source, f"{where}.{k}", "unknown key; expected one of "
                                    + ", ".join(INTERVENTION_KEYS) + _suggest(k, INTERVENTION_KEYS))
        for k in ("step", "kind"):
            if k not in item:
                raise ScenarioError(source, f"{where}.{k}", f"missing; {INTERVENTION_KEYS[k]}")
        step = item["step"]
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= steps:
            raise ScenarioError(source, f"{where}.step",
                                f"expected an integer from 1 to steps ({steps}), got {_short(step)}")
        kind = item["kind"]
        if not isinstance(kind, str) or kind not in INTERVENTIONS:
            raise ScenarioError(source, f"{where}.kind", "expected one of "
                                + ", ".join(INTERVENTIONS) + f", got {kind!r}"
                                + (_suggest(kind, INTERVENTIONS) if isinstance(kind, str) else ""))
        target = item.get("target", "all")
        if target != "all":
            ok = isinstance(target, list) and target and all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < n_orgs
                for t in target)
            if not ok:
                raise ScenarioError(source, f"{where}.target",
                                    f'expected "all" or a non-empty list of organization ids '
                                    f"from 0 to {n_orgs - 1}, got {_short(target)}")
        alliances = item.get("alliances")  # the UI's "selected alliance", recorded by Export
        if alliances is not None and not (isinstance(alliances, list) and alliances and all(
                isinstance(a, int) and not isinstance(a, bool) and 0 <= a < 2**62
                for a in alliances)):
            raise ScenarioError(source, f"{where}.alliances", f"expected a non-empty list of "
                                f"alliance ids >= 0, got {_short(alliances)}")
        dose = item.get("dose", 1.0)
        if isinstance(dose, bool) or not isinstance(dose, int | float) or dose != dose:
            raise ScenarioError(source, f"{where}.dose", f"expected a number, got {_short(dose)}")
        if kind == "set_patience":
            if not (1 <= dose <= 10**6 and float(dose).is_integer()):
                raise ScenarioError(source, f"{where}.dose",
                                    f"expected a whole number of steps >= 1 for set_patience "
                                    f"(at most 1000000), got {_short(dose)}")
        elif not 0 <= dose <= (100 if kind == "shock" else 1):
            hi = 100 if kind == "shock" else 1
            raise ScenarioError(source, f"{where}.dose",
                                f"expected a number from 0 to {hi} for {kind}, got {_short(dose)}")
        every = item.get("every", 0)
        if "every" in item and (isinstance(every, bool) or not isinstance(every, int)
                                or every < 1):
            raise ScenarioError(source, f"{where}.every",
                                f"expected a whole number of steps >= 1, got {_short(every)}")
        if "until" in item and "every" not in item:
            raise ScenarioError(source, f"{where}.until", "given without every; expected "
                                "every = N as well (until ends a repetition)")
        until = item.get("until", steps)
        if isinstance(until, bool) or not isinstance(until, int) or not step <= until <= steps:
            raise ScenarioError(source, f"{where}.until", f"expected an integer from step "
                                f"({step}) to steps ({steps}), got {_short(until)}")
        entry = {"step": int(step), "kind": kind, "target": target, "dose": float(dose)}
        if alliances is not None:
            entry["alliances"] = [int(a) for a in alliances]
        if every:
            entry["every"] = every
            entry["until"] = until
        out.append(entry)
    return out


def validate(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Check a raw scenario dict and return it merged over the defaults."""
    out = defaults()
    if not isinstance(raw, dict):
        raise ScenarioError(source, "", f"expected a table of scenario keys, got {_short(raw)}")
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ScenarioError(source, repr(key), "expected a key name (a string)")
        if key in TOP_LEVEL_EXTRA:
            continue
        if key in SCHEMA[""]:
            out[key] = _check_value(source, key, SCHEMA[""][key], value)
        elif key and key in SCHEMA:
            if not isinstance(value, dict):
                raise ScenarioError(source, key, f"expected a table [{key}], got {_short(value)}")
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ScenarioError(source, f"{key}.{k!r}", "expected a key name (a string)")
                spec = SCHEMA[key].get(k)
                if spec is None:
                    raise ScenarioError(source, f"{key}.{k}", "unknown key"
                                        + _suggest(k, SCHEMA[key]))
                out[key][k] = _check_value(source, f"{key}.{k}", spec, v)
        else:
            options = [k for k in SCHEMA if k] + list(SCHEMA[""]) + list(TOP_LEVEL_EXTRA)
            raise ScenarioError(source, key, "unknown key" + _suggest(key, options))
    m = out["mindset"]
    if m["theta_down"] > m["theta_up"]:  # equal: no individual hysteresis at all
        raise ScenarioError(source, "mindset.theta_up",
                            f"expected a number >= mindset.theta_down ({m['theta_down']:g}), "
                            f"got {m['theta_up']!r}")
    r = out["regimes"]
    if r["out_level"] >= r["in_level"]:
        raise ScenarioError(source, "regimes.in_level",
                            f"expected a number > regimes.out_level ({r['out_level']:g}), "
                            f"got {r['in_level']!r}")
    eco = out["ecosystem"]
    n = eco["organizations"]
    if eco["graph"] in ("barabasi_albert", "powerlaw_cluster") and max(
            1, round(eco["mean_degree"] / 2)) >= n:
        raise ScenarioError(source, "ecosystem.mean_degree",
                            f"expected at most {2 * (n - 1)} for {eco['graph']} with {n} "
                            f"organizations, got {eco['mean_degree']!r}")
    out["interventions"] = _check_interventions(source, raw.get("interventions", []),
                                                out["steps"], n)
    check_size(out, source)
    return out


# Memory estimate: peak RSS of `spiral run` (set-up, steps, every output written) measured on
# 12 configurations: complete graphs of 100-1,000 organizations, powerlaw_cluster, erdos_renyi,
# watts_strogatz and barabasi_albert up to 50,000 organizations, 1-32 people per organization,
# 5-5,000 steps (reliability round 2; tests/test_reliability.py re-measures three of them and
# holds the estimate within 1.5x). A least-squares fit, rounded: the interpreter and libraries,
# then per alliance (two networkx graphs with attributes, the alliance arrays, its regime
# history), per directed tie (state and a step's temporaries), per organization and person
# (Mesa agents, graph nodes) and per step (DataCollector rows, tracked paths). The earlier
# estimate (200 bytes per tie, nothing per alliance) said 0.45 GiB for a complete graph of 1,000
# organizations whose peak was 2.47 GiB (most of it networkx building the GraphML tree, now
# streamed by sim.outputs).
BYTES_BASE = 216_000_000
BYTES_COMPILED = 150_000_000  # numba and LLVM with the compiled step loaded (measured 145 MB)
BYTES_PER_ALLIANCE = 900  # + 8 per regime-window step (al_hist)
BYTES_PER_TIE = 75
BYTES_PER_ORGANIZATION = 1_700
BYTES_PER_PERSON = 1_000  # + 32 per perspective dimension
BYTES_PER_STEP = 7_000
# the limit: a run may use 90% of the memory available (the rest is left to the system and the
# other processes); measured: a 10.8-million-tie run peaks at 1.6 GB compiled, 2.1 GB numpy
MEMORY_SHARE = 0.9

# Time budget for building the initial graph. networkx's gnp_random_graph tries every pair
# (about 65 ns per pair here: 22 minutes at 200,000 organizations); sim.state uses
# fast_gnp_random_graph (O(n + edges)) for sparse erdos_renyi graphs, so only a quadratic
# builder would need the up-front refusal below (GNP_QUADRATIC = True).
GNP_QUADRATIC = False
MAX_APPLICATIONS = 10_000_000  # intervention applications in a run (each ~10-100 us, 10 B)
STEPS_CAP = 10**15
NS_PER_GNP_PAIR = 65
SETUP_BUDGET_S = 120


def memory_limit() -> int:
    """What a run may use: 90% of the memory available now (or 16 GiB if that cannot be
    read). A run is refused up front only when its estimate is past this, the real limit."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(int(line.split()[1]) * 1024 * MEMORY_SHARE)
    except OSError:
        pass
    return 16 * 2**30


def _alliances(values: dict) -> float:
    eco = values["ecosystem"]
    n, k = eco["organizations"], eco["mean_degree"]
    alliances = n * (n - 1) / 2 if eco["graph"] == "complete" else min(n * k / 2,
                                                                        n * (n - 1) / 2)
    if values["noise"]["enabled"]:
        alliances += values["formation"]["rate"] * _steps(values)
    return alliances


def _steps(values: dict) -> int:
    """steps, capped where the arithmetic stays in floats (steps has no upper bound)."""
    return min(values["steps"], STEPS_CAP)


def _compiled_path() -> bool:
    """Whether runs here take the compiled (numba) step: sim.kernel's choice, without importing
    it (SPIRAL_KERNEL=numpy turns it off; otherwise numba when it is installed)."""
    import importlib.util
    import os

    want = os.environ.get("SPIRAL_KERNEL", "").strip().lower()
    return want != "numpy" and importlib.util.find_spec("numba") is not None


def estimate_bytes(values: dict) -> tuple[int, int]:
    """(peak bytes, directed ties) of a run of these values, formation and outputs included."""
    eco = values["ecosystem"]
    n, ipo = eco["organizations"], eco["individuals_per_organization"]
    alliances = _alliances(values)
    ties = int(alliances * ipo * ipo * 2)
    total = (BYTES_BASE + (BYTES_COMPILED if _compiled_path() else 0) + ties * BYTES_PER_TIE
             + int(alliances * (BYTES_PER_ALLIANCE + 8 * (values["regimes"]["window"] + 1)))
             + n * BYTES_PER_ORGANIZATION
             + n * ipo * (BYTES_PER_PERSON + 32 * eco["perspective_dims"])
             + _steps(values) * BYTES_PER_STEP)
    return total, ties


def estimate_setup_seconds(values: dict) -> float:
    """Seconds to build the initial graph, where that is more than linear (erdos_renyi)."""
    eco = values["ecosystem"]
    n = eco["organizations"]
    if eco["graph"] == "erdos_renyi" and GNP_QUADRATIC and eco["mean_degree"] < n - 1:
        return n * (n - 1) / 2 * NS_PER_GNP_PAIR * 1e-9
    return 0.0


def scheduled_applications(values: dict) -> int:
    """How many times interventions are applied in a run (each repetition counts)."""
    total = 0
    for item in values.get("interventions", []):
        every = item.get("every", 0)
        total += (item.get("until", item["step"]) - item["step"]) // every + 1 if every else 1
    return total


def check_size(values: dict, source: str, limit: int | None = None) -> None:
    total, ties = estimate_bytes(values)
    limit = memory_limit() if limit is None else limit
    if total > limit:
        gib = 2**30
        steps_text = (f"{values['steps']:,}" if values["steps"] < STEPS_CAP
                      else f"more than {STEPS_CAP:.0e}")
        at_start = dict(values, steps=1, noise={"enabled": False})
        key = "ecosystem" if estimate_bytes(at_start)[0] > limit / 2 else "steps"
        raise ScenarioError(source, key, f"this scenario needs about {total / gib:.1f} "
                            f"GiB ({ties:,} ties, {steps_text} steps), above the limit of "
                            f"{limit / gib:.1f} GiB (90% of the memory available); expected "
                            + ("fewer organizations or individuals, or a lower mean_degree"
                               if key == "ecosystem" else "fewer steps"))
    apps = scheduled_applications(values)
    if apps > MAX_APPLICATIONS:
        raise ScenarioError(source, "interventions",
                            f"{apps:,} scheduled applications (every repetition of every "
                            f"intervention), above the budget of {MAX_APPLICATIONS:,}; expected "
                            "fewer interventions, a larger every or an earlier until")
    secs = estimate_setup_seconds(values)
    if secs > SETUP_BUDGET_S:
        n = values["ecosystem"]["organizations"]
        raise ScenarioError(source, "ecosystem.organizations",
                            f"building an erdos_renyi graph of {n:,} organizations takes about "
                            f"{secs / 60:.0f} minutes (every one of {n * (n - 1) // 2:,} pairs is "
                            f"tried), above the budget of {SETUP_BUDGET_S} s; expected at most "
                            f"{int((2 * SETUP_BUDGET_S / (NS_PER_GNP_PAIR * 1e-9)) ** 0.5):,} "
                            "organizations, or another graph (e.g. powerlaw_cluster)")


def parse_override(text: str, source: str = "--set") -> tuple[str, Any]:
    """Parse 'section.key=value'; the value is a TOML value and a bare word is a string."""
    if "=" not in text:
        raise ScenarioError(source, text, "expected KEY=VALUE, e.g. mindset.abundance_share=0.3")
    key, _, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not key:
        raise ScenarioError(source, text, "expected KEY=VALUE with a key before '='")
    try:
        doc = tomllib.loads(f"v = {value}")
        parsed = doc["v"] if list(doc) == ["v"] else value
    except (tomllib.TOMLDecodeError, RecursionError):
        parsed = value  # a bare word: a string
    return key, parsed


def known_keys() -> list[str]:
    """Every dotted key a --set or a sweep parameter may name (interventions by index)."""
    return list(SCHEMA[""]) + [f"{s}.{k}" for s in SCHEMA if s for k in SCHEMA[s]] + [
        f"interventions.0.{k}" for k in INTERVENTION_KEYS]


def apply_overrides(raw: dict[str, Any], overrides: list[tuple[str, Any]], source: str) -> dict:
    """Put dotted-key overrides into a raw scenario dict (checked later by validate).

    `section.key`, a top-level key, or `interventions.N.key` for the N-th intervention.
    """
    raw = copy.deepcopy(raw)
    for key, value in overrides:
        parts = key.split(".")
        if len(parts) == 1 and parts[0] in SCHEMA[""]:
            raw[parts[0]] = value
        elif len(parts) == 2 and parts[0] in SCHEMA and parts[0]:
            section = raw.setdefault(parts[0], {})
            if not isinstance(section, dict):
                raise ScenarioError(source, parts[0], "expected a table")
            section[parts[1]] = value
        elif len(parts) == 3 and parts[0] == "interventions" and parts[2] in INTERVENTION_KEYS:
            items = raw.get("interventions", [])
            n = len(items) if isinstance(items, list) else 0
            if not re.fullmatch(r"[0-9]{1,9}", parts[1]) or int(parts[1]) >= n:
                raise ScenarioError(source, key, f"expected an intervention index from 0 to "
                                    f"{n - 1}" if n else "the scenario has no interventions")
            if not isinstance(items[int(parts[1])], dict):
                raise ScenarioError(source, key, "expected the intervention to be a table")
            items[int(parts[1])][parts[2]] = value
        else:
            raise ScenarioError(source, key, "unknown key" + _suggest(key, known_keys()))
    return raw


@dataclass
class Scenario:
    """A validated scenario: the merged values plus where they came from."""

    values: dict[str, Any]
    path: str = "<memory>"
    file_sha256: str = ""
    overrides: list[tuple[str, Any]] = field(default_factory=list)
    extends: list[str] = field(default_factory=list)  # base files, nearest first

    @property
    def name(self) -> str:
        return self.values["name"]

    @property
    def seed(self) -> int:
        return self.values["seed"]

    @property
    def steps(self) -> int:
        return self.values["steps"]

    def resolved_sha256(self) -> str:
        """Hash of every resolved value (defaults and overrides included)."""
        blob = json.dumps(self.values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def params(self) -> SimpleNamespace:
        """Attribute access for the kernel: p.trust.rate, p.ecosystem.graph, ..."""
        ns = SimpleNamespace()
        for section in SCHEMA:
            if section:
                setattr(ns, section, SimpleNamespace(**self.values[section]))
        for k in SCHEMA[""]:
            setattr(ns, k, self.values[k])
        return ns

    def with_overrides(self, overrides: list[tuple[str, Any]], source: str = "--set") -> Scenario:
        raw = apply_overrides(self.values, overrides, source)
        return Scenario(validate(raw, source), self.path, self.file_sha256,
                        self.overrides + list(overrides), self.extends)


def _read_bytes(path: Path) -> bytes:
    """A scenario file's bytes: a regular file of at most FILE_MAX bytes (not a FIFO that would
    hang, not /dev/zero that never ends)."""
    where = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ScenarioError(where, "", "file not found") from None
    except OSError as e:
        raise ScenarioError(where, "", f"cannot read: {e.strerror}") from None
    except ValueError:  # an embedded NUL (from the API; argv cannot hold one)
        raise ScenarioError(where, "", "expected a file name without NUL characters") from None
    if stat.S_ISDIR(st.st_mode):
        raise ScenarioError(where, "", "expected a TOML file, got a directory")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(
            st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(
            st.st_mode) else "not a regular file")
        raise ScenarioError(where, "", f"expected a regular TOML file, got {kind}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(FILE_MAX + 1)
    except OSError as e:
        raise ScenarioError(where, "", f"cannot read: {e.strerror}") from None
    if len(data) > FILE_MAX:
        raise ScenarioError(where, "", f"expected a scenario file of at most {FILE_MAX:,} "
                            f"bytes, got a larger one")
    return data


def read_toml(path: str | Path) -> tuple[dict[str, Any], bytes]:
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(str(path), "", f"expected UTF-8 text, got byte {data[e.start]:#04x} "
                            f"at offset {e.start}") from None
    text = text.removeprefix("\ufeff")  # a UTF-8 byte order mark (some editors write one)
    try:
        return tomllib.loads(text), data
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(str(path), "", f"TOML syntax error: {e}") from None
    except RecursionError:
        raise ScenarioError(str(path), "", "TOML nested too deeply") from None


def deep_merge(base: dict, child: dict) -> dict:
    """child over base, table by table; a list (interventions) in child replaces base's."""
    out = copy.deepcopy(base)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _resolve(path: Path, source: str) -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:  # a symlink loop (RuntimeError before Python 3.13)
        raise ScenarioError(source, "extends", f"cannot follow {path}: {e}") from None


def read_scenario(path: str | Path, _seen: tuple[Path, ...] = ()) -> tuple[dict, bytes, list]:
    """Read a scenario file and the chain of files it extends, merged into one raw dict.

    `extends = "baseline.toml"` is a path relative to the file. Each base is validated on its
    own first, so a problem in a base names the base file. Returns (raw, file bytes, chain).
    The chain is followed in a loop (no recursion), at most EXTENDS_MAX files deep.
    """
    path = Path(path)
    raw, data = read_toml(path)
    chain_raw = [raw]
    chain = [str(path)]
    seen = list(_seen)
    here = path
    while True:
        ext = chain_raw[-1].pop("extends", None)
        if ext is None:
            break
        if not isinstance(ext, str) or not ext or "\0" in ext:
            raise ScenarioError(str(here), "extends",
                                f'expected a scenario file name, e.g. "baseline.toml", got '
                                f"{_short(ext)}")
        if len(chain) >= EXTENDS_MAX:
            raise ScenarioError(str(here), "extends", f"expected a chain of at most "
                                f"{EXTENDS_MAX} files, got a longer one (from {path})")
        seen.append(_resolve(here, str(here)))
        base = here.parent / ext
        resolved = _resolve(base, str(here))
        if resolved in seen:
            cycle = " -> ".join(p.name for p in (*seen, resolved))
            raise ScenarioError(str(here), "extends",
                                f"expected a chain without cycles, got {cycle}")
        try:
            is_file = base.is_file()
        except OSError:
            is_file = False
        if not is_file:
            raise ScenarioError(str(here), "extends", f"base scenario not found: {base}")
        base_raw, _ = read_toml(base)
        chain_raw.append(base_raw)
        chain.append(str(base))
        here = base
    # merge from the farthest base in: each base is validated on its own, naming its file
    merged = chain_raw[-1]
    for i in range(len(chain_raw) - 1, 0, -1):
        validate(merged, chain[i])
        merged = deep_merge(merged, chain_raw[i - 1])
    return merged, data, chain


def load(path: str | Path, overrides: list[str] | None = None,
         flags: list[tuple[str, str]] | None = None) -> Scenario:
    """Read (following `extends`), merge over defaults, apply --set overrides, validate.

    flags: (label, "key=value") pairs from dedicated options such as ("--steps", "steps=0");
    they apply after the --set overrides. All overrides are validated together (so
    `--set interventions.0.step=250 --steps 300` is fine); when that fails, the problem is
    reported under the first stage (--set, then each flag) at which it appears.
    """
    raw, data, chain = read_scenario(path)
    values = validate(raw, str(path))
    stages = [(f"{path} (--set)", list(overrides or []))] + [
        (f"{path} ({label})", [text]) for label, text in (flags or [])]
    stages = [(src, [parse_override(o, src) for o in texts]) for src, texts in stages if texts]
    if not stages:
        return Scenario(values, str(path), hashlib.sha256(data).hexdigest(), [], chain[1:])
    parsed_all = [kv for _, parsed in stages for kv in parsed]
    merged = raw
    for src, parsed in stages:
        merged = apply_overrides(merged, parsed, src)
    try:
        values = validate(merged, stages[-1][0])
    except ScenarioError:  # the file is fine on its own: find the stage that breaks it
        step = raw
        for src, parsed in stages:
            step = apply_overrides(step, parsed, src)
            validate(step, src)
        raise
    return Scenario(values, str(path), hashlib.sha256(data).hexdigest(), parsed_all, chain[1:])


def from_dict(raw: dict[str, Any], source: str = "<memory>") -> Scenario:
    """A scenario from a dict (tests, UI, sweeps): same validation as a file."""
    return Scenario(validate(raw, source), source)
