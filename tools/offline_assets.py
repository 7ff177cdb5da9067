"""Put every front-end asset the Solara UI needs into the venv, so it works with no network.

solara-assets fills <venv>/share/solara/cdn/ with most files; the rest (seen in the server log
as "Could not load URL: https://cdn.jsdelivr.net/npm/<spec>/...") come from the npm registry:
`npm pack <spec>` and the tarball's package/ folder becomes <venv>/share/solara/cdn/<spec>/.
Idempotent; run by `make` after installing the Python packages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SPECS = ["katex@0.16.9", "@widgetti/solara-vuetify3-app@5.2.0", "vega@5", "vega-lite@5",
         "vega-embed@6"]


def cdn_dir() -> Path:
    return Path(sys.prefix) / "share" / "solara" / "cdn"


def install(spec: str, cdn: Path) -> str:
    target = cdn / spec
    if target.is_dir() and any(target.iterdir()):
        return "present"
    npm = shutil.which("npm")
    if npm is None:
        return "skipped (npm not found)"
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, capture_output=True,
                           text=True, timeout=300)
        if r.returncode != 0:
            return f"failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
        tgz = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tgz) as tf:
            tf.extractall(tmp, filter="data")
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(tmp) / "package", staging)
        staging.rename(target)
    return "installed"


def main() -> int:
    cdn = cdn_dir()
    cdn.mkdir(parents=True, exist_ok=True)
    bad = 0
    for spec in SPECS:
        status = install(spec, cdn)
        bad += status.startswith("failed")
        print(f"offline assets: {spec}: {status}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
