"""The `spiral` command: run, validate (and, as they land, sweep, analyse, ui, bench, compare).

A thin layer over the Model API. Bad input is one line on stderr naming the file, the key and
what was expected, with exit code 2; nothing is written before the input is known to be good.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

from .errors import UsageError  # defined apart: analysis raises it too
from .scenario import ScenarioError

DEFAULT_SCENARIO = "scenarios/baseline.toml"
EXIT_BAD_INPUT = 2




class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, as for scenario errors
        raise UsageError(f"{self.prog}: {message}")


def _scenario_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    path = Path(DEFAULT_SCENARIO)
    if not path.exists():  # run from elsewhere: the packaged scenarios next to sim/
        alt = Path(__file__).resolve().parent.parent / DEFAULT_SCENARIO
        if alt.exists():
            return alt
    return path


def cmd_run(args) -> int:
    from .model import AllianceModel
    from .outputs import RUN_FILES, UI_FILES, prepare_folder, run_bytes, write_run
    from .scenario import load

    flags = []
    if args.steps is not None:
        flags.append(("--steps", f"steps={args.steps}"))
    if args.seed is not None:
        flags.append(("--seed", f"seed={args.seed}"))
    scenario = load(_scenario_path(args.scenario), list(args.set or []), flags)
    out = Path(args.out) if args.out else Path("runs") / f"{scenario.name}-{scenario.seed}"
    # the output folder is checked (and its temporary made) before the run, not after it
    stage = prepare_folder(out, RUN_FILES + UI_FILES, run_bytes(scenario.values),
                           label="--out" if args.out else "output folder")
    with stage:
        t0 = time.perf_counter()
        compiled_ready()
        model = AllianceModel(scenario)
        if args.quiet:
            model.run()
        else:
            from tqdm import tqdm

            with tqdm(total=scenario.steps, desc=scenario.name, unit="step", leave=False,
                      file=sys.stderr) as bar:
                model.run(progress=bar.update)
        paths = write_run(model, stage)
    s = model.summary()
    elapsed = time.perf_counter() - t0
    print(f"{scenario.name} seed {s['seed']}: {s['steps']} steps, {s['alliances_formed']} "
          f"alliances ({s['failure_rate']:.0%} ended), mean trust {s['mean_trust']:.2f}, "
          f"spiral in {s['share_spiral_in']:.0%} / out {s['share_spiral_out']:.0%} / undecided "
          f"{s['share_undecided']:.0%} [{elapsed:.1f}s]")
    print(f"results: {out}/  (summary.json, timeseries.parquet, alliances.parquet, "
          f"network.graphml)")
    print(f"plot:    {paths['figure']}")
    return 0


def cmd_validate(args) -> int:
    from analysis.sweep import load_sweep

    from .scenario import load, read_toml

    bad = 0
    for f in args.files:
        try:
            raw, _ = read_toml(f)  # bounded and regular files only (no /dev/zero, no FIFO)
            if "base" in raw and "parameters" in raw:  # a sweep file
                sw = load_sweep(f)
                print(f"{f}: ok (sweep: {len(sw.points)} points x {sw.replicates} replicates = "
                      f"{sw.n_runs} runs)")
            else:
                load(f, args.set or [])
                print(f"{f}: ok")
        except ScenarioError as e:
            print(f"error: {e}", file=sys.stderr)
            bad += 1
    return EXIT_BAD_INPUT if bad else 0


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="spiral", description="Trust and openness spirals in strategic alliances.")
    from . import __version__

    ap.add_argument("--version", action="version", version=f"alliance-spiral {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run one scenario and write its results")
    r.add_argument("scenario", nargs="?", help=f"scenario TOML file (default {DEFAULT_SCENARIO})")
    r.add_argument("--steps", type=int, help="override the number of steps")
    r.add_argument("--seed", type=int, help="override the seed")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a scenario key, e.g. mindset.abundance_share=0.3 (repeatable)")
    r.add_argument("--out", help="output folder (default runs/<name>-<seed>/)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check scenario files without running them")
    v.add_argument("files", nargs="+", help="scenario TOML files")
    v.add_argument("--set", action="append", metavar="KEY=VALUE", help="check with overrides")
    v.set_defaults(func=cmd_validate)
    s = sub.add_parser("sweep", help="run a parameter sweep (resumable; local or Dask)")
    s.add_argument("sweep", help="sweep TOML file")
    s.add_argument("--out", help="results folder (default runs/sweep-<name>/)")
    s.add_argument("--workers", type=int, help="local worker processes (default: core count)")
    s.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a Dask distributed cluster, e.g. tcp://127.0.0.1:8786")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--force", action="store_true",
                   help="resume even though code, libraries or scenario files changed (recorded)")
    s.add_argument("--until-width", type=float, metavar="W",
                   help="add replicates until every point's 95%% interval is at most W wide")
    s.add_argument("--outcome", help="summary metric for --until-width (default mean_trust)")
    s.add_argument("--max-replicates", type=int, help="cap for --until-width (default 1000)")
    s.set_defaults(func=cmd_sweep)

    q = sub.add_parser("query", help="SQL over a sweep's results (DuckDB; tables runs, series)")
    q.add_argument("dir", help="sweep results folder")
    q.add_argument("sql", help='e.g. "SELECT avg(mean_trust) FROM runs"')
    q.add_argument("--csv", metavar="FILE", help="write the result as CSV")
    q.add_argument("--parquet", metavar="FILE", help="write the result as Parquet")
    q.set_defaults(func=cmd_query)

    an = sub.add_parser("analyse", aliases=["analyze"],
                        help="figures and a report on the laws from a sweep's results")
    an.add_argument("dir", help="sweep results folder")
    an.add_argument("--out", help="report folder (default DIR/report/)")
    an.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    an.add_argument("--seed", type=int, default=12345, help="bootstrap seed (default 12345)")
    an.add_argument("--allow-incomplete", action="store_true",
                    help="analyse an incomplete, duplicated or mixed-provenance sweep anyway "
                         "(every output then says so on its first line)")
    an.add_argument("--target-width", type=float, metavar="W",
                    help="report whether each 95%% interval is at most W wide")
    an.set_defaults(func=cmd_analyse)

    d = sub.add_parser("discover", help="scenario discovery (PRIM and CART, EMA Workbench)")
    d.add_argument("dir", help="sweep results folder")
    d.add_argument("--outcome", required=True,
                   help='the cases of interest, e.g. "failure_rate > 0.5"')
    d.add_argument("--out", help="output folder (default DIR/discover/)")
    d.add_argument("--threshold", type=float, default=0.8,
                   help="PRIM's minimum box density (default 0.8)")
    d.add_argument("--allow-incomplete", action="store_true",
                   help="use an incomplete sweep anyway (outputs say so)")
    d.set_defaults(func=cmd_discover)

    u = sub.add_parser("ui", help="open the trainer UI (Solara) in the browser")
    u.add_argument("scenario", nargs="?", help="scenario to start with (default baseline.toml)")
    u.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    u.add_argument("--host", default="localhost", help="host to listen on (default localhost)")
    u.add_argument("--scenarios", help="folder of the scenario picker (default scenarios/)")
    u.set_defaults(func=cmd_ui)

    c = sub.add_parser("compare", help="run two scenarios over N seeds and compare outcomes")
    c.add_argument("a", help="scenario A (TOML)")
    c.add_argument("b", help="scenario B (TOML)")
    c.add_argument("--seeds", type=int, default=10, help="seeds per scenario (default 10)")
    c.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key in both scenarios (repeatable)")
    c.add_argument("--out", help="output folder (default runs/compare-<A>-vs-<B>/)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_compare)

    mc = sub.add_parser("mechanisms", help="over seeds: ages at ending, hazard by age, flips, "
                                           "outcomes by pair type")
    mc.add_argument("scenario", nargs="?", default=str(_scenario_path(None)),
                    help="scenario file (default scenarios/baseline.toml)")
    mc.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    mc.add_argument("--first-seed", type=int, default=1, help="first seed (default 1)")
    mc.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    mc.add_argument("--json", help="also write the figures to this JSON file (- for stdout)")
    mc.add_argument("--quiet", action="store_true", help="no progress bar")
    mc.set_defaults(func=cmd_mechanisms)

    b = sub.add_parser("bench", help="time the kernel's paths against the per-agent reference, "
                                    "small runs and sweeps")
    b.add_argument("--ties", default="10000,50000,100000,1000000",
                   help="comma-separated tie counts (default 10000,50000,100000,1000000)")
    b.add_argument("--steps", type=int, default=20,
                   help="steps per timed block (default 20)")
    b.add_argument("--blocks", type=int, default=3,
                   help="timed blocks per size and path; the median block is reported "
                        "(default 3)")
    b.add_argument("--json", help="also write the figures to this JSON file")
    b.add_argument("--no-reference", action="store_true", help="skip the reference")
    b.add_argument("--no-cold", action="store_true", help="skip the cold `spiral run` timing")
    b.add_argument("--no-numpy", action="store_true", help="skip the numpy path's timings")
    b.add_argument("--no-baseline", action="store_true", help="skip the baseline-size runs/s")
    b.add_argument("--no-sweep", action="store_true", help="skip the sweep throughput")
    b.add_argument("--sweep-runs", type=int, default=1000,
                   help="runs per sweep throughput measurement (default 1000: enough to spread "
                        "the 2-worker pool's start-up)")
    b.add_argument("--sweep", action="store_true",
                   help="benchmark sweeps instead: runs/s with 1 and 2 workers, parent memory")
    b.add_argument("--ui", action="store_true",
                   help="benchmark the UI instead: Step to redrawn figures in chromium at 200 "
                        "organizations, play redraws/s at 60 (and the server-side frame)")
    b.add_argument("--runs", type=int, default=10_000,
                   help="runs in the sweep memory benchmark (default 10000)")
    b.set_defaults(func=cmd_bench)

    # spiral calibrate (issue 14): ABC-SMC fit to published patterns; analysis/calibration.py
    cal = sub.add_parser("calibrate", help="fit free parameters to published patterns "
                                           "(ABC-SMC, pyabc; resumable; local or Dask)")
    cal.add_argument("targets", help="targets TOML file, e.g. data/targets.toml")
    cal.add_argument("--scenario", help="scenario to calibrate (default scenarios/baseline.toml)")
    cal.add_argument("--population", type=int, help="particles per generation (default: the targets "
                                                            "file's [defaults]; 150)")
    cal.add_argument("--generations", type=int, help="ABC-SMC generations (default: [defaults]; 5)")
    cal.add_argument("--seeds", type=int, help="model seeds per evaluation (default 1)")
    cal.add_argument("--workers", type=int, help="local worker processes (default 2)")
    cal.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler, e.g. "
                                                            "tcp://127.0.0.1:8786")
    cal.add_argument("--out", help="output folder (default runs/calibrate-<targets>/)")
    cal.add_argument("--ppc", type=int, help="posterior predictive draws (default 40)")
    cal.add_argument("--seed", type=int, help="calibration seed (default 1)")
    cal.add_argument("--point", help="calibrated point: best (default; the particle whose runs "
                                     "on common seeds are closest to the targets), medoid (the "
                                     "most central particle), median (marginal medians) or mode")
    cal.add_argument("--quiet", action="store_true", help="no progress within a generation")

    def cmd_calibrate(args) -> int:
        from analysis.calibration import main_calibrate

        return main_calibrate(args)

    cal.set_defaults(func=cmd_calibrate)
    return ap


def cmd_sweep(args) -> int:
    from analysis.sweep import main_sweep

    if args.workers is not None and args.workers < 1:
        raise UsageError("spiral sweep: --workers: expected an integer >= 1")
    return main_sweep(args)


def cmd_query(args) -> int:
    from analysis.query import main_query

    return main_query(args)


def cmd_analyse(args) -> int:
    from analysis.analyse import main_analyse

    return main_analyse(args)


def cmd_discover(args) -> int:
    from analysis.discovery import main_discover

    return main_discover(args)


def cmd_ui(args) -> int:
    from .scenario import load

    folder = Path(args.scenarios) if args.scenarios else Path(__file__).resolve().parent.parent \
        / "scenarios"
    if args.scenario:
        path = Path(args.scenario)
        if not path.exists() and (folder / path.name).exists():
            path = folder / path.name
        load(path)  # a broken file is reported here, before the server starts
        if not args.scenarios:
            folder = path.resolve().parent
        first = path.name
    else:
        first = "baseline.toml"
    if not folder.is_dir():
        raise UsageError(f"spiral ui: --scenarios: expected a folder, got {folder}")
    if not 0 < args.port < 65536:
        raise UsageError(f"spiral ui: --port: expected 1..65535, got {args.port}")
    _check_listen(args.host, args.port)
    env = {**os.environ, "SPIRAL_SCENARIOS": str(folder.resolve()),
           "SPIRAL_UI_SCENARIO": first}
    cmd = [sys.executable, "-m", "solara", "run", "sim.ui.page", "--host", args.host, "--port",
           str(args.port), "--production", "--no-open"]
    print(f"alliance-spiral UI on http://{args.host}:{args.port}/  (Ctrl-C to stop)",
          flush=True)
    # exec: Solara *is* this process (same pid), so it cannot outlive a parent that is killed
    # and it gets Ctrl-C and SIGTERM directly
    sys.stderr.flush()
    os.chdir(Path(__file__).resolve().parent.parent)
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def _check_listen(host: str, port: int) -> None:
    """Fail with one line before Solara starts if the server could not listen there."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as e:
        raise UsageError(f"spiral ui: --host {host!r}: cannot resolve it "
                         f"({getattr(e, 'strerror', None) or e})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise UsageError(f"spiral ui: --port {port} on {host}: cannot listen there "
                             f"({e.strerror or e}); expected a free port") from None


def cmd_mechanisms(args) -> int:
    from analysis.mechanisms import main_mechanisms

    if args.seeds < 1 or args.first_seed < 0:
        raise UsageError("spiral mechanisms: --seeds: expected >= 1 (and --first-seed >= 0)")
    return main_mechanisms(args)


def cmd_compare(args) -> int:
    from analysis.compare import main_compare

    if args.seeds < 1:
        raise UsageError("spiral compare: --seeds: expected an integer >= 1")
    return main_compare(args)


def cmd_bench(args) -> int:
    from .bench import main_bench

    if args.ui:
        from .ui.bench import main_bench_ui

        return main_bench_ui(args)
    if args.sweep:
        from analysis.bench_sweep import main_bench_sweep

        if args.runs < 10:
            raise UsageError("spiral bench: --runs: expected an integer >= 10")
        res = main_bench_sweep(args.runs)
        if args.json:
            from .outputs import write_json

            write_json(Path(args.json), res)
        return 0
    if args.steps < 1:
        raise UsageError("spiral bench: --steps: expected an integer >= 1")
    if args.blocks < 1:
        raise UsageError("spiral bench: --blocks: expected an integer >= 1")
    try:
        sizes = [int(x) for x in args.ties.split(",")]
    except ValueError:
        raise UsageError(f"spiral bench: --ties: expected comma-separated integers, got "
                         f"{args.ties!r}") from None
    if not sizes or min(sizes) < 16:
        raise UsageError("spiral bench: --ties: expected tie counts >= 16")
    if args.sweep_runs < 2:
        raise UsageError("spiral bench: --sweep-runs: expected an integer >= 2")
    from analysis.bench_sweep import throughput

    return main_bench(args, throughput)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the exit flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _on_sigterm(signum, frame):  # like Ctrl-C: temporaries are removed on the way out
    raise KeyboardInterrupt


_compiling: threading.Thread | None = None


def compiled_ready() -> None:
    """Load (on a fresh install: compile, about a minute) the compiled path in a helper
    thread while this one waits, so that Ctrl-C or SIGTERM during a first compile still ends
    the command (in the compiling thread LLVM's callbacks would swallow it)."""
    global _compiling
    from . import kernel

    if kernel.NAME != "numba":
        return
    from . import kernel_batch

    failed: list[BaseException] = []

    def work():
        try:
            kernel_batch.warm_up()
        except BaseException as e:  # noqa: BLE001  (re-raised in the waiting thread)
            failed.append(e)

    _compiling = threading.Thread(target=work, name="spiral-compile", daemon=True)
    _compiling.start()
    while _compiling.is_alive():
        _compiling.join(0.1)
    if failed:
        raise failed[0]


def main(argv: list[str] | None = None) -> int:
    import signal

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rc = _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if _compiling is not None and _compiling.is_alive():
        # interrupted mid-compile: the output is cleaned up; leave without waiting for (or
        # finalizing under) the compiler
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _main(argv: list[str] | None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 path or name never raises on print
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    try:
        args = build_parser().parse_args(argv)
        rc = args.func(args)
        sys.stdout.flush()  # a broken pipe shows here, not in the interpreter's exit flush
        return rc
    except (ScenarioError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # `spiral ... | head -1`: the reader is gone; end quietly
        _quiet_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports it
    except OSError as e:  # the last net: a file the command could not read or write
        where = e.filename if e.filename is not None else "spiral"
        print(f"error: {ScenarioError(str(where), '', e.strerror or str(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print("error: spiral: out of memory; expected a smaller scenario or sweep",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
