"""Many steps in one compiled call: the compiled path for headless runs (AllianceModel.run).

A baseline-size step is a few microseconds of arithmetic, but one step through Python (the
call into compiled code with sixty arrays, formation's Python loop, the per-step metrics, the
DataCollector, Mesa's event loop) costs about a hundred. `run_steps` runs k steps of
kernel_numba.step in one compiled loop: the same phases (ties_step), formation compiled too,
and each step's metrics row (kernel_numba._series) and the tracked alliances' trust and
openness written into arrays. The random numbers are the same numbers in the same order, so a
run is the same run (tests/test_kernel_paths.py: identical to stepping one step at a time).

The state's arrays live in buffers with spare room (kernel_numba._extend); the loop works on
the buffers and their current lengths. When a step would form more alliances than the room
holds, the loop stops right after drawing how many, and Python forms them (growing the
buffers), then resumes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import kernel_numba as kn
from .kernel_numba import (
    _AL_FIELDS,
    _DYAD_FIELDS,
    _KNOWN_FIELDS,
    _TIE_ROWS,
    BLOCK,
    N_AF,
    N_AI,
    N_PF,
    N_PI,
    _scratch,
    _series,
    _split,
    classify,
    formation_choices,
    formation_start,
    new_dyads,
    pack,
    ties_step,
)
from .state import State, initial_trust

# A raw metrics row: kernel_numba._series's 15 numbers, then the sizes and the step's events.
(R_IN, R_OUT, R_UND, R_END, R_ST, R_SO, R_STA, R_SU, R_VAL, R_PER, R_SA, R_SM, R_SD, R_SDIV,
 R_BIG, R_NAL, R_ND, R_FLOW, R_BLAMED, R_OPP, R_TO_S, R_TO_A, N_RAW) = range(23)


def usable(s: State, series_keys) -> bool:
    """The loop knows every array of this state and writes every series key (else: one step
    at a time)."""
    return set(_AL_FIELDS) == set(_KNOWN_FIELDS) and set(series_keys) <= SERIES


@njit(cache=True, error_model="numpy")
def _org_abundance(m, org, share):
    """state.org_abundance: an organization is in abundance when most of its people are."""
    n_org = len(share)
    cnt = np.zeros(n_org, np.int64)
    tot = np.zeros(n_org)
    for i in range(len(org)):
        cnt[org[i]] += 1
        if m[i]:
            tot[org[i]] += 1.0
    for o in range(n_org):
        share[o] = tot[o] / max(cnt[o], 1) >= 0.5


@njit(cache=True, error_model="numpy")
def _form(P, rng, n_new, step, closure, trusted, t_init, o_init, spread, ipo, exchange, memory,
          n_al, n_d, al_org, al_formed, al_ended, al_value, al_perceived, al_unsat,
          al_grievance, al_mindset, al_trust, al_open, al_tension, al_level, al_hist,
          al_regime, al_blames, al_opps, d_al, d_ind, T, O, D, v, m, org, ao, at, rep, fcnt,
          bools, cand, free, w, pairs, share):
    """kernel_numba.form_alliances and add_alliances for n_new drawn alliances, into the
    buffers' spare room (the caller checked there is room). Returns (n_al, n_d)."""
    n_org = len(rep)
    k = formation_start(al_ended[:n_al], al_org[:n_al], al_trust[:n_al], n_org, ao, at, rep,
                        fcnt)
    n_pairs = 0
    for _ in range(n_new):
        a = rng.integers(0, n_org)
        use = rng.random() < closure
        n_cand, n_free = formation_choices(ao, at, k, a, trusted, use, rep, bools[0], bools[1],
                                           bools[2], cand, free, w)
        if n_cand:
            b = cand[rng.integers(0, n_cand)]
        else:
            if n_free == 0:
                continue
            x = rng.random() * w[n_free - 1]
            b = free[min(np.searchsorted(w[:n_free], x, side="right"), n_free - 1)]
        pairs[n_pairs, 0] = min(a, b)
        pairs[n_pairs, 1] = max(a, b)
        n_pairs += 1
        ao[k, 0] = a
        ao[k, 1] = b
        at[k] = t_init
        k += 1
    if n_pairs == 0:
        return n_al, n_d
    # first impressions (state.first_impressions), in the same order of draws
    t0 = np.empty(n_pairs)
    o0 = np.empty(n_pairs)
    for j in range(n_pairs):
        if spread > 0.0:
            z = spread * rng.standard_normal()
            t0[j] = min(max(t_init + z, 0.0), 1.0)
            o0[j] = min(max(o_init + z, 0.0), 1.0)
        else:
            t0[j] = t_init
            o0[j] = o_init
    _org_abundance(m, org, share)
    level = np.empty(n_pairs)
    for j in range(n_pairs):
        al = n_al + j
        level[j] = exchange * o0[j] * o0[j] / (1.0 - memory)  # state.resting_value
        al_org[al, 0], al_org[al, 1] = pairs[j, 0], pairs[j, 1]
        al_formed[al] = step
        al_ended[al] = -1
        al_value[al, :] = 0.0
        al_perceived[al] = 0.0
        al_unsat[al, :] = 0.0
        al_grievance[al, :] = 0.0
        al_tension[al] = 0.0
        al_regime[al] = 0
        al_blames[al] = 0
        al_opps[al] = 0
        al_mindset[al, 0] = share[pairs[j, 0]]
        al_mindset[al, 1] = share[pairs[j, 1]]
        al_trust[al] = t0[j]
        al_open[al] = o0[j]
        al_level[al] = level[j]
        al_hist[al, :] = (t0[j] + o0[j]) / 2
    nd = n_pairs * ipo * ipo
    new_dyads(pairs[:n_pairs], ipo, n_al, t0, o0, level, d_al[n_d:n_d + nd],
              d_ind[:, n_d:n_d + nd], T[:, n_d:n_d + nd], O[:, n_d:n_d + nd],
              D[n_d:n_d + nd], v[n_d:n_d + nd])
    e = n_al + n_pairs
    classify(P, step, al_ended[n_al:e], al_trust[n_al:e], al_open[n_al:e], al_hist[n_al:e],
             al_regime[n_al:e])
    return e, n_d + nd


@njit(cache=True, error_model="numpy")
def _loop(P, split, rng, n_steps, step, noise, diff_rate, size_unit, has_talk, has_tz, r_side,
          r_own, form_rate, closure, trusted, t_init, o_init, spread, ipo, exchange, memory,
          n_al, n_d, al_org, al_formed, al_ended, al_value, al_perceived, al_unsat,
          al_grievance, al_mindset, al_trust, al_open, al_tension, al_level, al_hist,
          al_regime, al_blames, al_opps, d_al, d_ind, T, O, D, v, m, a, pp, org, culture,
          horizon, ind_to_scarcity, ind_to_abundance, n_track, raw, traj_t, traj_o):
    """Up to n_steps steps of kernel_numba.step. Returns (steps done, alliances to form now
    (0: none pending), n_al, n_d). With a pending formation, the step's events are in its raw
    row and the rest of the step (formation, its metrics) is the caller's."""
    n_ind, K = pp.shape
    n_org = len(culture)
    cap_al, cap_d = len(al_formed), len(D)
    pf = np.empty((n_ind, N_PF))
    pi = np.empty((n_ind, N_PI), np.int32)
    af = np.empty((cap_al, N_AF))
    ai = np.empty((cap_al, N_AI), np.int32)
    move = np.empty((n_ind, K))
    of = np.empty((n_org, 2))
    z_talk = np.empty((n_ind, K) if has_talk else (0, 0))
    counts = np.empty(cap_d, np.int32)
    dbuf = np.empty((3, 64))
    own = 1 if r_own > 0.0 else 0
    z_own = np.empty((2, cap_d * own))
    blk = np.empty((2, BLOCK))
    ev_al = np.empty((4, cap_al), np.int32)
    ev_ind = np.empty((2, n_ind), np.int32)
    z_side = np.empty((cap_al, 2) if r_side > 0.0 else (0, 0))
    rank = np.empty(cap_al if r_side > 0.0 else 0, np.int64)
    u_end = np.empty(cap_al if noise else 0)
    ao = np.empty((cap_al, 2), np.int64)
    at = np.empty(cap_al)
    rep = np.empty(n_org)
    fcnt = np.empty(n_org)
    bools = np.empty((3, n_org), np.bool_)
    cand = np.empty(n_org, np.int64)
    free = np.empty(n_org, np.int64)
    w = np.empty(n_org)
    pairs = np.empty((cap_al, 2), np.int64)
    share = np.empty(n_org, np.bool_)
    parent = np.empty(n_org, np.int64)
    size = np.empty(n_org, np.int64)
    for t in range(n_steps):
        n_diff = 0
        if noise and diff_rate > 0.0 and n_d > 0:
            n_diff = rng.poisson(diff_rate * n_d)
        step += 1
        mm = min(n_diff, n_d)
        if mm > dbuf.shape[1]:
            dbuf = np.empty((3, mm + mm // 2))
        flow, n_end, kept, n_avoid, n_blamed, n_opp, n_to_s, n_to_a = ties_step(
            P, step, split, rng, n_diff, has_talk, z_talk, counts[:n_d], size_unit,
            dbuf[0, :mm], dbuf[1, :mm], dbuf[2, :mm], has_tz,
            z_own[0, :n_d * own], z_own[1, :n_d * own], z_side[:n_al], rank[:n_al], r_side,
            r_own, noise, u_end[:n_al], d_al[:n_d], d_ind[0, :n_d], d_ind[1, :n_d],
            T[0, :n_d], T[1, :n_d], O[0, :n_d], O[1, :n_d], D[:n_d], v[:n_d], m, a, pp, org,
            culture, horizon,
            al_org[:n_al], al_ended[:n_al], al_blames[:n_al], al_opps[:n_al], al_value[:n_al],
            al_perceived[:n_al], al_unsat[:n_al], al_grievance[:n_al], al_regime[:n_al],
            al_trust[:n_al], al_open[:n_al], al_tension[:n_al], al_level[:n_al],
            al_hist[:n_al], ind_to_scarcity, ind_to_abundance, pf, pi, move, af[:n_al],
            ai[:n_al], of, blk, ev_al, ev_ind)
        n_d = kept
        row = raw[t]
        row[R_FLOW] = flow
        row[R_BLAMED] = n_blamed
        row[R_OPP] = n_opp
        row[R_TO_S] = n_to_s
        row[R_TO_A] = n_to_a
        if noise:
            n_new = rng.poisson(form_rate)
            if n_new > 0:
                if n_al + n_new > cap_al or n_d + n_new * ipo * ipo > cap_d:
                    return t, n_new, n_al, n_d
                n_al, n_d = _form(P, rng, n_new, step, closure, trusted, t_init, o_init,
                                  spread, ipo, exchange, memory, n_al, n_d, al_org, al_formed,
                                  al_ended, al_value, al_perceived, al_unsat, al_grievance,
                                  al_mindset, al_trust, al_open, al_tension, al_level, al_hist,
                                  al_regime, al_blames, al_opps, d_al, d_ind, T, O, D, v, m,
                                  org, ao, at, rep, fcnt, bools, cand, free, w, pairs, share)
        _raw_metrics(row, trusted, n_org, n_al, n_d, al_regime, al_ended, al_trust, al_open,
                     al_value, al_perceived, al_unsat, al_org, a, m, D, pp, d_ind, parent, size)
        for j in range(n_track):
            traj_t[t, j] = al_trust[j]
            traj_o[t, j] = al_open[j]
    return n_steps, 0, n_al, n_d


@njit(cache=True, error_model="numpy")
def _raw_metrics(row, trusted, n_org, n_al, n_d, al_regime, al_ended, al_trust, al_open,
                 al_value, al_perceived, al_unsat, al_org, a, m, D, pp, d_ind, parent, size):
    r = _series(trusted, n_org, al_regime[:n_al], al_ended[:n_al], al_trust[:n_al],
                al_open[:n_al], al_value[:n_al], al_perceived[:n_al], al_unsat[:n_al],
                al_org[:n_al], a, m, D[:n_d], pp, d_ind[0, :n_d], d_ind[1, :n_d], parent, size)
    (row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10],
     row[11], row[12], row[13], row[14]) = r
    row[R_NAL] = n_al
    row[R_ND] = n_d


def _reserve(s: State, sc, name: str, room: int) -> np.ndarray:
    """The buffer behind s.<name> with room for `room` more rows along its alliance or dyad
    axis (grown, and s.<name> re-viewed into it, when it has not)."""
    cur = getattr(s, name)
    axis = 1 if name in _TIE_ROWS else 0
    n = cur.shape[axis]
    rec = sc.grown.get(name)
    if rec is not None and rec[1] is cur and rec[0].shape[axis] >= n + room:
        return rec[0]
    shape = list(cur.shape)
    shape[axis] = capacity(n + room)
    buf = np.empty(shape, cur.dtype)
    if axis:
        buf[:, :n] = cur
    else:
        buf[:n] = cur
    _view(s, sc, name, buf, n)
    return buf


def capacity(n: int) -> int:
    """Rows of a new buffer for n rows: a sixteenth more and a few (growth is amortized)."""
    return n + n // 16 + 64


def _view(s: State, sc, name: str, buf: np.ndarray, n: int) -> None:
    view = buf[:, :n] if name in _TIE_ROWS else buf[:n]
    setattr(s, name, view)
    sc.grown[name] = (buf, view)


def metrics_rows(raw: np.ndarray, n_org: int, n_ind: int) -> dict[str, list]:
    """The per-step metrics of raw rows (kernel_numba.series and metrics.step_metrics, row by
    row): one list per series key."""
    n, n_end = raw[:, R_NAL], raw[:, R_END]
    act = n - n_end
    n_d = raw[:, R_ND]

    def ratio(x, d, empty=0.0):
        out = np.full(len(x), empty)
        np.divide(x, d, out=out, where=d > 0)
        return out.tolist()

    ints = raw[:, [R_NAL, R_END, R_BLAMED, R_OPP, R_TO_S, R_TO_A]].astype(np.int64)
    return {
        "mean_trust": ratio(raw[:, R_ST], n),
        "mean_openness": ratio(raw[:, R_SO], n),
        "mean_trust_active": ratio(raw[:, R_STA], act),
        "share_spiral_in": ratio(raw[:, R_IN], n),
        "share_spiral_out": ratio(raw[:, R_OUT], n),
        "share_undecided": ratio(raw[:, R_UND], n, 1.0),
        "value_created": raw[:, R_VAL].tolist(),
        "value_perceived": raw[:, R_PER].tolist(),
        "value_flow": raw[:, R_FLOW].tolist(),
        "alliances_active": (ints[:, 0] - ints[:, 1]).tolist(),
        "alliances_formed": ints[:, 0].tolist(),
        "alliances_ended": ints[:, 1].tolist(),
        "mean_abundance": (raw[:, R_SA] / n_ind).tolist(),
        "share_abundance_mindset": (raw[:, R_SM] / n_ind).tolist(),
        "mean_tension": ratio(raw[:, R_SD], n_d),
        "mean_divergence": ratio(raw[:, R_SDIV], n_d),
        "blames": ints[:, 2].tolist(),
        "opportunities": ints[:, 3].tolist(),
        "trusting_component": (raw[:, R_BIG] / n_org).tolist(),
        "to_scarcity": ints[:, 4].tolist(),
        "to_abundance": ints[:, 5].tolist(),
        "mean_dissatisfaction": ratio(raw[:, R_SU], 2 * act),
    }


SERIES = frozenset(metrics_rows(np.zeros((0, N_RAW)), 1, 1))  # what metrics_rows writes


def spare_alliances(rate: float, n_steps: int) -> int:
    """Room kept for alliances formed during a batch: far above the Poisson(rate * n_steps)
    expected (a batch that runs out stops and lets Python grow the buffers)."""
    return int(2 * rate * n_steps + 8 * np.sqrt(rate * n_steps + 1) + 16)


def run_steps(s: State, p, rng, n_steps: int, n_track: int):
    """n_steps steps of kernel_numba.step in compiled loops. Returns (raw metrics rows
    (n_steps, N_RAW), tracked trust (n_steps, n_track), tracked openness)."""
    sc = _scratch(s)
    P = pack(p)
    sc.P = P
    split = _split(p)
    noise = bool(p.noise.enabled)
    df, tr, fo = p.differences, p.trust, p.formation
    has_tz = noise and tr.noise > 0
    rho = tr.noise_shared
    r_side, r_own = (float(np.sqrt(rho)), float(np.sqrt(1.0 - rho))) if has_tz else (0.0, 0.0)
    ipo = p.ecosystem.individuals_per_organization
    raw = np.zeros((n_steps, N_RAW))
    traj_t = np.empty((n_steps, n_track))
    traj_o = np.empty((n_steps, n_track))
    room = spare_alliances(fo.rate, n_steps) if noise else 0
    done = 0
    while done < n_steps:
        bufs = {name: _reserve(s, sc, name, room) for name in _AL_FIELDS}
        bufs.update({name: _reserve(s, sc, name, room * ipo * ipo) for name in _DYAD_FIELDS})
        k, pending, n_al, n_d = _loop(
            P, split, rng, n_steps - done, s.step, noise, float(df.rate), float(df.size),
            noise and p.talk.noise > 0, has_tz, r_side, r_own, float(fo.rate),
            float(fo.closure), float(p.mindset.trusted_level), float(initial_trust(p)),
            float(p.initial.openness), float(p.initial.spread), ipo,
            float(p.value.exchange), float(p.value.memory), s.n_al, len(s.D),
            *(bufs[name] for name in _KNOWN_FIELDS), *(bufs[name] for name in _DYAD_FIELDS),
            s.m, s.a, s.p, s.org, s.culture, s.horizon, s.ind_to_scarcity, s.ind_to_abundance,
            n_track, raw[done:], traj_t[done:], traj_o[done:])
        for name in _KNOWN_FIELDS:
            _view(s, sc, name, bufs[name], n_al)
        for name in _DYAD_FIELDS:
            _view(s, sc, name, bufs[name], n_d)
        s.changed_ties()
        s.step += k
        done += k
        if pending:  # this step's formation does not fit: Python forms and grows, then on
            s.step += 1
            kn.form_alliances(s, p, rng, kn.knp.Events(), sc, n_new=pending)
            row = raw[done]
            r = kn.series_raw(s, p)
            row[:15] = r
            row[R_NAL], row[R_ND] = s.n_al, len(s.D)
            traj_t[done] = s.al_trust[:n_track]
            traj_o[done] = s.al_open[:n_track]
            done += 1
    return raw, traj_t, traj_o


def warm_up() -> None:
    """Load (or compile) the step's and the batch loop's compiled code: kernel_numba.warm_up,
    then a few batches of a tiny, busy ecosystem (formations that fit and that do not)."""
    kn.warm_up()
    s, p, rng = kn.busy_ecosystem()
    for _ in range(3):
        run_steps(s, p, rng, 4, 3)
