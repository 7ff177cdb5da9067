"""The model's state: numpy arrays for organizations, individuals, alliances and ties.

Ties are stored by dyad: column k of the dyad arrays is one pair of people (one on each side of
an alliance), and row s of T and O is the directed tie held by the person on side s toward the
person on the other side. So T[0] is i->j, T[1] is j->i, and the reverse of every tie is
T[::-1]. Side-major rows keep each side's values contiguous for the vectorized step.
Only dyads of active alliances are kept; an ended alliance keeps its final summary in the
alliance arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

VALUE_KINDS = ("revenue", "market_access", "learning", "speed", "risk_sharing")
IN, UNDECIDED, OUT = 1, 0, -1
REGIME_NAMES = {IN: "spiral_in", UNDECIDED: "undecided", OUT: "spiral_out"}

FLOAT = np.float64  # float64 throughout: L7 checks the map to 1e-12
INDEX = np.int32  # person and alliance indices on tie rows (half the bytes of int64)


@dataclass
class Topology:
    """Derived from the dyad rows: contiguous holder indices and degrees."""

    n_d: int
    n_al: int
    i0: np.ndarray  # holder of each side-0 tie (a view of d_ind[0])
    i1: np.ndarray
    deg: np.ndarray  # ties per person
    inv: np.ndarray  # 1 / max(deg, 1)
    al_cnt: np.ndarray  # dyads per alliance

    @classmethod
    def of(cls, s: State) -> Topology:
        i0, i1 = s.d_ind
        deg = np.bincount(i0, minlength=s.n_ind) + np.bincount(i1, minlength=s.n_ind)
        return cls(len(i0), s.n_al, i0, i1, deg, 1.0 / np.maximum(deg, 1),
                   np.bincount(s.d_al, minlength=s.n_al))


@dataclass
class State:
    # organizations
    culture: np.ndarray  # (n_org,) latent abundance of the culture
    horizon: np.ndarray  # (n_org,) patience horizon in steps
    abundant_start: np.ndarray  # (n_org,) bool: culture started in abundance
    # individuals
    org: np.ndarray  # (n_ind,) employer
    a: np.ndarray  # (n_ind,) latent abundance
    m: np.ndarray  # (n_ind,) bool expressed mindset: True = abundance
    p: np.ndarray  # (n_ind, K) perspective
    ind_to_scarcity: np.ndarray  # (n_ind,) flips to scarcity so far
    ind_to_abundance: np.ndarray  # (n_ind,) flips back to abundance so far
    # alliances (every alliance ever formed)
    al_org: np.ndarray  # (n_al, 2) organizations on side 0 and side 1
    al_formed: np.ndarray  # (n_al,) step formed (0 = at set-up)
    al_ended: np.ndarray  # (n_al,) step ended, -1 while active
    al_value: np.ndarray  # (n_al, 5) cumulative value created, by kind
    al_perceived: np.ndarray  # (n_al,) cumulative value perceived by both sides
    al_unsat: np.ndarray  # (n_al, 2) each side's dissatisfaction u in [0, 1]
    al_grievance: np.ndarray  # (n_al, 2) each side's grievance g this step, in [0, 1]
    al_mindset: np.ndarray  # (n_al, 2) bool: side's organization in abundance at formation
    al_trust: np.ndarray  # (n_al,) mean trust over its ties (final for ended ones)
    al_open: np.ndarray  # (n_al,) mean openness
    al_tension: np.ndarray  # (n_al,) mean tension
    al_level: np.ndarray  # (n_al,) mean value level v
    al_hist: np.ndarray  # (n_al, W+1) ring buffer of the score (trust+openness)/2
    al_regime: np.ndarray  # (n_al,) int8: IN, UNDECIDED, OUT
    al_blames: np.ndarray  # (n_al,) blames so far
    al_opps: np.ndarray  # (n_al,) opportunities so far
    # dyads of active alliances
    d_al: np.ndarray  # (n_d,) int32 alliance of the dyad
    d_ind: np.ndarray  # (2, n_d) int32 person on side 0, person on side 1
    T: np.ndarray  # (2, n_d) trust: T[s] is held by the side-s person
    O: np.ndarray  # (2, n_d) openness
    D: np.ndarray  # (n_d,) tension: differences avoided, not resolved
    v: np.ndarray  # (n_d,) value level (discounted recent value created)
    step: int = 0
    _topo: Topology | None = field(default=None, repr=False, compare=False)

    def topology(self) -> Topology:
        """Tie holders and degrees, cached until the dyad rows change (ending, formation)."""
        if self._topo is None or self._topo.n_d != len(self.d_al) or self._topo.n_al != self.n_al:
            self._topo = Topology.of(self)
        return self._topo

    def changed_ties(self) -> None:
        self._topo = None

    @property
    def n_org(self) -> int:
        return len(self.culture)

    @property
    def n_ind(self) -> int:
        return len(self.org)

    @property
    def n_al(self) -> int:
        return len(self.al_formed)

    @property
    def active(self) -> np.ndarray:
        return self.al_ended < 0



def make_graph(eco, seed: int) -> nx.Graph:
    """The initial ecosystem from a networkx generator (seeded from the model's rng)."""
    n, k = eco.organizations, eco.mean_degree
    m = max(1, round(k / 2))
    match eco.graph:
        case "complete":
            g = nx.complete_graph(n)
        case "erdos_renyi":  # sparse graphs in O(n + edges), dense ones the direct way
            p_edge = min(1.0, k / (n - 1))
            make = nx.fast_gnp_random_graph if p_edge < 0.1 else nx.gnp_random_graph
            g = make(n, p_edge, seed=seed)
        case "barabasi_albert":
            g = nx.barabasi_albert_graph(n, min(m, n - 1), seed=seed)
        case "watts_strogatz":
            kk = min(n - 1, max(2, round(k)))
            g = nx.watts_strogatz_graph(n, kk, eco.rewire, seed=seed)
        case "powerlaw_cluster":
            g = nx.powerlaw_cluster_graph(n, min(m, n - 1), eco.triangles, seed=seed)
        case other:  # validated earlier; a programming error if reached
            raise ValueError(f"unknown graph {other}")
    return g


def dyads_for(al_org: np.ndarray, ipo: int) -> tuple[np.ndarray, np.ndarray]:
    """Dyads (alliance index, people on each side) for alliances al_org with ipo people each.

    Person j of organization o has index o * ipo + j; every person on one side meets every
    person on the other.
    """
    n_al = len(al_org)
    jj = np.arange(ipo)
    left = (al_org[:, 0, None, None] * ipo + jj[None, :, None])  # (n_al, ipo, 1)
    right = (al_org[:, 1, None, None] * ipo + jj[None, None, :])  # (n_al, 1, ipo)
    left, right = np.broadcast_arrays(left, right)
    d_al = np.repeat(np.arange(n_al, dtype=INDEX), ipo * ipo)
    d_ind = np.stack([left.reshape(-1), right.reshape(-1)]).astype(INDEX)
    return d_al, d_ind


def empty_alliances(n: int, window: int) -> dict[str, np.ndarray]:
    return dict(
        al_org=np.zeros((n, 2), np.int64), al_formed=np.zeros(n, np.int64),
        al_ended=np.full(n, -1, np.int64), al_value=np.zeros((n, len(VALUE_KINDS)), FLOAT),
        al_perceived=np.zeros(n, FLOAT), al_unsat=np.zeros((n, 2), FLOAT),
        al_grievance=np.zeros((n, 2), FLOAT),
        al_mindset=np.zeros((n, 2), bool),
        al_trust=np.zeros(n, FLOAT), al_open=np.zeros(n, FLOAT), al_tension=np.zeros(n, FLOAT),
        al_level=np.zeros(n, FLOAT), al_hist=np.zeros((n, window + 1), FLOAT),
        al_regime=np.zeros(n, np.int8), al_blames=np.zeros(n, np.int64),
        al_opps=np.zeros(n, np.int64))


def initial_trust(p) -> float:
    t = p.initial.trust
    if p.negotiation.trust_building:
        t = min(1.0, t + p.negotiation.trust_boost)
    return t


def org_abundance(s_m: np.ndarray, org: np.ndarray, n_org: int) -> np.ndarray:
    """Per organization: True when most of its people are in abundance (ties count as such)."""
    cnt = np.maximum(np.bincount(org, minlength=n_org), 1)
    return np.bincount(org, s_m.astype(float), n_org) / cnt >= 0.5


def resting_value(p, openness: float) -> float:
    """The value level v at rest for mutual exchange x = openness^2: the fixed point of
    v <- memory v + exchange x. New ties start there, so the first steps carry no artifact."""
    return p.value.exchange * openness * openness / (1.0 - p.value.memory)


def first_impressions(p, k: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Starting trust and openness of k new alliances: the initial values shifted, per
    alliance, by one first impression z ~ N(0, 1) times `initial.spread` (clipped to [0, 1]);
    exactly the initial values when the spread is 0 or there is no rng (noise off)."""
    t0, o0 = initial_trust(p), p.initial.openness
    if p.initial.spread <= 0 or rng is None or k == 0:
        return np.full(k, t0, FLOAT), np.full(k, o0, FLOAT)
    z = p.initial.spread * rng.standard_normal(k)
    return np.clip(t0 + z, 0.0, 1.0), np.clip(o0 + z, 0.0, 1.0)


def new_alliances(s, p, pairs: np.ndarray, rng=None):
    """Arrays for new alliances between `pairs` of organizations, started exactly as at set-up:
    trust and openness at their first impressions, tension 0, value level at rest for that
    openness, no dissatisfaction, the pair's mindsets recorded. s supplies step, people's
    mindsets and the regime window. Returns (alliance arrays, d_al, d_ind, tie arrays)."""
    k = len(pairs)
    al = empty_alliances(k, s.al_hist.shape[1] - 1)
    al["al_org"][:] = pairs
    al["al_formed"][:] = s.step
    t0, o0 = first_impressions(p, k, rng)
    al["al_trust"][:], al["al_open"][:] = t0, o0
    al["al_level"][:] = resting_value(p, o0)
    al["al_hist"][:] = ((t0 + o0) / 2)[:, None]
    al["al_mindset"][:] = org_abundance(s.m, s.org, s.n_org)[pairs]
    d_al, d_ind = dyads_for(pairs, p.ecosystem.individuals_per_organization)
    ties = dict(T=np.stack([t0[d_al], t0[d_al]]), O=np.stack([o0[d_al], o0[d_al]]),
                D=np.zeros(len(d_al), FLOAT), v=resting_value(p, o0)[d_al])
    return al, d_al, d_ind, ties


def empty_state(p, culture, abundant, org, a, m, persp, horizon=None) -> State:
    """A state with people and organizations but no alliance yet."""
    n_ind = len(org)
    return State(
        culture=np.asarray(culture, FLOAT), abundant_start=np.asarray(abundant, bool),
        horizon=(np.full(len(culture), p.patience.horizon, np.int64) if horizon is None
                 else np.asarray(horizon, np.int64)),
        org=np.asarray(org, np.int64), a=np.asarray(a, FLOAT), m=np.asarray(m, bool),
        p=np.asarray(persp, FLOAT), ind_to_scarcity=np.zeros(n_ind, np.int64),
        ind_to_abundance=np.zeros(n_ind, np.int64), **empty_alliances(0, p.regimes.window),
        d_al=np.zeros(0, INDEX), d_ind=np.zeros((2, 0), INDEX), T=np.zeros((2, 0), FLOAT),
        O=np.zeros((2, 0), FLOAT), D=np.zeros(0, FLOAT), v=np.zeros(0, FLOAT))


def add_initial_alliances(s: State, p, pairs: np.ndarray, rng=None) -> None:
    """Set-up's alliances into an empty state (the same start as alliances formed later)."""
    al, d_al, d_ind, ties = new_alliances(s, p, pairs, rng)
    for name, arr in al.items():
        setattr(s, name, arr)
    s.d_al, s.d_ind = d_al, d_ind
    for name, arr in ties.items():
        setattr(s, name, arr)
    s.changed_ties()


def build(p, rng: np.random.Generator) -> tuple[State, nx.Graph]:
    """Set-up: the ecosystem graph and every array, drawn from rng in a fixed order."""
    eco = p.ecosystem
    graph = make_graph(eco, int(rng.integers(2**31 - 1)))
    n, ipo, K = eco.organizations, eco.individuals_per_organization, eco.perspective_dims
    n_ab = round(p.mindset.abundance_share * n)
    abundant = np.zeros(n, bool)
    abundant[rng.permutation(n)[:n_ab]] = True
    culture = np.where(abundant, p.mindset.abundance_level, p.mindset.scarcity_level).astype(FLOAT)

    org = np.repeat(np.arange(n, dtype=np.int64), ipo)
    a = np.clip(culture[org] + p.mindset.spread * rng.standard_normal(n * ipo), 0.0, 1.0)
    m = abundant[org].copy()
    u = rng.random((n * ipo, K))
    if p.negotiation.clarity:  # shared definitions: everyone starts from the same view
        u[:] = 0.5
    persp = (0.5 + p.initial.divergence * (u - 0.5)).astype(FLOAT)

    edges = np.array(sorted((min(e), max(e)) for e in graph.edges()), dtype=np.int64)
    state = empty_state(p, culture, abundant, org, a, m, persp)
    add_initial_alliances(state, p, edges.reshape(-1, 2), rng)
    return state, graph
