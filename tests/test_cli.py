"""`spiral run` end to end through the console script, on a clean temporary directory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import networkx as nx
import pyarrow.parquet as pq
import pytest

from .conftest import ROOT, SCENARIOS

SPIRAL = shutil.which("spiral") or str(Path(os.sys.executable).parent / "spiral")

SUMMARY_KEYS = {"scenario", "scenario_sha256", "seed", "steps", "version", "mean_trust",
                "mean_openness", "share_spiral_in", "share_spiral_out", "share_undecided",
                "value_created", "value_perceived", "alliances_formed", "alliances_ended",
                "failure_rate", "mean_abundance"}
SERIES_KEYS = {"mean_trust", "mean_openness", "share_spiral_in", "share_spiral_out",
               "share_undecided", "value_created", "value_perceived", "alliances_active",
               "mean_abundance"}


@pytest.mark.slow
def test_console_script_default_run(tmp_path):
    shutil.copytree(SCENARIOS, tmp_path / "scenarios")
    r = subprocess.run([SPIRAL, "run", "--steps", "80"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs" / "baseline-1"
    assert f"results: {Path('runs') / 'baseline-1'}" in r.stdout
    assert "run.png" in r.stdout
    files = sorted(p.name for p in out.iterdir())
    assert files == ["alliances.parquet", "network.graphml", "run.png", "summary.json",
                     "timeseries.parquet"]  # and no temporary files left behind
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["steps"] == 80 and summary["seed"] == 1
    raw = (tmp_path / "scenarios" / "baseline.toml").read_bytes()
    assert summary["scenario_sha256"] == hashlib.sha256(raw).hexdigest()
    assert summary["failure_rate"] == summary["alliances_ended"] / summary["alliances_formed"]
    ts = pq.read_table(out / "timeseries.parquet")
    assert ts.num_rows == 80 and SERIES_KEYS <= set(ts.column_names)
    assert ts.column("mean_trust")[-1].as_py() == summary["mean_trust"]
    al = pq.read_table(out / "alliances.parquet")
    assert al.num_rows == summary["alliances_formed"]
    assert {"org_a", "org_b", "formed", "ended", "trust", "openness", "tension", "regime",
            "value_revenue"} <= set(al.column_names)
    assert sum(r == "spiral_in" for r in al.column("regime").to_pylist()) / al.num_rows == \
        pytest.approx(summary["share_spiral_in"])
    g = nx.read_graphml(out / "network.graphml")
    assert g.number_of_nodes() == 60
    assert g.number_of_edges() == summary["alliances_formed"] - summary["alliances_ended"]
    e = next(iter(g.edges(data=True)))[2]
    assert {"trust", "openness", "regime"} <= set(e)
    assert next(iter(g.nodes(data=True)))[1]["mindset"] in ("abundance", "scarcity")
    assert (out / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quiet_prints_summary_and_folder(tmp_path):
    r = subprocess.run([SPIRAL, "run", str(SCENARIOS / "dyad.toml"), "--quiet", "--out",
                        str(tmp_path / "d")], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no progress bar
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("dyad seed 1: 200 steps, 1 alliances")
    assert str(tmp_path / "d") in r.stdout


def test_bad_input_through_console_script(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[ecosystem]\ngrpah = "complete"\n')
    r = subprocess.run([SPIRAL, "run", str(f), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr == f"error: {f}: ecosystem.grpah: unknown key (did you mean 'graph'?)\n"
    assert not (tmp_path / "o").exists()


def test_mechanisms_command_reports_the_distributions(capsys):
    from sim import cli

    rc = cli.main(["mechanisms", str(SCENARIOS / "baseline.toml"), "--seeds", "2", "--json", "-",
                   "--set", "steps=80"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["seeds"] == [1, 2] and r["alliances"] > 100
    assert set(r["pairs"]) <= {"abundance-abundance", "mixed", "scarcity-scarcity"}
    assert sum(v["alliances"] for v in r["pairs"].values()) == r["alliances"]
    assert 0 <= r["share_flipped_to_scarcity"] <= 1
    rc = cli.main(["mechanisms", str(SCENARIOS / "baseline.toml"), "--seeds", "0"])
    assert rc == 2
