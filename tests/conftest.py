"""Shared helpers for the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from sim.model import AllianceModel

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionstart(session):
    """Compile (or load) the compiled path once, before any test: the code is cached on disk,
    so the `spiral` processes that tests start load it instead of each compiling it."""
    from sim import kernel

    if kernel.NAME == "numba":
        from sim import kernel_batch

        kernel_batch.warm_up()


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster():
    """A Dask scheduler and one single-threaded worker on localhost; yields the address and
    stops both (the sweep and calibration tests run against it)."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sched = subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1",
                              "--port", str(port), "--no-dashboard"], **quiet)
    worker = None
    try:
        addr = f"tcp://127.0.0.1:{port}"
        worker = subprocess.Popen([str(bin_dir / "dask"), "worker", addr, "--nworkers", "1",
                                   "--nthreads", "1", "--no-dashboard"], cwd=ROOT, **quiet)
        yield addr
    finally:
        for p in (worker, sched):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)
