"""`spiral query DIR "SQL"`: SQL over a sweep's Parquet parts with DuckDB.

Tables: `runs` (one row per run) and, when the sweep kept per-step series, `series` (one row per
run and step). Prints the result as a table, or writes it as CSV or Parquet.
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
    con = duckdb.connect()

    def view(name: str, sub: str):
        pattern = str(folder.resolve() / sub / "part-*.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM "
                    f"read_parquet('{pattern}', union_by_name = true)")

    view("runs", "runs")
    if any((folder / "series").glob("part-*.parquet")):
        view("series", "series")
    return con


def main_query(args) -> int:
    import duckdb

    from sim.outputs import atomic_write

    con = connect(args.dir)

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
