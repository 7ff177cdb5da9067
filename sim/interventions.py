"""Interventions: array operations on the ties of targeted alliances or people of targeted
organizations. Each takes (state, params, rng, org_mask, dose) and is applied at the start of
its scheduled step, before that step's dynamics. With noise off, random outcomes are replaced
by their expectation, so the step stays a deterministic map.
"""

from __future__ import annotations

import numpy as np

from .kernel import claims, confront_prob, flip, per_person
from .state import VALUE_KINDS, State


def _dyads(s: State, org_mask) -> np.ndarray:
    """Dyads of active alliances with at least one targeted organization; or, when org_mask is
    an AllianceTarget, the dyads of exactly those alliances."""
    if isinstance(org_mask, AllianceTarget):
        return org_mask.alliances[s.d_al]
    sides = s.al_org[s.d_al]
    return org_mask[sides[:, 0]] | org_mask[sides[:, 1]]  # over dyads (columns of T, O)


class AllianceTarget:
    """Target the ties of given alliances only (the UI's "selected alliance"); the people and
    organizations concerned are those of these alliances."""

    def __init__(self, s: State, alliances):
        self.alliances = np.zeros(s.n_al, bool)
        self.alliances[np.asarray(alliances, dtype=np.int64)] = True
        orgs = np.zeros(s.n_org, bool)
        orgs[s.al_org[self.alliances].ravel()] = True
        self.orgs = orgs



def _orgs(org_mask) -> np.ndarray:
    return org_mask.orgs if isinstance(org_mask, AllianceTarget) else org_mask


def share_perspectives(s: State, p, rng, org_mask, dose: float) -> None:
    """Openly share perspectives: openness rises toward 1 by dose, and each person's
    perspective moves dose/2 of the way toward the partners' (dose 1 meets in the middle)."""
    sel = _dyads(s, org_mask)
    s.O[:, sel] += dose * (1.0 - s.O[:, sel])
    w = sel.astype(float)
    i0, i1 = s.d_ind
    n = per_person(s, w)
    diff = s.p[i1] - s.p[i0]
    move = np.stack([per_person(s, w * diff[:, k], -w * diff[:, k])
                     for k in range(s.p.shape[1])], axis=1)
    s.p += 0.5 * dose * move / np.maximum(n, 1)[:, None]
    np.clip(s.p, 0.0, 1.0, out=s.p)


def neutralize(s: State, p, rng, org_mask, dose: float) -> None:
    """Share the problem without blame: tension falls by dose; the neutralized problem becomes
    an opportunity with chance dose * trust (its value added to the alliance)."""
    sel = np.flatnonzero(_dyads(s, org_mask))
    had = s.D[sel] > 0
    s.D[sel] *= 1.0 - dose
    chance = dose * 0.5 * (s.T[0, sel] + s.T[1, sel]) * had
    if p.noise.enabled:
        gain = (rng.random(len(sel)) < chance).astype(float)
    else:
        gain = chance
    _add_opportunity(s, p, sel, gain)


def _add_opportunity(s: State, p, sel: np.ndarray, gain: np.ndarray) -> None:
    """Value from opportunities on dyads sel (gain: 1/0, or the expectation with noise off):
    created by kind, perceived as in the pie step, and trust gained both ways."""
    flow = p.value.opportunity * gain
    s.v[sel] += flow
    created = np.bincount(s.d_al[sel], flow, s.n_al)
    split = np.full(len(VALUE_KINDS), (1.0 - p.value.revenue_share) / (len(VALUE_KINDS) - 1))
    split[0] = p.value.revenue_share
    s.al_value += created[:, None] * split[None, :]
    c = claims(s, p)[:, sel]
    sv = c / np.maximum(1.0, c[0] + c[1])
    view = np.where(s.m, 1.0, p.value.revenue_share)[s.d_ind[:, sel]]
    s.al_perceived += np.bincount(s.d_al[sel], ((sv * view).sum(axis=0)) * flow, s.n_al)
    s.T[:, sel] += p.differences.opportunity_trust * gain * (1.0 - s.T[:, sel])


def find_opportunity(s: State, p, rng, org_mask, dose: float) -> None:
    """Look for the opportunity inside the problems: each targeted tie turns one into value with
    chance dose * trust (value `value.opportunity`, trust gained as in a confronted difference)."""
    sel = np.flatnonzero(_dyads(s, org_mask))
    chance = dose * 0.5 * (s.T[0, sel] + s.T[1, sel])
    gain = (rng.random(len(sel)) < chance).astype(float) if p.noise.enabled else chance
    _add_opportunity(s, p, sel, gain)


def coach_mindset(s: State, p, rng, org_mask, dose: float) -> None:
    """Coach the people of the targeted organizations: latent abundance rises by dose toward 1;
    the expressed mindset then follows the usual hysteresis rule."""
    who = _orgs(org_mask)[s.org]
    s.a[who] += dose * (1.0 - s.a[who])
    flip(s, p)


def scare(s: State, p, rng, org_mask, dose: float) -> None:
    """A scare (a market crash, layoffs, a partner's betrayal in the news): the latent
    abundance of the targeted organizations' people falls by the fraction dose; the expressed
    mindset then follows the hysteresis rule."""
    who = _orgs(org_mask)[s.org]
    s.a[who] *= 1.0 - dose
    flip(s, p)


def set_patience(s: State, p, rng, org_mask, dose: float) -> None:
    """Set the patience horizon (steps) of the targeted organizations."""
    s.horizon[_orgs(org_mask)] = int(dose)


def shock(s: State, p, rng, org_mask, dose: float) -> None:
    """A crisis: a difference of size dose on every targeted tie. Confronted ones are
    neutralized (tension, old and new, cleared, as a confronted difference in step 2); avoided
    ones add to tension (and may blow up into blame this step). With noise off: the expected
    tension."""
    sel = np.flatnonzero(_dyads(s, org_mask))
    q = confront_prob(s, p, s.O[0] * s.O[1])[sel]
    if p.noise.enabled:
        avoided = (rng.random(len(sel)) >= q).astype(float)
    else:
        avoided = 1.0 - q
    s.D[sel] = avoided * (s.D[sel] + dose)


KINDS = {
    "share_perspectives": share_perspectives,
    "neutralize": neutralize,
    "coach_mindset": coach_mindset,
    "set_patience": set_patience,
    "shock": shock,
    "scare": scare,
    "find_opportunity": find_opportunity,
}


def org_mask(s: State, target) -> np.ndarray:
    mask = np.zeros(s.n_org, bool)
    if target == "all":
        mask[:] = True
    else:
        mask[np.asarray(target, dtype=np.int64)] = True
    return mask


def apply(s: State, p, rng, kind: str, target, dose: float, alliances=None) -> None:
    """Apply an intervention to organizations `target` ("all" or ids), or, when `alliances` is
    given, to those alliances only."""
    mask = AllianceTarget(s, alliances) if alliances is not None else org_mask(s, target)
    KINDS[kind](s, p, rng, mask, dose)
