"""`spiral mechanisms`: look at the distributions behind the means, over seeds.

A law that passes for the wrong reason is a defect, so this reports what produced the outcome:
ages at ending and the hazard by age, who flipped mindset, outcomes by pair type at formation
and the Kaplan-Meier failure. The same figures are asserted by tests/test_mechanisms.py.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from sim.metrics import durations, hazard_by_age
from sim.model import AllianceModel
from sim.scenario import load

PAIRS = {2: "abundance-abundance", 1: "mixed", 0: "scarcity-scarcity"}


def report(path, seeds, sets=(), progress=None) -> dict:
    """Run the scenario at every seed and pool the mechanism figures."""
    dur, ended, drops, kinds, regimes = [], [], [], [], []
    flips_down, flips_up, people, km = [], [], 0, []
    for sd in seeds:
        m = AllianceModel(load(path, [*sets, f"seed={sd}"]))
        m.run()
        s = m.state
        d, c = durations(s)
        dur.append(d)
        ended.append(~c)
        active = np.r_[np.sum(s.al_formed == 0), m.timeseries()["alliances_active"]]
        lost = np.bincount(s.al_ended[s.al_ended >= 0], minlength=len(active))[1:len(active)]
        drops.append(float((lost / np.maximum(active[:-1], 1)).max()) if len(lost) else 0.0)
        kinds.append(s.al_mindset.sum(axis=1))
        regimes.append(s.al_regime)
        flips_down.append(int((s.ind_to_scarcity > 0).sum()))
        flips_up.append(int((s.ind_to_abundance > 0).sum()))
        people += s.n_ind
        km.append(m.summary()["failure_rate_km"])
        if progress:
            progress(1)
    dur, ended = np.concatenate(dur), np.concatenate(ended)
    kinds, regimes = np.concatenate(kinds), np.concatenate(regimes)
    out: dict = {"scenario": str(path), "seeds": list(seeds), "overrides": list(sets),
                 "alliances": int(len(dur)), "endings": int(ended.sum())}
    if ended.any():
        _, cnt = np.unique(dur[ended], return_counts=True)
        out["max_share_of_endings_at_one_age"] = float(cnt.max() / cnt.sum())
    out["max_share_of_active_lost_in_one_step"] = max(drops) if drops else 0.0
    ages, h = hazard_by_age(dur, ended)
    if len(h):
        k = int(np.argmax(h))
        later = h[ages >= 2 * ages[k]]
        out["hazard"] = {"ages": ages[::5].tolist(), "per_step": np.round(h[::5], 5).tolist(),
                         "peak_age": float(ages[k]), "peak": float(h[k]),
                         "max_past_twice_peak_over_peak":
                             float(later.max() / h[k]) if len(later) and h[k] > 0 else None}
    out["people"] = people
    out["share_flipped_to_scarcity"] = sum(flips_down) / people if people else 0.0
    out["share_flipped_to_abundance"] = sum(flips_up) / people if people else 0.0
    out["pairs"] = {}
    for k, name in PAIRS.items():
        sel = kinds == k
        if sel.any():
            out["pairs"][name] = {"alliances": int(sel.sum()),
                                  "spiral_in": float(np.mean(regimes[sel] == 1)),
                                  "spiral_out_or_ended": float(np.mean(regimes[sel] == -1))}
    vals = [x for x in km if x is not None]
    out["failure_rate_km"] = {"mean": float(np.mean(vals)) if vals else None,
                              "per_seed": km}
    return out


def text(r: dict) -> str:
    lines = [f"{r['scenario']}: {len(r['seeds'])} seeds, {r['alliances']} alliances, "
             f"{r['endings']} endings"]
    if "max_share_of_endings_at_one_age" in r:
        lines.append(f"  endings at any one age: at most {r['max_share_of_endings_at_one_age']:.1%};"
                     f" active lost in one step: at most "
                     f"{r['max_share_of_active_lost_in_one_step']:.1%}")
    hz = r.get("hazard")
    if hz:
        ratio = hz["max_past_twice_peak_over_peak"]
        lines.append(f"  hazard by age: peak {hz['peak']:.4f}/step at age {hz['peak_age']:.0f};"
                     f" past twice that age at most "
                     f"{'n/a' if ratio is None else f'{ratio:.0%}'} of the peak")
    lines.append(f"  people who flipped to scarcity: {r['share_flipped_to_scarcity']:.1%}; "
                 f"back to abundance: {r['share_flipped_to_abundance']:.1%}")
    for name, v in r["pairs"].items():
        lines.append(f"  {name:>20}: {v['alliances']:5d} alliances, in {v['spiral_in']:.1%}, "
                     f"out or ended {v['spiral_out_or_ended']:.1%}")
    km = r["failure_rate_km"]["mean"]
    lines.append("  failure_rate_km (mean over seeds): " + ("n/a" if km is None else f"{km:.3f}"))
    return "\n".join(lines)


def main_mechanisms(args) -> int:
    from tqdm import tqdm

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    load(args.scenario, args.set or [])  # bad input: one line before any run
    with tqdm(total=len(seeds), disable=args.quiet or args.json == "-", file=sys.stderr,
              desc="seeds", leave=False) as bar:
        r = report(args.scenario, seeds, args.set or [], bar.update)
    if args.json == "-":
        print(json.dumps(r, indent=2))
    else:
        print(text(r))
        if args.json:
            from sim.outputs import write_json

            write_json(args.json, r)
    return 0
