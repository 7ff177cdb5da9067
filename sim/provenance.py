"""Provenance: which code, interpreter, libraries and input files produced a result.

Every run (summary.json) and every sweep (sweep.json and each row of runs/part-*.parquet)
records:

- `version`: the installed package version from its metadata (setuptools-scm: the last tag plus
  the distance and the git revision at install time);
- `git_revision` and `git_dirty`: the checkout's revision now, and whether tracked files differ
  from it (None when the code is not in a git checkout);
- `code_sha256`: a hash of every source file of the packages `sim` and `analysis` as they are on
  disk, so an uncommitted edit is caught even when the tree was already dirty;
- `python`, `platform` and `dependencies`: the interpreter and the versions of the libraries
  that shape results;
- `files`: the SHA-256 of every scenario file in the `extends` chain (file -> hash).

`provenance_id` is a short hash of everything except `files` and the platform; two runs with
the same id ran the same code on the same libraries.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPENDENCIES = ("numpy", "scipy", "pandas", "pyarrow", "networkx", "mesa", "SALib", "duckdb",
                "dask", "distributed", "lifelines", "ema_workbench")
FALLBACK_VERSION = "0.1.0"


def package_version() -> str:
    try:
        return metadata.version("alliance-spiral")
    except metadata.PackageNotFoundError:
        return FALLBACK_VERSION


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                           timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def code_sha256() -> str:
    """One hash over the source files of sim/ and analysis/ (path and content)."""
    h = hashlib.sha256()
    for pkg in ("sim", "analysis"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(b"\0")
            h.update(f.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


def _dep_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def code_provenance() -> dict:
    """What produced the results in this process (cached: computed once per process)."""
    rev = _git("rev-parse", "HEAD")
    dirty = None
    if rev is not None:
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = bool(status) if status is not None else None
    prov = {
        "version": package_version(),
        "git_revision": rev,
        "git_dirty": dirty,
        "code_sha256": code_sha256(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "dependencies": {d: _dep_version(d) for d in DEPENDENCIES},
    }
    prov["provenance_id"] = provenance_id(prov)
    prov["platform"] = platform.platform()
    return prov


def provenance_id(prov: dict) -> str:
    keep = {k: prov.get(k) for k in ("version", "git_revision", "git_dirty", "code_sha256",
                                     "python", "implementation", "dependencies")}
    blob = json.dumps(keep, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_hashes(paths) -> dict[str, str]:
    """SHA-256 of each file (as it is on disk now); a missing file hashes to None."""
    out = {}
    for p in paths:
        try:
            out[str(Path(p).resolve())] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
        except OSError:
            out[str(Path(p).resolve())] = None
    return out


def scenario_files(scenario) -> dict[str, str]:
    """Hashes of a scenario file and every file of its `extends` chain."""
    paths = []
    if scenario.path and not scenario.path.startswith("<"):
        paths.append(scenario.path)
    paths += list(scenario.extends)
    return file_hashes(paths)


def run_provenance(scenario) -> dict:
    return {**code_provenance(), "files": scenario_files(scenario)}


def differences(old: dict, new: dict, keys=None) -> list[str]:
    """Human-readable list of what changed between two provenance records."""
    out = []
    keys = keys or ("version", "git_revision", "git_dirty", "code_sha256", "python",
                    "implementation")
    for k in keys:
        if old.get(k) != new.get(k):
            a, b = old.get(k), new.get(k)
            if k in ("git_revision", "code_sha256") and a and b:
                a, b = str(a)[:10], str(b)[:10]
            out.append(f"{k} {a} -> {b}")
    od, nd = old.get("dependencies") or {}, new.get("dependencies") or {}
    for d in sorted(set(od) | set(nd)):
        if od.get(d) != nd.get(d):
            out.append(f"{d} {od.get(d)} -> {nd.get(d)}")
    of, nf = old.get("files") or {}, new.get("files") or {}
    for f in sorted(set(of) | set(nf)):
        if of.get(f) != nf.get(f):
            out.append(f"{f} changed" if f in of and f in nf else
                       f"{f} {'added' if f in nf else 'removed'}")
    return out
