"""Organization and Individual: Mesa agents that are views onto rows of the state arrays.

They hold no state of their own, so the kernel can update every tie at once and an agent always
shows the current values. Users, the UI and tests read and write the model through them.
"""

from __future__ import annotations

import mesa
import numpy as np

from .state import IN, OUT, REGIME_NAMES


class _RowAgent(mesa.Agent):
    """A Mesa agent that is row `row` of the model's state arrays."""

    def __init__(self, model, row: int):
        super().__init__(model)
        self.row = row

    @property
    def _s(self):
        return self.model.state


class Organization(_RowAgent):
    """A node of the ecosystem: a company with a culture and a patience horizon."""

    @property
    def culture(self) -> float:
        """Latent abundance of the culture in [0, 1]."""
        return float(self._s.culture[self.row])

    @culture.setter
    def culture(self, value: float) -> None:
        self._s.culture[self.row] = value

    @property
    def horizon(self) -> int:
        return int(self._s.horizon[self.row])

    @horizon.setter
    def horizon(self, value: int) -> None:
        self._s.horizon[self.row] = value

    @property
    def mindset(self) -> str:
        """Majority expressed mindset of its people."""
        s = self._s
        share = s.m[s.org == self.row].mean()
        return "abundance" if share >= 0.5 else "scarcity"

    @property
    def people(self) -> list[Individual]:
        return [self.model.individuals_list[i] for i in np.flatnonzero(self._s.org == self.row)]

    @property
    def alliances(self) -> np.ndarray:
        """Indices of its active alliances."""
        s = self._s
        return np.flatnonzero(s.active & (s.al_org == self.row).any(axis=1))

    @property
    def partners(self) -> list[int]:
        s = self._s
        rows = s.al_org[self.alliances]
        return sorted(int(o) for o in rows.ravel() if o != self.row)

    @property
    def regimes(self) -> dict[str, int]:
        reg = self._s.al_regime[self.alliances]
        return {REGIME_NAMES[k]: int((reg == k).sum()) for k in (IN, 0, OUT)}


class Individual(_RowAgent):
    """A boundary spanner employed by one organization."""

    @property
    def employer(self) -> int:
        return int(self._s.org[self.row])

    @property
    def latent_abundance(self) -> float:
        return float(self._s.a[self.row])

    @latent_abundance.setter
    def latent_abundance(self, value: float) -> None:
        self._s.a[self.row] = min(1.0, max(0.0, value))

    @property
    def mindset(self) -> str:
        return "abundance" if self._s.m[self.row] else "scarcity"

    @property
    def perspective(self) -> np.ndarray:
        return self._s.p[self.row].copy()

    def ties(self) -> dict[str, np.ndarray]:
        """This person's outgoing ties: partner, trust and openness toward the partner."""
        s = self._s
        out = {"partner": [], "trust": [], "openness": []}
        for side in (0, 1):
            rows = np.flatnonzero(s.d_ind[side] == self.row)
            out["partner"].append(s.d_ind[1 - side, rows])
            out["trust"].append(s.T[side, rows])
            out["openness"].append(s.O[side, rows])
        return {k: np.concatenate(v) for k, v in out.items()}
