"""`spiral bench` prints every figure and writes the JSON contract (no timing assertions)."""

from __future__ import annotations

import json

from sim import cli


def test_bench_small_sizes_write_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--ties", "400,1600", "--steps", "2", "--json", str(out),
                     "--no-cold"]) == 0
    text = capsys.readouterr().out
    assert "kernel ties/s" in text and "ratio" in text and "bytes/tie" in text
    res = json.loads(out.read_text())
    for key in ("ties", "kernel_ties_per_s", "reference_ties_per_s", "ratio", "bytes_per_tie"):
        assert len(res[key]) == 2, key
    assert all(t >= 400 for t in res["ties"])
    assert all(r > 0 for r in res["kernel_ties_per_s"] + res["reference_ties_per_s"])
    k, r = res["kernel_ties_per_s"], res["reference_ties_per_s"]
    assert res["ratio"] == [a / b for a, b in zip(k, r)]


def test_bench_bad_arguments(capsys):
    assert cli.main(["bench", "--ties", "ten"]) == 2
    assert "--ties: expected comma-separated integers" in capsys.readouterr().err
