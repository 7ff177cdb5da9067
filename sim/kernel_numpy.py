"""The numpy path of the step: every phase of docs/model.md as a function of the same name
(talk, differences, blame, value, patience, trust, openness, mindset, ...), each a few
vectorized passes over all ties at once.

Each part is a function of (state, params[, draws]) that updates the state's arrays in place and
returns what later parts or the narration need. There is no Python loop over ties, dyads or
alliances: per-person and per-alliance sums are np.bincount over the dyad rows. This is the
readable statement of the step and the tested fallback; sim/kernel_numba.py computes the same
step in fused compiled loops, and sim/kernel.py chooses between the two.

Randomness: every random number a step needs is drawn up front by `draw_step`, in bulk and in a
fixed order, from the model's numpy Generator. Both paths consume exactly these draws, so the
choice of path does not change a run beyond floating-point rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .state import IN, OUT, UNDECIDED, VALUE_KINDS, State, initial_trust, new_alliances


@dataclass
class Draws:
    """One step's random numbers, in the order they are drawn (None: not drawn)."""

    n_diff: int = 0  # Poisson: differences this step over all dyads (drawn first)
    talk: np.ndarray | None = None  # (n_ind, K) standard normals: perspective drift
    counts: np.ndarray | None = None  # (n_d,) differences per dyad (each at a uniform dyad)
    idx: np.ndarray | None = None  # dyads with at least one difference
    size: np.ndarray | None = None  # (len(idx),) their total size: a sum of exponentials
    confront: np.ndarray | None = None  # (len(idx),) uniforms: confronted?
    find: np.ndarray | None = None  # (len(idx),) uniforms: an opportunity found?
    trust: np.ndarray | None = None  # (2, n_d) the evidence noise (evidence_noise)
    ending: np.ndarray | None = None  # (active alliances,) uniforms: does it end?


def draw_step(s: State, p, rng, noise: bool) -> Draws:
    """Every random number of one step, before the step (the sizes are known at its start:
    people, dyads, alliances), in bulk and in this order:

    1. the number of differences N ~ Poisson(rate * n_d) over all dyads;
    2. talk drift: (n_ind, K) standard normals;
    3. differences: N dyads, each uniform among the n_d, floor(u n_d) for a uniform u (so a
       dyad's count is Poisson(rate), independently); then, dyad by dyad in row order, one
       standard exponential per difference, their sum times `size` being the dyad's total
       size (a Gamma(count, size)); then two uniforms per dyad with a difference, (confront,
       find) in row order;
    4. evidence noise (evidence_noise): (n_present, 2) standard normals shared by one side of
       an alliance, in alliance order, when noise_shared > 0; (2, n_d) of the ties' own when
       noise_shared < 1 (a part of zero weight is not drawn);
    5. endings: one uniform per active alliance.

    sim/kernel_numba.draw draws the same numbers in the same order from the same Generator."""
    dr = Draws()
    if not noise:
        return dr
    n_d = len(s.D)
    df = p.differences
    if df.rate > 0 and n_d:
        dr.n_diff = int(rng.poisson(df.rate * n_d))
    if p.talk.noise > 0:
        dr.talk = rng.standard_normal(s.p.shape)
    if dr.n_diff:
        at = np.minimum((rng.random(dr.n_diff) * n_d).astype(np.int64), n_d - 1)
        dr.counts = np.bincount(at, minlength=n_d)
        dr.idx = idx = np.flatnonzero(dr.counts)
        if df.size > 0:
            e = rng.standard_exponential(dr.n_diff)
            c = dr.counts[idx]
            dr.size = np.add.reduceat(e, np.cumsum(c) - c) * df.size
        else:
            dr.size = np.zeros(len(idx))
        u = rng.random((len(idx), 2))
        dr.confront, dr.find = u[:, 0], u[:, 1]
    if p.trust.noise > 0:
        dr.trust = evidence_noise(s, p.trust, rng)
    n_act = int(np.count_nonzero(s.al_ended < 0))
    if n_act:
        dr.ending = rng.random(n_act)
    return dr


def present_rank(s: State) -> tuple[np.ndarray, int]:
    """Each alliance's rank among those that have ties (-1 for none), and their number."""
    present = np.bincount(s.d_al, minlength=s.n_al) > 0
    return np.cumsum(present) - 1, int(present.sum())


def evidence_noise(s: State, t, rng) -> np.ndarray:
    """The standard normal part of the noise in the evidence each tie reads this step (2, n_d),
    to be scaled by trust.noise: a part shared by all ties of one side of an alliance (what
    the partner company did this month, seen by all who deal with it) and a part of each tie's
    own: sqrt(rho) z_side + sqrt(1 - rho) z_tie, rho = trust.noise_shared. Drawn in this
    order: (n_present, 2) side draws (alliances with ties, in order), then (2, n_d) tie draws;
    a part of weight 0 is not drawn."""
    rho = t.noise_shared
    n_d = len(s.D)
    out = np.zeros((2, n_d))
    if rho > 0:
        rank, n_present = present_rank(s)
        side = rng.standard_normal((n_present, 2))
        out += side[rank[s.d_al]].T
        out *= np.sqrt(rho)
    if rho < 1:
        own = rng.standard_normal((2, n_d))
        own *= np.sqrt(1.0 - rho)
        out += own
    return out


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1/(1+e^-x), without overflow warnings


_NONE = np.empty(0, np.int64)
_NONE.flags.writeable = False  # shared by every Events: nothing happened (cannot be filled)


def _none() -> np.ndarray:
    return _NONE


@dataclass
class Events:
    """What happened in one step (indices), for the narration and the counters."""

    avoided: np.ndarray = field(default_factory=_none)  # alliances
    blamed: np.ndarray = field(default_factory=_none)
    opportunities: np.ndarray = field(default_factory=_none)
    ended: np.ndarray = field(default_factory=_none)
    formed: np.ndarray = field(default_factory=_none)
    to_scarcity: np.ndarray = field(default_factory=_none)  # people
    to_abundance: np.ndarray = field(default_factory=_none)
    value_flow: float = 0.0


def per_person(s: State, w0, w1=None) -> np.ndarray:
    """Sum of per-tie weights onto the tie holders: w0 for side-0 people, w1 for side-1."""
    n = s.n_ind
    t = s.topology()
    if w1 is None:
        w1 = w0
    out = np.bincount(t.i0, w0, n).astype(float, copy=False)  # (int when there are no ties)
    out += np.bincount(t.i1, w1, n)
    return out


def degree(s: State) -> np.ndarray:
    return s.topology().deg


def unique_alliances(s: State, rows) -> np.ndarray:
    """Sorted distinct alliances of the given dyad rows (a bincount: no sort of the rows)."""
    return np.flatnonzero(np.bincount(s.d_al[rows], minlength=s.n_al))


def experience_weight(s: State, p) -> np.ndarray:
    """Per person, the weight of one tie's experience: 1 / max(ties, usual ties), the usual
    number being ecosystem.mean_degree x individuals_per_organization. So experiences count
    as a share of one's ties, except that a person left with few ties does not learn from
    one good tie as much as from a whole trusted network."""
    usual = max(1.0, p.ecosystem.mean_degree * p.ecosystem.individuals_per_organization)
    return 1.0 / np.maximum(s.topology().deg, usual)


def talk_rate(p) -> float:
    return p.talk.rate * (p.negotiation.empathy_factor if p.negotiation.empathy else 1.0)


def by_mindset(s: State, abundance: float, scarcity: float) -> np.ndarray:
    """Per tie (2, n_d): `abundance` where the holder is in abundance, else `scarcity`."""
    return np.where(s.m, abundance, scarcity)[s.d_ind]


def sigmoid_(z: np.ndarray) -> np.ndarray:
    """In place: z <- 1/(1+e^-z), computed as (1 + tanh(z/2))/2 (no overflow)."""
    z *= 0.5
    np.tanh(z, out=z)
    z += 1.0
    z *= 0.5
    return z


# 1. Talk -------------------------------------------------------------------------------------
def talk(s: State, p, z: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Perspectives move toward partners by mu * O_ji; without exchange they drift apart.

    Returns the mutual exchange x (per dyad, from this step's openness) and the divergence d
    after talking. z: the drift's standard normals (n_ind, K), None for no drift.
    """
    t = s.topology()
    O0, O1 = s.O
    x = O0 * O1
    mu = talk_rate(p)
    move = np.empty_like(s.p)
    for k in range(s.p.shape[1]):  # K topics (a handful), not ties
        pk = s.p[:, k]
        diff = pk[t.i1]
        diff -= pk[t.i0]  # from the side-0 person toward the side-1 person
        move[:, k] = per_person(s, O1 * diff, -(O0 * diff))
    move *= (mu * t.inv)[:, None]
    s.p += move
    if z is not None:
        mean_x = per_person(s, x) * t.inv
        s.p += (p.talk.noise * (1.0 - mean_x))[:, None] * z
    np.clip(s.p, 0.0, 1.0, out=s.p)
    return x, divergence(s)


def divergence(s: State) -> np.ndarray:
    """d = mean over topics of |p_i - p_j| for every dyad."""
    t = s.topology()
    d = np.zeros(t.n_d)
    for k in range(s.p.shape[1]):
        pk = s.p[:, k]
        diff = pk[t.i0]
        diff -= pk[t.i1]
        d += np.abs(diff, out=diff)
    d /= s.p.shape[1]
    return d


def confront_prob(s: State, p, x: np.ndarray) -> np.ndarray:
    """Chance a dyad confronts its differences: it takes one side to raise a problem openly.
    A side raises it with q_i = 1 - (1 - kappa_i)(1 - open_talk * x): its style's chance
    kappa_i, or because talk between the two is open; q = 1 - (1 - q_i)(1 - q_j)."""
    c = by_mindset(s, p.differences.confront_abundance, p.differences.confront_scarcity)
    return either_side(c[0], c[1], x, p.differences.open_talk)


def either_side(c0, c1, x, open_talk):
    closed = 1.0 - open_talk * x
    return 1.0 - (1.0 - c0) * closed * (1.0 - c1) * closed


# 2. Differences ------------------------------------------------------------------------------
def differences(s: State, p, dr: Draws, x: np.ndarray, ev: Events) -> np.ndarray | None:
    """Random differences, confronted (neutralized, maybe an opportunity) or avoided (tension).

    Returns the indices of dyads that found an opportunity (None when none could).
    """
    if dr.idx is None:
        return None
    idx, size = dr.idx, dr.size
    m0, m1 = s.m[s.d_ind[0, idx]], s.m[s.d_ind[1, idx]]
    ca, cs = p.differences.confront_abundance, p.differences.confront_scarcity
    q = either_side(np.where(m0, ca, cs), np.where(m1, ca, cs), x[idx], p.differences.open_talk)
    confronted = dr.confront < q
    chance = 0.5 * (s.T[0, idx] + s.T[1, idx])  # a confronted problem: an opportunity w.p. trust
    found = confronted & (dr.find < chance)
    s.D[idx[confronted]] = 0.0
    avoided = idx[~confronted]
    s.D[avoided] += size[~confronted]
    f = idx[found]
    if p.differences.opportunity_trust > 0 and len(f):
        s.T[:, f] += p.differences.opportunity_trust * (1.0 - s.T[:, f])
    ev.avoided = unique_alliances(s, avoided)
    ev.opportunities = unique_alliances(s, f)
    return f


def blame(s: State, p, ev: Events) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Tension past blame_level blows up: trust falls both ways, tension resets.

    Tension of n times blame_level is n quarrels: trust is multiplied by (1 - blame_cost)^n.
    Deterministic, so it also runs with noise off (a scheduled shock can still cause blame).
    Returns (per person the quarrels suffered as a share of own ties, per dyad the quarrels),
    each 0.0 when nobody was blamed. Experiences are shares of one's ties, so a busy person is
    not hurt more per event.
    """
    hit = np.flatnonzero(s.D > p.differences.blame_level)
    if not len(hit):
        return 0.0, 0.0
    # at most MAX_QUARRELS per step: past that, trust is 0 anyway (and counts stay finite)
    n = np.minimum(np.floor(s.D[hit] / p.differences.blame_level), MAX_QUARRELS)
    s.T[:, hit] *= (1.0 - p.differences.blame_cost) ** n
    s.D[hit] = 0.0
    ev.blamed = unique_alliances(s, hit)
    np.add.at(s.al_blames, s.d_al[hit], n.astype(np.int64))
    w = np.zeros(len(s.D))
    w[hit] = n
    return per_person(s, w) * experience_weight(s, p), w


MAX_QUARRELS = 1000.0


# 5. Pie: value created, claims, perceived value ----------------------------------------------
def claims(s: State, p) -> np.ndarray:
    """Share of the pie each side claims (2, n_d): half, or more for a scarcity holder."""
    if p.negotiation.interests:
        return np.full(s.T.shape, 0.5)
    return by_mindset(s, 0.5, p.value.claim_scarcity)


def value(s: State, p, x: np.ndarray, opp, ev: Events):
    """Value created (exchange + opportunities), divided by claims, perceived by view.

    Returns (perceived value level per tie (2, n_d), overclaim per dyad).
    """
    flow = p.value.exchange * x
    if opp is not None and len(opp):
        flow[opp] += p.value.opportunity
        np.add.at(s.al_opps, s.d_al[opp], 1)
    s.v *= p.value.memory
    s.v += flow
    c = claims(s, p)
    total = c[0] + c[1]
    sv = c / np.maximum(1.0, total)  # share of the pie each side receives ...
    sv *= by_mindset(s, 1.0, p.value.revenue_share)  # ... times its view: holistic or revenue
    n_al = s.n_al
    created = np.bincount(s.d_al, flow, n_al)
    split = np.full(len(VALUE_KINDS), (1.0 - p.value.revenue_share) / (len(VALUE_KINDS) - 1))
    split[0] = p.value.revenue_share
    s.al_value += created[:, None] * split[None, :]
    s.al_perceived += np.bincount(s.d_al, (sv[0] + sv[1]) * flow, n_al)
    ev.value_flow = float(created.sum())
    sv *= 2.0 * s.v  # perceived value level, relative to a fair half of the pie
    total -= 1.0
    return sv, np.maximum(total, 0.0, out=total)


# 3. Trust ------------------------------------------------------------------------------------
def trust(s: State, p, perceived: np.ndarray, d: np.ndarray, overclaim: np.ndarray,
          z: np.ndarray | None = None) -> None:
    """T += r * (S(k_T * e) - T), e from the partner's openness, perceived value, divergence,
    tension, disputes and the holder's bias; r = trust.rate when the target is above T
    (building) and trust.erode_rate when it is below (eroding: trust is lost faster than it is
    won). `perceived` is overwritten. z: standard normals (2, n_d) for the noisy reading, or
    None."""
    t = p.trust
    common = t.w_divergence * (d - t.divergence_ref)
    common += t.w_tension * s.D
    common += t.w_dispute * overclaim
    e = perceived
    e -= t.value_ref
    e *= t.w_value
    e += t.w_openness * (s.O[::-1] - t.openness_ref)
    e -= common
    e += by_mindset(s, t.bias_abundance, t.bias_scarcity)
    if z is not None:  # each side reads the partner through noisy signals
        e += t.noise * z
    e *= t.steepness
    sigmoid_(e)
    e -= s.T
    e *= np.where(e > 0.0, t.rate, t.erode_rate)
    s.T += e


# 4. Openness ---------------------------------------------------------------------------------
def openness(s: State, p, unsat: np.ndarray | None) -> None:
    """O += rate * (S(k_O (T - theta_O) + b + close_bias * u) - O): a dissatisfied side (u its
    dissatisfaction) changes strategy and closes up."""
    o = p.openness
    z = s.T - o.threshold
    z *= o.steepness
    z += by_mindset(s, o.bias_abundance, o.bias_scarcity)
    if unsat is not None:
        z += p.patience.close_bias * unsat
    sigmoid_(z)
    z -= s.O
    z *= o.rate
    s.O += z


# 6. Patience ---------------------------------------------------------------------------------
def patience(s: State, p, perceived: np.ndarray, blamed_dyads: np.ndarray | float):
    """Each side of each alliance weighs this step's grievance g and accumulates it over its
    horizon H as dissatisfaction u:

        g = min(1, shortfall + w_blame * Q),  shortfall = max(0, 1 - level / expectation),
        u <- u + (g - u) / H,

    level being the side's mean perceived value over the alliance's dyads and Q the most
    quarrels on any of its dyads this step (a blow-up between any two of its people is a
    grievance for both companies). u starts at 0 (a
    new alliance has no grievances yet). The patient (long H) judge the long run, the impatient
    the last few steps. Returns u per tie (2, n_d), for the openness response.
    """
    n_al = s.n_al
    t = s.topology()
    cnt = np.maximum(t.al_cnt, 1)
    act = s.active
    horizon = s.horizon[s.al_org].astype(float)  # (n_al, 2)
    quarrels = 0.0  # the most quarrels on any dyad: a blow-up anywhere hurts the alliance
    if isinstance(blamed_dyads, np.ndarray):
        quarrels = np.zeros(n_al)
        np.maximum.at(quarrels, s.d_al, blamed_dyads)
    E = p.value.expectation
    for side in (0, 1):  # two sides, not ties
        level = np.bincount(s.d_al, perceived[side], n_al) / cnt
        short = np.clip(1.0 - level / E, 0.0, 1.0) if E > 0 else np.zeros(n_al)
        g = np.minimum(1.0, short + p.patience.w_blame * quarrels)
        s.al_grievance[:, side] = np.where(act, g, 0.0)
        u = s.al_unsat[:, side]
        u += np.where(act, (g - u) / horizon[:, side], 0.0)
    return s.al_unsat[s.d_al].T


def ending_hazard(s: State, p) -> np.ndarray:
    """Per alliance, the chance it ends this step: either side may end it, a side with hazard
    end_rate * u^2 * g: it quits when dissatisfaction has piled up over its horizon (u; mild
    discontent rarely ends an alliance) and it still has a grievance now (g; a side that is
    satisfied again does not quit over the past)."""
    h = p.patience.end_rate * s.al_unsat ** 2 * s.al_grievance
    return 1.0 - (1.0 - h[:, 0]) * (1.0 - h[:, 1])


def draw_endings(s: State, p, u: np.ndarray | None) -> np.ndarray:
    """The alliances that end: active ones whose uniform u falls below their hazard."""
    if u is None:
        return np.empty(0, np.int64)
    act = np.flatnonzero(s.active)
    h = ending_hazard(s, p)[act]
    return act[u < h]


# 7. Mindset ----------------------------------------------------------------------------------
def mindset(s: State, p, blames, hurt_by_end, opp_share, ev: Events) -> None:
    """Latent abundance follows experience: it climbs slowly with trusted ties and opportunities
    found together, and falls fast with blame and with alliances that end; it is pulled toward
    the culture and, weighted by trust, toward partners' abundance.

        a <- a + learn_rate (1 - a) (g + learn_opportunity o)
               - a (hurt_rate b + betrayal e)
               + culture_pull (c - a) + peer_pull mean_j T_ij (a_j - a)

    The climb shrinks near 1 and the fall near 0 (a stays in [0, 1]). The expressed mindset
    flips with hysteresis: to scarcity below theta_down, back to abundance only above theta_up.
    """
    mp = p.mindset
    t = s.topology()
    T0, T1 = s.T
    good = per_person(s, (T0 > mp.trusted_level).astype(float),
                      (T1 > mp.trusted_level).astype(float))
    good *= experience_weight(s, p)
    # contagion through trusted ties: the mean over own ties of T_ij (a_j - a_i)
    peer_pull = per_person(s, T0 * (s.a[t.i1] - s.a[t.i0]), T1 * (s.a[t.i0] - s.a[t.i1]))
    peer_pull *= t.inv
    climb = mp.learn_rate * (good + mp.learn_opportunity * opp_share)
    fall = mp.hurt_rate * blames + mp.betrayal * hurt_by_end
    s.a += (climb * (1.0 - s.a) - np.minimum(fall, 1.0) * s.a
            + mp.culture_pull * (s.culture[s.org] - s.a) + mp.peer_pull * peer_pull)
    np.clip(s.a, 0.0, 1.0, out=s.a)
    flip(s, p, ev)
    # culture follows its people
    n_org = s.n_org
    mean_a = np.bincount(s.org, s.a, n_org) / np.maximum(np.bincount(s.org, minlength=n_org), 1)
    s.culture += mp.culture_follow * (mean_a - s.culture)


def flip(s: State, p, ev: Events | None = None) -> None:
    """Expressed mindsets follow latent abundance with hysteresis; flips are counted."""
    mp = p.mindset
    new_m = np.where(s.m, s.a >= mp.theta_down, s.a > mp.theta_up)
    down = s.m & ~new_m
    up = ~s.m & new_m
    s.ind_to_scarcity += down
    s.ind_to_abundance += up
    if ev is not None:
        ev.to_scarcity = np.concatenate([ev.to_scarcity, np.flatnonzero(down)])
        ev.to_abundance = np.concatenate([ev.to_abundance, np.flatnonzero(up)])
    s.m = new_m


# 8. Ecosystem: ending and formation ----------------------------------------------------------
def end_alliances(s: State, p, ending: np.ndarray, ev: Events) -> np.ndarray | float:
    """Ended alliances keep their last summary and leave the tie arrays.

    Returns per person the share of own ties that ended this step (a bad experience).
    """
    if len(ending) == 0:
        return 0.0
    s.al_ended[ending] = s.step
    s.al_regime[ending] = OUT
    gone = np.zeros(s.n_al, bool)
    gone[ending] = True
    drop = gone[s.d_al]
    hurt = per_person(s, drop.astype(float)) * experience_weight(s, p)
    keep = ~drop
    s.d_al, s.D, s.v = s.d_al[keep], s.D[keep], s.v[keep]
    s.d_ind, s.T, s.O = s.d_ind[:, keep], s.T[:, keep], s.O[:, keep]
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
    ids = add_alliances(s, p, pairs, rng)
    ev.formed = ids
    return ids


def add_alliances(s: State, p, pairs: np.ndarray, rng=None) -> np.ndarray:
    """Append alliances (and their dyads, started as at set-up: state.new_alliances)."""
    start = s.n_al
    al, d_al, d_ind, ties = new_alliances(s, p, pairs, rng)
    for name, arr in al.items():
        setattr(s, name, np.concatenate([getattr(s, name), arr]))
    s.d_al = np.concatenate([s.d_al, (d_al + start).astype(s.d_al.dtype)])
    s.d_ind = np.concatenate([s.d_ind, d_ind], axis=1)
    for name in ("T", "O", "D", "v"):
        setattr(s, name, np.concatenate([getattr(s, name), ties[name]], axis=-1))
    s.changed_ties()
    return np.arange(start, start + len(pairs))


# 12. Regimes ---------------------------------------------------------------------------------
def summarize_alliances(s: State) -> None:
    """Mean trust, openness, tension and value level of every active alliance."""
    n = s.n_al
    cnt = s.topology().al_cnt
    has = cnt > 0
    c = np.maximum(cnt, 1)
    for name, w, k in (("al_trust", s.T[0] + s.T[1], 2), ("al_open", s.O[0] + s.O[1], 2),
                       ("al_tension", s.D, 1), ("al_level", s.v, 1)):
        arr = getattr(s, name)
        arr[has] = (np.bincount(s.d_al, w, n) / (k * c))[has]


def classify(s: State, p) -> None:
    """The regime rule (docs/model.md, "Regimes"): score (trust + openness)/2, trend over the
    window; ended alliances are spiral-out."""
    r = p.regimes
    w = r.window
    score = 0.5 * (s.al_trust + s.al_open)
    act = s.active
    s.al_hist[act, s.step % (w + 1)] = score[act]
    past = s.al_hist[:, (s.step + 1) % (w + 1)]
    trend = score - past
    reg = np.where((score >= r.in_level) & (trend >= -r.trend), IN,
                   np.where((score <= r.out_level) & (trend <= r.trend), OUT, UNDECIDED))
    s.al_regime[:] = np.where(act, reg, OUT)


# The step ------------------------------------------------------------------------------------
def step(s: State, p, rng) -> Events:
    """One step of the model for every tie at once. Order: talk, differences, blame, pie,
    patience (dissatisfaction), trust, openness, alliance summaries, ending (a hazard drawn
    from dissatisfaction), mindset, formation, regimes.

    Trust is updated from last step's openness; openness from this step's trust. With noise
    off nothing is drawn: no differences, drift, endings or formation (a deterministic map).
    """
    noise = p.noise.enabled
    dr = draw_step(s, p, rng, noise)
    s.step += 1
    ev = Events()
    x, d = talk(s, p, dr.talk)
    opp = differences(s, p, dr, x, ev)
    blames, quarrels = blame(s, p, ev)
    perceived, overclaim = value(s, p, x, opp, ev)
    unsat = patience(s, p, perceived, quarrels)
    trust(s, p, perceived, d, overclaim, dr.trust)  # (consumes `perceived`)
    openness(s, p, unsat)
    summarize_alliances(s)
    opp_share = 0.0
    if opp is not None and len(opp):
        w = np.zeros(len(s.D))
        w[opp] = 1.0
        opp_share = per_person(s, w) * experience_weight(s, p)
    ending = draw_endings(s, p, dr.ending)
    hurt = end_alliances(s, p, ending, ev)
    mindset(s, p, blames, hurt, opp_share, ev)
    if noise:
        form_alliances(s, p, rng, ev)
    classify(s, p)
    return ev
