"""Parameter sweeps: sweep files, designs, executors, resumable Parquet parts.

A sweep file names a base scenario, parameters (any scenario key by its dotted name, a list of
values or a {min, max} range), a design (grid, random, lhs, sobol), replicates and a seed. Run
k is point k // replicates, replicate k % replicates; its seed is derived from the sweep seed and
k alone (numpy SeedSequence), so a run's result does not depend on workers, order or
interruptions. Finished runs are appended to DIR/runs/part-*.parquet in small atomic parts; a
rerun of the same command skips every run already in a part.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import itertools
import json
import math
import os
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim import __version__
from sim.scenario import (
    SCHEMA,
    Scenario,
    ScenarioError,
    _suggest,
    apply_overrides,
    known_keys,
    load,
    read_toml,
    validate,
)

DESIGNS = ("grid", "random", "lhs", "sobol")
OUTPUTS = ("summary", "series")
SWEEP_KEYS = ("name", "description", "base", "design", "samples", "replicates", "seed", "steps",
              "parameters", "outputs")
# summary.json metrics kept per run (scalars only)
METRICS = ("steps", "mean_trust", "mean_openness", "share_spiral_in", "share_spiral_out",
           "share_undecided", "value_created", "value_perceived", "alliances_formed",
           "alliances_ended", "failure_rate", "mean_abundance", "share_abundance_mindset",
           "trusting_component")


@dataclass
class Param:
    name: str  # dotted key; "a+b" sets a and b to the same value
    values: list | None = None  # a list of values
    lo: float | None = None  # or a range
    hi: float | None = None
    num: int | None = None  # grid over a range: num evenly spaced values
    integer: bool = False

    @property
    def keys(self) -> list[str]:
        return self.name.split("+")


@dataclass
class Sweep:
    path: str
    sha256: str
    base: Scenario
    design: str
    samples: int
    replicates: int
    seed: int
    steps: int | None
    params: list[Param]
    outputs: str = "summary"
    name: str = "sweep"
    points: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_runs(self) -> int:
        return len(self.points) * self.replicates


# --- loading and validation ---------------------------------------------------------------
def _key_spec(name: str):
    parts = name.split(".")
    if len(parts) == 1:
        return SCHEMA[""].get(parts[0])
    if len(parts) == 2:
        return SCHEMA.get(parts[0], {}).get(parts[1])
    return None  # interventions.N.key: checked by applying it


def _check_value(sw_path: str, base: Scenario, pname: str, key: str, value) -> None:
    """A parameter value is checked exactly like a --set of the base scenario."""
    try:
        raw = apply_overrides(base.values, [(key, value)], sw_path)
        validate(raw, sw_path)
    except ScenarioError as e:
        raise ScenarioError(sw_path, f'parameters."{pname}"',
                            f"{key} = {value!r}: {e.message}") from None


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    raw, data = read_toml(path)
    src = str(path)
    for k in raw:
        if k not in SWEEP_KEYS:
            raise ScenarioError(src, k, "unknown key" + _suggest(k, SWEEP_KEYS))
    if "base" not in raw or not isinstance(raw["base"], str):
        raise ScenarioError(src, "base", 'expected the base scenario file, e.g. '
                            '"../scenarios/baseline.toml" (relative to the sweep file)')
    base_path = path.parent / raw["base"]
    if not base_path.is_file():
        raise ScenarioError(src, "base", f"base scenario not found: {base_path}")
    base = load(base_path)
    design = raw.get("design", "grid")
    if design not in DESIGNS:
        raise ScenarioError(src, "design", f"expected one of {', '.join(DESIGNS)}, got "
                            f"{design!r}" + (_suggest(design, DESIGNS) if isinstance(design, str)
                                              else ""))

    def integer(key, default, lo, hi=None):
        v = raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi and v > hi):
            rng = f">= {lo}" + (f" and <= {hi}" if hi else "")
            raise ScenarioError(src, key, f"expected an integer {rng}, got {v!r}")
        return v

    samples = integer("samples", 16, 1, 10**7)
    replicates = integer("replicates", 1, 1, 10**5)
    seed = raw.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ScenarioError(src, "seed", f"expected an integer >= 0, got {seed!r}")
    steps = raw.get("steps")
    if steps is not None:
        steps = integer("steps", None, 1, 10**7)
    outputs = raw.get("outputs", "summary")
    if outputs not in OUTPUTS:
        raise ScenarioError(src, "outputs", f'expected "summary" or "series", got {outputs!r}')
    if design == "sobol" and samples & (samples - 1):
        raise ScenarioError(src, "samples", f"expected a power of 2 for sobol, got {samples}")
    params_raw = raw.get("parameters")
    if not isinstance(params_raw, dict) or not params_raw:
        raise ScenarioError(src, "parameters", "expected a table [parameters] with at least one "
                            'parameter, e.g. "mindset.abundance_share" = [0.0, 0.5, 1.0]')
    params = []
    for pname, spec in params_raw.items():
        keys = pname.split("+")
        for key in keys:
            if key not in known_keys() and not (key.startswith("interventions.")):
                raise ScenarioError(src, f'parameters."{pname}"',
                                    "unknown scenario key" + _suggest(key, known_keys()))
        kspec = _key_spec(keys[0])
        is_int = kspec is not None and kspec.kind == "int"
        if isinstance(spec, list):
            if not spec:
                raise ScenarioError(src, f'parameters."{pname}"', "expected a non-empty list")
            for key in keys:
                for v in spec:
                    _check_value(src, base, pname, key, v)
            p = Param(pname, values=list(spec), integer=is_int)
        elif isinstance(spec, dict):
            extra = set(spec) - {"min", "max", "num"}
            if extra or "min" not in spec or "max" not in spec:
                raise ScenarioError(src, f'parameters."{pname}"',
                                    "expected a list of values or { min = ..., max = ... }")
            lo, hi = spec["min"], spec["max"]
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi)) \
                    or not lo <= hi:
                raise ScenarioError(src, f'parameters."{pname}"',
                                    f"expected numbers with min <= max, got {spec!r}")
            if kspec is not None and kspec.kind not in ("int", "float"):
                raise ScenarioError(src, f'parameters."{pname}"',
                                    f"a range needs a numeric key; {keys[0]} is {kspec.kind}")
            for key in keys:
                for v in (lo, hi):
                    _check_value(src, base, pname, key, int(v) if is_int else float(v))
            num = spec.get("num")
            if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
                raise ScenarioError(src, f'parameters."{pname}".num',
                                    f"expected an integer >= 1, got {num!r}")
            if design == "grid" and num is None:
                raise ScenarioError(src, f'parameters."{pname}"',
                                    "a grid needs a list of values or a range with num = N")
            p = Param(pname, lo=float(lo), hi=float(hi), num=num, integer=is_int)
        else:
            raise ScenarioError(src, f'parameters."{pname}"',
                                f"expected a list of values or {{ min = ..., max = ... }}, "
                                f"got {spec!r}")
        if design == "sobol" and p.values is not None:
            raise ScenarioError(src, f'parameters."{pname}"',
                                "sobol needs ranges { min = ..., max = ... }, not lists")
        params.append(p)
    sw = Sweep(str(path), hashlib.sha256(data).hexdigest(), base, design, samples, replicates,
               seed, steps, params, outputs, raw.get("name", path.stem))
    sw.points = design_points(sw)
    if sw.n_runs > 10_000_000:
        raise ScenarioError(src, "samples", f"{sw.n_runs} runs: expected at most 10,000,000")
    # every point must make a valid scenario (e.g. theta_down < theta_up for combinations)
    for pt in sw.points[:1000]:
        try:
            scenario_for(sw, pt)
        except ScenarioError as e:
            raise ScenarioError(src, "parameters", f"point {pt}: {e}") from None
    return sw


# --- designs ------------------------------------------------------------------------------
def _cast(p: Param, v):
    if p.values is not None:
        return v
    v = float(v)
    return int(round(v)) if p.integer else v


def design_points(sw: Sweep) -> list[dict[str, Any]]:
    """The design's points, deterministic given the sweep file."""
    ps = sw.params
    if sw.design == "grid":
        axes = [p.values if p.values is not None else
                list(np.linspace(p.lo, p.hi, p.num)) for p in ps]
        return [{p.name: _cast(p, v) for p, v in zip(ps, combo)}
                for combo in itertools.product(*axes)]
    rng = np.random.default_rng(np.random.SeedSequence([sw.seed, 0xD5]))
    n, d = sw.samples, len(ps)
    if sw.design == "random":
        u = rng.random((n, d))
    elif sw.design == "lhs":
        from SALib.sample import latin

        problem = {"num_vars": d, "names": [p.name for p in ps], "bounds": [[0, 1]] * d}
        u = latin.sample(problem, n, seed=int(rng.integers(2**31)))
    else:  # sobol: Saltelli's scheme, first and total order (N * (D + 2) points)
        from SALib.sample import sobol

        u = sobol.sample(sobol_problem(sw, unit=True), n, calc_second_order=False,
                         seed=int(rng.integers(2**31)))
    pts = []
    for row in u:
        pt = {}
        for p, x in zip(ps, row):
            if p.values is not None:
                pt[p.name] = p.values[min(int(x * len(p.values)), len(p.values) - 1)]
            else:
                pt[p.name] = _cast(p, p.lo + x * (p.hi - p.lo))
        pts.append(pt)
    return pts


def sobol_problem(sw: Sweep, unit: bool = False) -> dict:
    return {"num_vars": len(sw.params), "names": [p.name for p in sw.params],
            "bounds": [[0.0, 1.0] if unit else [p.lo, p.hi] for p in sw.params]}


# --- one run ------------------------------------------------------------------------------
def run_seed(sweep_seed: int, run: int) -> int:
    """The seed of run `run`: from the sweep seed and the run index only."""
    return int(np.random.SeedSequence(sweep_seed, spawn_key=(run,)).generate_state(1)[0])


def overrides_for(sw: Sweep, point: dict[str, Any]) -> list[tuple[str, Any]]:
    out = [(k, v) for name, v in point.items() for k in name.split("+")]
    if sw.steps is not None:
        out.append(("steps", sw.steps))
    return out


def scenario_for(sw: Sweep, point: dict[str, Any]) -> Scenario:
    return sw.base.with_overrides(overrides_for(sw, point), sw.path)


@dataclass
class Task:
    run: int
    point: int
    replicate: int
    seed: int
    values: dict  # the base scenario's resolved values
    overrides: list
    columns: dict  # parameter columns for the row
    keep_series: bool


def tasks(sw: Sweep, skip: set[int]):
    for run in range(sw.n_runs):
        if run in skip:
            continue
        pi, rep = divmod(run, sw.replicates)
        point = sw.points[pi]
        cols = {k: v for name, v in point.items() for k in name.split("+")}
        yield Task(run, pi, rep, run_seed(sw.seed, run), sw.base.values,
                   overrides_for(sw, point), cols, sw.outputs == "series")


def execute(task: Task) -> tuple[dict, dict | None]:
    """Run one task (in a worker). Never raises: a failure is recorded in `status`."""
    row = {"run": task.run, "point": task.point, "replicate": task.replicate, **task.columns,
           "seed": task.seed, "status": "ok"}
    series = None
    try:
        from sim.model import AllianceModel

        sc = Scenario(task.values).with_overrides(task.overrides + [("seed", task.seed)])
        m = AllianceModel(sc)
        m.run()
        s = m.summary()
        for k in METRICS:
            row[k] = float(s[k]) if k not in ("steps", "alliances_formed",
                                              "alliances_ended") else int(s[k])
        if task.keep_series:
            df = m.timeseries()
            series = {"run": np.full(len(df), task.run, np.int64),
                      **{c: df[c].to_numpy() for c in df.columns}}
    except Exception as e:  # noqa: BLE001 - a run that raises is recorded and the sweep goes on
        row["status"] = f"{type(e).__name__}: {e}"[:500]
        for k in METRICS:
            row[k] = None
    return row, series


# --- executors ----------------------------------------------------------------------------
class InlineExecutor:
    """Runs tasks in this process (workers = 1 without a pool; handy for tests and profiling)."""

    def submit(self, fn, *args):
        f = cf.Future()
        f.set_result(fn(*args))
        return f

    def wait_some(self, futures):
        return set(futures)

    def close(self):
        pass


class PoolExecutor:
    def __init__(self, workers: int):
        self.pool = cf.ProcessPoolExecutor(max_workers=workers)

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def wait_some(self, futures):
        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        return done

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """The same runs on an existing Dask distributed cluster (dask scheduler / dask worker)."""

    def __init__(self, address: str):
        from distributed import Client

        self.client = Client(address, timeout="20s")

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def wait_some(self, futures):
        from distributed import wait

        return set(wait(list(futures), return_when="FIRST_COMPLETED").done)

    def close(self):
        self.client.close()


def make_executor(workers: int, scheduler: str | None):
    if scheduler:
        return DaskExecutor(scheduler)
    if workers <= 1:
        return InlineExecutor()
    return PoolExecutor(workers)


# --- results on disk ----------------------------------------------------------------------
def done_runs(out: Path) -> set[int]:
    """Runs already in a finished part (temporary files of a killed write are ignored)."""
    done: set[int] = set()
    for f in sorted((out / "runs").glob("part-*.parquet")):
        done.update(pq.read_table(f, columns=["run"]).column("run").to_pylist())
    return done


def _clean_orphans(out: Path) -> None:
    """Series parts whose runs part never landed (killed between the two writes)."""
    runs = {f.name for f in (out / "runs").glob("part-*.parquet")}
    for f in (out / "series").glob("part-*.parquet"):
        if f.name not in runs:
            f.unlink()


def _write_part(out: Path, rows: list[dict], series: list[dict]):
    from sim.outputs import atomic_write

    name = f"part-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}.parquet"
    if series:
        cols = {k: np.concatenate([s[k] for s in series]) for k in series[0]}
        t = pa.table(cols)
        atomic_write(out / "series" / name, lambda tmp: pq.write_table(t, tmp))
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["run"]))
    atomic_write(out / "runs" / name, lambda tmp: pq.write_table(table, tmp))


def sweep_meta(sw: Sweep) -> dict:
    return {"sweep": sw.path, "sweep_sha256": sw.sha256, "name": sw.name, "version": __version__,
            "base": sw.base.path, "base_sha256": sw.base.file_sha256, "design": sw.design,
            "samples": sw.samples, "replicates": sw.replicates, "seed": sw.seed,
            "steps": sw.steps, "outputs": sw.outputs,
            "parameters": {p.name: (p.values if p.values is not None else
                                    {"min": p.lo, "max": p.hi, **({"num": p.num} if p.num
                                                                  else {})})
                           for p in sw.params},
            "n_points": len(sw.points), "n_runs": sw.n_runs}


def prepare_out(sw: Sweep, out: Path) -> None:
    from sim.outputs import write_json

    meta_path = out / "sweep.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("sweep_sha256") != sw.sha256 or old.get("base_sha256") != sw.base.file_sha256:
            raise ScenarioError(str(out), "sweep.json", "this folder holds results of another "
                                "sweep (or an edited sweep or base file); expected the same "
                                "sweep, or choose another --out")
    else:
        write_json(meta_path, sweep_meta(sw))
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if sw.outputs == "series":
        (out / "series").mkdir(parents=True, exist_ok=True)
        _clean_orphans(out)


def run_sweep(sw: Sweep, out: Path, workers: int = 1, scheduler: str | None = None,
              progress: bool = True, flush_rows: int | None = None,
              flush_seconds: float = 5.0) -> dict:
    """Run every missing run of the sweep into `out`; returns counts."""
    out = Path(out)
    prepare_out(sw, out)
    skip = done_runs(out)
    todo = sw.n_runs - len(skip)
    if flush_rows is None:
        flush_rows = max(10, min(500, math.ceil(sw.n_runs / 50)))
    executor = make_executor(workers, scheduler)
    in_flight_max = max(4, 4 * max(workers, 1)) if not scheduler else 256
    bar = None
    if progress:
        import sys

        from tqdm import tqdm
        bar = tqdm(total=sw.n_runs, initial=len(skip), desc=sw.name, unit="run", file=sys.stderr,
                   dynamic_ncols=True)
    rows, series, failures, finished = [], [], 0, 0
    last_flush = time.monotonic()
    pending = set()
    it = tasks(sw, skip)
    try:
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < in_flight_max:
                t = next(it, None)
                if t is None:
                    exhausted = True
                    break
                pending.add(executor.submit(execute, t))
            if not pending:
                break
            for f in executor.wait_some(pending):
                pending.discard(f)
                row, ser = f.result()
                rows.append(row)
                if ser is not None:
                    series.append(ser)
                finished += 1
                failures += row["status"] != "ok"
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(failed=failures, refresh=False)
            if len(rows) >= flush_rows or (rows and time.monotonic() - last_flush > flush_seconds):
                _write_part(out, rows, series)
                rows, series, last_flush = [], [], time.monotonic()
        if rows:
            _write_part(out, rows, series)
    finally:
        executor.close()
        if bar is not None:
            bar.close()
    return {"runs": sw.n_runs, "skipped": len(skip), "finished": finished, "failed": failures,
            "todo": todo}


def read_runs(out: Path):
    """All runs of a sweep folder as a pyarrow Table sorted by run."""
    files = sorted((Path(out) / "runs").glob("part-*.parquet"))
    if not files:
        return None
    t = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    return t.sort_by("run")


def main_sweep(args) -> int:
    sw = load_sweep(args.sweep)
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{sw.name}"
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    t0 = time.perf_counter()
    res = run_sweep(sw, out, workers, args.scheduler, progress=not args.quiet)
    dt = time.perf_counter() - t0
    print(f"{sw.name}: {res['runs']} runs ({res['skipped']} already done, {res['finished']} run "
          f"now, {res['failed']} failed) in {dt:.1f}s")
    print(f"results: {out}/runs/part-*.parquet  (query: spiral query {out} \"SELECT ...\")")
    return 0


def validate_sweep_file(path: str) -> bool:
    """True if the file looks like a sweep file (has `base` and `parameters`)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return "base" in raw and "parameters" in raw
