"""Parameter sweeps: sweep files, designs, executors, resumable Parquet parts.

A sweep file names a base scenario, parameters (any scenario key by its dotted name, a list of
values or a {min, max} range), a design (grid, random, lhs, sobol), replicates and a seed.

Seeds (common random numbers by default): replicate r of every design point uses the seed
SeedSequence(sweep seed, spawn_key=(r,)), so the same replicate shares its random stream across
points and paired comparisons between points are possible. With `common_random_numbers = false`
the seed is SeedSequence(sweep seed, spawn_key=(point, r)) instead. Run numbers are
replicate-major: run = replicate * n_points + point, so adding replicates only appends runs and
leaves every existing run (number, seed, row) unchanged. A run's result does not depend on
workers, order or interruptions.

Finished runs are appended to DIR/runs/part-*.parquet in small atomic parts typed from the
scenario schema; a rerun of the same command skips every run already in a part. The folder is
locked while a sweep runs; a truncated or corrupt part is quarantined and its runs rerun; resume
refuses when the code, libraries or any scenario file of the base's `extends` chain changed
(`--force` overrides, recorded in sweep.json).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime
import fcntl
import hashlib
import itertools
import json
import math
import os
import socket
import sys
import threading
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
from sim.provenance import code_provenance, differences, scenario_files
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
OUTPUTS = ("summary", "series", "alliances")
SWEEP_KEYS = ("name", "description", "base", "design", "samples", "replicates", "seed", "steps",
              "parameters", "outputs", "common_random_numbers")
MAX_POINTS = 1_000_000  # every point is validated before the sweep starts
MAX_RUNS = 10_000_000
# summary.json metrics kept per run (scalars only)
METRICS = ("steps", "mean_trust", "mean_openness", "share_spiral_in", "share_spiral_out",
           "share_undecided", "value_created", "value_perceived", "alliances_formed",
           "alliances_ended", "failure_rate", "mean_abundance", "share_abundance_mindset",
           "trusting_component")
INT_METRICS = ("steps", "alliances_formed", "alliances_ended")
# summary metrics kept when the model provides them (null otherwise)
OPTIONAL_METRICS = ("failure_rate_km", "median_duration")
SCHEME = ("common random numbers: replicate r uses SeedSequence(seed, spawn_key=(r,)) at every "
          "point; run = replicate * n_points + point")
SCHEME_INDEPENDENT = ("independent streams: point p, replicate r uses SeedSequence(seed, "
                      "spawn_key=(p, r)); run = replicate * n_points + point")


@dataclass
class Param:
    name: str  # dotted key; "a+b" sets a and b to the same value
    values: list | None = None  # a list of values
    lo: float | None = None  # or a range
    hi: float | None = None
    num: int | None = None  # grid over a range: num evenly spaced values
    integer: bool = False
    kind: str = "float"  # column type: int, float, bool or str

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
    crn: bool = True  # common random numbers
    keep: tuple[str, ...] = ()  # extra outputs kept: "series", "alliances"

    @property
    def n_runs(self) -> int:
        return len(self.points) * self.replicates

    @property
    def n_points(self) -> int:
        return len(self.points)

    def columns(self) -> dict[str, str]:
        """Parameter column -> type (int, float, bool, str)."""
        out = {}
        for p in self.params:
            for k in p.keys:
                out[k] = p.kind
        return out

    def schema(self) -> pa.Schema:
        """The runs table's schema: fixed by the sweep file, not by the first values."""
        types = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string()}
        fields = [("run", pa.int64()), ("point", pa.int64()), ("replicate", pa.int64())]
        fields += [(k, types[t]) for k, t in self.columns().items()]
        fields += [("seed", pa.int64()), ("status", pa.string())]
        fields += [(k, pa.int64() if k in INT_METRICS else pa.float64()) for k in METRICS]
        fields += [(k, pa.float64()) for k in OPTIONAL_METRICS]
        fields += [("provenance_id", pa.string())]
        return pa.schema(fields)


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
    outs = outputs if isinstance(outputs, list) else [outputs]
    if not outs or not all(isinstance(o, str) and o in OUTPUTS for o in outs):
        raise ScenarioError(src, "outputs", 'expected "summary", "series", "alliances" or a list '
                            f'of them, e.g. ["series", "alliances"], got {outputs!r}')
    keep = tuple(o for o in ("series", "alliances") if o in outs)
    crn = raw.get("common_random_numbers", True)
    if not isinstance(crn, bool):
        raise ScenarioError(src, "common_random_numbers", f"expected true or false, got {crn!r}")
    if design == "sobol" and samples & (samples - 1):
        raise ScenarioError(src, "samples", f"expected a power of 2 for sobol, got {samples}")
    params_raw = raw.get("parameters")
    if not isinstance(params_raw, dict) or not params_raw:
        raise ScenarioError(src, "parameters", "expected a table [parameters] with at least one "
                            'parameter, e.g. "mindset.abundance_share" = [0.0, 0.5, 1.0]')
    params = []
    owner: dict[str, str] = {}  # scenario key -> the parameter that sets it
    for pname, spec in params_raw.items():
        keys = pname.split("+")
        for key in keys:
            if key not in known_keys() and not (key.startswith("interventions.")):
                raise ScenarioError(src, f'parameters."{pname}"',
                                    "unknown scenario key" + _suggest(key, known_keys()))
            if key == "seed":
                raise ScenarioError(src, f'parameters."{pname}"',
                                    "seed cannot be swept: each run's seed comes from the sweep's "
                                    "seed and the replicate; expected more replicates instead")
            if key == "steps" and steps is not None:
                raise ScenarioError(src, f'parameters."{pname}"',
                                    "steps is also set by the sweep's top-level steps; expected "
                                    "one of the two")
            if key in owner or keys.count(key) > 1:
                other = owner.get(key, pname)
                raise ScenarioError(src, f'parameters."{pname}"',
                                    f'{key} is also set by parameters."{other}"; expected each '
                                    "scenario key in one parameter only")
            owner[key] = pname
        kspec = _key_spec(keys[0])
        is_int = kspec is not None and kspec.kind == "int"
        if isinstance(spec, list):
            if not spec:
                raise ScenarioError(src, f'parameters."{pname}"', "expected a non-empty list")
            kind = _column_kind(kspec, spec)
            if kind == "float":  # [0, 0.5, 1] for a float key: one column type, floats
                spec = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                        for v in spec]
            for key in keys:
                for v in spec:
                    _check_value(src, base, pname, key, v)
            p = Param(pname, values=list(spec), integer=is_int, kind=kind)
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
            p = Param(pname, lo=float(lo), hi=float(hi), num=num, integer=is_int,
                      kind="int" if is_int else "float")
        else:
            raise ScenarioError(src, f'parameters."{pname}"',
                                f"expected a list of values or {{ min = ..., max = ... }}, "
                                f"got {spec!r}")
        if design == "sobol" and p.values is not None:
            raise ScenarioError(src, f'parameters."{pname}"',
                                "sobol needs ranges { min = ..., max = ... }, not lists")
        params.append(p)
    sw = Sweep(str(path), hashlib.sha256(data).hexdigest(), base, design, samples, replicates,
               seed, steps, params, outputs, raw.get("name", path.stem), crn=crn, keep=keep)
    # the size is checked before the design is materialised
    n_points = count_points(sw)
    if n_points > MAX_POINTS:
        raise ScenarioError(src, "parameters" if design == "grid" else "samples",
                            f"{n_points:,} design points: expected at most {MAX_POINTS:,}")
    if n_points * replicates > MAX_RUNS:
        raise ScenarioError(src, "replicates", f"{n_points * replicates:,} runs: expected at "
                            f"most {MAX_RUNS:,}")
    sw.points = design_points(sw)
    validate_points(sw)
    return sw


# Scenario keys that take part in a check across keys (theta_down < theta_up, out_level <
# in_level, the graph's degree against its size, interventions against steps and organizations,
# the memory estimate). Every value of every parameter is checked on its own above; a point is
# then valid if its combination of these keys is, so each distinct combination is validated
# once (with the other parameters at the point's own values for the first point that has it).
COUPLED_SECTIONS = ("ecosystem", "regimes", "formation", "noise")
COUPLED_KEYS = ("steps", "mindset.theta_down", "mindset.theta_up")


def _coupled(key: str) -> bool:
    return (key in COUPLED_KEYS or key.split(".")[0] in COUPLED_SECTIONS
            or key.startswith("interventions"))


def validate_points(sw: Sweep) -> None:
    """Every point must make a valid scenario (e.g. theta_down < theta_up for combinations)."""
    coupled = [p.name for p in sw.params if any(_coupled(k) for k in p.keys)]
    seen: set = set()
    for i, pt in enumerate(sw.points):
        key = tuple(repr(pt[n]) for n in coupled)
        if key in seen:
            continue
        seen.add(key)
        try:
            scenario_for(sw, pt)
        except ScenarioError as e:
            raise ScenarioError(sw.path, "parameters", f"point {i} {pt}: {e.message}") from None


def _column_kind(kspec, values: list) -> str:
    """The column type of a list parameter: from the schema, else from all its values."""
    if kspec is not None and kspec.kind in ("int", "float", "bool", "str"):
        return kspec.kind
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "float"
    return "str"


def count_points(sw: Sweep) -> int:
    if sw.design == "grid":
        return math.prod(len(p.values) if p.values is not None else p.num for p in sw.params)
    if sw.design == "sobol":
        return sw.samples * (len(sw.params) + 2)
    return sw.samples


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
        # a range's grid values are rounded to 12 decimals, so 0.3 is stored as 0.3 (not
        # 0.30000000000000004) and `WHERE share = 0.3` finds it
        axes = [p.values if p.values is not None else
                [round(float(v), 12) for v in np.linspace(p.lo, p.hi, p.num)] for p in ps]
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
def run_seed(sweep_seed: int, replicate: int, point: int | None = None) -> int:
    """The seed of replicate `replicate` (common random numbers: the same at every point), or,
    with `point`, of that point's replicate (independent streams)."""
    key = (replicate,) if point is None else (point, replicate)
    return int(np.random.SeedSequence(sweep_seed, spawn_key=key).generate_state(1)[0])


def run_number(sw: Sweep, point: int, replicate: int) -> int:
    return replicate * sw.n_points + point


def seed_of(sw: Sweep, point: int, replicate: int) -> int:
    return run_seed(sw.seed, replicate, None if sw.crn else point)


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
    keep_alliances: bool = False


def tasks(sw: Sweep, skip: set[int]):
    """Replicate-major: every point's replicate 0, then every point's replicate 1, ..."""
    for rep in range(sw.replicates):
        for pi, point in enumerate(sw.points):
            run = run_number(sw, pi, rep)
            if run in skip:
                continue
            cols = {k: v for name, v in point.items() for k in name.split("+")}
            yield Task(run, pi, rep, seed_of(sw, pi, rep), sw.base.values,
                       overrides_for(sw, point), cols, "series" in sw.keep,
                       "alliances" in sw.keep)


def alliance_rows(model, run: int) -> dict[str, np.ndarray]:
    """One row per alliance of a finished run, for survival analysis: when it formed and ended,
    its duration (to its end, or to the last step if still active: right-censored) and the pair
    type of its two organizations' cultures at the start."""
    cols = dict(model.alliances())
    n = len(cols["alliance"])
    s = model.state
    last = s.step
    formed = np.asarray(cols["formed"], np.int64)
    ended = np.asarray(cols["ended"], np.int64)
    if "censored" not in cols:
        cols["censored"] = ended < 0
    if "duration" not in cols:
        cols["duration"] = np.where(ended >= 0, ended, last) - formed
    start = getattr(s, "abundant_start", None)
    if start is None:  # a state without the flag: the culture's level decides
        start = s.culture >= 0.5
    kind = np.where(start, "A", "S")
    a, b = kind[np.asarray(cols["org_a"])], kind[np.asarray(cols["org_b"])]
    pair = np.where(a == b, np.char.add(a, b), "AS")
    cols["pair"] = np.array([{"AA": "abundance-abundance", "SS": "scarcity-scarcity",
                              "AS": "abundance-scarcity"}[p] for p in pair.tolist()], dtype=object)
    out = {"run": np.full(n, run, np.int64)}
    for k, v in cols.items():
        out[k if k != "run" else "alliance_run"] = np.asarray(v)
    return out


def execute(task: Task) -> tuple[dict, dict]:
    """Run one task (in a worker). Never raises: a failure is recorded in `status`.
    Returns the run's row and its extra tables ("series", "alliances": column dicts)."""
    row = {"run": task.run, "point": task.point, "replicate": task.replicate, **task.columns,
           "seed": task.seed, "status": "ok"}
    extra: dict = {}
    try:
        row["provenance_id"] = code_provenance()["provenance_id"]
        from sim.model import AllianceModel

        sc = Scenario(task.values).with_overrides(task.overrides + [("seed", task.seed)])
        m = AllianceModel(sc)
        m.run()
        s = m.summary()
        for k in METRICS:
            row[k] = int(s[k]) if k in INT_METRICS else float(s[k])
        for k in OPTIONAL_METRICS:
            v = s.get(k)
            row[k] = None if v is None or not np.isfinite(v) else float(v)
        if task.keep_series:
            df = m.timeseries()
            extra["series"] = {"run": np.full(len(df), task.run, np.int64),
                               **{c: df[c].to_numpy() for c in df.columns}}
        if task.keep_alliances:
            extra["alliances"] = alliance_rows(m, task.run)
    except Exception as e:  # noqa: BLE001 - a run that raises is recorded and the sweep goes on
        row["status"] = f"{type(e).__name__}: {e}"[:500]
        for k in METRICS + OPTIONAL_METRICS:
            row[k] = None
        extra = {}
    return row, extra


def execute_many(batch: list[Task]) -> list[tuple[dict, dict]]:
    """Several tasks in one call (in a worker): the call's cost (pickling, inter-process
    transfer, the futures' bookkeeping) is paid once per chunk, not once per run, which matters
    when runs take milliseconds. The tasks' shared base scenario is pickled once per chunk."""
    return [execute(t) for t in batch]


def chunk_size(todo: int, workers: int, scheduler: str | None) -> int:
    """Runs per submitted call, from the runs still to submit (guided scheduling: chunks
    shrink as the sweep nears its end, so no worker idles while another finishes a long last
    chunk): 1 in this process (nothing to save); else an eighth of every worker's share of
    what is left (Dask: a 64th), between 1 and 64 runs."""
    if not scheduler and workers <= 1:
        return 1
    slots = 64 if scheduler else 8 * workers
    return max(1, min(64, todo // slots))


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


def _worker_init(parent: int) -> None:
    """A pool worker dies with the sweep's parent, even after SIGKILL of the parent: Linux's
    parent-death signal where available, and a watchdog thread everywhere. Ctrl-C and SIGTERM
    (sent to the whole process group by a terminal or `timeout`) end a worker quietly: the
    parent, which owns the results, reports the interruption, and the runs in hand are rerun
    on resume."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):  # not the parent's handlers, inherited by fork
        signal.signal(sig, signal.SIG_DFL)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


class PoolExecutor:
    def __init__(self, workers: int):
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, initializer=_worker_init,
                                           initargs=(os.getpid(),))

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def wait_some(self, futures):
        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        return done

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """The same runs on an existing Dask distributed cluster (dask scheduler / dask worker)."""

    def __init__(self, address: str, timeout: float = 10.0):
        import logging

        from distributed import Client

        # distributed logs its retries; the user gets one line from us instead
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        try:
            self.client = Client(address, timeout=f"{timeout}s")
        except (OSError, TimeoutError, ValueError, TypeError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ScenarioError(address, "--scheduler", "cannot reach the Dask scheduler "
                                f"({msg[:200]}); expected a running `dask scheduler` at "
                                "tcp://HOST:PORT") from None

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
TABLES = ("runs", "series", "alliances")


class CorruptPart(ScenarioError):
    pass


def _readable(f: Path, column: str | None = None) -> bool:
    try:
        pf = pq.ParquetFile(f)
        if column is not None:
            pf.read(columns=[column])
        return True
    except Exception:  # noqa: BLE001 - any failure to read means truncated or corrupt
        return False


def check_parts(out: Path, repair: bool = False) -> list[Path]:
    """Unreadable parts (truncated or corrupt). With repair, each is moved to DIR/quarantine/
    together with the parts of the same name in the other tables, so its runs are rerun."""
    out = Path(out)
    bad = [f for t in TABLES for f in sorted((out / t).glob("part-*.parquet"))
           if not _readable(f, "run")]
    if repair and bad:
        q = out / "quarantine"
        q.mkdir(exist_ok=True)
        for name in sorted({f.name for f in bad}):
            for t in TABLES:
                f = out / t / name
                if f.exists():
                    os.replace(f, q / f"{t}-{name}")
            print(f"warning: {out}/runs/{name}: unreadable (truncated or corrupt); moved to "
                  f"{q}/, its runs will be run again", file=sys.stderr)
    return bad


def require_readable(out: Path) -> None:
    bad = check_parts(out)
    if bad:
        raise CorruptPart(str(bad[0]), "", f"unreadable part (truncated or corrupt; {len(bad)} "
                          "in all); run the same `spiral sweep` again to quarantine and rerun it")


def done_runs(out: Path) -> set[int]:
    """Runs already in a finished part (temporary files of a killed write are ignored)."""
    done: set[int] = set()
    for f in sorted((out / "runs").glob("part-*.parquet")):
        done.update(pq.read_table(f, columns=["run"]).column("run").to_pylist())
    return done


def _clean_orphans(out: Path) -> None:
    """Series or alliance parts whose runs part never landed (killed between the writes)."""
    runs = {f.name for f in (out / "runs").glob("part-*.parquet")}
    for t in ("series", "alliances"):
        for f in (out / t).glob("part-*.parquet"):
            if f.name not in runs:
                f.unlink()


def _table(cols_list: list[dict]) -> pa.Table:
    cols = {}
    for k in cols_list[0]:
        v = np.concatenate([np.asarray(c[k]) for c in cols_list])
        cols[k] = pa.array(v.tolist()) if v.dtype == object else pa.array(v)
    return pa.table(cols)


def _write_part(out: Path, rows: list[dict], extras: dict[str, list[dict]],
                schema: pa.Schema | None = None):
    from sim.outputs import atomic_write

    name = f"part-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}.parquet"
    for t, items in extras.items():  # first the extra tables, then the runs part that counts
        if items:
            tab = _table(items)
            atomic_write(out / t / name, lambda tmp, tab=tab: pq.write_table(tab, tmp))
    rows = sorted(rows, key=lambda r: r["run"])
    if schema is not None:
        rows = [{k: r.get(k) for k in schema.names} for r in rows]
        table = pa.Table.from_pylist(rows, schema=schema)
    else:
        table = pa.Table.from_pylist(rows)
    atomic_write(out / "runs" / name, lambda tmp: pq.write_table(table, tmp))


def design_sha256(sw: Sweep) -> str:
    """What makes two sweep files the same design (replicates excluded: they can grow)."""
    m = sweep_meta(sw)
    keep = {k: m[k] for k in ("design", "samples", "seed", "steps", "outputs", "parameters",
                              "base_sha256", "common_random_numbers")}
    keep["points"] = hashlib.sha256(json.dumps(sw.points, sort_keys=True,
                                               default=str).encode()).hexdigest()
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


def sweep_provenance(sw: Sweep) -> dict:
    return {**code_provenance(), "files": scenario_files(sw.base)}


def sweep_meta(sw: Sweep) -> dict:
    return {"sweep": sw.path, "sweep_sha256": sw.sha256, "name": sw.name, "version": __version__,
            "base": sw.base.path, "base_sha256": sw.base.file_sha256, "design": sw.design,
            "samples": sw.samples, "replicates": sw.replicates, "seed": sw.seed,
            "steps": sw.steps, "outputs": sw.outputs,
            "common_random_numbers": sw.crn,
            "seed_scheme": SCHEME if sw.crn else SCHEME_INDEPENDENT,
            "parameters": {p.name: (p.values if p.values is not None else
                                    {"min": p.lo, "max": p.hi, **({"num": p.num} if p.num
                                                                  else {})})
                           for p in sw.params},
            "columns": sw.columns(),
            "n_points": len(sw.points), "n_runs": sw.n_runs}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class Lock:
    """An exclusive lock on a sweep folder (flock on DIR/.sweep.lock; the kernel releases it
    when the holder dies, even by SIGKILL)."""

    def __init__(self, out: Path):
        self.path = Path(out) / ".sweep.lock"
        self.fd = None

    def __enter__(self):
        if self.fd is not None:  # already held
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ScenarioError(str(self.path.parent), "lock",
                                f"another sweep is writing this folder ({holder}); wait for it "
                                "to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def prepare_out(sw: Sweep, out: Path, force: bool = False) -> None:
    """Write sweep.json for a new folder; for an existing one check that it holds this sweep,
    made by the same code, libraries and scenario files (else refuse, or record --force)."""
    from sim.outputs import write_json

    meta_path = out / "sweep.json"
    prov = sweep_provenance(sw)
    meta = sweep_meta(sw)
    meta["design_sha256"] = design_sha256(sw)
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
            if not isinstance(old, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            raise ScenarioError(str(meta_path), "", "unreadable sweep.json (empty or not "
                                "JSON); expected the file written by `spiral sweep`, or choose "
                                "another --out") from None
        if "design_sha256" not in old:  # numbered runs point-major, seeds by run index
            raise ScenarioError(str(out), "sweep.json", "this folder was made by an older "
                                "version that numbered runs and chose seeds differently; it "
                                "cannot be resumed (not even with --force); expected a new "
                                "--out")
        if old.get("design_sha256") != meta["design_sha256"]:
            raise ScenarioError(str(out), "sweep.json", "this folder holds results of another "
                                "sweep (or an edited sweep or base file); expected the same "
                                "sweep, or choose another --out")
        changed = (differences(old["provenance"], prov) if "provenance" in old
                   else ["no provenance recorded (made by an older version)"])
        if changed and not force:
            raise ScenarioError(str(out), "resume", "refused: " + "; ".join(changed)[:600]
                                + " since this sweep started; expected the same code, libraries "
                                "and scenario files (--force to resume anyway, recorded)")
        history = old.get("history", [])
        if changed or old.get("replicates", sw.replicates) < sw.replicates:
            history.append({"time": _now(), "replicates": sw.replicates,
                            "provenance_id": prov["provenance_id"],
                            **({"forced": changed} if changed else {})})
            new = {**old, "replicates": max(sw.replicates, old.get("replicates", 0)),
                   "history": history}
            new["n_runs"] = new["replicates"] * old.get("n_points", sw.n_points)
            if changed:
                new.setdefault("forced", []).append({"time": _now(), "changed": changed})
            write_json(meta_path, new)
    else:
        write_json(meta_path, {**meta, "provenance": prov, "started": _now(),
                               "history": [{"time": _now(), "replicates": sw.replicates,
                                            "provenance_id": prov["provenance_id"]}]})
    for t in ("runs", *sw.keep):
        (out / t).mkdir(parents=True, exist_ok=True)
    check_parts(out, repair=True)
    _clean_orphans(out)


def run_sweep(sw: Sweep, out: Path, workers: int = 1, scheduler: str | None = None,
              progress: bool = True, flush_rows: int | None = None,
              flush_seconds: float = 5.0, force: bool = False) -> dict:
    """Run every missing run of the sweep into `out`; returns counts."""
    out = Path(out)
    executor = make_executor(workers, scheduler)  # a bad scheduler fails before any write
    try:
        if out.exists() and not out.is_dir():
            raise ScenarioError(str(out), "--out", "expected a folder, got a file")
        try:
            out.mkdir(parents=True, exist_ok=True)
            lock = Lock(out).__enter__()
        except OSError as e:
            raise ScenarioError(str(out), "--out", f"cannot write here ({e.strerror or e}); "
                                "expected a writable folder") from None
        with lock:
            return _run_locked(sw, out, executor, workers, scheduler, progress, flush_rows,
                               flush_seconds, force)
    finally:
        executor.close()


def _run_locked(sw, out, executor, workers, scheduler, progress, flush_rows, flush_seconds,
                force) -> dict:
    prepare_out(sw, out, force)
    skip = done_runs(out)
    todo = sw.n_runs - len(skip & set(range(sw.n_runs)))
    if flush_rows is None:  # a part per 500 runs or per flush_seconds, whichever comes first:
        flush_rows = 500  # a kill loses at most that much work; fewer parts, less parent time
    in_flight_max = max(4, 4 * max(workers, 1)) if not scheduler else 256
    schema = sw.schema()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sw.n_runs, initial=sw.n_runs - todo, desc=sw.name, unit="run",
                   file=sys.stderr, dynamic_ncols=True)
    rows, extras, failures, finished = [], {t: [] for t in sw.keep}, 0, 0
    last_flush = time.monotonic()
    pending = set()
    it = tasks(sw, skip)
    submitted = 0
    try:
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < in_flight_max:
                chunk = chunk_size(todo - submitted, workers, scheduler)
                batch = list(itertools.islice(it, chunk))
                submitted += len(batch)
                if len(batch) < chunk:
                    exhausted = True
                if not batch:
                    break
                pending.add(executor.submit(execute_many, batch))
            if not pending:
                break
            for f in executor.wait_some(pending):
                pending.discard(f)
                done = f.result()
                for row, extra in done:
                    rows.append(row)
                    for k, v in extra.items():
                        extras[k].append(v)
                    finished += 1
                    failures += row["status"] != "ok"
                if bar is not None:
                    bar.update(len(done))
                    bar.set_postfix(failed=failures, refresh=False)
            if len(rows) >= flush_rows or (rows and time.monotonic() - last_flush > flush_seconds):
                _write_part(out, rows, extras, schema)
                rows, extras, last_flush = [], {t: [] for t in sw.keep}, time.monotonic()
        if rows:
            _write_part(out, rows, extras, schema)
    finally:
        if bar is not None:
            bar.close()
    failed_total = count_failed(out)
    return {"runs": sw.n_runs, "skipped": sw.n_runs - todo, "finished": finished,
            "failed": failures, "failed_total": failed_total, "todo": todo}


def count_failed(out: Path) -> int:
    """Failed runs in the folder's parts."""
    n = 0
    for f in sorted((Path(out) / "runs").glob("part-*.parquet")):
        st = pq.read_table(f, columns=["status"]).column("status").to_pylist()
        n += sum(s != "ok" for s in st)
    return n


def read_runs(out: Path):
    """All runs of a sweep folder as a pyarrow Table sorted by run (a corrupt part: one-line
    error naming it)."""
    files = sorted((Path(out) / "runs").glob("part-*.parquet"))
    if not files:
        return None
    require_readable(out)
    tables = []
    for f in files:
        t = pq.read_table(f)
        missing = [c for c in ("run", "status") if c not in t.column_names]
        if missing:
            raise ScenarioError(str(f), "", f"not a part written by `spiral sweep` (no column "
                                f"{', '.join(missing)}); expected only sweep parts in runs/")
        tables.append(t)
    try:
        t = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ScenarioError(str(Path(out) / "runs"), "", "parts with incompatible columns "
                            f"({str(e).splitlines()[0][:160]}); expected the parts of one "
                            "sweep") from None
    return t.sort_by("run")


def read_table(out: Path, table: str):
    files = sorted((Path(out) / table).glob("part-*.parquet"))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")


def mc_half_width(out: Path, outcome: str, level: float = 0.95) -> tuple[float, int]:
    """The widest 95% t-interval half-width of the mean of `outcome` over the design points,
    and the fewest replicates at a point."""
    from scipy import stats

    t = read_runs(out)
    df = t.to_pandas()
    df = df[df["status"] == "ok"]
    g = df.groupby("point")[outcome]
    n = g.count()
    if n.min() < 2:
        return math.inf, int(n.min())
    half = stats.t.ppf(0.5 + level / 2, n - 1) * g.std(ddof=1) / np.sqrt(n)
    return float(half.max()), int(n.min())


def main_sweep(args) -> int:
    sw = load_sweep(args.sweep)
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{sw.name}"
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    force = getattr(args, "force", False)
    until = getattr(args, "until_width", None)
    outcome = getattr(args, "outcome", None) or "mean_trust"
    max_reps = getattr(args, "max_replicates", None) or 1000
    if until is not None:
        if not until > 0:
            raise ScenarioError("--until-width", "", f"expected a width > 0, got {until}")
        if outcome not in METRICS:
            raise ScenarioError("--outcome", "", f"expected a summary metric, got {outcome!r}"
                                + _suggest(outcome, METRICS))
    t0 = time.perf_counter()
    res = run_sweep(sw, out, workers, args.scheduler, progress=not args.quiet, force=force)
    if until is not None:  # add replicates until every point's interval is narrow enough
        while True:
            half, nmin = mc_half_width(out, outcome)
            width = 2 * half
            print(f"{sw.name}: {sw.replicates} replicates: widest 95% interval of mean "
                  f"{outcome} over points {width:.4f} (target {until})", file=sys.stderr)
            if width <= until or sw.replicates >= max_reps:
                break
            grow = (width / until) ** 2 if math.isfinite(width) else 2.0
            sw.replicates = min(max_reps, max(sw.replicates + 1, math.ceil(sw.replicates * grow)))
            r2 = run_sweep(sw, out, workers, args.scheduler, progress=not args.quiet,
                           force=force)
            res["finished"] += r2["finished"]
            res["failed"] += r2["failed"]
            res["failed_total"] = r2["failed_total"]
            res["runs"] = r2["runs"]
        res["width"] = width
    dt = time.perf_counter() - t0
    print(f"{sw.name}: {res['runs']} runs ({res['skipped']} already done, {res['finished']} run "
          f"now, {res['failed']} failed) in {dt:.1f}s")
    print(f"results: {out}/runs/part-*.parquet  (query: spiral query {out} \"SELECT ...\")")
    if until is not None and res["width"] > until:
        print(f"error: {sw.name}: the target width {until} was not reached with "
              f"{sw.replicates} replicates (widest interval {res['width']:.4f}); raise "
              "--max-replicates", file=sys.stderr)
        return 1
    if res["failed_total"]:
        print(f"error: {sw.name}: {res['failed_total']} of {res['runs']} runs failed; their "
              f"errors are in the status column: spiral query {out} \"SELECT run, status FROM "
              "runs WHERE status <> 'ok'\"", file=sys.stderr)
        return 1
    return 0


def validate_sweep_file(path: str) -> bool:
    """True if the file looks like a sweep file (has `base` and `parameters`)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return "base" in raw and "parameters" in raw
