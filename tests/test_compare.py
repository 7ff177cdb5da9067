"""`spiral compare`: both scenarios over N seeds, a table with intervals, a figure."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from analysis.compare import t_interval, welch_interval
from sim import cli

from .conftest import SCENARIOS


def test_compare_writes_table_and_figure(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = cli.main(["compare", str(SCENARIOS / "abundance_ecosystem.toml"),
                   str(SCENARIOS / "scarcity_ecosystem.toml"), "--seeds", "3", "--out", str(out),
                   "--quiet", "--set", "steps=60"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "A: abundance_ecosystem" in text and "B - A" in text
    rows = {r["outcome"]: r for r in csv.DictReader((out / "compare.csv").open())}
    assert float(rows["mean_trust"]["A_mean"]) > float(rows["mean_trust"]["B_mean"])
    assert float(rows["mean_trust"]["diff_high"]) < 0  # the interval excludes no effect
    for r in rows.values():
        assert float(r["A_low"]) <= float(r["A_mean"]) <= float(r["A_high"])
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "95% interval over 3 seeds" in (out / "compare.md").read_text()


def test_compare_bad_file(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path / "nope.toml"),
                     str(SCENARIOS / "baseline.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.toml: file not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_intervals():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    m, lo, hi = t_interval(x)
    assert m == 2.5 and lo == pytest.approx(2.5 - 3.182446 * np.std(x, ddof=1) / 2, rel=1e-5)
    assert t_interval(np.array([5.0])) == (5.0, 5.0, 5.0)
    d, dl, dh = welch_interval(np.array([0.0, 1, 2]), np.array([10.0, 11, 12]))
    assert d == 10 and dl < 10 < dh
