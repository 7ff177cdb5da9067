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
