"""`spiral bench` prints every figure and writes the JSON contract (no timing assertions)."""

from __future__ import annotations

import json

from sim import cli


def test_bench_small_sizes_write_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--ties", "400,1600", "--steps", "3", "--json", str(out),
                     "--no-cold", "--no-baseline", "--no-sweep"]) == 0
    text = capsys.readouterr().out
    assert "kernel ties/s" in text and "ratio" in text and "bytes/tie" in text
    res = json.loads(out.read_text())
    for key in ("ties", "kernel_ties_per_s", "reference_ties_per_s", "ratio", "bytes_per_tie"):
        assert len(res[key]) == 2, key
    # the mean ties updated per timed step: near the size asked for (endings shrink it)
    assert all(0.5 * n <= t <= 1.5 * n for t, n in zip(res["ties"], (400, 1600)))
    assert res["blocks"] == 3
    assert all(len(b) == 3 and min(b) > 0 for b in res["ns_per_tie_cpu_blocks"])
    # the reported CPU time per tie is the median block's
    assert res["ns_per_tie_cpu"] == [sorted(b)[1] for b in res["ns_per_tie_cpu_blocks"]]
    assert all(r > 0 for r in res["kernel_ties_per_s"] + res["reference_ties_per_s"])
    k, r = res["kernel_ties_per_s"], res["reference_ties_per_s"]
    assert res["ratio"] == [a / b for a, b in zip(k, r)]


def test_bench_bad_arguments(capsys):
    assert cli.main(["bench", "--ties", "ten"]) == 2
    assert "--ties: expected comma-separated integers" in capsys.readouterr().err


def test_bench_reports_both_paths_small_runs_and_sweeps(tmp_path, capsys):
    """One run gives the compiled and numpy paths side by side, baseline-size runs per second
    against the arithmetic floor, and the sweep throughput with 1 and 2 workers."""
    from sim import bench, kernel

    res = bench.run_bench([400], 1, with_reference=False, cold=False, baseline=2, sweep=3,
                          throughput=lambda runs, workers: float(runs * workers),
                          out=lambda line: None)
    assert res["kernel_path"] == kernel.NAME
    for key in ("kernel_ties_per_s_cpu", "ns_per_tie_cpu", "numpy_ties_per_s",
                "numpy_bytes_per_tie"):
        assert len(res[key]) == 1, key
    if kernel.NAME != "numpy":
        assert res["numpy_ties_per_s"][0] > 0 and "numpy" in res["baseline"]
    b = res["baseline"][kernel.NAME]
    assert b["runs"] == 2 and b["runs_per_s"] > 0 and b["runs_per_s_cpu"] > 0
    assert b["floor_us_per_step"] > 0 and b["mean_ties"] > 0
    assert res["sweep"] == {"runs": 3, "runs_per_s_1_worker": 3.0, "runs_per_s_2_workers": 6.0,
                            "speedup": 2.0, "rounds": 3, "runs_per_s_1_worker_rounds": [3.0] * 3,
                            "runs_per_s_2_workers_rounds": [6.0] * 3}
    # the median round of each, taken in turn: a drifting machine does not fake a speed-up
    speeds = iter([100.0, 150.0, 300.0, 90.0, 200.0, 500.0])  # 1, 2, 1, 2, 1, 2 workers
    sw = bench.sweep_throughput(lambda runs, workers: next(speeds) if runs > 10 else 1.0, 20)
    assert sw["runs_per_s_1_worker_rounds"] == [100.0, 300.0, 200.0]
    assert sw["runs_per_s_1_worker"] == 200.0 and sw["runs_per_s_2_workers"] == 150.0


def test_bench_sweep_mode_reports_throughput_rounds_and_parent_memory(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    assert cli.main(["bench", "--sweep", "--runs", "12", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "speed-up" in text and "parent memory over 12 runs" in text
    res = json.loads(out.read_text())
    assert res["rounds"] == 3 and len(res["runs_per_s_2_workers_rounds"]) == 3
    assert res["speedup"] == res["runs_per_s_2_workers"] / res["runs_per_s_1_worker"]
    assert res["memory"]["runs"] == 12 and res["memory"]["peak_rss_mb"] > 0
