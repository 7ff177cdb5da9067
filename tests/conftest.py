"""Shared helpers for the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from sim.model import AllianceModel

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def nested(flat: dict) -> dict:
    """{'mindset.abundance_share': 1} -> {'mindset': {'abundance_share': 1}}."""
    out: dict = {}
    for k, v in flat.items():
        if "." in k:
            a, b = k.split(".", 1)
            out.setdefault(a, {})[b] = v
        else:
            out[k] = v
    return out


def run(flat: dict, seed: int | None = None, steps: int | None = None) -> AllianceModel:
    m = AllianceModel(nested(flat), seed=seed)
    m.run(steps)
    return m


@pytest.fixture
def out_dir(tmp_path):
    return tmp_path / "out"
