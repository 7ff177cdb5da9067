"""Adopt a calibration's point as the shipped baseline (issue 14).

    python tools/adopt_calibration.py runs/calibrate-targets/calibration.json

Writes the calibrated point of calibration.json (what `spiral calibrate` chose, --point) into
scenarios/baseline.toml (each calibrated key's value, and a comment line with its posterior 90%
interval) and into the schema defaults of sim/scenario.py (the baseline lists every key at its
default; tests/test_scenario.py checks they agree), and copies the calibration's record to
docs/calibration/calibration.json (tests/test_calibration.py checks the baseline equals it).
Running it again with the same file changes nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "# calibrated (data/targets.toml): posterior 90% interval"


def fmt(v) -> str:
    return str(v) if isinstance(v, int) else repr(float(v))


def adopt_baseline(text: str, point: dict, posterior: dict) -> str:
    lines = text.splitlines()
    section = ""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^\[([a-z_]+)\]\s*$", line)
        if m:
            section = m.group(1)
        m = re.match(r"^([a-z_]+)( = )(\S+)(\s*)(#.*)?$", line)
        key = f"{section}.{m.group(1)}" if m else None
        if m and key in point:
            val = fmt(point[key])
            col = len(m.group(1)) + 3 + len(m.group(3)) + len(m.group(4))
            pad = max(1, col - (len(m.group(1)) + 3 + len(val)))
            out.append(f"{m.group(1)} = {val}{' ' * pad}{m.group(5) or ''}".rstrip())
            i += 1
            # keep the key's own comment lines, drop an earlier calibration mark
            while i < len(lines) and lines[i].startswith(" " * col + "#"):
                if MARK not in lines[i]:
                    out.append(lines[i])
                i += 1
            s = posterior[key]
            out.append(f"{' ' * col}{MARK} [{s['q05']:.3g}, {s['q95']:.3g}]")
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"


def adopt_schema(text: str, point: dict) -> str:
    for key, v in point.items():
        section, k = key.split(".", 1)
        start = text.index(f'    "{section}": {{')
        pat = re.compile(rf'(        "{k}": _[fi]\()([^,]+)(,)')
        m = pat.search(text, start)
        if m is None:
            raise SystemExit(f"error: sim/scenario.py: {key}: schema entry not found")
        text = text[:m.start(2)] + fmt(v) + text[m.end(2):]
    return text


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tools/adopt_calibration.py CALIBRATION.json", file=sys.stderr)
        return 2
    src = Path(argv[0])
    try:
        rep = json.loads(src.read_text())
        point, posterior = rep["calibrated_point"], rep["posterior"]
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {src}: expected a calibration.json of spiral calibrate ({e})",
              file=sys.stderr)
        return 2
    base = ROOT / "scenarios" / "baseline.toml"
    base.write_text(adopt_baseline(base.read_text(), point, posterior))
    schema = ROOT / "sim" / "scenario.py"
    schema.write_text(adopt_schema(schema.read_text(), point))
    dst = ROOT / "docs" / "calibration" / "calibration.json"
    dst.parent.mkdir(exist_ok=True)
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    print(f"adopted {rep.get('calibrated_point_choice', {}).get('method', 'median')} point: "
          + ", ".join(f"{k} = {fmt(v)}" for k, v in point.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
