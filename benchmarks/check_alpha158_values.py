"""Check that two Alpha158 SQL files compute the same values on a whole data folder.

    git show HEAD:sql/features/alpha158.sql > /tmp/old.sql
    .venv/bin/python benchmarks/check_alpha158_values.py --old /tmp/old.sql [--home /tmp/a158check]

Builds the `prices` table from --data (default ../shared/data) with the project's own ingest
into the scratch home --home (skipped when its warehouse exists), runs the --old SQL and the
current sql/features/alpha158.sql (or --new) over every stock, in statements of up to
BATCH_ROWS rows as `miga features` packs them, into the tables alpha158_old and alpha158_new,
and compares them in SQL on the join of (date, instrument): the rows of each and of the join,
then for each of the 158 columns the values that differ (`IS DISTINCT FROM`, so NULL against a
value counts) and, of those, the NULL-pattern mismatches. Exit status 1 when anything differs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.data.ingest import ingest  # noqa: E402
from pipeline.features.alpha158 import FEATURE_NAMES, LOOKBACK_ROWS  # noqa: E402
from pipeline.features.build import BATCH_ROWS, EPOCH, _stock_batches  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.warehouse import sql_text  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def run_into(con, query: str, table: str, batches: list[list[str]]) -> float:
    """The statement over every batch of stocks into `table`; seconds taken."""
    t = time.perf_counter()
    con.execute(f"DROP TABLE IF EXISTS {table}")
    for i, batch in enumerate(batches):
        params = {"instruments": batch, "after": EPOCH, "lookback": LOOKBACK_ROWS}
        con.execute((f"CREATE TABLE {table} AS " if i == 0 else f"INSERT INTO {table} ") + query, params)
    return time.perf_counter() - t


def compare(con) -> tuple[int, dict[str, tuple[int, int]]]:
    """Rows of the join, and per column (values that differ, NULL-pattern mismatches)."""
    exprs = []
    for c in FEATURE_NAMES:
        exprs += [f'count(*) FILTER (WHERE o."{c}" IS DISTINCT FROM n."{c}")',
                  f'count(*) FILTER (WHERE (o."{c}" IS NULL) <> (n."{c}" IS NULL))']
    row = con.execute(f"SELECT count(*), {', '.join(exprs)} FROM alpha158_old o "
                      "JOIN alpha158_new n USING (date, instrument)").fetchall()[0]
    return row[0], {c: (row[1 + 2 * k], row[2 + 2 * k]) for k, c in enumerate(FEATURE_NAMES)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="the Alpha158 SQL to compare against "
                    "(e.g. `git show HEAD:sql/features/alpha158.sql > /tmp/old.sql`)")
    ap.add_argument("--new", default=str(ROOT / "sql" / "features" / "alpha158.sql"),
                    help="the Alpha158 SQL to check (default: the current sql/features/alpha158.sql)")
    ap.add_argument("--home", default="/tmp/a158check", help="scratch home folder for the warehouse")
    ap.add_argument("--data", default=str(DATA), help="data folder (default ../shared/data)")
    args = ap.parse_args()
    settings = Settings.from_env(args.home).ensure()
    if not settings.warehouse.exists():
        t = time.perf_counter()
        ingest(settings, Path(args.data))
        print(f"ingest of {args.data}: {time.perf_counter() - t:.1f} s")
    con = duckdb.connect(str(settings.warehouse), config={
        "memory_limit": "3GB", "temp_directory": str(settings.tmp_dir / "duckdb")})
    con.execute("SET enable_progress_bar = false")
    stock_rows = con.execute(sql_text("features/instruments"),
                             {"after": EPOCH, "lookback": LOOKBACK_ROWS}).fetchall()
    batches = _stock_batches(stock_rows, BATCH_ROWS)
    print(f"{len(stock_rows)} stocks, {sum(n for _, n in stock_rows):,} rows, {len(batches)} statements")
    for name, path in (("old", args.old), ("new", args.new)):
        s = run_into(con, Path(path).read_text(), f"alpha158_{name}", batches)
        print(f"{name} ({path}): {s:.1f} s")
    n_old, n_new = (con.execute(f"SELECT count(*) FROM alpha158_{t}").fetchall()[0][0] for t in ("old", "new"))
    cols_old, cols_new = ([r[0] for r in con.execute(f"DESCRIBE alpha158_{t}").fetchall()] for t in ("old", "new"))
    n_join, diffs = compare(con)
    con.close()
    print(f"rows: old {n_old:,}, new {n_new:,}, joined on (date, instrument) {n_join:,}")
    ok = n_old == n_new == n_join and cols_old == cols_new == ["date", "instrument"] + FEATURE_NAMES
    if cols_old != cols_new:
        print(f"columns differ: old {cols_old}, new {cols_new}")
    print("differing values per column (NULL-pattern mismatches in brackets):")
    for k in range(0, len(FEATURE_NAMES), 6):
        print("  " + "  ".join(f"{c:>7} {d:>4} [{m}]" for c, (d, m) in list(diffs.items())[k:k + 6]))
    bad = {c: dm for c, dm in diffs.items() if dm != (0, 0)}
    if ok and not bad:
        print(f"all {n_join:,} rows x {len(FEATURE_NAMES)} columns identical")
        return 0
    print(f"DIFFERENCES: {len(bad)} columns differ: "
          + ", ".join(f"{c} {d} values ({m} NULL-pattern)" for c, (d, m) in bad.items())
          + ("" if ok else "; row counts or columns differ"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
