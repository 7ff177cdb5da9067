"""The array kernel: one step of DESIGN section 3 for every tie at once.

Each part is a function of (state, params[, rng]) that updates the state's arrays in place and
returns what later parts or the narration need. There is no Python loop over ties, dyads or
alliances: per-person and per-alliance sums are np.bincount over the dyad rows. The equations are
stated in docs/model.md with the same names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import metrics
from .state import VALUE_KINDS, State, dyads_for, empty_alliances, initial_trust


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1/(1+e^-x), without overflow warnings


@dataclass
class Events:
    """What happened in one step (indices), for the narration and the counters."""

    avoided: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # alliances
    blamed: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    opportunities: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    ended: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    formed: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    to_scarcity: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # people
    to_abundance: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    value_flow: float = 0.0


def per_person(s: State, w0, w1=None) -> np.ndarray:
    """Sum of per-tie weights onto the tie holders: w0 for side-0 people, w1 for side-1."""
    n = s.n_ind
    t = s.topology()
    if w1 is None:
        w1 = w0
    return np.bincount(t.i0, w0, n) + np.bincount(t.i1, w1, n)


def degree(s: State) -> np.ndarray:
    return s.topology().deg


def unique_alliances(s: State, rows) -> np.ndarray:
    """Sorted distinct alliances of the given dyad rows (a bincount: no sort of the rows)."""
    return np.flatnonzero(np.bincount(s.d_al[rows], minlength=s.n_al))


def talk_rate(p) -> float:
    return p.talk.rate * (p.negotiation.empathy_factor if p.negotiation.empathy else 1.0)


# 1. Talk -------------------------------------------------------------------------------------
def talk(s: State, p, rng, noise: bool) -> tuple[np.ndarray, np.ndarray]:
    """Perspectives move toward partners by mu * O_ji; without exchange they drift apart.

    Returns the mutual exchange x (per dyad, from this step's openness) and the divergence d
    after talking.
    """
    t = s.topology()
    i0, i1, inv = t.i0, t.i1, t.inv
    O0, O1 = s.O[:, 0], s.O[:, 1]
    x = O0 * O1
    mu = talk_rate(p)
    move = np.empty_like(s.p)
    for k in range(s.p.shape[1]):  # K topics (a handful), not ties
        pk = s.p[:, k]
        diff = pk[i1] - pk[i0]  # from the side-0 person toward the side-1 person
        move[:, k] = per_person(s, O1 * diff, -(O0 * diff))
    s.p += (mu * inv)[:, None] * move
    if noise and p.talk.noise > 0:
        mean_x = per_person(s, x) * inv
        s.p += (p.talk.noise * (1.0 - mean_x))[:, None] * rng.standard_normal(s.p.shape)
    np.clip(s.p, 0.0, 1.0, out=s.p)
    return x, divergence(s)


def divergence(s: State) -> np.ndarray:
    """d = mean over topics of |p_i - p_j| for every dyad."""
    t = s.topology()
    d = np.zeros(len(t.i0))
    for k in range(s.p.shape[1]):
        pk = s.p[:, k]
        d += np.abs(pk[t.i0] - pk[t.i1])
    d /= s.p.shape[1]
    return d


def confront_prob(s: State, p, x: np.ndarray) -> np.ndarray:
    """Chance a dyad confronts its differences: mean of the sides' styles, times (0.5+0.5x)."""
    c = np.where(s.m, p.differences.confront_abundance, p.differences.confront_scarcity)
    return 0.5 * (c[s.d_ind[:, 0]] + c[s.d_ind[:, 1]]) * (0.5 + 0.5 * x)


# 2. Differences ------------------------------------------------------------------------------
def differences(s: State, p, rng, noise: bool, x: np.ndarray, ev: Events) -> np.ndarray:
    """Random differences, confronted (neutralized, maybe an opportunity) or avoided (tension).

    Returns the number of opportunities found per dyad (0 or 1).
    """
    opp = np.zeros(len(s.D))
    if not noise or p.differences.rate <= 0:
        return opp
    count = rng.poisson(p.differences.rate, len(s.D))
    idx = np.flatnonzero(count)
    if len(idx) == 0:
        return opp
    size = rng.gamma(count[idx].astype(float), p.differences.size) if p.differences.size > 0 \
        else np.zeros(len(idx))
    confronted = rng.random(len(idx)) < confront_prob(s, p, x)[idx]
    chance = s.T[idx].mean(axis=1)  # a confronted problem becomes an opportunity w.p. trust
    found = confronted & (rng.random(len(idx)) < chance)
    s.D[idx[confronted]] = 0.0
    avoided = idx[~confronted]
    s.D[avoided] += size[~confronted]
    opp[idx[found]] = 1.0
    if p.differences.opportunity_trust > 0 and found.any():
        f = idx[found]
        s.T[f] += p.differences.opportunity_trust * (1.0 - s.T[f])
    ev.avoided = unique_alliances(s, avoided)
    ev.opportunities = unique_alliances(s, idx[found])
    return opp


def blame(s: State, p, ev: Events) -> np.ndarray:
    """Tension past blame_level blows up: trust falls both ways, tension resets.

    Tension of n times blame_level is n quarrels: trust is multiplied by (1 - blame_cost)^n.
    Deterministic, so it also runs with noise off (a scheduled shock can still cause blame).
    Returns per person the blames suffered as a share of own ties (experiences are shares of
    one's ties, so a busy person is not hurt more per event).
    """
    hit = s.D > p.differences.blame_level
    if not hit.any():
        return np.zeros(s.n_ind)
    n = np.floor(s.D[hit] / p.differences.blame_level)
    s.T[hit] *= ((1.0 - p.differences.blame_cost) ** n)[:, None]
    s.D[hit] = 0.0
    ev.blamed = unique_alliances(s, hit)
    np.add.at(s.al_blames, s.d_al[hit], n.astype(np.int64))
    w = np.zeros(len(s.D))
    w[hit] = n
    return per_person(s, w) / np.maximum(degree(s), 1)


# 5. Pie: value created, claims, perceived value ----------------------------------------------
def claims(s: State, p) -> np.ndarray:
    """Share of the pie each side claims: half, or more for a scarcity holder."""
    if p.negotiation.interests:
        return np.full(s.T.shape, 0.5)
    c = np.where(s.m, 0.5, p.value.claim_scarcity)
    return c[s.d_ind]


def value(s: State, p, x: np.ndarray, opp: np.ndarray, ev: Events):
    """Value created (exchange + opportunities), divided by claims, perceived by view.

    Returns (perceived value level per tie, overclaim per dyad).
    """
    flow = p.value.exchange * x + p.value.opportunity * opp
    s.v *= p.value.memory
    s.v += flow
    c = claims(s, p)
    total = c.sum(axis=1)
    share = c / np.maximum(1.0, total)[:, None]
    view = np.where(s.m[s.d_ind], 1.0, p.value.revenue_share)  # holistic or revenue-only
    sv = share * view
    perceived_level = 2.0 * sv * s.v[:, None]  # relative to a fair half of the pie
    n_al = s.n_al
    created = np.bincount(s.d_al, flow, n_al)
    split = np.full(len(VALUE_KINDS), (1.0 - p.value.revenue_share) / (len(VALUE_KINDS) - 1))
    split[0] = p.value.revenue_share
    s.al_value += created[:, None] * split[None, :]
    s.al_perceived += np.bincount(s.d_al, (sv * flow[:, None]).sum(axis=1), n_al)
    np.add.at(s.al_opps, s.d_al[opp > 0], 1)
    ev.value_flow = float(flow.sum())
    return perceived_level, np.maximum(0.0, total - 1.0)


# 3. Trust ------------------------------------------------------------------------------------
def trust(s: State, p, perceived: np.ndarray, d: np.ndarray, overclaim: np.ndarray) -> None:
    t = p.trust
    bias = np.where(s.m, t.bias_abundance, t.bias_scarcity)[s.d_ind]
    arg = (t.w_openness * (s.O[:, ::-1] - t.openness_ref)
           + t.w_value * (perceived - t.value_ref)
           - (t.w_divergence * (d - t.divergence_ref)
              + t.w_tension * s.D + t.w_dispute * overclaim)[:, None]
           + bias)
    s.T += t.rate * (sigmoid(t.steepness * arg) - s.T)


# 4. Openness ---------------------------------------------------------------------------------
def openness(s: State, p, impatient: np.ndarray) -> None:
    o = p.openness
    b = np.where(s.m, o.bias_abundance, o.bias_scarcity)[s.d_ind]
    b = b + p.patience.close_bias * impatient
    s.O += o.rate * (sigmoid(o.steepness * (s.T - o.threshold) + b) - s.O)


# 6. Patience ---------------------------------------------------------------------------------
def patience(s: State, p, perceived: np.ndarray, noise: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each side compares its perceived value with its expectation.

    Short for more than half its horizon: it changes strategy and closes up (openness bias
    close_bias on its ties). Short for more than its horizon: it ends the alliance.
    Returns (impatient flag per tie, alliances to end). Off with noise off.
    """
    if not noise:
        return np.zeros(s.T.shape), np.empty(0, np.int64)
    n_al = s.n_al
    cnt = np.maximum(np.bincount(s.d_al, minlength=n_al), 1)
    act = s.active
    horizon = s.horizon[s.al_org]  # (n_al, 2)
    for side in (0, 1):  # two sides, not ties
        level = np.bincount(s.d_al, perceived[:, side], n_al) / cnt
        short = act & (level < p.value.expectation)
        s.al_short[:, side] = np.where(short, s.al_short[:, side] + 1, 0)
    impatient_al = s.al_short * 2 > horizon
    ending = np.flatnonzero(act & (s.al_short > horizon).any(axis=1))
    return impatient_al[s.d_al].astype(float), ending


# 7. Mindset ----------------------------------------------------------------------------------
def mindset(s: State, p, blames: np.ndarray, hurt_by_end: np.ndarray, ev: Events) -> None:
    """Latent abundance: slow rise with good experience, fast fall with bad; culture and peers.

    The expressed mindset flips with hysteresis: to scarcity below theta_down, back to
    abundance only above theta_up.
    """
    mp = p.mindset
    t = s.topology()
    good = per_person(s, (s.T[:, 0] > mp.trusted_level).astype(float),
                      (s.T[:, 1] > mp.trusted_level).astype(float)) * t.inv
    wsum = per_person(s, s.T[:, 0], s.T[:, 1])
    peer = per_person(s, s.T[:, 0] * s.a[t.i1], s.T[:, 1] * s.a[t.i0])
    peer_pull = np.where(wsum > 0, peer / np.where(wsum > 0, wsum, 1.0) - s.a, 0.0)
    s.a += (mp.learn_rate * good - mp.hurt_rate * blames - mp.betrayal * hurt_by_end
            + mp.culture_pull * (s.culture[s.org] - s.a) + mp.peer_pull * peer_pull)
    np.clip(s.a, 0.0, 1.0, out=s.a)
    new_m = np.where(s.m, s.a >= mp.theta_down, s.a > mp.theta_up)
    ev.to_scarcity = np.flatnonzero(s.m & ~new_m)
    ev.to_abundance = np.flatnonzero(~s.m & new_m)
    s.m = new_m
    # culture follows its people
    n_org = s.n_org
    mean_a = np.bincount(s.org, s.a, n_org) / np.maximum(np.bincount(s.org, minlength=n_org), 1)
    s.culture += mp.culture_follow * (mean_a - s.culture)


# 8. Ecosystem: ending and formation ----------------------------------------------------------
def end_alliances(s: State, p, ending: np.ndarray, ev: Events) -> np.ndarray:
    """Ended alliances keep their last summary and leave the tie arrays.

    Returns per person the share of own ties that ended this step (a bad experience).
    """
    hurt = np.zeros(s.n_ind)
    if len(ending) == 0:
        return hurt
    s.al_ended[ending] = s.step
    s.al_regime[ending] = metrics.OUT
    gone = np.zeros(s.n_al, bool)
    gone[ending] = True
    drop = gone[s.d_al]
    hurt = per_person(s, drop.astype(float)) / np.maximum(degree(s), 1)
    keep = ~drop
    for name in ("d_al", "d_ind", "T", "O", "D", "v"):
        setattr(s, name, getattr(s, name)[keep])
    s.changed_ties()
    ev.ended = ending
    return hurt


def form_alliances(s: State, p, rng, ev: Events) -> np.ndarray:
    """New alliances: a few per step (Poisson(formation.rate)), preferring partners of trusted
    partners (triadic closure), otherwise organizations with a reputation for trust.

    The loop is over the new alliances of this step (a handful), never over ties.
    """
    n_new = rng.poisson(p.formation.rate)
    if n_new == 0:
        return np.empty(0, np.int64)
    n = s.n_org
    new_pairs = []
    act = s.active
    ao = s.al_org[act]
    at = s.al_trust[act]
    # reputation: mean trust of the organization's active alliances (0.5 when it has none)
    cnt = np.bincount(ao.ravel(), minlength=n)
    rep = np.where(cnt > 0, np.bincount(ao.ravel(), np.repeat(at, 2), n) / np.maximum(cnt, 1),
                   0.5)
    t0 = initial_trust(p)
    for _ in range(n_new):
        a = int(rng.integers(n))
        mine = (ao == a).any(axis=1)
        partners = np.zeros(n, bool)
        partners[ao[mine].ravel()] = True
        partners[a] = True  # not with itself
        cand = np.empty(0, np.int64)
        if rng.random() < p.formation.closure:
            via = ao[mine & (at > p.mindset.trusted_level)].ravel()
            via = via[via != a]
            if len(via):
                reach = np.zeros(n, bool)
                reach[ao[np.isin(ao, via).any(axis=1)].ravel()] = True
                cand = np.flatnonzero(reach & ~partners)
        if len(cand):
            b = int(cand[rng.integers(len(cand))])
        else:
            free = np.flatnonzero(~partners)
            if len(free) == 0:
                continue
            w = np.cumsum(rep[free] + 0.05)
            b = int(free[min(np.searchsorted(w, rng.random() * w[-1], side="right"),
                             len(free) - 1)])
        new_pairs.append((min(a, b), max(a, b)))
        ao = np.vstack([ao, [[a, b]]])
        at = np.append(at, t0)
    if not new_pairs:
        return np.empty(0, np.int64)
    pairs = np.array(new_pairs, np.int64)
    ids = add_alliances(s, p, pairs)
    ev.formed = ids
    return ids


def add_alliances(s: State, p, pairs: np.ndarray) -> np.ndarray:
    """Append alliances (and their dyads at the initial trust and openness)."""
    k = len(pairs)
    start = s.n_al
    al = empty_alliances(k, s.al_hist.shape[1] - 1)
    al["al_org"][:] = pairs
    al["al_formed"][:] = s.step
    t0, o0 = initial_trust(p), p.initial.openness
    al["al_trust"][:], al["al_open"][:] = t0, o0
    al["al_hist"][:] = (t0 + o0) / 2
    for name, arr in al.items():
        setattr(s, name, np.concatenate([getattr(s, name), arr]))
    d_al, d_ind = dyads_for(pairs, p.ecosystem.individuals_per_organization)
    nd = len(d_al)
    s.d_al = np.concatenate([s.d_al, d_al + start])
    s.d_ind = np.concatenate([s.d_ind, d_ind])
    s.T = np.concatenate([s.T, np.full((nd, 2), t0)])
    s.O = np.concatenate([s.O, np.full((nd, 2), o0)])
    s.D = np.concatenate([s.D, np.zeros(nd)])
    s.v = np.concatenate([s.v, np.zeros(nd)])
    s.changed_ties()
    return np.arange(start, start + k)


# The step ------------------------------------------------------------------------------------
def step(s: State, p, rng) -> Events:
    """One step of the model for every tie at once. Order: talk, differences, blame, pie,
    trust, patience, openness, mindset, ending, formation, alliance summaries and regimes.

    Trust is updated from last step's openness; openness from this step's trust.
    """
    noise = p.noise.enabled
    s.step += 1
    ev = Events()
    x, d = talk(s, p, rng, noise)
    opp = differences(s, p, rng, noise, x, ev)
    blames = blame(s, p, ev)
    perceived, overclaim = value(s, p, x, opp, ev)
    trust(s, p, perceived, d, overclaim)
    impatient, ending = patience(s, p, perceived, noise)
    openness(s, p, impatient)
    metrics.summarize_alliances(s)
    hurt = end_alliances(s, p, ending, ev)
    mindset(s, p, blames, hurt, ev)
    if noise:
        form_alliances(s, p, rng, ev)
    metrics.classify(s, p)
    return ev
