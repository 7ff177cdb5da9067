"""Run outputs: Parquet tables, summary.json, GraphML and the run figure.

A run's folder is written as a whole: every file goes into a fresh temporary folder next to the
target (`.<name>.<host>-<pid>.<random>.tmp`), and that folder replaces the target in one rename
at the end (an atomic exchange where the filesystem supports it). A folder is therefore always
one complete run or untouched, never files of two runs. The target is checked before the
simulation starts (prepare_folder): a file in the way, a dangling symlink, /proc, a read-only or
full filesystem, or a folder that holds other files fail up front with one line. Temporaries left
by killed processes are removed by the next write next to them.

Single files (atomic_write, used by sweeps and reports) are written to a temporary name in the
same folder and renamed, so a file under its final name is always complete.
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from .scenario import ScenarioError  # noqa: E402

REGIME_COLORS = {"spiral_in": "#1a9850", "undecided": "#fdae61", "spiral_out": "#d73027"}
RUN_FILES = ("summary.json", "timeseries.parquet", "alliances.parquet", "network.graphml",
             "run.png")
UI_FILES = ("ui-network.png", "ui-phase.png", "ui-series.png")
COMPARE_FILES = ("compare.md", "compare.csv", "compare.png")
PSEUDO_FS = ("/proc", "/sys", "/dev")
COUNT_COLUMNS = {"blames", "opportunities", "alliances_active", "alliances_formed",
                 "alliances_ended"}  # integer columns that can only grow from 0
LEGACY_TMP_AGE = 600  # seconds: a temporary without a pid in its name older than this is stale
NAME_MAX = 255  # bytes in one path component (Linux)


class OutputError(ScenarioError):
    """An output path that cannot be used; str() is the one line shown to the user."""

    def __init__(self, where: str, message: str):
        super().__init__(where, "", message)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname())[:20] or "host"


def _tmp_prefix(name: str) -> str:
    """`.<name>.<host>-<pid>.`: the owner of a temporary can be told alive or dead."""
    tail = f".{_host()}-{os.getpid()}."
    room = NAME_MAX - len(tail) - len(".XXXXXXXX.tmp") - 1
    short = os.fsencode(name)[:room].decode("utf-8", "ignore")
    return f".{short}{tail}"


_TMP_RE = re.compile(r"^\.(?P<name>.*?)\.(?:(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.)?"
                     r"[A-Za-z0-9_]+\.tmp$", re.S)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


_cleaned: set[str] = set()


def clean_stale(folder: Path) -> list[Path]:
    """Remove temporaries (`.<name>.*.tmp`, files or folders) in folder whose process is gone:
    same host and a pid that is not running, or no pid (older releases) and older than
    LEGACY_TMP_AGE seconds. Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host, now = _host(), time.time()
    for e in entries:
        m = _TMP_RE.match(e.name)
        if not m:
            continue
        if m.group("pid"):
            if m.group("host") != host or _pid_alive(int(m.group("pid"))):
                continue
        else:
            try:
                if now - e.stat(follow_symlinks=False).st_mtime < LEGACY_TMP_AGE:
                    continue
            except OSError:
                continue
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            pass
    return removed


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temporary file next to path, then rename it to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if str(path.parent) not in _cleaned:  # once per folder and process (sweeps write many)
        _cleaned.add(str(path.parent))
        clean_stale(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --- whole folders --------------------------------------------------------------------------
def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Staged:
    """A checked output folder: files are written into .tmp, commit() puts them in place."""

    def __init__(self, target: Path, tmp: Path, created: list[Path], label: str):
        self.target, self.tmp, self.created, self.label = target, tmp, created, label
        self.done = False

    def __truediv__(self, name: str) -> Path:
        return self.tmp / name

    def commit(self) -> Path:
        """Replace the target by the temporary folder in one rename."""
        _fsync_dir(self.tmp)
        try:
            try:
                os.rename(self.tmp, self.target)  # no target yet (or an empty one)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                    raise
                if _exchange(self.tmp, self.target):
                    shutil.rmtree(self.tmp, ignore_errors=True)  # now the previous run
                else:  # no atomic exchange here: move the old one aside, then rename
                    old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(self.target.name),
                                                suffix=".tmp", dir=self.target.parent))
                    os.rename(self.target, old / "old")
                    os.rename(self.tmp, self.target)
                    shutil.rmtree(old, ignore_errors=True)
        except OSError as e:
            self.abort()
            raise OutputError(f"{self.label} {self.target}",
                              f"cannot put the results in place: {e.strerror}") from None
        _fsync_dir(self.target.parent)
        self.done = True
        return self.target

    def abort(self) -> None:
        """Remove the temporary folder and any parent folders made for it."""
        if self.done:
            return
        shutil.rmtree(self.tmp, ignore_errors=True)
        for d in reversed(self.created):
            try:
                d.rmdir()
            except OSError:
                break
        self.done = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abort()  # a no-op after commit()
        return False


def prepare_folder(out: str | Path, known: Iterable[str] = RUN_FILES, need_bytes: int = 0,
                   label: str = "--out") -> Staged:
    """Check an output folder before any work and make its temporary folder.

    The target may be new, empty or a folder that holds only `known` files (a previous run's);
    anything else fails with an OutputError naming the path: a file in the way, a dangling
    symlink, a pseudo filesystem (/proc, /sys, /dev), no permission, a read-only filesystem,
    less free space than need_bytes, a name too long.
    """
    text = os.fspath(out)
    where = f"{label} {text if len(text) <= 200 else text[:90] + '...' + text[-90:]}"
    if not text or "\0" in text:
        raise OutputError(f"{label} {text!r}", "expected a folder path")
    try:
        target = Path(os.path.abspath(text))
        if os.path.islink(target):
            real = Path(os.path.realpath(target))
            if not real.is_dir():
                raise OutputError(where, f"is a symbolic link to {real}, which is not a folder; "
                                  "expected a folder or a new path")
            target = real
        if target.name in ("", ".", ".."):
            raise OutputError(where, "expected a folder path with a name")
        for part in target.parts[1:]:
            if len(os.fsencode(part)) > NAME_MAX:
                raise OutputError(where, f"expected folder names of at most {NAME_MAX} bytes, "
                                  f"got one of {len(os.fsencode(part))}")
        # the nearest existing ancestor must be a folder on an ordinary filesystem
        anc = target.parent
        missing: list[Path] = []
        while not os.path.lexists(anc):
            missing.append(anc)
            anc = anc.parent
        if not anc.is_dir():
            raise OutputError(where, f"{anc} is a file; expected a folder there")
        real_anc = os.path.realpath(anc)
        if any(real_anc == p or real_anc.startswith(p + "/") for p in PSEUDO_FS) and not (
                real_anc + "/").startswith("/dev/shm/"):  # /dev/shm is an ordinary tmpfs
            top = "/" + real_anc.split("/")[1]
            raise OutputError(where, f"is under {top}, a system pseudo filesystem; expected an "
                              "ordinary folder")
        if os.path.lexists(target):
            if target.is_dir() and os.path.ismount(target):
                raise OutputError(where, "is a mount point (it cannot be replaced); expected a "
                                  "folder inside it")
            if not target.is_dir():
                raise OutputError(where, "is a file; expected a folder (new, empty, or a "
                                  "previous run's)")
            known = set(known)
            foreign = sorted(e.name for e in os.scandir(target)
                             if e.name not in known and not _TMP_RE.match(e.name))
            if foreign:
                raise OutputError(where, f"holds files that are not outputs of this command "
                                  f"(e.g. {foreign[0]!r}); expected a new or empty folder, or "
                                  "a previous run's folder (it is replaced as a whole)")
        if not os.access(anc, os.W_OK | os.X_OK):
            try:
                readonly = bool(os.statvfs(anc).f_flag & os.ST_RDONLY)
            except OSError:
                readonly = False
            raise OutputError(where, f"cannot write in {anc}: " + (
                "read-only file system" if readonly else "permission denied"))
        try:
            vfs = os.statvfs(anc)
            free = vfs.f_bavail * vfs.f_frsize
        except OSError:
            free = None
        if free is not None and need_bytes and free < need_bytes:
            raise OutputError(where, f"only {free / 2**20:.1f} MB free on that filesystem; "
                              f"the outputs need about {need_bytes / 2**20:.1f} MB")
        created = []
        try:
            for d in reversed(missing):
                os.mkdir(d)
                created.append(d)
            clean_stale(target.parent)
            tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(target.name), suffix=".tmp",
                                        dir=target.parent))
            os.chmod(tmp, 0o777 & ~_umask())
        except OSError:
            for d in reversed(created):
                try:
                    d.rmdir()
                except OSError:
                    break
            raise
    except OSError as e:
        raise OutputError(where, f"cannot write there: {e.strerror or e}") from None
    return Staged(target, tmp, created, label)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def run_bytes(values: dict) -> int:
    """About how many bytes a run's output files take (for the free-space check)."""
    eco = values["ecosystem"]
    n = eco["organizations"]
    alliances = n * (n - 1) / 2 if eco["graph"] == "complete" else min(
        n * eco["mean_degree"] / 2, n * (n - 1) / 2)
    alliances += values["formation"]["rate"] * values["steps"]
    return int(2 * 2**20 + 600 * alliances + 200 * n + 400 * values["steps"])


# --- no NaN or inf in any output ------------------------------------------------------------
def first_nonfinite(value, path: str = ""):
    """The dotted path of the first NaN or inf in nested dicts/lists of numbers, or None."""
    if isinstance(value, float | np.floating):
        return path if not math.isfinite(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            hit = first_nonfinite(v, f"{path}.{k}" if path else str(k))
            if hit is not None:
                return hit
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            hit = first_nonfinite(v, f"{path}[{i}]")
            if hit is not None:
                return hit
    return None


def check_finite(model, summary: dict, columns: dict[str, dict]) -> None:
    """Refuse to write a run with a NaN or inf anywhere (summary, tables): one line naming the
    scenario, the output and the column, instead of a file that is not valid JSON or a series
    a reader silently averages over."""
    source = model.scenario_spec.path
    hit = first_nonfinite({k: v for k, v in summary.items() if k != "parameters"})
    if hit is not None:
        raise ScenarioError(source, f"summary.json: {hit}", "the run produced a non-finite "
                            "value (NaN or inf); expected finite numbers: these parameters are "
                            "outside what the model can compute")
    for table, cols in columns.items():
        for name, col in cols.items():
            a = np.asarray(col)
            if name in COUNT_COLUMNS and a.dtype.kind in "iu" and (a < 0).any():
                row = int(np.flatnonzero(a < 0)[0])
                raise ScenarioError(source, f"{table}: {name}", f"the run produced a negative "
                                    f"count ({int(a[row])}, an int64 count that wrapped) in "
                                    f"row {row + 1}; expected counts >= 0: these parameters "
                                    "are outside what the model can compute")
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                row = int(np.flatnonzero(~np.isfinite(a))[0])
                raise ScenarioError(source, f"{table}: {name}", f"the run produced a non-finite "
                                    f"value (NaN or inf) in row {row + 1}; expected finite "
                                    "numbers: these parameters are outside what the model can "
                                    "compute")


def _metadata(summary: dict) -> dict[bytes, bytes]:
    keep = ("scenario", "scenario_sha256", "resolved_sha256", "seed", "version", "name")
    # backslashreplace: a scenario path from a non-UTF-8 file name (surrogates) stays writable
    return {f"alliance_spiral.{k}".encode(): str(summary[k]).encode("utf-8", "backslashreplace")
            for k in keep}


def write_parquet(path: Path, columns: dict, summary: dict) -> Path:
    table = pa.table({k: pa.array(np.asarray(v).tolist() if np.asarray(v).dtype == object
                                  else np.asarray(v)) for k, v in columns.items()})
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **_metadata(summary)})
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _finite_or_none(value):
    """NaN and inf become null: the file stays valid JSON (json's NaN is not)."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> Path:
    """JSON with allow_nan=False: a non-finite number is written as null, never as NaN."""
    text = json.dumps(_finite_or_none(data), indent=2, sort_keys=False, default=_json_default,
                      allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _json_default(o):
    if isinstance(o, np.generic):
        return _finite_or_none(o.item())
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o)}")


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(value) -> str:
    """Text safe inside an XML 1.0 element: escaped, and characters XML cannot hold at all
    (control characters, lone surrogates) written as \\xNN / \\uNNNN."""
    text = _XML_BAD.sub(lambda m: repr(m.group())[1:-1], str(value))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _graphml_type(v) -> str:
    if isinstance(v, bool | np.bool_):
        return "boolean"
    if isinstance(v, int | np.integer):
        return "long"
    if isinstance(v, float | np.floating):
        return "double"
    return "string"


def _graphml_value(v) -> str:
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, np.generic):
        v = v.item()
    return _xml_text(v)


def stream_graphml(graph: nx.Graph, f) -> None:
    """GraphML as networkx writes it (same keys, types and layout), streamed edge by edge:
    networkx without lxml builds the whole XML tree first, about 3 KB per edge (1.6 GB for
    the half million alliances of a complete graph of 1,000 organizations)."""
    keys: dict[tuple[str, str], tuple[str, str]] = {}

    def key(domain: str, name, value) -> str:
        k = (domain, str(name))
        if k not in keys:
            keys[k] = (f"d{len(keys)}", _graphml_type(value))
        return keys[k][0]

    for k, v in graph.graph.items():
        key("graph", k, v)
    for _, d in graph.nodes(data=True):
        for k, v in d.items():
            key("node", k, v)
    for _, _, d in graph.edges(data=True):
        for k, v in d.items():
            key("edge", k, v)
    w = f.write
    w("<?xml version='1.0' encoding='utf-8'?>\n")
    w('<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
      'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
      'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
      'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n')
    for (domain, name), (kid, typ) in reversed(keys.items()):
        w(f'  <key id="{kid}" for="{domain}" attr.name="{_xml_text(name).replace(chr(34), "&quot;")}"'
          f' attr.type="{typ}" />\n')
    w('  <graph edgedefault="%s">\n' % ("directed" if graph.is_directed() else "undirected"))

    def data(domain: str, d: dict, indent: str) -> None:
        for k, v in d.items():
            w(f'{indent}<data key="{keys[(domain, str(k))][0]}">{_graphml_value(v)}</data>\n')

    def attr(v) -> str:
        return _xml_text(v).replace('"', "&quot;")

    for n, d in graph.nodes(data=True):
        if d:
            w(f'    <node id="{attr(n)}">\n')
            data("node", d, "      ")
            w("    </node>\n")
        else:
            w(f'    <node id="{attr(n)}" />\n')
    for u, v, d in graph.edges(data=True):
        if d:
            w(f'    <edge source="{attr(u)}" target="{attr(v)}">\n')
            data("edge", d, "      ")
            w("    </edge>\n")
        else:
            w(f'    <edge source="{attr(u)}" target="{attr(v)}" />\n')
    data("graph", graph.graph, "    ")
    w("  </graph>\n</graphml>\n")


def write_graphml(path: Path, graph: nx.Graph, summary: dict) -> Path:
    meta = {k: str(summary[k]) for k in ("scenario", "scenario_sha256", "seed", "version",
                                          "name")}
    saved = dict(graph.graph)
    graph.graph.update(meta)

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as f:
            stream_graphml(graph, f)
    try:
        return atomic_write(path, write)
    finally:
        graph.graph.clear()
        graph.graph.update(saved)


def plot_run(model, title: str | None = None):
    """The run figure: trust and openness, regime shares, the phase portrait, value."""
    df = model.timeseries()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), constrained_layout=True)
    ax = axes[0, 0]
    ax.plot(df["step"], df["mean_trust"], color="#2166ac", lw=2, label="mean trust")
    ax.plot(df["step"], df["mean_openness"], color="#b2182b", lw=2, ls="--",
            label="mean openness")
    ax.plot(df["step"], df["share_abundance_mindset"], color="#7f7f7f", lw=1.5, ls=":",
            label="share of people in abundance")
    ax.set(ylim=(0, 1), xlabel="step", title="Trust and openness pull each other")
    ax.legend(loc="best", fontsize=9)

    ax = axes[0, 1]
    ax.stackplot(df["step"], df["share_spiral_in"], df["share_undecided"],
                 df["share_spiral_out"], colors=list(REGIME_COLORS.values()),
                 labels=["spiral in", "undecided", "spiral out (incl. ended)"], alpha=0.85)
    ax.set(ylim=(0, 1), xlim=(df["step"].min(), df["step"].max()), xlabel="step",
           ylabel="share of alliances formed", title="Where the alliances are heading")
    ax.legend(loc="lower left", fontsize=9)

    ax = axes[1, 0]
    portrait(ax, model)

    ax = axes[1, 1]
    ax.plot(df["step"], df["value_created"], color="#1b7837", lw=2, label="value created")
    ax.plot(df["step"], df["value_perceived"], color="#762a83", lw=2, ls="--",
            label="value perceived (revenue-only views see less)")
    ax.set(xlabel="step", ylabel="cumulative value", title="The pie")
    ax2 = ax.twinx()
    ax2.plot(df["step"], df["alliances_active"], color="#999999", lw=1, label="active alliances")
    ax2.set_ylabel("active alliances", color="#777777")
    ax.legend(loc="upper left", fontsize=9)
    fig.suptitle(title or model.scenario_spec.name, fontsize=14)
    return fig


PAIR_NAMES = {2: "abundance pair", 1: "mixed pair", 0: "scarcity pair"}


def portrait_alliance(model) -> int | None:
    """The alliance whose pair the run figure's portrait draws: the first tracked mixed one
    (the bistable case), else the first tracked one."""
    tr = list(model.trajectories())
    if not tr:
        return None
    kinds = model.state.al_mindset[tr].sum(axis=1)
    mixed = [a for a, k in zip(tr, kinds) if k == 1]
    return mixed[0] if mixed else tr[0]


def portrait(ax, model) -> None:
    """Phase portrait: the flow and separatrix of one alliance's own map (dyad.alliance_flow
    and alliance_basin: the kernel's step on that pair with the mindsets it formed with,
    started as the model starts it), and the (trust, openness) paths of the tracked alliances
    of the same pair type."""
    from .dyad import alliance_basin, alliance_flow  # late import: only plots need it

    s = model.state
    a = portrait_alliance(model)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="trust", ylabel="openness")
    if a is None:
        ax.set_title("Phase portrait (no alliance)")
        return
    kind = int(s.al_mindset[a].sum())
    xs, ys, u, v = alliance_flow(s, model.p, a, formation=True)
    ax.streamplot(xs, ys, u, v, color="#cccccc", density=0.9, linewidth=0.7, arrowsize=0.8)
    bx, score = alliance_basin(s, model.p, a, n=41, steps=300, formation=True)
    if score.min() < 0.5 < score.max():
        cs = ax.contour(bx, bx, score, levels=[0.5], colors="#333333", linestyles="--",
                        linewidths=1.2)
        ax.clabel(cs, fmt={0.5: "tipping line"}, fontsize=8)
    for b, (tt, oo) in model.trajectories().items():
        if int(s.al_mindset[b].sum()) != kind:
            continue
        name = {1: "spiral_in", 0: "undecided", -1: "spiral_out"}[int(s.al_regime[b])]
        ax.plot(tt, oo, color=REGIME_COLORS[name], lw=0.8, alpha=0.6)
        ax.plot(tt[-1:], oo[-1:], "o", color=REGIME_COLORS[name], ms=3)
    ax.set_title(f"Phase portrait: {PAIR_NAMES[kind]}s' (trust, openness) paths")
    ax.text(0.97, 0.03, f"flow and tipping line: alliance {a}'s own map, as it formed",
            ha="right",
            fontsize=8, color="#888888", transform=ax.transAxes)


def write_figure(path: Path, fig) -> Path:
    def save(tmp: Path):
        fig.savefig(tmp, dpi=110, format="png")
    try:
        return atomic_write(path, save)
    finally:
        plt.close(fig)


def write_run(model, out: Path | Staged, extra: dict[str, Callable[[], object]] | None = None
              ) -> dict[str, Path]:
    """All outputs of a finished run into folder out, as a whole (see the module docstring).

    out: a path (checked now) or the Staged folder from prepare_folder (checked before the run).
    extra: more figures, file name -> a function returning a matplotlib figure.
    Nothing is written if the run holds a NaN or inf.
    """
    summary = model.summary()
    ts = model.timeseries()
    series = {c: ts[c].to_numpy() for c in ts.columns}
    alliances = model.alliances()
    check_finite(model, summary, {"timeseries.parquet": series,
                                  "alliances.parquet": alliances})
    stage = out if isinstance(out, Staged) else prepare_folder(
        out, RUN_FILES + UI_FILES, run_bytes(model.scenario_spec.values), label="folder")
    with stage:
        try:
            write_parquet(stage / "timeseries.parquet", series, summary)
            write_parquet(stage / "alliances.parquet", alliances, summary)
            write_graphml(stage / "network.graphml", model.network(), summary)
            write_figure(stage / "run.png", plot_run(model))
            for name, make in (extra or {}).items():
                write_figure(stage / name, make())
            write_json(stage / "summary.json", summary)
        except OSError as e:
            raise OutputError(f"{stage.label} {stage.target}",
                              f"cannot write the results: {e.strerror or e}") from None
        target = stage.commit()
    names = {"timeseries": "timeseries.parquet", "alliances": "alliances.parquet",
             "network": "network.graphml", "figure": "run.png", "summary": "summary.json"}
    paths = {k: target / v for k, v in names.items()}
    paths.update({name: target / name for name in (extra or {})})
    return paths
