"""`spiral bench --sweep`: sweep throughput with 1 and 2 workers, and the parent's memory over
many runs (sampled from /proc/self/status while the sweep runs). Figures, not assertions."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from analysis.sweep import load_sweep, run_sweep

ROOT = Path(__file__).resolve().parent.parent

TINY = """base = "{base}"
design = "random"
samples = {n}
replicates = 1
seed = 11
steps = 30
[parameters]
"mindset.abundance_share" = {{ min = 0.0, max = 1.0 }}
"ecosystem.organizations" = [12]
"""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler:
    """Peak RSS of this process (the sweep's parent) while the sweep runs, sampled in a thread."""

    def __init__(self, every: float = 0.2):
        self.every, self.peak, self.samples = every, 0.0, []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.perf_counter()
        while not self._stop.is_set():
            r = rss_mb()
            self.peak = max(self.peak, r)
            self.samples.append((time.perf_counter() - t0, r))
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def sweep_file(folder: Path, n: int) -> Path:
    f = folder / f"bench-{n}.toml"
    f.write_text(TINY.format(base=ROOT / "scenarios" / "baseline.toml", n=n))
    return f


def throughput(n: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        sw = load_sweep(sweep_file(Path(tmp), n))
        t0 = time.perf_counter()
        run_sweep(sw, Path(tmp) / "out", workers=workers, progress=False)
        return n / (time.perf_counter() - t0)


def memory(n: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        sw = load_sweep(sweep_file(Path(tmp), n))
        base = rss_mb()
        with Sampler() as s:
            t0 = time.perf_counter()
            run_sweep(sw, Path(tmp) / "out", workers=workers, progress=False)
            dt = time.perf_counter() - t0
        # RSS in the first and last tenth of the sweep: flat means no growth with runs
        first = [r for t, r in s.samples if t < dt * 0.1]
        last = [r for t, r in s.samples if t > dt * 0.9]
        return {"runs": n, "seconds": dt, "rss_before_mb": base, "peak_rss_mb": s.peak,
                "rss_first_tenth_mb": max(first) if first else None,
                "rss_last_tenth_mb": max(last) if last else None}


def main_bench_sweep(runs: int, out=print) -> dict:
    from sim.bench import sweep_throughput

    n = min(1000, runs)
    sw = sweep_throughput(throughput, n)  # 1 and 2 workers in turn, the median of each
    r1, r2 = sw["runs_per_s_1_worker"], sw["runs_per_s_2_workers"]
    out(f"sweep throughput ({n} runs of a 12-organization, 30-step scenario; median of "
        f"{sw['rounds']} rounds): 1 worker {r1:.1f} runs/s, 2 workers {r2:.1f} runs/s, "
        f"speed-up {r2 / r1:.2f}x")
    mem = memory(runs, 2)

    def mb(x):  # a sweep shorter than the sampling interval has no sample in a tenth
        return "n/a" if x is None else f"{x:.0f} MB"

    out(f"parent memory over {runs} runs (2 workers, {mem['seconds']:.0f} s): before "
        f"{mb(mem['rss_before_mb'])}, peak {mb(mem['peak_rss_mb'])}, first tenth "
        f"{mb(mem['rss_first_tenth_mb'])}, last tenth {mb(mem['rss_last_tenth_mb'])}")
    return {"runs_per_s_1_worker": r1, "runs_per_s_2_workers": r2, "speedup": r2 / r1,
            "rounds": sw["rounds"], "runs_per_s_1_worker_rounds": sw["runs_per_s_1_worker_rounds"],
            "runs_per_s_2_workers_rounds": sw["runs_per_s_2_workers_rounds"], "memory": mem}
