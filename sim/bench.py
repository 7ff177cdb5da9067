"""`spiral bench`: the array kernel against the per-agent reference, side by side in one run.

Prints a table and optionally writes JSON (keys: ties, kernel_ties_per_s,
reference_ties_per_s, ratio, bytes_per_tie, plus details). Figures, never assertions: the
machines are shared and noisy, so goals are read off the printout.
"""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from . import kernel
from .scenario import from_dict
from .state import build

REFERENCE_BUDGET_S = 60.0


def bench_values(ties: int) -> dict:
    """An ecosystem with about `ties` directed ties: 2 people per organization (4 dyads, 8 ties
    per alliance), a Watts-Strogatz graph of mean degree 4 (16 ties per organization)."""
    n = max(8, round(ties / 16))
    return {"ecosystem": {"organizations": n, "graph": "watts_strogatz", "mean_degree": 4,
                          "individuals_per_organization": 2},
            "mindset": {"abundance_share": 0.7}}


def time_kernel(values: dict, steps: int) -> tuple[int, float, float]:
    """(ties, seconds per step, peak traced bytes) for the array kernel, noise on."""
    p = from_dict(values).params()
    gc.collect()
    tracemalloc.start()
    rng = np.random.default_rng(1)
    s, _ = build(p, rng)
    kernel.step(s, p, rng)  # warm-up (caches, first formation)
    _, peak_setup = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    tracemalloc.stop()  # tracing slows numpy; time without it, then trace one step
    t0 = time.perf_counter()
    for _ in range(steps):
        kernel.step(s, p, rng)
    dt = (time.perf_counter() - t0) / steps
    tracemalloc.start()
    kernel.step(s, p, rng)
    _, peak_step = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    state_bytes = sum(v.nbytes for v in vars(s).values() if isinstance(v, np.ndarray))
    return s.T.size, dt, max(peak_setup, state_bytes + peak_step)


def time_reference(values: dict, steps: int) -> float:
    from .reference import ReferenceModel

    m = ReferenceModel(values)
    m.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        m.step()
    return (time.perf_counter() - t0) / steps


def cold_run_seconds() -> float:
    """Wall time of `spiral run` of the baseline scenario in a fresh process."""
    exe = Path(sys.executable).parent / "spiral"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sim.cli"]
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run(cmd + ["run", str(root / "scenarios" / "baseline.toml"), "--quiet",
                              "--out", tmp], check=True, capture_output=True)
        return time.perf_counter() - t0


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy " \
           f"{np.__version__}"


def run_bench(sizes: list[int], steps: int, with_reference: bool = True,
              cold: bool = True, out=print) -> dict:
    rows = []
    ref_rate = None  # ties per second of the reference at the last size it ran
    for n in sizes:
        values = bench_values(n)
        ties, dt, peak = time_kernel(values, steps)
        row = {"ties": ties, "kernel_s_per_step": dt, "kernel_ties_per_s": ties / dt,
               "ns_per_tie": dt / ties * 1e9, "bytes_per_tie": peak / ties,
               "reference_ties_per_s": None, "ratio": None}
        if with_reference:
            ref_steps = max(1, min(steps, 5))
            est = None if ref_rate is None else ties * (ref_steps + 1) / ref_rate
            if est is None or est < REFERENCE_BUDGET_S:
                rdt = time_reference(values, ref_steps)
                ref_rate = ties / rdt
                row["reference_ties_per_s"] = ref_rate
                row["ratio"] = row["kernel_ties_per_s"] / ref_rate
        rows.append(row)
        out(_fmt_row(row))
    result = {
        "ties": [r["ties"] for r in rows],
        "kernel_ties_per_s": [r["kernel_ties_per_s"] for r in rows],
        "reference_ties_per_s": [r["reference_ties_per_s"] for r in rows],
        "ratio": [r["ratio"] for r in rows],
        "bytes_per_tie": [r["bytes_per_tie"] for r in rows],
        "ns_per_tie": [r["ns_per_tie"] for r in rows],
        "steps": steps,
        "machine": machine(),
    }
    ns = result["ns_per_tie"]
    result["ns_per_tie_max_over_min"] = max(ns) / min(ns)
    if cold:
        result["spiral_run_cold_s"] = cold_run_seconds()
    return result


HEADER = (f"{'ties':>10} {'kernel ties/s':>14} {'ns/tie':>8} {'ref ties/s':>12} {'ratio':>8} "
          f"{'bytes/tie':>10}")


def _fmt_row(r: dict) -> str:
    ref = "-" if r["reference_ties_per_s"] is None else f"{r['reference_ties_per_s']:.3g}"
    ratio = "-" if r["ratio"] is None else f"{r['ratio']:.0f}x"
    return (f"{r['ties']:>10,} {r['kernel_ties_per_s']:>14.3g} {r['ns_per_tie']:>8.1f} "
            f"{ref:>12} {ratio:>8} {r['bytes_per_tie']:>10.0f}")


def main_bench(args) -> int:
    sizes = [int(x) for x in args.ties.split(",")]
    print(machine())
    print(HEADER)
    res = run_bench(sizes, args.steps, with_reference=not args.no_reference,
                    cold=not args.no_cold)
    print(f"time per tie, largest/smallest over sizes: {res['ns_per_tie_max_over_min']:.2f}x")
    if "spiral_run_cold_s" in res:
        print(f"spiral run baseline from a cold start: {res['spiral_run_cold_s']:.2f} s")
    if args.json:
        from .outputs import write_json

        write_json(Path(args.json), res)
        print(f"written: {args.json}")
    return 0
