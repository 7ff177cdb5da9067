"""Reliability round 2 (issue 17): hostile inputs, path tricks, kills, processes.

The contract for bad input: one line on stderr naming the file (or the option), the key and
what was expected; exit 2; no traceback; nothing written (no output folder, no temporary, no
parent folder made for it). Each class of failure from the issue is a row of CASES (in-process
through `cli.main`) or a test of its own where it needs a subprocess, a kill or a pipe.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim import cli, kernel, outputs
from sim.scenario import ScenarioError, check_size, defaults, estimate_bytes, load

from .conftest import ROOT, SCENARIOS

SPIRAL = str(Path(sys.executable).parent / "spiral")
DYAD = SCENARIOS / "dyad.toml"
TURN = SCENARIOS / "turnaround.toml"


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def contract(capsys, tmp_path: Path, args: list[str], expect: list[str], before: set[str]):
    """Exit 2, one line starting 'error: ' holding every fragment of expect, no traceback,
    nothing new under tmp_path."""
    rc = cli.main(args)
    cap = capsys.readouterr()
    assert rc == 2, (rc, cap.out, cap.err)
    assert "Traceback" not in cap.err
    assert cap.err.startswith("error: ") and cap.err.count("\n") == 1, cap.err
    for frag in expect:
        assert frag in cap.err, (frag, cap.err)
    assert listing(tmp_path) == before, listing(tmp_path) - before
    return cap.err


# --- the table: (id, files to create {name: text}, args, fragments the line must hold) -----
# {t} is tmp_path, {o} an output folder that must not appear.
LONG_NAME = "x" * 5000
CASES = [
    ("seed-negative-in-file", {"s.toml": "seed = -1\n"}, ["run", "{t}/s.toml"],
     ["s.toml", "seed: expected an integer >= 0"]),
    ("seed-negative-flag", {}, ["run", str(DYAD), "--seed", "-1"],
     ["dyad.toml (--seed): seed: expected an integer >= 0"]),
    ("seed-negative-set", {}, ["run", str(DYAD), "--set", "seed=-1"],
     ["dyad.toml (--set): seed: expected an integer >= 0"]),
    ("seed-too-large", {}, ["run", str(DYAD), "--set", f"seed={2**64}"],
     ["(--set): seed: expected an integer >= 0 and <= 9223372036854775807"]),
    ("compare-seed-negative", {}, ["compare", str(DYAD), str(DYAD), "--set", "seed=-1"],
     ["dyad.toml (--set): seed"]),
    ("compare-seed-file", {"s.toml": 'extends = "' + str(DYAD) + '"\nseed = -5\n'},
     ["compare", "{t}/s.toml", str(DYAD)], ["s.toml: seed"]),
    ("compare-seeds-zero", {}, ["compare", str(DYAD), str(DYAD), "--seeds", "0"],
     ["--seeds: expected an integer >= 1"]),
    ("steps-zero-named", {}, ["run", str(DYAD), "--steps", "0"],
     ["dyad.toml (--steps): steps: expected an integer >= 1, got 0"]),
    ("name-nul", {"s.toml": 'name = "a\\u0000b"\n'}, ["run", "{t}/s.toml"],
     ["s.toml: name: expected text without control characters"]),
    ("name-escape-char", {"s.toml": 'name = "red\\u001b[31m"\n'}, ["run", "{t}/s.toml"],
     ["s.toml: name: expected text without control characters"]),
    ("name-newline", {"s.toml": 'name = "a\\nb"\n'}, ["run", "{t}/s.toml"],
     ["s.toml: name: expected text without control characters"]),
    ("name-5000", {"s.toml": f'name = "{LONG_NAME}"\n'}, ["run", "{t}/s.toml"],
     ["s.toml: name: expected at most 100 characters, got 5,000"]),
    ("name-not-utf8", {}, ["run", str(DYAD), "--set", "name=caf\udce9"],
     ["(--set): name: expected UTF-8 text"]),
    ("name-path-escape", {"s.toml": 'name = "../../escape"\n'}, ["run", "{t}/s.toml"],
     ["s.toml: name: expected a name usable as a folder name"]),
    ("name-slash", {}, ["run", str(DYAD), "--set", "name=a/b"], ["name: expected a name"]),
    ("name-dotdot", {}, ["run", str(DYAD), "--set", "name=.."], ["name: expected a name"]),
    ("name-empty", {"s.toml": 'name = ""\n'}, ["run", "{t}/s.toml"], ["name: expected a name"]),
    ("description-nul", {"s.toml": 'description = "a\\u0000"\n'}, ["validate", "{t}/s.toml"],
     ["s.toml: description: expected text without control characters"]),
    ("set-superscript-index", {}, ["run", str(TURN), "--set", "interventions.².dose=1"],
     ["(--set): interventions.².dose: expected an intervention index from 0 to"]),
    ("set-arabic-digit-index", {}, ["run", str(TURN), "--set", "interventions.٣.dose=1"],
     ["interventions.٣.dose: expected an intervention index"]),
    ("set-huge-index", {}, ["run", str(TURN), "--set", "interventions.99999999999999.dose=1"],
     ["expected an intervention index"]),
    ("until-without-every", {"s.toml": "steps = 10\n[[interventions]]\nstep = 2\nkind = "
                             '"shock"\nuntil = 5\n'}, ["run", "{t}/s.toml"],
     ["s.toml: interventions[0].until: given without every"]),
    ("every-zero", {"s.toml": 'steps = 10\n[[interventions]]\nstep = 2\nkind = "shock"\n'
                    "every = 0\n"}, ["run", "{t}/s.toml"],
     ["s.toml: interventions[0].every: expected a whole number of steps >= 1, got 0"]),
    ("blame-level-tiny", {}, ["run", str(DYAD), "--set", "differences.blame_level=1e-20"],
     ["differences.blame_level: expected a number >= 0.01"]),
    ("blame-level-denormal", {"s.toml": "[differences]\nblame_level = 5e-324\n[mindset]\n"
                              "hurt_rate = 0\n"}, ["run", "{t}/s.toml"],
     ["s.toml: differences.blame_level: expected a number >= 0.01"]),
    ("interventions-too-many", {"s.toml": "steps = 100000\n" + '[[interventions]]\nstep = 1\n'
                                'kind = "shock"\ndose = 0.1\nevery = 1\n' * 200},
     ["run", "{t}/s.toml"], ["s.toml: interventions: 20,000,000 scheduled applications"]),
    ("dev-zero", {}, ["validate", "/dev/zero"], ["/dev/zero: expected a regular TOML file, got "
                                                 "a device"]),
    ("dev-zero-run", {}, ["run", "/dev/zero"], ["/dev/zero: expected a regular TOML file"]),
    ("huge-file", {"big.toml": "# " + "x" * (1 << 20) + "\n"}, ["validate", "{t}/big.toml"],
     ["big.toml: expected a scenario file of at most 1,048,576 bytes"]),
    ("not-utf8-file", {"l1.toml": b'name = "caf\xe9"\n'}, ["validate", "{t}/l1.toml"],
     ["l1.toml: expected UTF-8 text, got byte 0xe9 at offset 11"]),
    ("extends-self-symlink-loop", {"s.toml": 'extends = "loop.toml"\n', "loop.toml": "@loop"},
     ["validate", "{t}/s.toml"], ["s.toml: extends:"]),
    ("scenario-symlink-loop", {"loop.toml": "@loop"}, ["validate", "{t}/loop.toml"],
     ["loop.toml: cannot read: Too many levels of symbolic links"]),
    ("extends-cycle", {"a.toml": 'extends = "b.toml"\n', "b.toml": 'extends = "a.toml"\n'},
     ["validate", "{t}/a.toml"], ["extends: expected a chain without cycles, got a.toml -> "
                                  "b.toml -> a.toml"]),
    ("extends-1500-deep", {"@chain": 1500}, ["validate", "{t}/c0.toml"],
     ["c31.toml: extends: expected a chain of at most 32 files", "c0.toml)"]),
    ("extends-nul", {"s.toml": 'extends = "a\\u0000b"\n'}, ["validate", "{t}/s.toml"],
     ["s.toml: extends: expected a scenario file name"]),
    ("extends-directory", {"s.toml": 'extends = "."\n'}, ["validate", "{t}/s.toml"],
     ["s.toml: extends:"]),
    ("toml-deep-nesting", {"s.toml": "x = " + "[" * 5000 + "]" * 5000 + "\n"},
     ["validate", "{t}/s.toml"], ["s.toml"]),
    ("out-under-file", {"f": "x"}, ["run", str(DYAD), "--out", "{t}/f/sub"],
     ["--out", "/f is a file; expected a folder there"]),
    ("out-is-file", {"f": "x"}, ["run", str(DYAD), "--out", "{t}/f"],
     ["--out", "is a file; expected a folder"]),
    ("out-proc", {}, ["run", str(DYAD), "--out", "/proc/self/spiral-out"],
     ["--out /proc/self/spiral-out: is under /proc"]),
    ("out-sys", {}, ["run", str(DYAD), "--out", "/sys/spiral-out"], ["is under /sys"]),
    ("out-dev", {}, ["run", str(DYAD), "--out", "/dev/spiral-out"], ["is under /dev"]),
    ("out-dangling-symlink", {"dangling": "@/nonexistent/x"},
     ["run", str(DYAD), "--out", "{t}/dangling"], ["is a symbolic link to /nonexistent/x"]),
    ("out-foreign-folder", {"home/notes.txt": "mine"}, ["run", str(DYAD), "--out", "{t}/home"],
     ["holds files that are not outputs of this command (e.g. 'notes.txt')"]),
    ("out-name-too-long", {}, ["run", str(DYAD), "--out", "{t}/" + "y" * 300],
     ["expected folder names of at most 255 bytes"]),
    ("out-path-too-long", {}, ["run", str(DYAD), "--out", "{t}/" + "/".join(["q" * 250] * 20)],
     ["cannot write there: File name too long"]),
    ("out-compare-under-file", {"f": "x"}, ["compare", str(DYAD), str(DYAD), "--seeds", "1",
                                            "--out", "{t}/f/c"], ["/f is a file"]),
]


def _make(tmp_path: Path, files: dict) -> None:
    for name, text in files.items():
        if name == "@chain":
            for i in range(text):
                (tmp_path / f"c{i}.toml").write_text(f'extends = "c{i + 1}.toml"\n')
            (tmp_path / f"c{text}.toml").write_text("steps = 3\n")
            continue
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, str) and text.startswith("@"):  # a symlink ("@loop": to itself)
            os.symlink(path if text == "@loop" else text[1:], path)
        elif isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)


@pytest.mark.parametrize("files, args, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, files,
                                                       args, expect):
    monkeypatch.chdir(tmp_path)  # a default runs/<name>-<seed>/ would land here
    _make(tmp_path, files)
    args = [a.replace("{t}", str(tmp_path)) for a in args]
    if args[0] in ("run", "compare") and "--out" not in args:
        args += ["--out", str(tmp_path / "o")]
    if args[0] in ("run", "compare"):
        args.append("--quiet")
    before = listing(tmp_path)
    contract(capsys, tmp_path, args, expect, before)


def test_fifo_scenario_fails_at_once(tmp_path):
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    r = subprocess.run([SPIRAL, "validate", str(fifo)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr == f"error: {fifo}: expected a regular TOML file, got a FIFO\n"


def test_bom_is_accepted(tmp_path, capsys):
    f = tmp_path / "bom.toml"
    f.write_bytes(b"\xef\xbb\xbfsteps = 3\n")
    assert cli.main(["validate", str(f)]) == 0
    assert load(f).steps == 3


def test_every_with_until_still_works():
    sc = load(TURN, ["interventions.0.every=5", "interventions.0.until=40"])
    assert sc.values["interventions"][0]["every"] == 5


def test_non_utf8_argv_through_console_script(tmp_path):
    """A non-UTF-8 file name and a non-UTF-8 --set value: one line, no UnicodeEncodeError."""
    bad = os.fsencode(str(tmp_path)) + b"/caf\xe9.toml"
    r = subprocess.run([SPIRAL, "validate", bad], capture_output=True, timeout=60)
    assert r.returncode == 2 and b"Traceback" not in r.stderr
    assert r.stderr.count(b"\n") == 1 and b"file not found" in r.stderr
    r = subprocess.run([SPIRAL, "run", str(DYAD), "--set", b"name=caf\xe9", "--out",
                        str(tmp_path / "o")], capture_output=True, timeout=60)
    assert r.returncode == 2 and b"Traceback" not in r.stderr, r.stderr
    assert b"name: expected UTF-8 text" in r.stderr and not (tmp_path / "o").exists()
    # and a scenario *file* whose name is not UTF-8 runs, its path escaped in every output
    f = tmp_path / os.fsdecode(b"d\xe9.toml")
    f.write_text(DYAD.read_text())
    r = subprocess.run([SPIRAL, "run", os.fsencode(str(f)), "--steps", "3", "--quiet",
                        "--out", str(tmp_path / "ok")], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert outputs_complete(tmp_path / "ok")


# --- outputs: read-only, full, failing mid-write -----------------------------------------
def _fail(err):
    def f(*a, **k):
        raise OSError(err, os.strerror(err))
    return f


@pytest.mark.parametrize("what, err, expect", [
    ("mkdtemp", errno.EROFS, "cannot write there: Read-only file system"),
    ("mkdtemp", errno.EACCES, "cannot write there: Permission denied"),
    ("mkdtemp", errno.ENOSPC, "cannot write there: No space left on device"),
    ("statvfs", None, "MB free on that filesystem; the outputs need about"),
])
def test_unwritable_out_fails_before_the_run(tmp_path, capsys, monkeypatch, what, err, expect):
    ran = []
    monkeypatch.setattr("sim.model.AllianceModel.run", lambda self, *a, **k: ran.append(1))
    if what == "mkdtemp":
        monkeypatch.setattr(outputs.tempfile, "mkdtemp", _fail(err))
    else:
        class Full:
            f_bavail, f_frsize = 10, 4096
        monkeypatch.setattr(outputs.os, "statvfs", lambda p: Full())
    before = listing(tmp_path)
    contract(capsys, tmp_path, ["run", str(DYAD), "--quiet", "--out",
                                str(tmp_path / "a" / "b" / "o")], [expect], before)
    assert not ran  # refused before any step
    assert not (tmp_path / "a").exists()  # parents made for it are removed again


def test_disk_full_while_writing_leaves_nothing_and_old_run_intact(tmp_path, capsys,
                                                                   monkeypatch):
    out = tmp_path / "o"
    assert cli.main(["run", str(DYAD), "--quiet", "--steps", "5", "--out", str(out)]) == 0
    capsys.readouterr()
    first = (out / "summary.json").read_text()
    monkeypatch.setattr(outputs, "write_graphml", _fail(errno.ENOSPC))
    before = listing(tmp_path)
    contract(capsys, tmp_path, ["run", str(DYAD), "--quiet", "--steps", "5", "--seed", "2",
                                "--out", str(out)],
             [f"{out}: cannot write the results: No space left on device"], before)
    assert (out / "summary.json").read_text() == first  # the previous run, untouched


def outputs_complete(folder: Path) -> bool:
    names = sorted(p.name for p in folder.iterdir())
    if names != sorted(outputs.RUN_FILES):
        return False
    pq.read_table(folder / "timeseries.parquet")
    pq.read_table(folder / "alliances.parquet")
    nx.read_graphml(folder / "network.graphml")
    json.loads((folder / "summary.json").read_text())
    return True


def test_rerun_replaces_the_folder_as_a_whole(tmp_path, capsys):
    out = tmp_path / "o"
    for seed in (1, 2):
        assert cli.main(["run", str(DYAD), "--quiet", "--steps", "4", "--seed", str(seed),
                         "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 2
    assert outputs_complete(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no temporaries left
    # a symlink to a run folder: the folder it points to is replaced, the link kept
    link = tmp_path / "link"
    link.symlink_to(out)
    assert cli.main(["run", str(DYAD), "--quiet", "--steps", "4", "--seed", "3", "--out",
                     str(link)]) == 0
    assert link.is_symlink() and json.loads((out / "summary.json").read_text())["seed"] == 3


@pytest.mark.slow
def test_rerun_killed_at_random_moments_never_mixes_two_runs(tmp_path):
    """Kill `spiral run` seed 2 into a folder that holds a seed-1 run: afterwards the folder is
    the whole seed-1 run or the whole seed-2 run (the issue: 4 of 5 kills mixed them)."""
    out = tmp_path / "o"
    base = [SPIRAL, "run", str(SCENARIOS / "baseline.toml"), "--quiet", "--steps", "1500",
            "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(base + ["--seed", "1"], check=True, capture_output=True, timeout=300)
    full = time.perf_counter() - t0  # kill anywhere from start-up to just after the end
    rng = random.Random(5)
    kills = 0
    seeds_seen = set()
    for _ in range(8):
        p = subprocess.Popen(base + ["--seed", "2"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.15) * full)
        if p.poll() is None:
            p.kill()
            kills += 1
        p.wait()
        assert outputs_complete(out)
        seeds = {json.loads((out / "summary.json").read_text())["seed"]}
        for name in ("timeseries.parquet", "alliances.parquet"):
            meta = pq.read_schema(out / name).metadata
            seeds.add(int(meta[b"alliance_spiral.seed"]))
        g = nx.read_graphml(out / "network.graphml")
        seeds.add(int(g.graph["seed"]))
        assert len(seeds) == 1, seeds  # one run, never two
        seeds_seen |= seeds
        if seeds == {2}:  # finished: put seed 1 back for the next round
            subprocess.run(base + ["--seed", "1"], check=True, capture_output=True,
                           timeout=300)
    assert kills >= 3
    # the killed runs' temporaries are removed by the next run next to them
    subprocess.run(base + ["--seed", "1"], check=True, capture_output=True, timeout=300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    print(f"rerun kills: {kills}, folder always one run (seeds seen {sorted(seeds_seen)})")


def test_stale_temporaries_are_cleaned(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["run", str(DYAD), "--quiet", "--steps", "3", "--out", str(out)]) == 0
    dead = 2**22 + 12345  # above the default pid_max: never running
    host = outputs._host()
    stale_dir = tmp_path / f".o.{host}-{dead}.abcd1234.tmp"
    stale_dir.mkdir()
    (stale_dir / "summary.json").write_text("{}")
    legacy = out / ".summary.json.k2j4h5g6.tmp"  # older releases: no pid in the name
    legacy.write_text("half")
    os.utime(legacy, (time.time() - 3600, time.time() - 3600))
    alive = tmp_path / f".o.{host}-{os.getpid()}.zzzz9999.tmp"  # ours: must stay
    alive.mkdir()
    other = tmp_path / f".o.otherhost-{dead}.yyyy8888.tmp"  # another machine's: must stay
    other.mkdir()
    assert cli.main(["run", str(DYAD), "--quiet", "--steps", "3", "--out", str(out)]) == 0
    assert not stale_dir.exists() and not legacy.exists()
    assert alive.exists() and other.exists()
    # single files (sweep parts, reports): a dead writer's temporary goes on the next write
    sweep_runs = tmp_path / "runs"
    sweep_runs.mkdir()
    part_tmp = sweep_runs / f".part-000001.parquet.{host}-{dead}.q1w2e3r4.tmp"
    part_tmp.write_bytes(b"PAR1")
    outputs._cleaned.discard(str(sweep_runs))
    outputs.atomic_write(sweep_runs / "part-000002.parquet", lambda t: t.write_bytes(b"x"))
    assert not part_tmp.exists()


# --- no NaN or inf in any output --------------------------------------------------------
def test_nan_never_reaches_an_output(tmp_path, monkeypatch):
    from sim.model import AllianceModel

    m = AllianceModel(DYAD)
    m.run(3)
    real = m.timeseries

    def with_nan():
        df = real()
        df.loc[1, "mean_abundance"] = float("nan")
        return df
    monkeypatch.setattr(m, "timeseries", with_nan)
    with pytest.raises(ScenarioError) as e:
        outputs.write_run(m, tmp_path / "o")
    assert "timeseries.parquet: mean_abundance" in str(e.value) and "row 2" in str(e.value)
    assert not (tmp_path / "o").exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(m, "timeseries", real)
    summary = m.summary()
    monkeypatch.setattr(m, "summary", lambda: {**summary, "mean_trust": float("inf")})
    with pytest.raises(ScenarioError, match="summary.json: mean_trust"):
        outputs.write_run(m, tmp_path / "o")
    # JSON in general: allow_nan=False, non-finite numbers become null
    outputs.write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("-inf")]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.0, None]}


def test_graphml_is_well_formed_whatever_the_text(tmp_path):
    g = nx.Graph()
    g.add_node(0, mindset="a<b>&\"c\"\x01\udcff")
    g.add_edge(0, 1, trust=0.5, alliance=3, regime="spiral_in")
    summary = {"scenario": "dir\x1b/x\udce9.toml", "scenario_sha256": "", "seed": 1,
               "version": "0", "name": "n"}
    outputs.write_graphml(tmp_path / "n.graphml", g, summary)
    h = nx.read_graphml(tmp_path / "n.graphml")
    assert h.nodes["0"]["mindset"] == 'a<b>&"c"\\x01\\udcff'
    assert h.graph["scenario"] == "dir\\x1b/x\\udce9.toml"
    assert h.edges["0", "1"]["alliance"] == 3 and h.edges["0", "1"]["trust"] == 0.5


def test_graphml_equals_networkx_output(tmp_path):
    from sim.model import AllianceModel

    m = AllianceModel(SCENARIOS / "baseline.toml")
    m.run(10)
    g, s = m.network(), m.summary()
    ref = g.copy()
    ref.graph.update({k: str(s[k]) for k in ("scenario", "scenario_sha256", "seed", "version",
                                             "name")})
    nx.write_graphml(ref, tmp_path / "a.graphml")
    outputs.write_graphml(tmp_path / "b.graphml", g, s)
    assert (tmp_path / "a.graphml").read_bytes() == (tmp_path / "b.graphml").read_bytes()


# --- query --------------------------------------------------------------------------------
@pytest.mark.parametrize("sql, fragment", [
    ("SELECT CAST('abc' AS INTEGER) FROM runs", "Conversion Error"),
    ("SELECT error('boom') FROM runs", "boom"),
    ("SELECT nope FROM runs", "nope"),
    ("SELEC 1", "syntax error"),
])
def test_query_sql_errors_are_one_line(tmp_path, capsys, sql, fragment):
    (tmp_path / "runs").mkdir()
    pq.write_table(pa.table({"run": [0, 1], "mean_trust": [0.1, 0.2]}),
                   tmp_path / "runs" / "part-000000.parquet")
    before = listing(tmp_path)
    err = contract(capsys, tmp_path, ["query", str(tmp_path), sql], ["query: SQL: "], before)
    assert fragment.lower() in err.lower()


# --- processes and pipes ------------------------------------------------------------------
def test_broken_pipe_ends_quietly():
    files = [str(f) for f in sorted(SCENARIOS.glob("*.toml"))] * 20
    p = subprocess.Popen([SPIRAL, "validate", *files], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.readline()  # like `| head -1`
    p.stdout.close()
    err = p.stderr.read()
    rc = p.wait(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
    assert rc in (0, 141, -signal.SIGPIPE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_spiral_ui_is_solara_itself_and_dies_with_a_kill(tmp_path):
    """`spiral ui` execs Solara: the pid we started is the server, so SIGKILL of it leaves no
    server behind (before: a child that survived its parent)."""
    port = _free_port()
    p = subprocess.Popen([SPIRAL, "ui", "--port", str(port), "--host", "127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes().split(b"\0")
            if b"solara" in cmdline:
                break
            time.sleep(0.2)
        assert b"solara" in cmdline, cmdline
        kids = _children(p.pid)
    finally:
        p.kill()
        p.wait(timeout=30)
    time.sleep(0.5)
    for k in kids:  # anything Solara itself started is gone with it
        assert not Path(f"/proc/{k}").exists() or b"zombie" in Path(f"/proc/{k}/status") \
            .read_bytes().lower()


def test_compare_does_not_import_the_cli():
    """analysis.compare must not import sim.cli (the import circle of the layout check)."""
    tree = ast.parse((ROOT / "analysis" / "compare.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    assert "sim.cli" not in names and "sim" not in names


# --- honest limits ------------------------------------------------------------------------
PEAK = """
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True)
assert r.returncode == 0, r.stderr
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def measured_peak(tmp_path: Path, sets: list[str]) -> tuple[int, int]:
    args = [SPIRAL, "run", str(SCENARIOS / "baseline.toml"), "--quiet", "--out",
            str(tmp_path / "peak")]
    for s in sets:
        args += ["--set", s]
    r = subprocess.run([sys.executable, "-c", PEAK, *args], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr
    est, _ = estimate_bytes(load(SCENARIOS / "baseline.toml", sets).values)
    return int(r.stdout.split()[-1]), est


@pytest.mark.parametrize("sets", [
    ["ecosystem.graph=complete", "ecosystem.organizations=300", "steps=10"],
    ["ecosystem.organizations=1000", "ecosystem.individuals_per_organization=8", "steps=10"],
    ["ecosystem.graph=watts_strogatz", "ecosystem.organizations=20000", "steps=10"],
])
def test_memory_estimate_within_1_5x_of_measured_peak(tmp_path, sets):
    peak, est = measured_peak(tmp_path, sets)
    assert est / 1.5 <= peak <= est * 1.5, (peak / 2**20, est / 2**20)


@pytest.mark.slow
def test_memory_estimate_complete_graph_of_1000(tmp_path):
    """The issue's example: the estimate said 0.45 GiB, the peak was 2.47 GiB."""
    peak, est = measured_peak(tmp_path, ["ecosystem.graph=complete",
                                         "ecosystem.organizations=1000", "steps=20"])
    assert est / 1.5 <= peak <= est * 1.5, (peak / 2**20, est / 2**20)
    print(f"complete 1,000: peak {peak / 2**20:.0f} MiB, estimate {est / 2**20:.0f} MiB")


def test_large_erdos_renyi_is_refused_up_front_or_fast():
    """erdos_renyi at 200,000 organizations: refused at once with the time it would take while
    sim.state builds it with the O(n^2) gnp_random_graph, or built in seconds."""
    from sim import scenario

    v = defaults()
    v["ecosystem"].update(graph="erdos_renyi", organizations=200_000)
    t0 = time.perf_counter()
    if scenario.GNP_QUADRATIC:
        with pytest.raises(ScenarioError) as e:
            check_size(v, "x.toml")
        assert e.value.key == "ecosystem.organizations" and "minutes" in e.value.message
        assert time.perf_counter() - t0 < 2
    else:
        from types import SimpleNamespace

        from sim.state import make_graph

        g = make_graph(SimpleNamespace(**v["ecosystem"]), 1)
        assert g.number_of_nodes() == 200_000 and time.perf_counter() - t0 < 60


@pytest.mark.slow
@pytest.mark.skipif("numba" not in kernel.available(), reason="numba not importable")
def test_sigterm_during_a_first_compile_ends_the_run(tmp_path):
    """A fresh install's first run compiles the step (about a minute): SIGTERM then ends it at
    once (exit 130, no traceback, the temporary folder removed), not after the compile."""
    out = tmp_path / "o"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path.parent / f"{tmp_path.name}-cache")}
    p = subprocess.Popen([SPIRAL, "run", str(SCENARIOS / "baseline.toml"), "--quiet",
                          "--out", str(out)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not any(tmp_path.iterdir()):
        time.sleep(0.1)
    time.sleep(3)  # well inside the compile
    t = time.time()
    p.send_signal(signal.SIGTERM)
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 130 and "Traceback" not in err, err
    assert time.time() - t < 15 and list(tmp_path.iterdir()) == []


def test_sigterm_and_huge_numbers(tmp_path, capsys):
    """SIGTERM ends a run like Ctrl-C (exit 130, its temporary folder removed); integers of
    hundreds of digits and non-string keys are one-line errors, not OverflowError/TypeError."""
    # first a short run, so the compiled step is in numba's disk cache: a signal that lands
    # while LLVM compiles it (a fresh checkout's first run) is swallowed by LLVM's callback
    warm = tmp_path.parent / f"{tmp_path.name}-warm"
    subprocess.run([SPIRAL, "run", str(DYAD), "--quiet", "--steps", "2", "--out", str(warm)],
                   check=True, capture_output=True, timeout=300)
    shutil.rmtree(warm)
    out = tmp_path / "o"
    p = subprocess.Popen([SPIRAL, "run", str(SCENARIOS / "baseline.toml"), "--quiet",
                          "--steps", "5000", "--out", str(out)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not any(tmp_path.iterdir()):
        time.sleep(0.1)  # the temporary folder appears before the first step
    p.send_signal(signal.SIGTERM)
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 130 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []
    huge = "1" + "0" * 400
    for override in (f"initial.trust={huge}", f"interventions.0.dose={huge}",
                     f"interventions.0.step={huge}", f"steps={huge}"):
        assert cli.main(["validate", str(TURN), "--set", override]) == 2
        e = capsys.readouterr().err
        assert e.count("\n") == 1 and "Traceback" not in e and len(e) < 400, e
    from sim.scenario import from_dict
    for raw in ({1: 2}, {"mindset": {3: 1}}, {"interventions": [{7: 1}]}, [1, 2]):
        with pytest.raises(ScenarioError):
            from_dict(raw, "api")


# --- fuzz: hostile names and output paths -------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 1000)), deadline=None,
                derandomize=True, suppress_health_check=list(HealthCheck))
hostile_text = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.sampled_from(list("./\\\x00\x01\n\r\t ~-é\u202e\ufeff")
                                     + ["\udcff"]), max_size=12),
    st.sampled_from(["..", ".", "", "~", "-", "--out", "runs", "file", "file/x"]),
    st.integers(1, 400).map(lambda n: "n" * n))


@FUZZ
@given(hostile_text)
def test_fuzz_names_are_safe_folder_names_or_one_line(name):
    """Any name: refused with a ScenarioError naming `name`, or the default folder
    runs/<name>-<seed> is one component inside runs/."""
    from sim.scenario import from_dict

    try:
        sc = from_dict({"name": name}, "fuzz")
    except ScenarioError as e:
        assert e.key == "name" and "\n" not in str(e)
        return
    folder = Path("runs") / f"{sc.name}-{sc.seed}"
    assert folder.parent == Path("runs") and folder.name not in ("", ".", "..")
    assert len(os.fsencode(folder.name)) <= 255
    assert os.path.normpath(folder).startswith("runs" + os.sep)
    folder.name.encode("utf-8")


@FUZZ
@given(st.lists(hostile_text, min_size=1, max_size=4))
def test_fuzz_out_paths_checked_up_front(tmp_path_factory, parts):
    """Any --out: prepare_folder refuses with one line, or gives a temporary folder that an
    abort removes without a trace."""
    tmp = tmp_path_factory.mktemp("o")
    (tmp / "file").write_text("x")
    text = str(tmp) + "/" + "/".join(parts)
    try:
        stage = outputs.prepare_folder(text)
    except ScenarioError as e:
        assert "\n" not in str(e) and str(e).startswith("--out ")
    else:
        assert stage.tmp.is_dir() and stage.tmp.parent == stage.target.parent
        stage.abort()
    assert sorted(p.name for p in tmp.iterdir()) == ["file"]


def _extreme_cases():
    from sim.scenario import SCHEMA

    for sec, keys in SCHEMA.items():
        for k, spec in keys.items():
            if sec and spec.kind == "float":
                vals = [spec.hi] + ([float(np.nextafter(spec.lo, np.inf))] if spec.lo_open
                                    else [spec.lo] + ([5e-324] if spec.lo == 0 else []))
                yield sec, k, vals


@pytest.mark.parametrize("sec, key, vals", list(_extreme_cases()),
                         ids=[f"{s}.{k}" for s, k, _ in _extreme_cases()])
def test_every_float_key_at_its_extremes_gives_finite_outputs(sec, key, vals):
    """Each float key at its bounds (and the smallest positive float above 0), alone, with
    hurt_rate 0 (the NaN of the issue) and with the most differences: the outputs are
    finite and the blame counts never wrap."""
    import warnings

    from sim.model import AllianceModel

    base = {"steps": 8, "ecosystem": {"organizations": 8, "graph": "complete",
                                      "individuals_per_organization": 2}}
    for v in vals:
        for extra in ({}, {"mindset": {"hurt_rate": 0.0}},
                      {"differences": {"rate": 100.0, "size": 100.0}}):
            raw = {**base, **{s: dict(d) for s, d in extra.items()}}
            raw[sec] = {**raw.get(sec, {}), key: v}
            try:
                m = AllianceModel(raw)
            except ScenarioError:
                continue  # e.g. theta_down = 1 >= theta_up: refused, fine
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                m.run()
            ts = m.timeseries()
            outputs.check_finite(m, m.summary(), {
                "timeseries.parquet": {c: ts[c].to_numpy() for c in ts.columns},
                "alliances.parquet": m.alliances()})
            assert (m.state.al_blames >= 0).all()


def test_a_kernel_nan_is_stopped_at_the_outputs(tmp_path):
    """Validation refuses blame_level < 0.01; if a value slipped past it (the kernel has no
    guard of its own yet), the last-line check refuses to write the NaN or the wrapped count."""
    import warnings

    from sim.model import AllianceModel

    m = AllianceModel({"steps": 6, "ecosystem": {"organizations": 6, "graph": "complete"},
                       "mindset": {"hurt_rate": 0.0}, "differences": {"rate": 5.0}})
    m.p.differences.blame_level = 5e-324  # bypass validation, as the example did
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m.run()
    try:  # the kernel caps a step's quarrels (MAX_QUARRELS): then the outputs are finite
        outputs.write_run(m, tmp_path / "o")
    except ScenarioError as e:  # without that guard: refused, nothing written
        assert "non-finite" in str(e) or "negative" in str(e)
        assert list(tmp_path.iterdir()) == []
    else:
        assert outputs_complete(tmp_path / "o")
        assert (m.state.al_blames >= 0).all()


def test_a_wrapped_count_is_stopped_at_the_outputs(tmp_path):
    """The issue's -9223372036854775808 blames: a negative count is refused, not written."""
    from sim.model import AllianceModel

    m = AllianceModel(DYAD)
    m.run(3)
    m.state.al_blames[0] = np.iinfo(np.int64).min
    with pytest.raises(ScenarioError, match="alliances.parquet: blames: the run produced a "
                                            "negative count"):
        outputs.write_run(m, tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


def test_ui_port_in_use_or_bad_host_is_one_line(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        for args, frag in ((["--port", str(port), "--host", "127.0.0.1"], "cannot listen there"),
                           (["--host", "no such host.invalid"], "cannot resolve it"),
                           (["--port", "0"], "--port: expected 1..65535")):
            assert cli.main(["ui", *args]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and frag in err, err


# --- fuzz: the whole command line ---------------------------------------------------------
CLI_VALUES = ["-1", "0", "1", "2", "1e400", "nan", "inf", "-inf", "1" + "0" * 30, '"x"', "true",
              "[1,2]", "{a=1}", "\udcff", "\x00", "é", "'", '"', "[[[[", "1 # c", "1\n[x]", "",
              " ", "0x10", "1_000", "2024-01-01", "3.5", "-0.0", "../x", "a" * 300]
CLI_KEYS = ["seed", "steps", "name", "description", "ecosystem.organizations", "ecosystem.graph",
            "ecosystem.mean_degree", "differences.blame_level", "mindset.hurt_rate",
            "interventions.0.dose", "interventions.0.every", "interventions.0.until",
            "interventions.0.step", "interventions.0.kind", "interventions.0.target",
            "interventions", "mindset", "", ".", "a.b.c", "interventions.-1.dose",
            "noise.enabled", "regimes.window", "ecosystem.individuals_per_organization",
            "patience.horizon", "formation.rate"]


def test_fuzz_command_lines(tmp_path, monkeypatch, capsys):
    """1,000 random command lines (run, validate, compare) mixing hostile files, --set pairs,
    --steps/--seed and --out: exit 0 with complete outputs, or exit 2 with one line and
    nothing written."""
    monkeypatch.chdir(tmp_path)
    rng = random.Random(2026)
    files = [str(DYAD), str(TURN), str(SCENARIOS / "baseline.toml"), "/dev/null", "/dev/zero",
             "/", "nope.toml", "/etc/passwd", "/proc/self/status"]
    (tmp_path / "f").write_text("x")
    outcomes = {0: 0, 2: 0}
    for _ in range(int(os.environ.get("FUZZ_EXAMPLES", 1000))):
        cmd = rng.choice(["run", "validate", "compare"])
        args = [cmd]
        args += ([rng.choice(files[:3]), rng.choice(files), "--seeds", rng.choice("12")]
                 if cmd == "compare" else [rng.choice(files)])
        for _ in range(rng.randint(0, 3)):
            args.append(f"--set={rng.choice(CLI_KEYS)}={rng.choice(CLI_VALUES)}")
        if cmd == "run":
            args.append(f"--steps={rng.choice(['2', '0', '-3', '3', '2'])}")
            if rng.random() < 0.3:
                args.append(f"--seed={rng.choice(['-1', '5', '0', str(2**70)])}")
        if cmd == "compare":  # keep the runs small
            args += ["--set=steps=2", "--set=ecosystem.organizations=6"]
        out = rng.choice(["out", "out/a", "/proc/x", "f/x", "f", "."])
        if cmd in ("run", "compare"):
            args += ["--quiet", "--out", out]
        rc = cli.main(args)
        cap = capsys.readouterr()
        assert rc in (0, 2), (args, rc, cap.err)
        outcomes[rc] += 1
        left = sorted(p.name for p in tmp_path.iterdir())
        if rc == 2:
            assert cap.err.startswith("error: ") and cap.err.count("\n") == 1, (args, cap.err)
            assert left == ["f"], (args, left)
        else:
            assert "Traceback" not in cap.err
            if cmd == "run":
                assert outputs_complete(tmp_path / out)
            for p in tmp_path.iterdir():
                if p.name != "f":
                    shutil.rmtree(p)
    assert outcomes[0] > 50 and outcomes[2] > 300, outcomes
    print(f"command lines: {outcomes[0]} ran, {outcomes[2]} refused with one line")


@pytest.fixture
def small_fs(tmp_path):
    """A real 600 KiB tmpfs (needs root and mount rights; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()

    def mount(opts: str):
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)],
                           capture_output=True)
        if r.returncode:
            pytest.skip("cannot mount a tmpfs here")
        return mnt
    yield mount
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_real_read_only_filesystem(small_fs, capsys):
    mnt = small_fs("size=600k,ro")
    rc = cli.main(["run", str(DYAD), "--quiet", "--out", str(mnt / "o" / "p")])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: --out {mnt}/o/p: cannot write in {mnt}: read-only file " \
                              "system\n"


def test_real_full_filesystem(small_fs, capsys, monkeypatch):
    """A real full disk: refused up front by the free-space check; and a real ENOSPC half-way
    through writing (the check told to pass): one line, the previous run untouched, no
    temporary left."""
    mnt = small_fs("size=3m")
    out = mnt / "o"
    assert cli.main(["run", str(DYAD), "--quiet", "--out", str(out)]) == 0
    vfs = os.statvfs(mnt)
    (mnt / "fill").write_bytes(b"\0" * (vfs.f_bavail * vfs.f_frsize - 100_000))
    capsys.readouterr()
    assert cli.main(["run", str(DYAD), "--quiet", "--out", str(out), "--seed", "2"]) == 2
    assert "MB free on that filesystem" in capsys.readouterr().err
    monkeypatch.setattr(outputs, "run_bytes", lambda values: 0)
    rc = cli.main(["run", str(DYAD), "--quiet", "--out", str(out), "--seed", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: --out {out}: cannot write the results: No space left " \
                              "on device\n", err
    assert sorted(p.name for p in mnt.iterdir()) == ["fill", "o"]
    assert json.loads((out / "summary.json").read_text())["seed"] == 1 and outputs_complete(out)


def test_overrides_are_validated_together(tmp_path, capsys):
    """--set moving an intervention past the file's steps is fine with --steps making room;
    without it the error names (--set)."""
    f = tmp_path / "s.toml"
    f.write_text('steps = 10\n[[interventions]]\nstep = 5\nkind = "shock"\n')
    sc = load(f, ["interventions.0.step=20"], [("--steps", "steps=30")])
    assert sc.steps == 30 and sc.values["interventions"][0]["step"] == 20
    assert cli.main(["validate", str(f), "--set", "interventions.0.step=20"]) == 2
    assert "(--set): interventions[0].step: expected an integer from 1 to steps (10)" in \
        capsys.readouterr().err


def test_ui_takes_any_valid_seed():
    """The layout's legacy RandomState takes seeds < 2**32; the UI takes every valid seed."""
    from sim.ui.session import Session

    s = Session()
    assert s.set_seed(str(2**62)) and s.error is None
    assert not s.set_seed("-1") and "seed" in s.error
    assert not s.set_seed("9" * 5000)  # more digits than int() takes: a message, no crash
