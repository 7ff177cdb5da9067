"""`spiral bench`: the kernel's paths against the per-agent reference, small runs and sweeps,
side by side in one run.

Prints tables and optionally writes JSON. The keys of the first contract (ties,
kernel_ties_per_s, reference_ties_per_s, ratio, bytes_per_tie, ns_per_tie, steps, machine,
ns_per_tie_max_over_min, spiral_run_cold_s) describe the path in use (kernel_path: the
compiled one by default); every other figure is added under new keys (numpy_*, *_cpu,
baseline, sweep). Figures, never assertions: the machines are shared and noisy, so goals are
read off the printout. Times are wall clock; the *_cpu figures count this process's CPU time
only, which is what one core does when the machine is shared (other processes' load inflates
the wall clock, not the CPU time). `ties` is the mean number of ties updated per timed step,
for the kernel and the reference alike (endings shrink an ecosystem while it is timed).
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
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import kernel
from .scenario import from_dict, load
from .state import build

REFERENCE_BUDGET_S = 60.0
ROOT = Path(__file__).resolve().parent.parent


def bench_values(ties: int) -> dict:
    """An ecosystem with about `ties` directed ties: 2 people per organization (4 dyads, 8 ties
    per alliance), a Watts-Strogatz graph of mean degree 4 (16 ties per organization)."""
    n = max(8, round(ties / 16))
    return {"ecosystem": {"organizations": n, "graph": "watts_strogatz", "mean_degree": 4,
                          "individuals_per_organization": 2},
            "mindset": {"abundance_share": 0.7}}


@contextmanager
def kernel_path(name: str):
    old = kernel.use(name)
    try:
        yield
    finally:
        kernel.use(old)


def _owned_bytes(arrays) -> int:
    """Bytes of the buffers behind these arrays (a view counts its whole buffer, once)."""
    seen, total = set(), 0
    for a in arrays:
        base = a if a.base is None else a.base
        if isinstance(base, np.ndarray) and id(base) not in seen:
            seen.add(id(base))
            total += base.nbytes
    return total


def state_bytes(s) -> int:
    """The state's arrays with their spare room, and the compiled path's work arrays."""
    arrays = [v for k, v in vars(s).items() if isinstance(v, np.ndarray)]
    sc = vars(s).get("_kernel_scratch")
    if sc is not None:
        arrays += list(sc.bufs.values())
    return _owned_bytes(arrays)


def time_kernel(values: dict, steps: int, path: str | None = None, blocks: int = 3) -> dict:
    """Ties, seconds per step (wall and CPU) and bytes for one kernel path, noise on. The
    steps are timed in `blocks` consecutive blocks of `steps`; the figures are the median
    block's (by CPU time per tie: one disturbed block on a shared machine does not set them),
    ns_per_tie_cpu_blocks lists every block's.
    peak_bytes: what stepping holds at its peak, the state's arrays with their spare room, the
    work arrays and one step's temporaries (traced), at the second step, over peak_ties, the
    ties then (the ecosystem at the size asked for); end_bytes: the same after the timed steps
    (the buffers keep their room and ended alliances their rows while endings shrink the ties).
    setup_peak_bytes: the traced peak of set-up and the first step (the networkx generator's
    graph dominates it)."""
    with kernel_path(path or kernel.NAME):
        p = from_dict(values).params()
        gc.collect()
        tracemalloc.start()
        rng = np.random.default_rng(1)
        s, _ = build(p, rng)
        kernel.step(s, p, rng)  # warm-up (caches, first formation, work arrays)
        _, peak_setup = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        tracemalloc.stop()
        tracemalloc.start()  # one traced step: its temporaries on top of the arrays
        peak_ties = s.T.size
        kernel.step(s, p, rng)
        _, peak_step = tracemalloc.get_traced_memory()
        tracemalloc.stop()  # tracing slows numpy: time without it
        peak_bytes = state_bytes(s) + peak_step
        runs = []  # (CPU ns per tie, ties per step, wall s per step, CPU s per step)
        for _ in range(blocks):
            updates = 0  # ties updated: endings shrink the ecosystem while it is timed
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                updates += s.T.size
                kernel.step(s, p, rng)
            dt = (time.perf_counter() - t0) / steps
            dc = (time.process_time() - c0) / steps
            ties = updates / steps
            runs.append((dc / ties * 1e9, ties, dt, dc))
        _, ties, dt, dc = sorted(runs)[len(runs) // 2]  # the median block
        return {"ties": round(ties), "ties_mean": ties, "ties_after": s.T.size, "s_per_step": dt,
                "cpu_s_per_step": dc, "ns_per_tie_cpu_blocks": [r[0] for r in runs],
                "peak_bytes": peak_bytes, "peak_ties": peak_ties,
                "end_bytes": state_bytes(s) + peak_step, "setup_peak_bytes": peak_setup}


def time_reference(values: dict, steps: int) -> tuple[float, float, float]:
    """Seconds per step of the per-agent reference, (wall, CPU), and the ties it updated per
    step (counted between the timed steps, off the clock)."""
    from .reference import ReferenceModel

    m = ReferenceModel(values)
    m.step()
    wall = cpu = 0.0
    updates = 0
    for _ in range(steps):
        updates += sum(2 * len(al.dyads) for al in m.alliances if al.ended < 0)
        t0, c0 = time.perf_counter(), time.process_time()
        m.step()
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return wall / steps, cpu / steps, updates / steps


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
    try:
        import numba

        nb = f", numba {numba.__version__}"
    except ImportError:
        nb = ", no numba"
    load1 = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy " \
           f"{np.__version__}{nb}{load1}"


def baseline_runs(path: str, runs: int) -> dict:
    """Baseline-size runs through the Python API, no files: AllianceModel(baseline, seed).run()
    for `runs` seeds. Also the time of one step through the model (metrics, DataCollector,
    Mesa's event loop) and through kernel.step alone, and the arithmetic floor: the baseline's
    ties at the compiled path's best time per tie (filled in by run_bench)."""
    from .model import AllianceModel

    gc.collect()  # the reference's agents (cycles with their model) must not be traversed here
    with kernel_path(path):
        sc = load(ROOT / "scenarios" / "baseline.toml")
        AllianceModel(sc, seed=0).run(5)  # warm-up: imports, compiled code loaded
        t0, c0 = time.perf_counter(), time.process_time()
        ties = 0
        for sd in range(runs):
            m = AllianceModel(sc, seed=1000 + sd)
            m.run()
            ties += m.state.T.size
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        c1 = time.process_time()
        for sd in range(runs):
            AllianceModel(sc, seed=1000 + sd)
        build_cpu = (time.process_time() - c1) / runs
        m = AllianceModel(sc, seed=1)
        c2 = time.process_time()
        m.run()
        model_step = (time.process_time() - c2) / sc.steps
        m2 = AllianceModel(sc, seed=1)
        c3 = time.process_time()
        for _ in range(sc.steps):
            kernel.step(m2.state, m2.p, m2.rng)
        kernel_step = (time.process_time() - c3) / sc.steps
    return {"path": path, "runs": runs, "steps": sc.steps, "runs_per_s": runs / wall,
            "runs_per_s_cpu": runs / cpu, "ms_per_run_cpu": cpu / runs * 1e3,
            "build_ms_cpu": build_cpu * 1e3, "model_step_us_cpu": model_step * 1e6,
            "kernel_step_us_cpu": kernel_step * 1e6, "mean_ties": ties / runs}


def sweep_throughput(throughput, runs: int, rounds: int = 3) -> dict:
    """Runs per second of `spiral sweep` with 1 and 2 workers; `throughput(runs, workers)` is
    analysis.bench_sweep.throughput (handed in by the command line: the model does not import
    the analysis layer)."""
    gc.collect()
    throughput(min(10, runs), 1)  # not timed: imports, compiled code and writers loaded
    # 1 and 2 workers taken in turn, three times, and the median of each: a shared machine's
    # speed drifts by tens of percent over seconds, which one sweep after the other would
    # read as a speed-up or a slow-down
    one, two = [], []
    for _ in range(rounds):
        one.append(throughput(runs, 1))
        two.append(throughput(runs, 2))
    r1, r2 = sorted(one)[len(one) // 2], sorted(two)[len(two) // 2]
    return {"runs": runs, "runs_per_s_1_worker": r1, "runs_per_s_2_workers": r2,
            "speedup": r2 / r1, "rounds": rounds, "runs_per_s_1_worker_rounds": one,
            "runs_per_s_2_workers_rounds": two}


def run_bench(sizes: list[int], steps: int, with_reference: bool = True,
              cold: bool = True, out=print, numpy_path: bool = True,
              baseline: int = 0, sweep: int = 0, throughput=None, blocks: int = 3) -> dict:
    """Every figure of `spiral bench` (see the module docstring). blocks: timed blocks of
    `steps` per size and path (the median block's figures are reported). baseline: seeds of the
    baseline-size runs (0: skip); sweep: runs per sweep throughput measurement (0 or no
    `throughput` function: skip)."""
    rows = []
    main = kernel.NAME
    if main == "numba":  # load the compiled code first: not timed, not traced
        from . import kernel_batch

        kernel_batch.warm_up()
    ref_rate = None  # ties per second of the reference at the last size it ran
    for n in sizes:
        values = bench_values(n)
        k = time_kernel(values, steps, main, blocks)
        ties, dt = k["ties_mean"], k["s_per_step"]
        row = {"ties": k["ties"], "kernel_s_per_step": dt, "kernel_ties_per_s": ties / dt,
               "kernel_ties_per_s_cpu": ties / k["cpu_s_per_step"],
               "ns_per_tie": dt / ties * 1e9, "ns_per_tie_cpu": k["cpu_s_per_step"] / ties * 1e9,
               "bytes_per_tie": k["peak_bytes"] / k["peak_ties"],
               "bytes_per_tie_end": k["end_bytes"] / k["ties_after"],
               "setup_bytes_per_tie": k["setup_peak_bytes"] / k["peak_ties"],
               "ns_per_tie_cpu_blocks": k["ns_per_tie_cpu_blocks"],
               "reference_ties_per_s": None, "ratio": None, "ratio_cpu": None,
               "numpy_ratio_cpu": None, "numpy_ties_per_s": None,
               "numpy_ties_per_s_cpu": None, "numpy_bytes_per_tie": None, "numpy_ratio": None}
        if numpy_path and main != "numpy":
            q = time_kernel(values, steps, "numpy", blocks)
            row["numpy_ties_per_s"] = q["ties_mean"] / q["s_per_step"]
            row["numpy_ties_per_s_cpu"] = q["ties_mean"] / q["cpu_s_per_step"]
            row["numpy_bytes_per_tie"] = q["peak_bytes"] / q["peak_ties"]
        if with_reference:
            ref_steps = max(1, min(steps, 5))
            est = None if ref_rate is None else ties * (ref_steps + 1) / ref_rate
            if est is None or est < REFERENCE_BUDGET_S:
                rdt, rdc, rties = time_reference(values, ref_steps)
                ref_rate = rties / rdt
                row["reference_ties_per_s"] = ref_rate
                row["ratio"] = row["kernel_ties_per_s"] / ref_rate
                row["ratio_cpu"] = row["kernel_ties_per_s_cpu"] / (rties / rdc)
                if row["numpy_ties_per_s"] is not None:
                    row["numpy_ratio"] = row["numpy_ties_per_s"] / ref_rate
                    row["numpy_ratio_cpu"] = row["numpy_ties_per_s_cpu"] / (rties / rdc)
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
        "kernel_path": main,
    }
    result["blocks"] = blocks
    for key in ("kernel_ties_per_s_cpu", "ns_per_tie_cpu", "ns_per_tie_cpu_blocks",
                "bytes_per_tie_end", "setup_bytes_per_tie",
                "numpy_ties_per_s",
                "numpy_ties_per_s_cpu", "numpy_bytes_per_tie", "numpy_ratio", "ratio_cpu",
                "numpy_ratio_cpu"):
        result[key] = [r[key] for r in rows]
    ns = result["ns_per_tie"]
    result["ns_per_tie_max_over_min"] = max(ns) / min(ns)
    nsc = result["ns_per_tie_cpu"]
    result["ns_per_tie_cpu_max_over_min"] = max(nsc) / min(nsc)
    if baseline:
        paths = [main] + (["numpy"] if numpy_path and main != "numpy" else [])
        result["baseline"] = {}
        floor_ns = min(nsc)  # the compiled step's arithmetic per tie, no per-step overhead
        for name in paths:
            b = baseline_runs(name, baseline if name == main else max(3, baseline // 5))
            b["floor_us_per_step"] = b["mean_ties"] * floor_ns / 1e3
            result["baseline"][name] = b
            out(_fmt_baseline(b))
    if sweep and throughput is not None:
        result["sweep"] = sw = sweep_throughput(throughput, sweep)
        out(f"sweep throughput ({sw['runs']} runs of a 12-organization, 30-step scenario, files "
            f"written): 1 worker {sw['runs_per_s_1_worker']:.1f} runs/s, 2 workers "
            f"{sw['runs_per_s_2_workers']:.1f} runs/s, speed-up {sw['speedup']:.2f}x")
    if cold:
        result["spiral_run_cold_s"] = cold_run_seconds()
    return result


HEADER = (f"{'ties':>10} {'kernel ties/s':>14} {'cpu ties/s':>11} {'ns/tie':>7} "
          f"{'numpy ties/s':>13} {'cpu':>8} {'ref ties/s':>11} {'ratio/cpu':>10} {'numpy':>6} "
          f"{'bytes/tie':>10} {'numpy':>6} {'set-up':>7}")


def _g(x, fmt):
    return "-" if x is None else format(x, fmt)


def _fmt_row(r: dict) -> str:
    ratio = "-" if r["ratio"] is None else f"{r['ratio']:.0f}/{r['ratio_cpu']:.0f}x"
    nratio = "-" if r["numpy_ratio"] is None else f"{r['numpy_ratio_cpu']:.0f}x"
    return (f"{r['ties']:>10,} {r['kernel_ties_per_s']:>14.3g} "
            f"{r['kernel_ties_per_s_cpu']:>11.3g} {r['ns_per_tie']:>7.1f} "
            f"{_g(r['numpy_ties_per_s'], '.3g'):>13} {_g(r['numpy_ties_per_s_cpu'], '.3g'):>8} "
            f"{_g(r['reference_ties_per_s'], '.3g'):>11} {ratio:>10} {nratio:>6} "
            f"{r['bytes_per_tie']:>10.0f} {_g(r['numpy_bytes_per_tie'], '.0f'):>6} "
            f"{r['setup_bytes_per_tie']:>7.0f}")


def _fmt_baseline(b: dict) -> str:
    return (f"baseline runs ({b['path']}, {b['runs']} seeds, {b['steps']} steps, "
            f"~{b['mean_ties']:.0f} ties, Python API, no files): {b['runs_per_s']:.1f} runs/s "
            f"wall, {b['runs_per_s_cpu']:.1f} runs/s CPU ({b['ms_per_run_cpu']:.1f} ms a run, "
            f"{b['build_ms_cpu']:.1f} ms of it set-up); one step {b['model_step_us_cpu']:.0f} us "
            f"through the model, {b['kernel_step_us_cpu']:.0f} us in kernel.step, arithmetic "
            f"floor {b['floor_us_per_step']:.1f} us")


def main_bench(args, throughput=None) -> int:
    sizes = [int(x) for x in args.ties.split(",")]
    print(machine())
    print(f"kernel path: {kernel.NAME} (SPIRAL_KERNEL; numpy path alongside)")
    print(HEADER)
    res = run_bench(sizes, args.steps, with_reference=not args.no_reference,
                    cold=not args.no_cold, numpy_path=not getattr(args, "no_numpy", False),
                    baseline=0 if getattr(args, "no_baseline", False) else 20,
                    sweep=0 if getattr(args, "no_sweep", False) else getattr(args, "sweep_runs",
                                                                            1000),
                    throughput=throughput, blocks=getattr(args, "blocks", 3))
    print(f"time per tie, largest/smallest over sizes: {res['ns_per_tie_max_over_min']:.2f}x "
          f"(CPU time: {res['ns_per_tie_cpu_max_over_min']:.2f}x)")
    if "spiral_run_cold_s" in res:
        print(f"spiral run baseline from a cold start: {res['spiral_run_cold_s']:.2f} s")
    if args.json:
        from .outputs import write_json

        write_json(Path(args.json), res)
        print(f"written: {args.json}")
    return 0
