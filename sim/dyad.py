"""The dyad map: many independent two-person alliances stepped by the kernel itself.

Used for the phase portrait (vector field and basin of attraction in the (trust, openness)
plane) and by the tests of L1 and L7. Nothing here re-implements the dynamics: each grid point is
a dyad of its own in one State, and the kernel's own functions step them all at once.
"""

from __future__ import annotations

import copy

import numpy as np

from . import kernel
from .state import State, add_initial_alliances, empty_state, resting_value


def deterministic(p):
    """A copy of params with noise off (the step is then a deterministic map)."""
    q = copy.deepcopy(p)
    q.noise.enabled = False
    return q


def start_divergence(p) -> float:
    """The divergence a new dyad starts with on average: perspectives 0.5 + div (u - 0.5) with
    u ~ U(0, 1) give E|p_i - p_j| = div / 3 (0 under clarity)."""
    return 0.0 if p.negotiation.clarity else p.initial.divergence / 3.0


def dyad_state(p, T0, O0, abundance=(True, False), divergence: float | None = None,
               latent=None) -> State:
    """len(T0) independent two-organization alliances of one dyad each, started exactly as the
    model starts an alliance (state.new_alliances: value level at rest, no tension, no
    dissatisfaction), except that trust and openness start at T0, O0 on both ties. Side 0 and
    side 1 hold the given mindsets, with latent abundance `latent` (default: their culture
    level); perspectives differ by `divergence` on every topic (default: the model's average
    start, start_divergence)."""
    T0 = np.atleast_1d(np.asarray(T0, float))
    O0 = np.broadcast_to(np.atleast_1d(np.asarray(O0, float)), T0.shape).copy()
    n = len(T0)
    K = p.ecosystem.perspective_dims
    d = start_divergence(p) if divergence is None else divergence
    abund = np.tile(np.asarray(abundance, bool), n)
    level = np.where(abund, p.mindset.abundance_level, p.mindset.scarcity_level)
    a = level.copy() if latent is None else np.tile(np.asarray(latent, float), n)
    persp = np.empty((2 * n, K))
    persp[0::2] = 0.5 - d / 2
    persp[1::2] = 0.5 + d / 2
    q = copy.copy(p)
    q.ecosystem = copy.copy(p.ecosystem)
    q.ecosystem.individuals_per_organization = 1
    s = empty_state(q, level, abund, np.arange(2 * n), a, abund.copy(), persp)
    add_initial_alliances(s, q, np.arange(2 * n).reshape(n, 2))
    s.T[:] = T0
    s.O[:] = O0
    s.v[:] = [resting_value(p, o) for o in O0]
    s.al_trust[:], s.al_open[:] = T0, O0
    s.al_hist[:] = ((T0 + O0) / 2)[:, None]
    return s


def portrait_state(s: State, p, alliance: int, T0, O0, now: bool = False,
                   formation: bool = False) -> State:
    """len(T0) copies of one alliance of state s, as two organizations on their own, with
    trust and openness started at (T0, O0) on every tie. The people (latent abundance,
    mindset, perspective, culture, horizon) are copied as they are in s, or, with
    formation=True, with the mindsets the pair had when the alliance formed (latent abundance
    and culture at that mindset's level). Tension, value level and dissatisfaction start as
    the model starts an alliance (state.new_alliances), or, with now=True, as they are in s.
    Stepping it with kernel.step is the model's own map for this pair, which is what the phase
    portrait draws."""
    T0 = np.atleast_1d(np.asarray(T0, float))
    O0 = np.broadcast_to(np.atleast_1d(np.asarray(O0, float)), T0.shape).copy()
    n = len(T0)
    orgs = s.al_org[alliance]
    ipo = p.ecosystem.individuals_per_organization
    people = np.concatenate([np.flatnonzero(s.org == o) for o in orgs])  # side 0, then side 1
    rows = np.tile(people, n)
    new_org = np.repeat(np.arange(2 * n), ipo)
    side_org = np.tile(np.asarray(orgs), n)
    q = deterministic(p)
    culture, a, m = s.culture[side_org], s.a[rows], s.m[rows]
    if formation:
        ab = np.tile(s.al_mindset[alliance], n)  # per side
        culture = np.where(ab, p.mindset.abundance_level, p.mindset.scarcity_level)
        m = np.repeat(ab, ipo)
        a = np.repeat(culture, ipo)
    st = empty_state(q, culture, s.abundant_start[side_org], new_org, a, m, s.p[rows],
                     s.horizon[side_org])
    add_initial_alliances(st, q, np.arange(2 * n).reshape(n, 2))
    k = ipo * ipo  # dyads per alliance, in alliance order
    st.T[:] = np.repeat(T0, k)
    st.O[:] = np.repeat(O0, k)
    st.v[:] = np.repeat(resting_value(p, O0), k)
    st.al_trust[:], st.al_open[:] = T0, O0
    st.al_level[:] = resting_value(p, O0)
    st.al_hist[:] = ((T0 + O0) / 2)[:, None]
    if now:
        mine = np.flatnonzero(s.d_al == alliance)
        if len(mine) == k:
            st.D[:] = np.tile(s.D[mine], n)
            st.v[:] = np.tile(s.v[mine], n)
        st.al_unsat[:] = s.al_unsat[alliance]
    return st


def alliance_basin(s: State, p, alliance: int, n: int = 41, steps: int = 400,
                   now: bool = False, formation: bool = False):
    """Basin of one alliance of a model (portrait_state): (xs, final score (n, n), rows =
    openness). The separatrix is the 0.5 contour."""
    q = deterministic(p)
    xs, tt, oo = grid(n)
    st = portrait_state(s, q, alliance, tt, oo, now, formation)
    for _ in range(steps):
        kernel.step(st, q, None)
    kernel.summarize_alliances(st)
    return xs, (0.5 * (st.al_trust + st.al_open)).reshape(n, n)


def alliance_flow(s: State, p, alliance: int, n: int = 21, now: bool = False,
                  formation: bool = False):
    """One deterministic step of one alliance's map from every grid point (for streamplot)."""
    q = deterministic(p)
    xs, tt, oo = grid(n)
    st = portrait_state(s, q, alliance, tt, oo, now, formation)
    kernel.step(st, q, None)
    kernel.summarize_alliances(st)
    return xs, xs, (st.al_trust - tt).reshape(n, n), (st.al_open - oo).reshape(n, n)


def predict(xs, score, T0: float, O0: float) -> float:
    """The basin's final score at a start (T0, O0), bilinearly interpolated on the grid."""
    from scipy.interpolate import RegularGridInterpolator

    f = RegularGridInterpolator((xs, xs), score)  # score rows = openness, columns = trust
    return float(f([[O0, T0]])[0])


def trust_asymmetry(p, size: float = 0.05, trust: float = 0.5) -> dict[str, float]:
    """The probe of issue 12 point 8: one step of the model's own trust update (kernel.trust)
    on a tie at `trust` whose evidence is exactly neutral (its target equals its trust), with
    the evidence moved by +size (a positive event) or -size (a negative event of the same
    size). Returns the gain, the loss and loss / gain."""
    q = deterministic(p)
    t = q.trust
    k = q.trust.steepness
    # evidence e0 with S(k e0) = trust, so the tie is at rest before the event
    e0 = np.log(trust / (1.0 - trust)) / k if 0 < trust < 1 else 0.0
    out = {}
    for name, de in (("gain", size), ("loss", -size)):
        s = dyad_state(q, [trust], [0.5], (True, True), divergence=t.divergence_ref)
        s.D[:] = 0.0
        partner = t.w_openness * (0.5 - t.openness_ref)
        # perceived value that puts the evidence at e0 + de
        pv = t.value_ref + (e0 + de - partner - t.bias_abundance) / t.w_value \
            if t.w_value > 0 else 0.0
        perceived = np.full((2, 1), pv)
        kernel.trust(s, q, perceived, np.full(1, t.divergence_ref), np.zeros(1))
        out[name] = abs(float(s.T[0, 0]) - trust)
    out["ratio"] = out["loss"] / out["gain"] if out["gain"] > 0 else float("inf")
    return out


def grid(n: int):
    xs = np.linspace(0.0, 1.0, n)
    tt, oo = np.meshgrid(xs, xs)  # rows: openness, columns: trust
    return xs, tt.ravel(), oo.ravel()


def vector_field(p, abundance=(True, False), n: int = 21):
    """One deterministic step from every grid point: mean change of trust and openness, for a
    pair with the given mindsets (default: mixed).

    Returns (xs, ys, dT, dO) shaped for matplotlib's streamplot (rows = openness).
    """
    q = deterministic(p)
    xs, tt, oo = grid(n)
    s = dyad_state(q, tt, oo, abundance)
    kernel.step(s, q, None)
    dT = s.T.mean(axis=0) - tt
    dO = s.O.mean(axis=0) - oo
    return xs, xs, dT.reshape(n, n), dO.reshape(n, n)


def basin(p, abundance=(True, False), n: int = 41, steps: int = 400):
    """Where each start in the (trust, openness) plane ends up with noise off, for a pair with
    the given mindsets (default: mixed).

    Returns (xs, score) with score the final (trust+openness)/2, shaped (n, n), rows =
    openness. The basin boundary (separatrix) is the 0.5 contour of score.
    """
    q = deterministic(p)
    xs, tt, oo = grid(n)
    s = dyad_state(q, tt, oo, abundance)
    for _ in range(steps):
        kernel.step(s, q, None)
    score = 0.5 * (s.T.mean(axis=0) + s.O.mean(axis=0))
    return xs, score.reshape(n, n)


def run_dyad(p, T0: float, O0: float, steps: int, abundance=(True, False),
             divergence: float | None = None) -> State:
    """Run one deterministic dyad from (T0, O0) for `steps` steps."""
    q = deterministic(p)
    s = dyad_state(q, [T0], [O0], abundance, divergence)
    for _ in range(steps):
        kernel.step(s, q, None)
    return s
