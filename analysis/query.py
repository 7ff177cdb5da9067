"""`spiral query DIR "SQL"`: SQL over a sweep's Parquet parts with DuckDB.

Tables: `runs` (one row per run), when the sweep kept them `series` (one row per run and step)
and `alliances` (one row per alliance per run), and views that join them without ambiguous
names: `runs_series` (every column of `runs`, then `step` and each series column as
`series_<name>`) and `runs_alliances` (`runs`, then each alliance column as `alliance_<name>`).
Prints the result as a table, or writes it as CSV or Parquet.

Local only: the SQL runs in an in-process DuckDB with its full powers (it can read and write
any file this user can, e.g. COPY ... TO, read_csv('/any/path')); it is a tool for your own
results, never a service for untrusted queries. A corrupt part is named in one line; the next
`spiral sweep` on the folder quarantines it. Incomplete sweeps are queried as they are (a
warning on stderr says so); `spiral analyse` refuses them.
"""

from __future__ import annotations

from pathlib import Path

from sim.scenario import ScenarioError


def connect(folder: str | Path):
    import duckdb

    folder = Path(folder)
    runs = sorted((folder / "runs").glob("part-*.parquet"))
    if not runs:
        raise ScenarioError(str(folder), "", "expected a sweep results folder with "
                            "runs/part-*.parquet (run `spiral sweep` first)")
    from analysis.sweep import require_readable

    require_readable(folder)
    con = duckdb.connect()

    def view(name: str, sub: str):
        pattern = str(folder.resolve() / sub / "part-*.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM "
                    f"read_parquet('{pattern}', union_by_name = true)")

    def prefixed(name: str, table: str, prefix: str, keep: tuple[str, ...]):
        cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        sel = ", ".join(f'{table}."{c}"' if c in keep else
                        f'{table}."{c}" AS "{prefix}{c}"' for c in cols if c != "run")
        con.execute(f"CREATE VIEW {name} AS SELECT runs.*, {sel} FROM runs JOIN {table} "
                    "USING (run)")

    view("runs", "runs")
    for t, prefix, keep in (("series", "series_", ("step",)), ("alliances", "alliance_", ())):
        if any((folder / t).glob("part-*.parquet")):
            view(t, t)
            prefixed(f"runs_{t}", t, prefix, keep)
    return con


def warn_if_incomplete(folder: Path) -> None:
    import sys

    try:
        from analysis.analyse import check_sweep, load_runs

        df, meta = load_runs(folder)
        problems = check_sweep(df, meta)["problems"]
    except ScenarioError:
        return
    if problems:
        print(f"warning: {folder}: " + "; ".join(problems), file=sys.stderr)


def main_query(args) -> int:
    import duckdb

    from sim.outputs import atomic_write

    con = connect(args.dir)
    warn_if_incomplete(Path(args.dir))

    def sql_error(e: Exception) -> ScenarioError:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return ScenarioError("query", "SQL", msg)

    try:
        rel = con.sql(args.sql)  # parsed and bound here; most of it runs only below
        if rel is None:
            return 0
        df = rel.df()  # runtime errors (division by zero, casts, ...) surface here
    except duckdb.Error as e:
        raise sql_error(e) from None
    try:
        if args.csv:
            atomic_write(Path(args.csv), lambda tmp: df.to_csv(tmp, index=False))
            print(f"written: {args.csv} ({len(df)} rows)")
        if args.parquet:
            atomic_write(Path(args.parquet), lambda tmp: df.to_parquet(tmp, index=False))
            print(f"written: {args.parquet} ({len(df)} rows)")
    except OSError as e:
        raise ScenarioError("query", "--csv" if args.csv else "--parquet",
                            f"cannot write {e.filename or ''}: {e.strerror or e}") from None
    if not (args.csv or args.parquet):
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.max_columns", 50,
                               "display.width", 160):
            print(df.to_string(index=False))
    return 0
