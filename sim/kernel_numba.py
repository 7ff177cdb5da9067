"""The compiled path of the step: the phases of sim/kernel_numpy.py (docs/model.md) as numba
functions of the same names, one loop over the ties per group of phases.

    talk                  one pass over the ties (moves, exchange, degrees), one over the people
    differences, blame,   one pass over the ties: each dyad's differences, blame, value created
    value, trust          and perceived, and its two trust updates, with the per-person and
                          per-alliance sums accumulated on the way
    patience              one pass over the alliances: dissatisfaction, value, ending hazard
    openness, mindset     one pass over the ties (openness, alliance summaries, dropping the ties
                          of ended alliances in place, experiences), one over the people
                          (latent abundance, flips), one over the organizations (culture)
    classify              one pass over the alliances (regimes), then the metrics (`series`)

Every equation is the numpy path's, in the same order of operations; only the summation order
of the per-person and per-alliance sums and the logistic of the tie loops (`logistic_block`:
vectorized, within 2.3e-16 of 1/(1+e^-z)) differ (rounding, ~1e-16). The random numbers are
kernel_numpy.draw_step's: `draw` takes the same numbers in the same order from the same numpy
Generator (numba's Generator support reproduces numpy's algorithms). Formation (a handful of
alliances per step, the partner choices compiled, the draws in the numpy path's order) and the
set-up follow the numpy path; sim/kernel_batch.py runs many of these steps in one call.

Compiled once with cache=True: the machine code is stored next to this file (__pycache__) or,
when that folder is not writable, in numba's user cache, so a new process only loads it.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from . import kernel_numpy as knp
from .state import (
    INDEX,
    OUT,
    VALUE_KINDS,
    State,
    empty_alliances,
    first_impressions,
    initial_trust,
    new_alliances,
    org_abundance,
    resting_value,
)

# The parameters, packed into one float vector per step (names as in docs/model.md).
(MU, TALK_NOISE, OPEN_TALK, CONFRONT_A, CONFRONT_S, OPP_TRUST, BLAME_LEVEL, BLAME_COST,
 EXCHANGE, OPPORTUNITY, MEMORY, INTERESTS, CLAIM_S, REVENUE_SHARE, W_DIV, DIV_REF, W_TENSION,
 W_DISPUTE, VALUE_REF, W_VALUE, W_OPEN, OPEN_REF, TBIAS_A, TBIAS_S, TRUST_NOISE, T_STEEP,
 T_RATE, T_ERODE, O_THRESHOLD, O_STEEP, OBIAS_A, OBIAS_S, CLOSE_BIAS, O_RATE, EXPECTATION,
 W_BLAME, END_RATE, TRUSTED, LEARN_RATE, LEARN_OPP, HURT_RATE, BETRAYAL, CULTURE_PULL,
 PEER_PULL, THETA_DOWN, THETA_UP, CULTURE_FOLLOW, USUAL, IN_LEVEL, OUT_LEVEL, TREND,
 N_PARAMS) = range(52)
MAXQ = knp.MAX_QUARRELS
# LLVM may contract a*b+c and reorder sums in the tie loops (rounding, ~1e-16); no
# assumptions about NaN or infinity, so comparisons keep their meaning
FAST = {"contract", "reassoc", "nsz", "arcp"}


def pack(p) -> np.ndarray:
    """The parameter vector of the compiled functions."""
    P = np.empty(N_PARAMS)
    d, t, o, mp, r = p.differences, p.trust, p.openness, p.mindset, p.regimes
    P[MU], P[TALK_NOISE], P[OPEN_TALK] = knp.talk_rate(p), p.talk.noise, d.open_talk
    P[CONFRONT_A], P[CONFRONT_S] = d.confront_abundance, d.confront_scarcity
    P[OPP_TRUST], P[BLAME_LEVEL], P[BLAME_COST] = d.opportunity_trust, d.blame_level, d.blame_cost
    P[EXCHANGE], P[OPPORTUNITY], P[MEMORY] = p.value.exchange, p.value.opportunity, p.value.memory
    P[INTERESTS] = 1.0 if p.negotiation.interests else 0.0
    P[CLAIM_S], P[REVENUE_SHARE] = p.value.claim_scarcity, p.value.revenue_share
    P[W_DIV], P[DIV_REF], P[W_TENSION] = t.w_divergence, t.divergence_ref, t.w_tension
    P[W_DISPUTE], P[VALUE_REF], P[W_VALUE] = t.w_dispute, t.value_ref, t.w_value
    P[W_OPEN], P[OPEN_REF] = t.w_openness, t.openness_ref
    P[TBIAS_A], P[TBIAS_S], P[TRUST_NOISE] = t.bias_abundance, t.bias_scarcity, t.noise
    P[T_STEEP], P[T_RATE], P[T_ERODE] = t.steepness, t.rate, t.erode_rate
    P[O_THRESHOLD], P[O_STEEP], P[O_RATE] = o.threshold, o.steepness, o.rate
    P[OBIAS_A], P[OBIAS_S] = o.bias_abundance, o.bias_scarcity
    P[CLOSE_BIAS], P[EXPECTATION] = p.patience.close_bias, p.value.expectation
    P[W_BLAME], P[END_RATE] = p.patience.w_blame, p.patience.end_rate
    P[TRUSTED], P[LEARN_RATE], P[LEARN_OPP] = mp.trusted_level, mp.learn_rate, mp.learn_opportunity
    P[HURT_RATE], P[BETRAYAL] = mp.hurt_rate, mp.betrayal
    P[CULTURE_PULL], P[PEER_PULL], P[CULTURE_FOLLOW] = mp.culture_pull, mp.peer_pull, \
        mp.culture_follow
    P[THETA_DOWN], P[THETA_UP] = mp.theta_down, mp.theta_up
    P[USUAL] = max(1.0, p.ecosystem.mean_degree * p.ecosystem.individuals_per_organization)
    P[IN_LEVEL], P[OUT_LEVEL], P[TREND] = r.in_level, r.out_level, r.trend
    return P


# The logistic S(z) = 1/(1+e^-z) of the tie loops (kernel_numpy.sigmoid_ computes it as
# (1 + tanh(z/2))/2), vectorized: np.exp is a scalar libm call (4-5 ns) that keeps the loop from
# using SIMD; in plain arithmetic over a small buffer LLVM vectorizes it (~1 ns).
BLOCK = 512  # dyads per block: the buffers of the block's logistic inputs stay in L1
LOG2E = 1.4426950408889634
LN2_HI = 0.693145751953125  # ln 2 split in two (Cody-Waite): n * LN2_HI is exact
LN2_LO = 1.42860682030941723212e-6
(E2, E3, E4, E5, E6, E7, E8, E9, E10, E11, E12, E13) = (1.0 / math.factorial(i)
                                                        for i in range(2, 14))


@intrinsic
def _as_float(typingctx, bits):
    """The float64 whose bit pattern is the int64 `bits` (2^n from its exponent field)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(cache=True, error_model="numpy", inline="always")
def exp_(x):
    """e^x within 2.3e-16 (relative) for |x| <= 700, clamped beyond (where the logistic is 0
    or 1 to within 1e-304): x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor polynomial of
    degree 13 (remainder < 4e-18), times 2^n built from its bits."""
    x = min(max(x, -700.0), 700.0)
    n = np.floor(x * LOG2E + 0.5)
    r = x - n * LN2_HI
    r = r - n * LN2_LO
    q = E13
    q = q * r + E12
    q = q * r + E11
    q = q * r + E10
    q = q * r + E9
    q = q * r + E8
    q = q * r + E7
    q = q * r + E6
    q = q * r + E5
    q = q * r + E4
    q = q * r + E3
    q = q * r + E2
    q = q * r + 1.0
    q = q * r + 1.0
    return q * _as_float((np.int64(n) + 1023) << 52)


@njit(cache=True, error_model="numpy", fastmath={"contract", "nsz"})
def logistic_block(z, n):
    """z[:n] <- 1/(1+e^-z[:n]), in one SIMD loop (within 2.3e-16 of the exact logistic)."""
    for i in range(n):
        z[i] = 1.0 / (1.0 + exp_(-z[i]))


# Random numbers ---------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def draw(rng, n_diff, has_talk, z_talk, d_al, counts, size_unit, size, u_confront, u_find,
         has_tz, use_side, use_own, rank, z_side, z_own0, z_own1, has_end, al_ended, u_end):
    """kernel_numpy.draw_step's numbers (after its first, n_diff), drawn from the same numpy
    Generator in the same order into the work arrays: talk drift; the differences' dyads,
    sizes and (confront, find) uniforms; the evidence noise (side, then own); the endings.
    Returns the number of dyads with a difference."""
    n_d = len(d_al)
    if has_talk:
        n_ind, K = z_talk.shape
        for i in range(n_ind):
            for j in range(K):
                z_talk[i, j] = rng.standard_normal()
    n_idx = 0
    if n_diff > 0:
        counts[:] = 0
        for _ in range(n_diff):
            counts[min(np.int64(rng.random() * n_d), n_d - 1)] += 1
        for k in range(n_d):
            c = counts[k]
            if c > 0:
                if size_unit > 0.0:
                    acc = 0.0
                    for _ in range(c):
                        acc += rng.standard_exponential()
                    size[n_idx] = acc * size_unit
                else:
                    size[n_idx] = 0.0
                n_idx += 1
        for j in range(n_idx):
            u_confront[j] = rng.random()
            u_find[j] = rng.random()
    if has_tz:
        if use_side:
            rank[:] = -1
            for k in range(n_d):
                rank[d_al[k]] = 0
            r = 0
            for al in range(len(rank)):
                if rank[al] == 0:
                    rank[al] = r
                    z_side[r, 0] = rng.standard_normal()
                    z_side[r, 1] = rng.standard_normal()
                    r += 1
        if use_own:
            for k in range(n_d):
                z_own0[k] = rng.standard_normal()
            for k in range(n_d):
                z_own1[k] = rng.standard_normal()
    if has_end:
        j = 0
        for al in range(len(al_ended)):
            if al_ended[al] < 0:
                u_end[j] = rng.random()
                j += 1
    return n_idx


# 1. Talk ---------------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy", fastmath=FAST)
def talk(P, pp, i0, i1, O0, O1, has_z, z, deg, move, sumx):
    """Perspectives move toward partners by mu * O_ji; without exchange they drift apart.
    Also counts every person's ties (deg) for the experience weights of this step. deg and
    sumx must come zeroed."""
    n_ind, K = pp.shape
    move[:, :] = 0.0  # deg and sumx come zeroed (ties_step zeroes all per-person sums at once)
    for k in range(len(i0)):
        a, b = i0[k], i1[k]
        o0, o1 = O0[k], O1[k]
        deg[a] += 1
        deg[b] += 1
        x = o0 * o1
        sumx[a] += x
        sumx[b] += x
        for j in range(K):
            diff = pp[b, j] - pp[a, j]
            move[a, j] += o1 * diff
            move[b, j] += -(o0 * diff)
    mu, sd = P[MU], P[TALK_NOISE]
    for i in range(n_ind):
        inv = 1.0 / max(deg[i], 1)
        f = mu * inv
        drift = sd * (1.0 - sumx[i] * inv)
        for j in range(K):
            val = pp[i, j] + move[i, j] * f
            if has_z:
                val += drift * z[i, j]
            pp[i, j] = min(max(val, 0.0), 1.0)


# 2.-5., 3. Differences, blame, the pie and trust ----------------------------------------------
@njit(cache=True, error_model="numpy", fastmath=FAST)
def differences_blame_value_trust(P, has_diff, counts, size, u_confront, u_find, has_z,
                                  z_own0, z_own1, z_side, rank, r_side, r_own,
                                  d_al, i0, i1, T0, T1, O0, O1, D, v, m, pp,
                                  al_blames, al_opps, cnt, created, perc, quar, lev,
                                  f_avoid, f_blame, f_opp, blame_n, opp_n, blk):
    """Per dyad, in the numpy path's order: a difference is confronted (tension cleared, an
    opportunity with chance trust) or avoided (tension grows); tension past blame_level blows
    up (trust x (1 - blame_cost)^n); value created and perceived; then both trust updates
    T += r (S(k_T e) - T). Sums per alliance (dyads, value, quarrels, perceived levels) and per
    person (quarrels, opportunities) are accumulated here. The dyads go in blocks of BLOCK:
    the trust evidence of a block is gathered into blk, its logistic taken in one SIMD pass,
    then the updates applied."""
    # the parameters as locals (kept in registers across the loop)
    p_blame_cost = P[BLAME_COST]
    p_blame_level = P[BLAME_LEVEL]
    p_claim_s = P[CLAIM_S]
    p_confront_a = P[CONFRONT_A]
    p_confront_s = P[CONFRONT_S]
    p_div_ref = P[DIV_REF]
    p_exchange = P[EXCHANGE]
    p_interests = P[INTERESTS]
    p_memory = P[MEMORY]
    p_open_ref = P[OPEN_REF]
    p_open_talk = P[OPEN_TALK]
    p_opportunity = P[OPPORTUNITY]
    p_opp_trust = P[OPP_TRUST]
    p_revenue_share = P[REVENUE_SHARE]
    p_tbias_a = P[TBIAS_A]
    p_tbias_s = P[TBIAS_S]
    p_trust_noise = P[TRUST_NOISE]
    p_t_erode = P[T_ERODE]
    p_t_rate = P[T_RATE]
    p_t_steep = P[T_STEEP]
    p_value_ref = P[VALUE_REF]
    p_w_dispute = P[W_DISPUTE]
    p_w_div = P[W_DIV]
    p_w_open = P[W_OPEN]
    p_w_tension = P[W_TENSION]
    p_w_value = P[W_VALUE]
    K = pp.shape[1]
    bl, cost = p_blame_level, p_blame_cost
    interests = p_interests > 0.0
    j = 0  # position among the dyads with a difference this step
    n_d = len(d_al)
    z0, z1 = blk[0], blk[1]
    for k0 in range(0, n_d, BLOCK):
        nb = min(BLOCK, n_d - k0)
        for k in range(k0, k0 + nb):
            al, a, b = d_al[k], i0[k], i1[k]
            ma, mb = m[a], m[b]
            x = O0[k] * O1[k]  # mutual exchange, from last step's openness
            cnt[al] += 1
            found = False
            # 2. differences
            if has_diff and counts[k] > 0:
                ca = p_confront_a if ma else p_confront_s
                cb = p_confront_a if mb else p_confront_s
                closed = 1.0 - p_open_talk * x
                q = 1.0 - (1.0 - ca) * closed * (1.0 - cb) * closed
                if u_confront[j] < q:
                    chance = 0.5 * (T0[k] + T1[k])
                    found = u_find[j] < chance
                    D[k] = 0.0
                else:
                    D[k] += size[j]
                    f_avoid[al] = 1
                j += 1
                if found:
                    f_opp[al] = 1
                    opp_n[a] += 1.0
                    opp_n[b] += 1.0
                    if p_opp_trust > 0.0:
                        T0[k] += p_opp_trust * (1.0 - T0[k])
                        T1[k] += p_opp_trust * (1.0 - T1[k])
            # blame
            if D[k] > bl:
                n = min(np.floor(D[k] / bl), MAXQ)
                f = (1.0 - cost) ** n
                T0[k] *= f
                T1[k] *= f
                D[k] = 0.0
                f_blame[al] = 1
                al_blames[al] += np.int64(n)
                quar[al] = max(quar[al], n)  # the most quarrels on any of its dyads
                blame_n[a] += n
                blame_n[b] += n
            # 5. the pie: value created, claims, perceived value
            flow = p_exchange * x
            if found:
                flow += p_opportunity
                al_opps[al] += 1
            vk = v[k] * p_memory + flow
            v[k] = vk
            if interests:
                c0 = 0.5
                c1 = 0.5
            else:
                c0 = 0.5 if ma else p_claim_s
                c1 = 0.5 if mb else p_claim_s
            total = c0 + c1
            den = max(1.0, total)
            s0 = c0 / den * (1.0 if ma else p_revenue_share)
            s1 = c1 / den * (1.0 if mb else p_revenue_share)
            created[al] += flow
            perc[al] += (s0 + s1) * flow
            pv0 = s0 * (2.0 * vk)
            pv1 = s1 * (2.0 * vk)
            lev[al, 0] += pv0
            lev[al, 1] += pv1
            over = max(total - 1.0, 0.0)
            # 3. trust, from the partner's (last step's) openness
            dsum = 0.0
            for kk in range(K):
                dsum += abs(pp[a, kk] - pp[b, kk])
            d = dsum / K
            common = p_w_div * (d - p_div_ref)
            common += p_w_tension * D[k]
            common += p_w_dispute * over
            e0 = (pv0 - p_value_ref) * p_w_value
            e0 += p_w_open * (O1[k] - p_open_ref)
            e0 -= common
            e0 += p_tbias_a if ma else p_tbias_s
            e1 = (pv1 - p_value_ref) * p_w_value
            e1 += p_w_open * (O0[k] - p_open_ref)
            e1 -= common
            e1 += p_tbias_a if mb else p_tbias_s
            if has_z:
                # evidence noise: sqrt(rho) z_side + sqrt(1 - rho) z_tie (kernel_numpy.evidence_noise)
                n0 = n1 = 0.0
                if r_side > 0.0:
                    rk = rank[al]
                    n0 = z_side[rk, 0] * r_side
                    n1 = z_side[rk, 1] * r_side
                if r_own > 0.0:
                    n0 += z_own0[k] * r_own
                    n1 += z_own1[k] * r_own
                e0 += p_trust_noise * n0
                e1 += p_trust_noise * n1
            z0[k - k0] = e0 * p_t_steep
            z1[k - k0] = e1 * p_t_steep
        logistic_block(z0, nb)
        logistic_block(z1, nb)
        for k in range(k0, k0 + nb):
            e0 = z0[k - k0] - T0[k]
            e1 = z1[k - k0] - T1[k]
            T0[k] += e0 * (p_t_rate if e0 > 0.0 else p_t_erode)
            T1[k] += e1 * (p_t_rate if e1 > 0.0 else p_t_erode)


# 6. Patience -----------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def patience(P, step, al_ended, al_org, horizon, cnt, quar, lev, created, perc, split,
             al_value, al_perceived, al_unsat, al_grievance, al_regime, has_end, u_end, gone):
    """Per alliance: the value created by kind and perceived; each side's grievance g and
    dissatisfaction u <- u + (g - u)/H; the ending hazard end_rate u^2 g per side and the
    ending draw. Returns (value created this step, alliances ended)."""
    E = P[EXPECTATION]
    flow_sum = 0.0
    j = 0
    n_end = 0
    for al in range(len(al_ended)):
        flow_sum += created[al]
        for kind in range(al_value.shape[1]):
            al_value[al, kind] += created[al] * split[kind]
        al_perceived[al] += perc[al]
        act = al_ended[al] < 0
        c = max(cnt[al], 1)
        q = quar[al]
        for side in range(2):
            if E > 0.0:
                short = min(max(1.0 - (lev[al, side] / c) / E, 0.0), 1.0)
            else:
                short = 0.0
            g = min(1.0, short + P[W_BLAME] * q)
            if act:
                al_grievance[al, side] = g
                u = al_unsat[al, side]
                al_unsat[al, side] = u + (g - u) / horizon[al_org[al, side]]
            else:
                al_grievance[al, side] = 0.0
        gone[al] = 0
        if has_end and act:
            h0 = P[END_RATE] * al_unsat[al, 0] ** 2 * al_grievance[al, 0]
            h1 = P[END_RATE] * al_unsat[al, 1] ** 2 * al_grievance[al, 1]
            if u_end[j] < 1.0 - (1.0 - h0) * (1.0 - h1):
                gone[al] = 1
                al_ended[al] = step
                al_regime[al] = OUT
                n_end += 1
            j += 1
    return flow_sum, n_end


# 4., 12., 8., 7. Openness, summaries, endings, mindset -----------------------------------------
@njit(cache=True, error_model="numpy", fastmath=FAST)
def openness_mindset(P, d_al, i0, i1, T0, T1, O0, O1, D, v, m, a, pp, org, culture,
                     al_unsat, cnt, gone, n_end, al_trust, al_open, al_tension, al_level,
                     sums, deg, deg_post, blame_n, opp_n, hurt_n, good, peer, org_sum,
                     org_cnt, ind_to_scarcity, ind_to_abundance, flips, blk):
    """Openness O += rate (S(k_O (T - theta_O) + b + close_bias u) - O) on every tie; the
    alliance summaries; the ties of ended alliances dropped (the kept ones moved down in
    place); each person's experiences and latent abundance, flips with hysteresis; cultures
    follow their people. Returns the number of ties kept (dyads). deg_post, hurt_n, good, peer
    and flips must come zeroed."""
    # the parameters as locals (kept in registers across the loop)
    p_betrayal = P[BETRAYAL]
    p_close_bias = P[CLOSE_BIAS]
    p_culture_follow = P[CULTURE_FOLLOW]
    p_culture_pull = P[CULTURE_PULL]
    p_hurt_rate = P[HURT_RATE]
    p_learn_opp = P[LEARN_OPP]
    p_learn_rate = P[LEARN_RATE]
    p_obias_a = P[OBIAS_A]
    p_obias_s = P[OBIAS_S]
    p_o_rate = P[O_RATE]
    p_o_steep = P[O_STEEP]
    p_o_threshold = P[O_THRESHOLD]
    p_peer_pull = P[PEER_PULL]
    p_theta_down = P[THETA_DOWN]
    p_theta_up = P[THETA_UP]
    p_trusted = P[TRUSTED]
    p_usual = P[USUAL]
    n_al = len(cnt)
    sums[:, :] = 0.0  # they reuse patience's columns; the per-person sums come zeroed
    tl = p_trusted
    j = 0
    n_d = len(d_al)
    z0, z1 = blk[0], blk[1]
    for k0 in range(0, n_d, BLOCK):
        nb = min(BLOCK, n_d - k0)
        for k in range(k0, k0 + nb):  # 4. openness, from this step's trust
            al = d_al[k]
            z = (T0[k] - p_o_threshold) * p_o_steep
            z += p_obias_a if m[i0[k]] else p_obias_s
            z0[k - k0] = z + p_close_bias * al_unsat[al, 0]
            z = (T1[k] - p_o_threshold) * p_o_steep
            z += p_obias_a if m[i1[k]] else p_obias_s
            z1[k - k0] = z + p_close_bias * al_unsat[al, 1]
        logistic_block(z0, nb)
        logistic_block(z1, nb)
        for k in range(k0, k0 + nb):
            al, ia, ib = d_al[k], i0[k], i1[k]
            t0, t1 = T0[k], T1[k]
            o0 = O0[k] + (z0[k - k0] - O0[k]) * p_o_rate
            o1 = O1[k] + (z1[k - k0] - O1[k]) * p_o_rate
            # 12. summaries (before the endings: an ended alliance keeps its last state)
            sums[al, 0] += t0 + t1
            sums[al, 1] += o0 + o1
            sums[al, 2] += D[k]
            sums[al, 3] += v[k]
            if n_end > 0 and gone[al]:  # 8. an ending hurts both people of the tie
                hurt_n[ia] += 1.0
                hurt_n[ib] += 1.0
                continue
            # 7. experiences on the ties that remain
            good[ia] += 1.0 if t0 > tl else 0.0  # no branch: t vs tl is a coin toss
            good[ib] += 1.0 if t1 > tl else 0.0
            peer[ia] += t0 * (a[ib] - a[ia])
            peer[ib] += t1 * (a[ia] - a[ib])
            deg_post[ia] += 1
            deg_post[ib] += 1
            if j != k:
                d_al[j], i0[j], i1[j] = al, ia, ib
                T0[j], T1[j], D[j], v[j] = t0, t1, D[k], v[k]
            O0[j], O1[j] = o0, o1
            j += 1
    for al in range(n_al):
        if cnt[al] > 0:
            c = cnt[al]
            al_trust[al] = sums[al, 0] / (2 * c)
            al_open[al] = sums[al, 1] / (2 * c)
            al_tension[al] = sums[al, 2] / c
            al_level[al] = sums[al, 3] / c
    # 7. mindset
    org_sum[:] = 0.0
    org_cnt[:] = 0
    usual = p_usual
    for i in range(len(a)):
        ew = 1.0 / max(deg[i], usual)  # experiences of this step, as shares of one's ties
        ew_post = 1.0 / max(deg_post[i], usual)
        g = good[i] * ew_post
        pull = peer[i] * (1.0 / max(deg_post[i], 1))
        climb = p_learn_rate * (g + p_learn_opp * (opp_n[i] * ew))
        fall = p_hurt_rate * (blame_n[i] * ew) + p_betrayal * (hurt_n[i] * ew)
        ai = a[i]
        o = org[i]
        ai += (climb * (1.0 - ai) - min(fall, 1.0) * ai + p_culture_pull * (culture[o] - ai)
               + p_peer_pull * pull)
        ai = min(max(ai, 0.0), 1.0)
        a[i] = ai
        if m[i]:
            if not ai >= p_theta_down:
                m[i] = False
                ind_to_scarcity[i] += 1
                flips[i] = -1
        elif ai > p_theta_up:
            m[i] = True
            ind_to_abundance[i] += 1
            flips[i] = 1
        org_sum[o] += ai
        org_cnt[o] += 1
    for o in range(len(culture)):
        culture[o] += p_culture_follow * (org_sum[o] / max(org_cnt[o], 1) - culture[o])
    return j


# 12. Regimes -----------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def classify(P, step, al_ended, al_trust, al_open, al_hist, al_regime):
    """Score (trust + openness)/2 and its trend over the window; ended alliances: spiral-out."""
    w1 = al_hist.shape[1]
    now, past = step % w1, (step + 1) % w1
    for al in range(len(al_ended)):
        score = 0.5 * (al_trust[al] + al_open[al])
        if al_ended[al] < 0:
            al_hist[al, now] = score
            trend = score - al_hist[al, past]
            if score >= P[IN_LEVEL] and trend >= -P[TREND]:
                al_regime[al] = 1
            elif score <= P[OUT_LEVEL] and trend <= P[TREND]:
                al_regime[al] = -1
            else:
                al_regime[al] = 0
        else:
            al_regime[al] = -1


# Metrics ---------------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, error_model="numpy")
def _series(level, n_org, al_regime, al_ended, al_trust, al_open, al_value, al_perceived,
            al_unsat, al_org, a, m, D, pp, i0, i1, parent, size):
    n = len(al_regime)
    n_in = n_out = n_und = n_end = 0
    st = so = sta = su = 0.0
    for al in range(n):
        r = al_regime[al]
        if r == 1:
            n_in += 1
        elif r == -1:
            n_out += 1
        else:
            n_und += 1
        st += al_trust[al]
        so += al_open[al]
        if al_ended[al] >= 0:
            n_end += 1
        else:
            sta += al_trust[al]
            su += al_unsat[al, 0] + al_unsat[al, 1]
    val = 0.0
    for al in range(n):
        for kind in range(al_value.shape[1]):
            val += al_value[al, kind]
    per = 0.0
    for al in range(n):
        per += al_perceived[al]
    sa = 0.0
    sm = 0
    for i in range(len(a)):
        sa += a[i]
        sm += 1 if m[i] else 0
    sd = 0.0
    for k in range(len(D)):
        sd += D[k]
    K = pp.shape[1]
    sdiv = 0.0
    for k in range(len(i0)):
        dk = 0.0
        for kk in range(K):
            dk += abs(pp[i0[k], kk] - pp[i1[k], kk])
        sdiv += dk / K
    # the largest component of organizations joined by trusting active alliances (union-find)
    for o in range(n_org):
        parent[o] = o
        size[o] = 1
    biggest = 1
    for al in range(n):
        if al_ended[al] < 0 and al_trust[al] > level:
            x = _find(parent, al_org[al, 0])
            y = _find(parent, al_org[al, 1])
            if x != y:
                if size[x] < size[y]:
                    x, y = y, x
                parent[y] = x
                size[x] += size[y]
                biggest = max(biggest, size[x])
    return (n_in, n_out, n_und, n_end, st, so, sta, su, val, per, sa, sm, sd, sdiv, biggest)


def series_raw(s: State, p) -> tuple:
    """_series of the state: (n_in, n_out, n_und, n_end, sums of trust, openness, active
    trust, dissatisfaction, value, perceived, abundance, mindsets, tension, divergence,
    largest trusting component)."""
    sc = _scratch(s)
    oi = sc.get("oi", (s.n_org, 2), np.int64)
    return _series(p.mindset.trusted_level, s.n_org, s.al_regime, s.al_ended, s.al_trust,
                   s.al_open, s.al_value, s.al_perceived, s.al_unsat, s.al_org, s.a, s.m, s.D,
                   s.p, s.d_ind[0], s.d_ind[1], oi[:, 0], oi[:, 1])


def series(s: State, p) -> dict:
    """The state's metrics of metrics.step_metrics, from one compiled pass (the same
    arithmetic as kernel_batch.metrics_rows)."""
    (n_in, n_out, n_und, n_end, st, so, sta, su, val, per, sa, sm, sd, sdiv,
     biggest) = series_raw(s, p)
    n, n_d, n_ind = s.n_al, len(s.D), s.n_ind
    act = n - n_end
    return {
        "mean_trust": st / n if n else 0.0,
        "mean_openness": so / n if n else 0.0,
        "mean_trust_active": sta / act if act else 0.0,
        "share_spiral_in": n_in / n if n else 0.0,
        "share_spiral_out": n_out / n if n else 0.0,
        "share_undecided": n_und / n if n else 1.0,
        "value_created": val,
        "value_perceived": per,
        "alliances_active": act,
        "alliances_formed": n,
        "alliances_ended": n_end,
        "mean_abundance": sa / n_ind,
        "share_abundance_mindset": sm / n_ind,
        "mean_tension": sd / n_d if n_d else 0.0,
        "mean_divergence": sdiv / n_d if n_d else 0.0,
        "trusting_component": biggest / s.n_org,
        "mean_dissatisfaction": su / (2 * act) if act else 0.0,
    }


# The step ---------------------------------------------------------------------------------------
# Work arrays, packed by what they are indexed by: per person (floats, ints), per alliance
# (floats, ints), per organization.
SUMX, BLAME_N, OPP_N, HURT_N, GOOD, PEER, N_PF = range(7)
DEG, DEG_POST, FLIP, N_PI = range(4)
CREATED, PERC, QUAR, LEV0, LEV1, N_AF = range(6)
# openness_mindset's per-alliance sums reuse the first four columns: patience has read them
SUM_T, SUM_O, SUM_D, SUM_V = range(4)
CNT, AVOIDED, BLAMED, OPPS, GONE, N_AI = range(6)


@njit(cache=True, error_model="numpy")
def ties_step(P, step, split, rng, n_diff, has_talk, z_talk, counts, size_unit, size,
              u_confront, u_find, has_tz, z_own0, z_own1, z_side, rank, r_side, r_own, has_end,
              u_end, d_al, i0, i1, T0, T1, O0, O1, D, v,
              m, a, pp, org,
              culture, horizon, al_org, al_ended, al_blames, al_opps, al_value, al_perceived,
              al_unsat, al_grievance, al_regime, al_trust, al_open, al_tension, al_level,
              al_hist, ind_to_scarcity, ind_to_abundance, pf, pi, move, af, ai, of, blk, ev_al,
              ev_ind):
    """Talk to mindset, in the numpy path's order (kernel_numpy.step), for every tie. The
    tie arrays come as 1-d rows (i0, i1: d_ind; T0, T1; O0, O1), contiguous whether the state
    holds them in their own arrays or as views with spare room, so one specialization serves
    both; blk is the (2, BLOCK) buffer of the blocks' logistic inputs; ev_al (4, >= n_al) and
    ev_ind (2, >= n_ind) receive the events' indices.
    Returns (value created, alliances ended, dyads kept, alliances with an avoided difference,
    with blame, with an opportunity; people who flipped)."""
    n_idx = draw(rng, n_diff, has_talk, z_talk, d_al, counts, size_unit, size, u_confront,
                 u_find, has_tz, r_side > 0.0, r_own > 0.0, rank, z_side, z_own0, z_own1,
                 has_end, al_ended, u_end)
    has_diff = n_idx > 0
    # every per-person and per-alliance sum starts at 0: one pass over each work array (the
    # phases do not zero their columns again)
    pf[:, :] = 0.0
    pi[:, :] = 0
    af[:, :] = 0.0
    ai[:, :] = 0
    talk(P, pp, i0, i1, O0, O1, has_talk, z_talk, pi[:, DEG], move, pf[:, SUMX])
    lev = af[:, LEV0:LEV1 + 1]
    differences_blame_value_trust(
        P, has_diff, counts, size, u_confront, u_find, has_tz, z_own0, z_own1, z_side, rank,
        r_side, r_own, d_al, i0, i1, T0, T1,
        O0, O1, D, v, m, pp, al_blames, al_opps, ai[:, CNT], af[:, CREATED], af[:, PERC],
        af[:, QUAR], lev, ai[:, AVOIDED], ai[:, BLAMED], ai[:, OPPS], pf[:, BLAME_N],
        pf[:, OPP_N], blk)
    flow, n_end = patience(P, step, al_ended, al_org, horizon, ai[:, CNT], af[:, QUAR], lev,
                           af[:, CREATED], af[:, PERC], split, al_value, al_perceived, al_unsat,
                           al_grievance, al_regime, has_end, u_end, ai[:, GONE])
    kept = openness_mindset(
        P, d_al, i0, i1, T0, T1, O0, O1, D, v, m, a, pp, org, culture, al_unsat, ai[:, CNT],
        ai[:, GONE], n_end, al_trust, al_open, al_tension, al_level, af[:, SUM_T:SUM_V + 1],
        pi[:, DEG], pi[:, DEG_POST], pf[:, BLAME_N], pf[:, OPP_N], pf[:, HURT_N], pf[:, GOOD],
        pf[:, PEER], of[:, 0], of[:, 1], ind_to_scarcity, ind_to_abundance, pi[:, FLIP], blk)
    # the step's events, as indices (rows of ev_al: avoided, blamed, opportunity, ended; of
    # ev_ind: to scarcity, to abundance)
    n_ev = np.zeros(4, np.int64)
    for al in range(len(al_ended)):
        for r in range(4):  # the flag columns AVOIDED, BLAMED, OPPS, GONE, in this order
            if ai[al, AVOIDED + r]:
                ev_al[r, n_ev[r]] = al
                n_ev[r] += 1
    n_avoid, n_blamed, n_opp = n_ev[0], n_ev[1], n_ev[2]
    n_to_s = n_to_a = 0
    for i in range(len(a)):
        f = pi[i, FLIP]
        if f < 0:
            ev_ind[0, n_to_s] = i
            n_to_s += 1
        elif f > 0:
            ev_ind[1, n_to_a] = i
            n_to_a += 1
    # 12. regimes (the alliances formed after this, in formation, are classified there)
    classify(P, step, al_ended, al_trust, al_open, al_hist, al_regime)
    return flow, n_end, kept, n_avoid, n_blamed, n_opp, n_to_s, n_to_a


# 8. Formation ----------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def formation_start(al_ended, al_org, al_trust, n_org, ao, at, rep, cnt):
    """The active alliances' organizations and trust (ao, at: the first k rows) and every
    organization's reputation, the mean trust of its active alliances (0.5 with none)."""
    k = 0
    cnt[:] = 0.0
    rep[:] = 0.0
    for al in range(len(al_ended)):
        if al_ended[al] < 0:
            ao[k, 0], ao[k, 1] = al_org[al, 0], al_org[al, 1]
            at[k] = al_trust[al]
            for side in range(2):
                o = al_org[al, side]
                cnt[o] += 1.0
                rep[o] += al_trust[al]
            k += 1
    for o in range(n_org):
        rep[o] = rep[o] / max(cnt[o], 1.0) if cnt[o] > 0 else 0.5
    return k


@njit(cache=True, error_model="numpy")
def formation_choices(ao, at, k, a, trusted, closure, rep, partners, via, reach, cand, free, w):
    """For organization a: its partners; with closure, the partners of its trusted partners
    that are not yet its partners (cand); the organizations free to ally with and the
    cumulative weights rep + 0.05 to choose among them. Returns (len(cand), len(free))."""
    n = len(rep)
    partners[:] = False
    for r in range(k):
        if ao[r, 0] == a or ao[r, 1] == a:
            partners[ao[r, 0]] = True
            partners[ao[r, 1]] = True
    partners[a] = True
    n_cand = 0
    if closure:
        via[:] = False
        any_via = False
        for r in range(k):
            if (ao[r, 0] == a or ao[r, 1] == a) and at[r] > trusted:
                for side in range(2):
                    o = ao[r, side]
                    if o != a:
                        via[o] = True
                        any_via = True
        if any_via:
            reach[:] = False
            for r in range(k):
                if via[ao[r, 0]] or via[ao[r, 1]]:
                    reach[ao[r, 0]] = True
                    reach[ao[r, 1]] = True
            for o in range(n):
                if reach[o] and not partners[o]:
                    cand[n_cand] = o
                    n_cand += 1
    n_free = 0
    acc = 0.0
    for o in range(n):
        if not partners[o]:
            free[n_free] = o
            acc += rep[o] + 0.05
            w[n_free] = acc
            n_free += 1
    return n_cand, n_free


def form_alliances(s: State, p, rng, ev: knp.Events, sc, n_new: int | None = None) -> None:
    """kernel_numpy.form_alliances with its array work compiled: the same draws in the same
    order, the same choices. n_new: the number of new alliances when already drawn."""
    if n_new is None:
        n_new = rng.poisson(p.formation.rate)
    if n_new == 0:
        return
    n = s.n_org
    g = sc.get
    n_al = s.n_al
    ao, at = g("f_ao", (n_al + n_new, 2), np.int64), g("f_at", (n_al + n_new,))
    rep = g("f_rep", (n,))
    k = formation_start(s.al_ended, s.al_org, s.al_trust, n, ao, at, rep, g("f_cnt", (n,)))
    bools = g("f_bool", (3, n), np.bool_)
    cand, free, w = g("f_cand", (n,), np.int64), g("f_free", (n,), np.int64), g("f_w", (n,))
    t0 = initial_trust(p)
    closure, trusted = p.formation.closure, p.mindset.trusted_level
    new_pairs = []
    for _ in range(n_new):
        a = int(rng.integers(n))
        use = rng.random() < closure
        n_cand, n_free = formation_choices(ao, at, k, a, trusted, use, rep, bools[0], bools[1],
                                           bools[2], cand, free, w)
        if n_cand:
            b = int(cand[rng.integers(n_cand)])
        else:
            if n_free == 0:
                continue
            ww = w[:n_free]
            b = int(free[min(np.searchsorted(ww, rng.random() * ww[-1], side="right"),
                             n_free - 1)])
        new_pairs.append((min(a, b), max(a, b)))
        ao[k] = a, b
        at[k] = t0
        k += 1
    if new_pairs:
        ev.formed = add_alliances(s, p, np.array(new_pairs, np.int64), rng, sc)


_TIE_ROWS = ("T", "O", "d_ind")  # (2, n_d) arrays: dyads along the last axis
_DYAD_FIELDS = ("d_al", "d_ind", "T", "O", "D", "v")
# the alliance arrays of the state (state.empty_alliances), and those add_alliances fills
_AL_FIELDS = tuple(empty_alliances(0, 1))
_KNOWN_FIELDS = ("al_org", "al_formed", "al_ended", "al_value", "al_perceived", "al_unsat",
                 "al_grievance", "al_mindset", "al_trust", "al_open", "al_tension", "al_level",
                 "al_hist", "al_regime", "al_blames", "al_opps")


def add_alliances(s: State, p, pairs: np.ndarray, rng, sc) -> np.ndarray:
    """kernel_numpy.add_alliances (state.new_alliances: started as at set-up), written straight
    into the spare room behind the state's arrays. Falls back to state.new_alliances and
    appending if the state has alliance arrays this function does not know."""
    start, k = s.n_al, len(pairs)
    if set(_AL_FIELDS) != set(_KNOWN_FIELDS):
        al, d_al, d_ind, ties = new_alliances(s, p, pairs, rng)
        for name, arr in al.items():
            _append(s, sc, name, arr)
        _append(s, sc, "d_al", (d_al + start).astype(s.d_al.dtype))
        _append(s, sc, "d_ind", d_ind.astype(s.d_ind.dtype))
        for name in ("T", "O", "D", "v"):
            _append(s, sc, name, ties[name])
        s.changed_ties()
        _classify_new(s, sc, start)
        return np.arange(start, start + k)
    t0, o0 = first_impressions(p, k, rng)
    mind = org_abundance(s.m, s.org, s.n_org)[pairs]
    level = resting_value(p, o0)
    new = {name: _extend(s, sc, name, k) for name in _AL_FIELDS}
    new["al_org"][:] = pairs
    new["al_formed"][:] = s.step
    new["al_ended"][:] = -1
    for name in ("al_value", "al_perceived", "al_unsat", "al_grievance", "al_tension",
                 "al_regime", "al_blames", "al_opps"):
        new[name][...] = 0
    new["al_mindset"][:] = mind
    new["al_trust"][:], new["al_open"][:], new["al_level"][:] = t0, o0, level
    new["al_hist"][:] = ((t0 + o0) / 2)[:, None]
    ipo = p.ecosystem.individuals_per_organization
    nd = k * ipo * ipo
    new_dyads(pairs, ipo, start, t0, o0, level, _extend(s, sc, "d_al", nd),
              _extend(s, sc, "d_ind", nd), _extend(s, sc, "T", nd), _extend(s, sc, "O", nd),
              _extend(s, sc, "D", nd), _extend(s, sc, "v", nd))
    s.changed_ties()
    _classify_new(s, sc, start)
    return np.arange(start, start + k)


def _classify_new(s: State, sc, start: int) -> None:
    """The regimes of the alliances formed this step (the others were classified in
    ties_step, as kernel_numpy.classify does for all of them after formation)."""
    classify(sc.P, s.step, s.al_ended[start:], s.al_trust[start:], s.al_open[start:],
             s.al_hist[start:], s.al_regime[start:])


@njit(cache=True, error_model="numpy")
def new_dyads(pairs, ipo, start, t0, o0, level, d_al, d_ind, T, O, D, v):
    """The dyads of new alliances, as state.dyads_for: person j of organization o is o*ipo + j,
    every person on one side meets every person on the other; ties start at the alliance's
    first impression, tension 0, value level at rest."""
    r = 0
    for al in range(len(pairs)):
        for j0 in range(ipo):
            for j1 in range(ipo):
                d_al[r] = start + al
                d_ind[0, r] = pairs[al, 0] * ipo + j0
                d_ind[1, r] = pairs[al, 1] * ipo + j1
                T[0, r] = T[1, r] = t0[al]
                O[0, r] = O[1, r] = o0[al]
                D[r] = 0.0
                v[r] = level[al]
                r += 1


def _append(s: State, sc, name: str, new: np.ndarray) -> None:
    """s.<name> = concatenate([s.<name>, new]) along the alliance or dyad axis, in place when
    the buffer behind s.<name> has room (grown by a sixteenth when it has not)."""
    axis = 1 if name in _TIE_ROWS else 0
    rows = _extend(s, sc, name, new.shape[axis])
    rows[...] = new


def _extend(s: State, sc, name: str, k: int) -> np.ndarray:
    """Lengthen s.<name> by k rows (uninitialized) along its alliance or dyad axis; returns the
    new rows, to be filled."""
    cur = getattr(s, name)
    axis = 1 if name in _TIE_ROWS else 0
    n = cur.shape[axis]
    rec = sc.grown.get(name)
    if rec is not None and rec[1] is cur and rec[0].shape[axis] >= n + k:
        buf = rec[0]
    else:
        shape = list(cur.shape)
        shape[axis] = (n + k) + (n + k) // 16 + 64
        buf = np.empty(shape, cur.dtype)
        if axis:
            buf[:, :n] = cur
        else:
            buf[:n] = cur
    view = buf[:, :n + k] if axis else buf[:n + k]
    setattr(s, name, view)
    sc.grown[name] = (buf, view)
    return view[:, n:] if axis else view[n:]


def _truncate(s: State, sc, kept: int) -> None:
    """Keep the first `kept` dyads (those moved down in place by openness_mindset)."""
    for name in ("d_al", "D", "v", "d_ind", "T", "O"):
        cur = getattr(s, name)
        view = cur[:, :kept] if name in _TIE_ROWS else cur[:kept]
        rec = sc.grown.get(name)
        if rec is not None and rec[1] is cur:
            sc.grown[name] = (rec[0], view)
        setattr(s, name, view)
    s.changed_ties()


class Scratch:
    """Work arrays of one state, reused from step to step: allocated with room to grow (a
    sixteenth more), used through views of the current sizes, re-viewed only when a size
    changes. No tie-sized array is allocated per step."""

    def __init__(self):
        self.bufs: dict[str, np.ndarray] = {}
        self.views: dict[str, tuple] = {}
        self.grown: dict[str, tuple] = {}  # state arrays with room: name -> (buffer, view)
        self.P = None  # this step's parameter vector (formation classifies new alliances)
        self.roomy = False  # the state's arrays moved into buffers with room (first step)

    def get(self, key, shape, dtype=np.float64):
        hit = self.views.get(key)
        if hit is not None and hit[0] == shape:
            return hit[1]
        size = 1
        for x in shape:
            size *= int(x)
        buf = self.bufs.get(key)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = np.empty(size + size // 16 + 16, dtype)
            self.bufs[key] = buf
        view = buf[:size].reshape(shape)
        self.views[key] = (shape, view)
        return view

    def nbytes(self) -> int:
        """Bytes of the work arrays and of the spare room behind the state's arrays."""
        spare = sum(buf.nbytes - view.nbytes for buf, view in self.grown.values())
        return sum(b.nbytes for b in self.bufs.values()) + spare


def _scratch(s: State) -> Scratch:
    sc = s.__dict__.get("_kernel_scratch")
    if sc is None:
        sc = s.__dict__["_kernel_scratch"] = Scratch()
    return sc


def scratch_bytes(s: State) -> int:
    """Bytes of the compiled path's work arrays for this state (0 before its first step)."""
    sc = s.__dict__.get("_kernel_scratch")
    return 0 if sc is None else sc.nbytes()


_EMPTY_F = np.zeros(0)
_EMPTY_F2 = np.zeros((0, 0))
_EMPTY_OWN = np.zeros((2, 0))
_EMPTY_I = np.zeros(0, np.int64)
_EMPTY_I32 = np.zeros(0, np.int32)
_NO_DRAWS = np.random.default_rng(0)  # stands in for rng=None (noise off: nothing is drawn)


def _split(p) -> np.ndarray:
    split = np.full(len(VALUE_KINDS), (1.0 - p.value.revenue_share) / (len(VALUE_KINDS) - 1))
    split[0] = p.value.revenue_share
    return split


def step(s: State, p, rng) -> knp.Events:
    """One step, as kernel_numpy.step, in fused compiled loops. The random numbers are
    kernel_numpy.draw_step's: the first (the number of differences) drawn here, the rest by
    `draw` inside the compiled step, from the same Generator."""
    noise = p.noise.enabled
    sc = _scratch(s)
    g = sc.get
    n_ind, K = s.p.shape
    n_al, n_d = s.n_al, len(s.D)
    df, tr = p.differences, p.trust
    n_diff = int(rng.poisson(df.rate * n_d)) if noise and df.rate > 0 and n_d else 0
    has_talk = noise and p.talk.noise > 0
    has_tz = noise and tr.noise > 0
    rho = tr.noise_shared
    r_side, r_own = (np.sqrt(rho), np.sqrt(1.0 - rho)) if has_tz else (0.0, 0.0)
    P = pack(p)
    s.step += 1
    ev = knp.Events()
    if not sc.roomy:  # the state's arrays into buffers with room: formations write there
        for name in _AL_FIELDS + _DYAD_FIELDS:
            _extend(s, sc, name, 0)
        sc.roomy = True
    pf, pi, af, ai = (g("pf", (n_ind, N_PF)), g("pi", (n_ind, N_PI), np.int32),
                      g("af", (n_al, N_AF)), g("ai", (n_al, N_AI), np.int32))
    ev_al, ev_ind = g("ev_al", (4, n_al), np.int32), g("ev_ind", (2, n_ind), np.int32)
    m = min(n_diff, n_d)  # dyads with a difference, at most
    dbuf = g("diff", (3, m)) if n_diff else _EMPTY_F2
    z_own = g("trust", (2, n_d)) if r_own > 0 else _EMPTY_OWN
    flow, n_end, kept, n_avoid, n_blamed, n_opp, n_to_s, n_to_a = ties_step(
        P, s.step, _split(p), _NO_DRAWS if rng is None else rng, n_diff, has_talk,
        g("talk", (n_ind, K)) if has_talk else _EMPTY_F2,
        g("counts", (n_d,), np.int32) if n_diff else _EMPTY_I32, float(df.size),
        dbuf[0] if n_diff else _EMPTY_F, dbuf[1] if n_diff else _EMPTY_F,
        dbuf[2] if n_diff else _EMPTY_F, has_tz, z_own[0], z_own[1],
        g("side", (n_al, 2)) if r_side > 0 else _EMPTY_F2,
        g("rank", (n_al,), np.int64) if r_side > 0 else _EMPTY_I, r_side, r_own,
        noise, g("u_end", (n_al,)) if noise else _EMPTY_F,
        s.d_al, s.d_ind[0], s.d_ind[1], s.T[0], s.T[1], s.O[0], s.O[1], s.D, s.v, s.m, s.a,
        s.p, s.org, s.culture, s.horizon, s.al_org, s.al_ended, s.al_blames, s.al_opps,
        s.al_value, s.al_perceived, s.al_unsat, s.al_grievance, s.al_regime, s.al_trust,
        s.al_open, s.al_tension, s.al_level, s.al_hist, s.ind_to_scarcity, s.ind_to_abundance,
        pf, pi, g("move", (n_ind, K)), af, ai, g("of", (s.n_org, 2)), g("blk", (2, BLOCK)),
        ev_al, ev_ind)
    ev.value_flow = flow
    if n_avoid:
        ev.avoided = ev_al[0, :n_avoid].astype(np.int64)
    if n_blamed:
        ev.blamed = ev_al[1, :n_blamed].astype(np.int64)
    if n_opp:
        ev.opportunities = ev_al[2, :n_opp].astype(np.int64)
    if n_to_s + n_to_a:
        ev.to_scarcity = ev_ind[0, :n_to_s].astype(np.int64)
        ev.to_abundance = ev_ind[1, :n_to_a].astype(np.int64)
    if n_end:
        ev.ended = ev_al[3, :n_end].astype(np.int64)
        _truncate(s, sc, kept)
    if noise:
        sc.P = P
        form_alliances(s, p, rng, ev, sc)
    return ev


def busy_ecosystem():
    """A tiny, busy ecosystem (endings and formations every step) for warming up: (state,
    params, rng)."""
    from .scenario import from_dict
    from .state import build

    p = from_dict({"ecosystem": {"organizations": 12, "individuals_per_organization": 2},
                   "formation": {"rate": 3.0}, "patience": {"end_rate": 0.9, "horizon": 2}}
                  ).params()
    rng = np.random.default_rng(0)
    s, _ = build(p, rng)
    return s, p, rng


def warm_up() -> None:
    """Load (or compile) every specialization the step uses: contiguous arrays at set-up, views
    with spare room after endings and formation. A few steps of a tiny, busy ecosystem."""
    s, p, rng = busy_ecosystem()
    for _ in range(8):
        step(s, p, rng)
        series(s, p)


__all__ = ["INDEX", "pack", "series", "step"]
