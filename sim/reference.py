"""A per-agent reference implementation of the same step, written the way a typical Mesa model
is: every Individual agent loops over its own ties in Python.

It exists to be compared with the array kernel (sim/kernel.py): with noise off the two agree to
1e-12 on every array (tests/test_reference.py), and with noise on their outcome distributions
agree statistically (its random draws come in another order). `spiral bench` times both. Set-up
is shared (sim.state.build), so both start from the same state.
"""

from __future__ import annotations

import math

import mesa
import numpy as np

from .kernel import talk_rate
from .scenario import Scenario, from_dict, load
from .state import IN, OUT, UNDECIDED, VALUE_KINDS, State, build, first_impressions, resting_value


def S(z: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * z))


class Tie:
    """A directed tie held by one person toward a partner in one dyad."""

    __slots__ = ("holder", "partner", "dyad", "side", "T", "O", "newT", "newO", "pv")

    def __init__(self, holder, partner, dyad, side, T, O):
        self.holder, self.partner, self.dyad, self.side = holder, partner, dyad, side
        self.T, self.O = T, O
        self.pv = 0.0


class Dyad:
    __slots__ = ("alliance", "ties", "D", "v", "x", "d", "over", "opp", "quarrels")

    def __init__(self, alliance, D, v):
        self.alliance, self.D, self.v = alliance, D, v
        self.ties: list[Tie] = []
        self.x = self.d = self.over = self.quarrels = 0.0
        self.opp = 0


class Alliance:
    __slots__ = ("orgs", "formed", "ended", "dyads", "value", "perceived", "unsat", "grievance",
                 "trust", "open", "tension", "level", "hist", "regime", "blames", "opps")

    def __init__(self, orgs, formed, window, t0, o0):
        self.orgs, self.formed, self.ended = orgs, formed, -1
        self.dyads: list[Dyad] = []
        self.value = [0.0] * len(VALUE_KINDS)
        self.perceived = 0.0
        self.unsat = [0.0, 0.0]
        self.grievance = [0.0, 0.0]
        self.trust, self.open, self.tension, self.level = t0, o0, 0.0, 0.0
        self.hist = [(t0 + o0) / 2] * (window + 1)
        self.regime = UNDECIDED
        self.blames = self.opps = 0


class Person(mesa.Agent):
    """A boundary spanner with her own ties, updating them one by one."""

    def __init__(self, model, row, org, a, m, p):
        super().__init__(model)
        self.row, self.org, self.a, self.m, self.p = row, org, a, m, list(p)
        self.ties: list[Tie] = []
        self.blames = 0.0
        self.ended = 0.0
        self.opps = 0.0
        self.to_scarcity = self.to_abundance = 0

    # talk: my perspective moves toward each partner by mu * (partner's openness toward me)
    def plan_talk(self, mu):
        if not self.ties:
            move = [0.0] * len(self.p)
            mean_x = 0.0
        else:
            move = [0.0] * len(self.p)
            sx = 0.0
            for tie in self.ties:
                other = tie.dyad.ties[1 - tie.side]
                for k in range(len(self.p)):
                    move[k] += other.O * (tie.partner.p[k] - self.p[k])
                sx += tie.dyad.x
            move = [mu * mv / len(self.ties) for mv in move]
            mean_x = sx / len(self.ties)
        self._new_p = [self.p[k] + move[k] for k in range(len(self.p))]
        self._mean_x = mean_x

    def commit_talk(self):
        self.p = self._new_p


class ReferenceModel(mesa.Model):
    def __init__(self, scenario: Scenario | str | dict | None = None, seed: int | None = None):
        if scenario is None:
            scenario = from_dict({})
        elif isinstance(scenario, str):
            scenario = load(scenario)
        elif isinstance(scenario, dict):
            scenario = from_dict(scenario)
        if seed is not None:
            scenario = scenario.with_overrides([("seed", int(seed))], "seed")
        super().__init__(rng=scenario.seed)
        self.spec = scenario
        self.p = p = scenario.params()
        s, self.graph = build(p, self.rng)
        self.step_no = 0
        self.culture = list(s.culture)
        self.horizon = list(s.horizon)
        self.abundant_start = s.abundant_start.copy()
        self.people = [Person(self, i, int(s.org[i]), float(s.a[i]), bool(s.m[i]), s.p[i])
                       for i in range(s.n_ind)]
        self.alliances: list[Alliance] = []
        for k in range(s.n_al):  # set-up's first impressions, as the kernel drew them
            self._add_alliance(tuple(int(o) for o in s.al_org[k]), 0,
                               float(s.al_trust[k]), float(s.al_open[k]))
        self.usual = max(1.0, p.ecosystem.mean_degree * p.ecosystem.individuals_per_organization)

    # --- structure ------------------------------------------------------------------------
    def _add_alliance(self, orgs, formed, t0, o0):
        p = self.p
        ipo = p.ecosystem.individuals_per_organization
        al = Alliance(orgs, formed, p.regimes.window, t0, o0)
        al.level = resting_value(p, o0)
        for j0 in range(ipo):
            for j1 in range(ipo):
                a, b = self.people[orgs[0] * ipo + j0], self.people[orgs[1] * ipo + j1]
                dy = Dyad(al, 0.0, resting_value(p, o0))
                ta, tb = Tie(a, b, dy, 0, t0, o0), Tie(b, a, dy, 1, t0, o0)
                dy.ties = [ta, tb]
                a.ties.append(ta)
                b.ties.append(tb)
                al.dyads.append(dy)
        self.alliances.append(al)
        return al

    def weight(self, person) -> float:
        """One tie's share of a person's experience (kernel.experience_weight)."""
        return 1.0 / max(len(person.ties), self.usual)

    def active(self):
        return [al for al in self.alliances if al.ended < 0]

    # --- one step -------------------------------------------------------------------------
    def step(self):
        p, rng = self.p, self.rng
        noise = p.noise.enabled
        self.step_no += 1
        dyads = [dy for al in self.active() for dy in al.dyads]
        for dy in dyads:
            dy.x = dy.ties[0].O * dy.ties[1].O
            dy.opp = 0
            dy.quarrels = 0.0
        # 1 talk (synchronous: everyone plans from the old perspectives, then commits)
        mu = talk_rate(p)
        for person in self.people:
            person.plan_talk(mu)
        for person in self.people:
            person.commit_talk()
            if noise and p.talk.noise > 0:
                scale = p.talk.noise * (1.0 - person._mean_x)
                person.p = [pk + scale * rng.standard_normal() for pk in person.p]
            person.p = [min(1.0, max(0.0, pk)) for pk in person.p]
            person.blames = 0.0
            person.ended = 0.0
            person.opps = 0.0
        for dy in dyads:
            a, b = dy.ties[0].holder, dy.ties[1].holder
            dy.d = sum(abs(u - w) for u, w in zip(a.p, b.p)) / len(a.p)
        # 2 differences
        if noise and p.differences.rate > 0:
            for dy in dyads:
                c = rng.poisson(p.differences.rate)
                if c == 0:
                    continue
                size = rng.gamma(c, p.differences.size) if p.differences.size > 0 else 0.0
                k = [p.differences.confront_abundance if t.holder.m
                     else p.differences.confront_scarcity for t in dy.ties]
                closed = 1.0 - p.differences.open_talk * dy.x  # either side may raise it
                q = 1.0 - (1.0 - k[0]) * closed * (1.0 - k[1]) * closed
                if rng.random() < q:
                    dy.D = 0.0
                    if rng.random() < 0.5 * (dy.ties[0].T + dy.ties[1].T):
                        dy.opp = 1
                        for t in dy.ties:
                            t.T += p.differences.opportunity_trust * (1.0 - t.T)
                else:
                    dy.D += size
        # 3 blame
        for dy in dyads:
            if dy.D > p.differences.blame_level:
                n = min(math.floor(dy.D / p.differences.blame_level), 1000)
                for t in dy.ties:
                    t.T *= (1.0 - p.differences.blame_cost) ** n
                    t.holder.blames += n * self.weight(t.holder)
                dy.D = 0.0
                dy.quarrels = float(n)
                dy.alliance.blames += n
        # 4 pie
        rs = p.value.revenue_share
        split = [rs] + [(1.0 - rs) / (len(VALUE_KINDS) - 1)] * (len(VALUE_KINDS) - 1)
        for dy in dyads:
            flow = p.value.exchange * dy.x + p.value.opportunity * dy.opp
            dy.v = p.value.memory * dy.v + flow
            c = [0.5 if (t.holder.m or p.negotiation.interests) else p.value.claim_scarcity
                 for t in dy.ties]
            total = c[0] + c[1]
            dy.over = max(0.0, total - 1.0)
            al = dy.alliance
            for k in range(len(VALUE_KINDS)):
                al.value[k] += flow * split[k]
            if dy.opp:
                al.opps += 1
            for t, ck in zip(dy.ties, c):
                sv = ck / max(1.0, total) * (1.0 if t.holder.m else rs)
                t.pv = 2.0 * sv * dy.v
                al.perceived += sv * flow
        # 5 patience: dissatisfaction over each side's horizon
        E = p.value.expectation
        for al in self.active():
            n = max(1, len(al.dyads))
            quarrels = max((dy.quarrels for dy in al.dyads), default=0.0)
            for side in (0, 1):
                level = sum(dy.ties[side].pv for dy in al.dyads) / n
                short = min(1.0, max(0.0, 1.0 - level / E)) if E > 0 else 0.0
                g = min(1.0, short + p.patience.w_blame * quarrels)
                al.grievance[side] = g
                al.unsat[side] += (g - al.unsat[side]) / self.horizon[al.orgs[side]]
        # 6 trust, 7 openness: each person updates her own ties
        t_, o_ = p.trust, p.openness
        shared = {}
        if noise and t_.noise > 0:  # one draw per alliance side: the partner company's month
            for al in self.active():
                shared[id(al)] = (rng.standard_normal(), rng.standard_normal())
        for person in self.people:
            for tie in person.ties:
                dy = tie.dyad
                other = dy.ties[1 - tie.side]
                bias = t_.bias_abundance if person.m else t_.bias_scarcity
                e = (t_.w_openness * (other.O - t_.openness_ref)
                     + t_.w_value * (tie.pv - t_.value_ref)
                     - (t_.w_divergence * (dy.d - t_.divergence_ref) + t_.w_tension * dy.D
                        + t_.w_dispute * dy.over) + bias)
                if noise and t_.noise > 0:
                    rho = t_.noise_shared
                    e += t_.noise * (math.sqrt(rho) * shared[id(dy.alliance)][tie.side]
                                     + math.sqrt(1.0 - rho) * rng.standard_normal())
                target = S(t_.steepness * e)
                rate = t_.rate if target > tie.T else t_.erode_rate
                tie.newT = tie.T + rate * (target - tie.T)
        for person in self.people:
            for tie in person.ties:
                tie.T = tie.newT
                b = o_.bias_abundance if person.m else o_.bias_scarcity
                b += p.patience.close_bias * tie.dyad.alliance.unsat[tie.side]
                tie.O = tie.O + o_.rate * (S(o_.steepness * (tie.T - o_.threshold) + b) - tie.O)
        # 8 summaries
        for al in self.active():
            n = len(al.dyads)
            if n:
                al.trust = sum(t.T for dy in al.dyads for t in dy.ties) / (2 * n)
                al.open = sum(t.O for dy in al.dyads for t in dy.ties) / (2 * n)
                al.tension = sum(dy.D for dy in al.dyads) / n
                al.level = sum(dy.v for dy in al.dyads) / n
        for dy in dyads:  # opportunities are good experiences
            if dy.opp:
                for t in dy.ties:
                    t.holder.opps += self.weight(t.holder)
        # 9 ending: a hazard from dissatisfaction
        ending = []
        if noise:
            for al in self.active():
                h = [p.patience.end_rate * u * u * g for u, g in zip(al.unsat, al.grievance)]
                if rng.random() < 1.0 - (1.0 - h[0]) * (1.0 - h[1]):
                    ending.append(al)
        for al in ending:
            al.ended = self.step_no
            for dy in al.dyads:
                for t in dy.ties:
                    t.holder.ended += self.weight(t.holder)
        if ending:
            gone = {id(dy) for al in ending for dy in al.dyads}
            for person in self.people:
                person.ties = [t for t in person.ties if id(t.dyad) not in gone]
            for al in ending:
                self.graph.remove_edge(*al.orgs)
        # 10 mindset
        mp = p.mindset
        new_a = []
        for person in self.people:
            n = len(person.ties)
            w = self.weight(person)
            good = sum(w for t in person.ties if t.T > mp.trusted_level)
            pull = sum(t.T * (t.partner.a - person.a) for t in person.ties) / max(n, 1)
            climb = mp.learn_rate * (good + mp.learn_opportunity * person.opps)
            fall = min(1.0, mp.hurt_rate * person.blames + mp.betrayal * person.ended)
            a = person.a + (climb * (1.0 - person.a) - fall * person.a
                            + mp.culture_pull * (self.culture[person.org] - person.a)
                            + mp.peer_pull * pull)
            new_a.append(min(1.0, max(0.0, a)))
        for person, a in zip(self.people, new_a):
            person.a = a
            m = (a >= mp.theta_down) if person.m else (a > mp.theta_up)
            person.to_scarcity += person.m and not m
            person.to_abundance += m and not person.m
            person.m = m
        ipo = p.ecosystem.individuals_per_organization
        for o in range(len(self.culture)):
            mean_a = sum(self.people[o * ipo + j].a for j in range(ipo)) / ipo
            self.culture[o] += mp.culture_follow * (mean_a - self.culture[o])
        # 11 formation
        if noise:
            self._form(rng)
        # 12 regimes
        r = p.regimes
        w = r.window
        for al in self.alliances:
            if al.ended >= 0:
                al.regime = OUT
                continue
            score = 0.5 * (al.trust + al.open)
            al.hist[self.step_no % (w + 1)] = score
            trend = score - al.hist[(self.step_no + 1) % (w + 1)]
            if score >= r.in_level and trend >= -r.trend:
                al.regime = IN
            elif score <= r.out_level and trend <= r.trend:
                al.regime = OUT
            else:
                al.regime = UNDECIDED

    def _form(self, rng):
        p = self.p
        k = rng.poisson(p.formation.rate)
        if k == 0:
            return
        n = len(self.culture)
        active = self.active()
        trust_sum, trust_cnt = [0.0] * n, [0] * n
        for al in active:
            for o in al.orgs:
                trust_sum[o] += al.trust
                trust_cnt[o] += 1
        rep = [trust_sum[o] / trust_cnt[o] if trust_cnt[o] else 0.5 for o in range(n)]
        pairs = []
        for _ in range(k):
            a = int(rng.integers(n))
            partners = set(self.graph.neighbors(a)) | {a}
            cand = []
            if rng.random() < p.formation.closure:
                via = {o for al in active if a in al.orgs
                       and al.trust > p.mindset.trusted_level for o in al.orgs if o != a}
                reach = {o for v in via for o in self.graph.neighbors(v)} | via
                cand = sorted(reach - partners)
            if cand:
                b = cand[int(rng.integers(len(cand)))]
            else:
                free = [o for o in range(n) if o not in partners]
                if not free:
                    continue
                cum = np.cumsum([rep[o] + 0.05 for o in free])
                b = free[min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")),
                             len(free) - 1)]
            pairs.append((min(a, b), max(a, b)))
            self.graph.add_edge(a, b)
        t0, o0 = first_impressions(p, len(pairs), rng)
        for pair, t, o in zip(pairs, t0, o0):
            self._add_alliance(pair, self.step_no, float(t), float(o))

    # --- comparison -----------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The reference state as the kernel's arrays (active dyads in alliance order)."""
        dyads = [dy for al in self.alliances if al.ended < 0 for dy in al.dyads]
        return {
            "T": np.array([[dy.ties[s].T for dy in dyads] for s in (0, 1)]).reshape(2, -1),
            "O": np.array([[dy.ties[s].O for dy in dyads] for s in (0, 1)]).reshape(2, -1),
            "D": np.array([dy.D for dy in dyads]),
            "v": np.array([dy.v for dy in dyads]),
            "p": np.array([pp.p for pp in self.people]),
            "a": np.array([pp.a for pp in self.people]),
            "m": np.array([pp.m for pp in self.people]),
            "culture": np.array(self.culture),
            "al_trust": np.array([al.trust for al in self.alliances]),
            "al_open": np.array([al.open for al in self.alliances]),
            "al_value": np.array([al.value for al in self.alliances]),
            "al_perceived": np.array([al.perceived for al in self.alliances]),
            "al_regime": np.array([al.regime for al in self.alliances], np.int8),
            "al_unsat": np.array([al.unsat for al in self.alliances]).reshape(-1, 2),
            "ind_to_scarcity": np.array([pp.to_scarcity for pp in self.people]),
            "ind_to_abundance": np.array([pp.to_abundance for pp in self.people]),
        }

    def summary(self) -> dict[str, float]:
        als = self.alliances
        n = len(als)
        return {
            "mean_trust": sum(al.trust for al in als) / n if n else 0.0,
            "share_spiral_in": sum(al.regime == IN for al in als) / n if n else 0.0,
            "share_spiral_out": sum(al.regime == OUT for al in als) / n if n else 0.0,
            "failure_rate": sum(al.ended >= 0 for al in als) / n if n else 0.0,
        }


def state_arrays(s: State) -> dict[str, np.ndarray]:
    """The kernel's state in the same form as ReferenceModel.arrays()."""
    return {k: getattr(s, k) for k in ("T", "O", "D", "v", "p", "a", "m", "culture",
                                       "al_trust", "al_open", "al_value", "al_perceived",
                                       "al_regime", "al_unsat", "ind_to_scarcity",
                                       "ind_to_abundance")}
