"""Alpha158 over the whole shared panel (DuckDB SQL) vs the plain pandas reference.

    .venv/bin/python benchmarks/bench_features.py [--home /tmp/miga-bench] [--sample 40]

Builds a scratch warehouse from ../shared/data (prices, membership, index_prices) under
--home unless it exists, then times `build_features(force=True)` (features + labels +
market features; peak RSS of this process, DuckDB included), and side by side on the same
--sample stocks: the SQL and the pandas reference (tests/code/alpha158_reference.py).
Reference point: Qlib's Alpha158 handler on this data, 2 cores: 209 s, 14.6 GB peak RSS.

    .venv/bin/python benchmarks/bench_features.py --home /tmp/a158home --compare-sql old.sql
    .venv/bin/python benchmarks/bench_features.py --home /tmp/a158home --sample 0 --skip-full

times another alpha158 SQL file (e.g. `git show aef26c5:sql/features/alpha158.sql > old.sql`)
on the same stocks too; `--sample 0` compares on every stock. The stocks go into statements
as `miga features` packs them (up to BATCH_ROWS = 3M rows a statement), or of --chunk stocks
each; each statement is timed both ways, one after the other, the reference in calls of up to
REFERENCE_ROWS = 1M rows (its faster size). The SQL is
timed three ways: to a pandas DataFrame via Arrow (what the reference returns; a relation's
to_arrow_table(), as DuckDB advises), via DuckDB's .df(), and into a DuckDB temp table (what
`miga features` computes, without the warehouse's compression and disk write).

Measured 2026-11-24 on the shared 2-core box (other jobs running; wall times depend on them):
  framed-aggregate SQL (aef26c5), load ~1.5-3.8: full panel 180 s wall / 207 s CPU
    (Alpha158 176 s), peak RSS 3.1 GB; 40 stocks: SQL 2.56 s CPU (fetchall) vs pandas 1.89 s.
    An earlier run at load ~8: 518 s wall / 231 s CPU.
  window sums from lags (1bb3f6f), load ~0.7-1.6: full panel 93.7 s wall / 175 s CPU
    (Alpha158 91.6 s = 46 stocks/s), peak RSS 3.1 GB; 40 stocks, same run: old SQL 1.96 s
    CPU, new SQL 1.60 s CPU, pandas reference 2.38 s CPU (1.5x).
  + max/min/arg max of 20/30/60 days from lags (87080f0), load ~3-4 (about one core for
    this process): full panel 160 s wall / 158 s CPU (Alpha158 156 s), peak RSS 3.1 GB;
    40 stocks, same run: old SQL 1.92 s CPU, new SQL 1.42 s CPU, pandas reference 1.81 s.
  same SQL, idle machine (load 1.2), later the same day: full panel Alpha158 82.2 s wall
    (84.3 s wall / 157 s CPU with labels and market features), peak RSS 3.11 GB; 40 stocks:
    SQL 0.99 s wall / 1.63 s CPU vs pandas 1.86 s wall / 1.86 s CPU (1.9x wall, 1.1x CPU).
  100 stocks (167k rows), 1 thread, into a temp table, alternating runs: 4.0 s (aef26c5)
    -> 2.9 s (1bb3f6f) -> 2.6 s CPU (87080f0).
  struct-packed lags and warm-up factors (37fe38c) and statements of up to 1M rows (one per
    ~1M rows instead of one per 400 stocks), idle machine (load 0.7-1.8), next session:
    full panel Alpha158 77.0 s wall (80.9 s wall / 150 s CPU with labels and market
    features), peak RSS 3.14 GB; before the batching change, same SQL: 85.9 s (88.0 / 164 s
    CPU). 40 stocks: SQL 0.94-1.00 s wall / 1.46-1.54 s CPU vs pandas 1.81-1.84 s (1.8-1.9x
    wall); 400 stocks (`--sample 400 --skip-full --compare-sql old.sql`): previous SQL
    7.45 s / 12.57 s CPU, this SQL 7.21 s / 11.84 s CPU, pandas 20.13 s (2.8x wall, 1.7x CPU).
    Single thread, 300 stocks (492k rows) into a temp table: 15.4-15.9 -> 14.5 us per row.
  std and corr of close from sums of y = c_j / c - 1 instead of 10 framed aggregates, the
    10-day quantities after the window read from the packed struct (a narrower window
    payload), cheaper day units (684a67b and the next commit), later the same day, load 0.8-1.6:
    full panel Alpha158 63.5-66.8 s wall over four runs (features+labels+market 67.6-70.6 s
    wall / 125-130 s CPU), peak RSS 3.04-3.08 GB; the previous SQL (bbd5972, git worktree,
    same home, back to back): 73.6 s (77.5 s / 145.5 s CPU). 400 stocks, one run
    (`--sample 400 --compare-sql old.sql`): previous SQL 6.81 s wall / 11.50 s CPU, this SQL
    5.88 s / 9.79 s CPU (-15% CPU), pandas 19.04 s (3.2x wall, 1.9x CPU); 40 stocks 2.1-2.2x.
    Single thread, 300 stocks into a temp table: 14.3-14.5 -> 11.3-12.4 us per row.
  + no coalesce in the window sums (next commits), load ~1: full panel Alpha158 62.1 and
    67.3 s (features+labels+market 65.1 s wall / 120.4 s CPU; 71.5 / 131.0), peak RSS 3.07-3.14
    GB; 400 stocks, twice, side by side with the SQL before this commit: 5.86-5.98 s wall /
    9.68-9.73 s CPU -> 5.36-5.39 s / 8.90-8.93 s CPU; pandas 18.64-18.94 s (3.5x wall, 2.1x
    CPU); 40 stocks 2.4x wall. Against bbd5972 (6.81-6.86 s / 11.50-11.59 s CPU): -22% CPU.
  + variances from sums with abs instead of greatest(x, 0), load 0.9-1.7: full panel Alpha158
    58.8, 63.8, 58.9 s in three runs (features+labels+market 62.7 / 67.7 / 62.5 s wall,
    114.9 / 124.1 / 115.9 s CPU), peak RSS 3.03-3.12 GB; 400 stocks, twice, side by side
    with the SQL before this step: 5.74 / 4.98 s wall (9.24 / 8.44 s CPU) vs 5.43 / 5.54 s
    (9.13 / 9.02 s CPU), within this machine's noise at 2 threads (single thread, 300 stocks:
    11.2-11.7 -> 10.6-11.1 us per row); pandas 18.9-19.3 s (3.5x wall); 40 stocks 2.3-2.4x.
  + RANK of every window from sign sums of the close's day lags (no framed ranks) and QTLU/QTLD
    of 5 and 10 days from a comparator network (d323073), next session, load 0.6-1.5: single
    thread, 300 stocks: 10.3-10.6 -> 9.6-9.8 us per row. Full panel Alpha158 57.8, 57.6, 54.5 s
    (features+labels+market 61.6 / 60.6 / 58.1 s wall, 112.7 / 110.9 / 106.1 s CPU), peak RSS
    3.07-3.09 GB. Side by side, the SQL timed three ways (DataFrame via Arrow / via DuckDB's
    .df() / into a DuckDB temp table; earlier figures above are .df()):
      400 stocks (`--sample 400 --compare-sql old.sql`, two runs): previous SQL 4.16-4.19 s
      (Arrow); this SQL 3.60-3.62 / 4.14-4.37 / 3.51-3.71 s; pandas 18.7-18.8 s: 5.2x / 4.3-4.5x
      / 5.0-5.4x wall.
      whole panel (`--sample 0 --skip-full`, statements of 400 stocks, 5.6 min): pandas 196.6 s;
      SQL 43.6 / 47.5 / 40.7 s: 4.5x / 4.1x / 4.8x wall (2.4x / 2.4x / 2.6x CPU). With
      `--chunk 600` (~1M rows a statement, as `miga features` packs them), load 1.5: pandas
      205.8 s; SQL 44.6 / 46.6 / 39.2 s: 4.6x / 4.4x / 5.3x wall (2.5x / 2.6x / 2.8x CPU).
      40 stocks: 0.71 / 0.79 / 0.72 s vs pandas 1.69 s: 2.1-2.4x (each statement costs ~0.2 s
      to bind and optimise, and small statements parallelise less).
  same SQL, next session (a slower day for this VM: the same build took ~8% more CPU, the
    single-thread 300-stock figure 10.2-11.1 us per row), load 0.5-1.4. The DataFrame via
    Arrow now comes from `con.sql(...)` (one statement of 600 stocks, alternating runs:
    con.execute(...).to_arrow_table() 6.8-7.2 s, con.sql(...) 6.0-6.2 s, into a temp table
    5.9-6.3 s); the whole panel goes into statements as `miga features` packs them.
      full panel, four runs: Alpha158 61.1 / 62.3 / 60.0 / 61.7 s (features+labels+market
      64.9 / 66.1 / 63.9 / 65.8 s wall, 116.9-121.2 s CPU), peak RSS 3.09 GB.
      whole panel, 8 statements as packed (7 min): pandas 207.7 s; SQL 48.0 / 52.5 / 43.8 s:
      4.3x / 4.0x / 4.7x wall. With `--chunk 600`: pandas 208.5 s; SQL 48.2 / 53.2 / 43.3 s:
      4.3x / 3.9x / 4.8x.
      400 stocks, two runs: pandas 18.7-19.1 s; SQL 3.91-4.02 / 4.44-4.50 / 3.68-3.83 s:
      4.7-4.8x / 4.2-4.3x / 5.0-5.1x. 40 stocks: 2.0 / 2.1 / 2.3x.
    Tried and dropped (single thread, 300 stocks, alternating runs): the packed 10-day
    quantities as a DOUBLE[23] array instead of a struct (+5-13%), lagged as 115 separate
    columns (+6%); an integer stock id as the window partition key (within noise); duckdb 2.0.1
    (same). Full build: features stored uncompressed -3% time for +43% disk (3.9 -> 5.6 GB);
    preserve_insertion_order=false or threads=3: within noise; two statements in flight on two
    cursors (500k-row batches): 79 s instead of 63 s.
  same SQL, a third session (a faster day: single thread, 300 stocks 9.8-10.2 us per row),
    load 0.4-1.2:
      full panel: Alpha158 55.2 s (features+labels+market 58.8 s wall / 107.9 s CPU), peak RSS
      3.07 GB; in a measuring script, same build: 56.5, 56.0, 56.8 s.
      whole panel, 8 statements as packed (6.5 min): pandas 196.1 s; SQL 43.1 / 47.7 / 40.1 s:
      4.6x / 4.1x / 4.9x wall (2.5x / 2.4x / 2.6x CPU).
      400 stocks, two runs: pandas 19.0-19.3 s; SQL 3.81-4.12 / 4.35-4.42 / 3.80-3.85 s:
      4.6-5.1x / 4.4x / 5.0x.
    Tried and dropped: the windowed quantiles in the first window pass (+2-3%: their lists then
    ride through the second pass); the second pass over a narrow projection (keys, close,
    struct) joined back to the rest on (instrument, row number) (+16%: the window itself
    drops 1.8 -> 1.3 s, but DuckDB materialises the first pass and recomputes the units for
    both sides, and the join costs 0.4 s); compression settings for the warehouse write
    (force_compression='alprd' or disabled_compression_methods='rle' save ~0.4 of ~4.5 CPU-s
    per 1M-row write when copying a table, but the whole build moved 56.0 / 56.8 -> 55.0 /
    56.8 s, within noise); PREPARE once + EXECUTE per batch (DuckDB rebinds the prepared
    statement on every EXECUTE here, 0.19-0.31 s each, no saving); enable_optimistic_write=false
    (Alpha158 61.1 / 62.1 s against 56.1 / 56.5 s, alternating).
  same SQL, a fourth session (single thread, 300 stocks 10.0-10.4 us per row), load 1.1-1.6:
      full panel: Alpha158 68.8 s in the benchmark (72.9 s wall / 132.0 s CPU with labels and
      market features), peak RSS 3.09 GB; in a measuring script, same build: 60.2, 59.8, 59.4,
      57.2 s (111.7-117.2 s CPU).
      whole panel, 8 statements as packed (7 min): pandas 201.0 s; SQL 46.7 / 46.9 / 41.7 s:
      4.3x / 4.3x / 4.8x wall (2.3x / 2.5x / 2.5x CPU).
    Tried and dropped: no lookback QUALIFY for a full build (within noise: DuckDB's cost for it
    is small); prices stored sorted by (first day, instrument, date), so that each statement's
    stocks are contiguous: the scan and filter of the 8 statements drop 1.05 -> 0.58 s, but the
    whole build into temp tables went 40.0 / 39.1 s -> 40.6 / 41.5 s, alternating; list_sort of
    the lags for the 20/30/60-day quantiles (0.84 s against the skip list's 0.34 s for 20 days,
    492k rows); checkpoint_threshold='64GB' during the build (57.5 / 58.5 s against 59.4 / 57.2 s
    default, alternating: within noise).
  statements of up to 3M rows instead of 1M (same session): DuckDB's memory is bounded by the
    warehouse connection's memory_limit (3 GB) at any statement size, so the batching only trades
    the per-statement cost against spilling. Whole build (features+labels+market, build_features
    in a fresh process after the scratch warehouse), alternating runs, Alpha158 s: 1M rows 54.0,
    54.3, 55.4, 55.7, 58.3; 2M 52.7, 54.2, 54.5; 3M 52.0; 4M 51.7, 52.3, 52.8, 53.7; 8M (one
    statement) 58.5 with 2.3 GB spilled to temp_directory. Peak RSS 3.19-3.28 GB at every size.
      full panel, 3M rows a statement (3 statements): Alpha158 55.9 s (58.4 s wall / 109.5 s CPU
      with labels and market features), peak RSS 3.07 GB; an earlier run at load ~5: 52.2 s
      (54.4 s / 102.3 s CPU).
      whole panel, side by side (the reference now in calls of up to 1M rows, its faster size:
      on 1,800 stocks one 3M-row call took 86.7-88.7 s, three 1M-row calls 85.7 s), two runs:
      pandas 203.7 / 204.3 s; SQL 43.6 / 42.7 s, 54.3 / 53.4 s, 39.1 / 39.4 s: 4.7-4.8x / 3.8x /
      5.2x wall (2.4-2.5x / 2.2-2.3x / 2.7x CPU). DuckDB's .df() is slower on 3M-row results.
  closes 11..59 days back (RANK's 20/30/60-day blocks, ROC20/30) read from the lagged packed
    structs, which now carry their row's 9 earlier closes, instead of 49 more day lags (4cdc18d);
    then v20/v30/v60 and c60 lagged in the second window pass, where they are read, instead of
    riding through it as payload (b824ac7). A fifth session, load 0.7-1.3; values equal to the
    previous SQL's on 300 stocks. Single thread, 300 stocks, alternating: 9.8-10.2 -> 9.2-9.5 us
    per row (4cdc18d), then 10.3-11.0 -> 10.2-10.7 (b824ac7, four pairs; a slower hour).
      full panel, three runs: Alpha158 50.9 / 55.5 / 54.5 s (features+labels+market 53.1 / 57.7 /
      56.7 s wall, 100.2 / 108.8 / 107.1 s CPU), peak RSS 3.05-3.09 GB.
      whole panel, side by side (3 statements as packed; the SQL before this session timed in the
      same runs, via Arrow; speed-ups now printed to 2 decimals), DataFrame via Arrow / via .df() /
      into a DuckDB temp table:
        run 1 (4cdc18d): pandas 203.09 s; SQL 40.75 / 53.75 / 37.58 s: 4.98x / 3.78x / 5.40x;
          before 44.09 s (4.61x).
        run 2 (4cdc18d): pandas 208.48 s; SQL 40.67 / 50.82 / 36.57 s: 5.13x / 4.10x / 5.70x;
          before 42.46 s (4.91x).
        run 3 (b824ac7): pandas 207.89 s; SQL 41.37 / 52.74 / 38.72 s: 5.02x / 3.94x / 5.37x;
          before 47.15 s (4.41x).
        run 4 (b824ac7, --skip-full): pandas 207.98 s; SQL 41.06 / 50.57 / 37.40 s: 5.07x / 4.11x /
          5.56x; before 45.95 s (4.53x).
    Tried and dropped (single thread, 300 stocks, alternating): the day lags of close, volume,
    high and low as 10 lags of one struct (9.7 against 9.3-9.6 us per row); v20/v30/v60 and c60
    from the packed structs too, with c_10 and v_10 packed (9.6-9.9 against 9.2-9.5); c5, c10, v5,
    v10 as lags in the second pass (within noise); a second pass over a narrow projection (keys,
    prices, x, packed; ~40 values a row instead of ~75), with the 5-day units and sums, the 5/10-day
    quantiles and ranks computed after it from the packed closes and 13 more second-pass lags: the
    pass drops 2.0 -> 1.6 s, but the statement went 9.3-9.85 -> 9.75-10.0 us per row (four pairs; a
    window pass costs ~27 ns per payload value a row: 80 payload columns 1.11 s, 8 columns 0.16 s,
    one lag, 492k rows). The 20-day quantiles from two sorted 10-day
    blocks (a selection over the row's block and the one lagged by 10) would save at most the
    20-day skip list: removing it saves 0.1-0.2 of 4.5 s, before the cost of a full 10-sort and
    the selection, so not built. A DataFrame from a 2.4M-row statement: DuckDB's Arrow result
    takes as long as the temp table (11.7 vs 11.6 s, 13.1 vs 13.9 s); to_pandas() then takes
    2.05 s the first time and 0.24 s when Arrow's memory pool already holds the pages, so the
    DataFrame path's extra ~3 s is mostly first-touch memory of the 1.5 GB results.
  least/greatest of two columns as CASE WHEN a < b THEN a ELSE b END (DuckDB's least(a, b) costs
    ~11 ns a row against ~5 for the CASE: 5M rows, one thread), the 5/10-day highest high and
    lowest low with their first day as running scans, one day per layer of the comparator
    network's CTEs (two CASEs on one condition instead of greatest() over 5 and 10 lags and a
    chain of equality tests), and the warm-up factor only on MAX, MIN, QTLU, QTLD, RSV, IMAX,
    IMIN and IMXD, which are taken over partial windows; the other features are NULL by
    construction (a0708c0). A sixth session, load 0.1-1.1. All 7,250,734 rows x 158 columns
    equal the previous SQL's exactly, NULLs included. DuckDB profile, one thread, 300 stocks:
    the network layers 0.225 -> 0.116 s, the final projection 0.36-0.39 -> 0.31-0.32 s.
      full panel, three runs: Alpha158 49.0 / 51.3 / 51.9 s (features+labels+market 51.1 / 53.6 /
      54.1 s wall, 96.3 / 100.2 / 101.9 s CPU), peak RSS 3.05-3.07 GB.
      whole panel, side by side (3 statements as packed; the SQL before this session, 19c50b6,
      via Arrow in the same runs), DataFrame via Arrow / via .df() / into a DuckDB temp table:
        run 1: pandas 207.72 s; SQL 38.15 / 46.80 / 35.43 s: 5.45x / 4.44x / 5.86x; before
          40.76 s (5.10x).
        run 2: pandas 207.97 s; SQL 39.13 / 50.02 / 34.19 s: 5.32x / 4.16x / 6.08x; before
          41.28 s (5.04x).
        run 3 (--skip-full): pandas 204.50 s; SQL 38.18 / 48.61 / 34.75 s: 5.36x / 4.21x /
          5.88x; before 41.09 s (4.98x).
        run 4, a slower stretch of this VM (everything took longer, the temp table no less than
          Arrow): pandas 216.89 s; SQL 41.04 / 56.99 / 41.21 s: 5.28x / 3.81x / 5.26x; before
          50.41 s (4.30x).
      The same statements via Arrow: 6.4 / 5.2 / 7.1 / 18.6% less wall and 7.1 / 6.2 / 8.8 / 18.7%
      less CPU than the previous SQL.
    Tried and dropped (values equal in each): QTLU/QTLD of 20 (and 30) days from sorted 10-day
    blocks instead of the skip lists. The packed struct carried its block's closes sorted (a full
    10-wire network, 32 comparators against 29; RANK's sign sums do not depend on their order),
    and the k-th of the union of two sorted blocks is the least, over the ways to take i from
    one and k - i from the other, of the greater of the two last taken (16 CASEs for the two
    positions each 20-day quantile reads from one end; for 30 days the first 7 of two blocks,
    then merged with the third). DuckDB's profile: the window pass 2.03 -> 1.83 s (20 days) and
    1.61 s (20 and 30), the selection layers 0.14 and 0.33 s; but interleaved single-thread runs
    (10 each) gave a median 10.24 us per row before, 10.40 (20 days) and 10.53 (20 and 30): no
    gain. The 5- and 10-day closes read after the second pass from the packed structs (three
    fewer payload values): within noise. The second pass's payload (all but keys, c, v and the
    packed struct) packed into one more struct: 10.06-10.11 against 9.90-10.05 us per row.
Where the time goes now (1 thread, 300 stocks, DuckDB profile, 4.3-4.6 s): the second window pass
2.0 s (the windowed quantiles of 20/30/60 days, a skip list each, ~0.85 s; the 5 lags of the
packed struct ~0.2 s; sorting and carrying the pass's ~75 values a row ~0.9 s); the first window
pass (the day lags) 0.27 s; the CTAS into a temp table 0.7 s; the per-day units and other
projections ~1.0 s, of which the final 158-column projection 0.31 s. Into the warehouse table
each 1M-row statement takes ~2 s more at 2 threads: copying a finished 1M-row result costs
4.2-4.7 CPU-s into the warehouse against 1.3-1.5 into a temp table, 3.0-4.9 with compression off,
and the same on tmpfs, so it is compression analysis and DuckDB's row-group write path more than
the disk. Each statement also costs ~0.28 s however few its rows (measured on one stock: ~0.16 s
to parse (0.04 s), bind and plan, ~0.1 s to set up and tear down the execution). The 60 s target
held in the three runs of the first session, missed by 0-4% in the four of the second, held in
the four of the third (55.2-56.8 s), in the fourth was missed by the benchmark (68.8 s) and met or
missed by under 1% in a measuring script (57.2-60.2 s) with 1M-row statements, then held in every
run with 3M-row statements (51.7-55.9 s), held in the three of the fifth (50.9-55.5 s) and in the
three of the sixth (49.0-51.9 s). The 5x target, sixth session (four runs): converted to a
pandas DataFrame via Arrow (the reference's own output) 5.28-5.45x, where the fifth session's
SQL gave 4.98-5.13x (4.30-5.10x in the same runs); into a DuckDB table (the computation, in
memory) 5.86-6.08x, 5.26x in the slow fourth run; via DuckDB's .df() 3.8-4.4x; the build into
the warehouse table, with its compression and disk write, 49.0-51.9 s against 204-217 s: 4.0-4.2x.

Figures behind the design of pipeline/features/alpha158.py (moved from its comments, which keep
the reasons): a framed aggregate costs ~200-600 ns per row, and std and corr of the close from
window sums are ~2x cheaper than their framed aggregates; a lag of a double costs ~1/20 of a
framed aggregate; coalesce in the window sums cost ~5% of the statement; abs costs ~1/5 of
greatest(x, 0); a CASE for least/greatest of two columns about half DuckDB's least(a, b) (above:
~5 against ~11 ns a row), a few ns per comparator of the sorting network, whose 20-day version
(~190 least/greatest) is slower than the windowed quantile's skip list; each framed rank (RANK's
rank(ORDER BY c) and its DESC twin) ~220 ns a row; one lag of the packed struct of 10-day
quantities ~1/5 of lagging them separately (~6% of the statement).

Figures behind BATCH_ROWS in pipeline/features/build.py (moved from its comment): planning an
Alpha158 statement costs ~0.3 s, and with 1M-row statements 11 of them were half of a one-day
extend; a full build peaks at 3.2 GB RSS from 1M to 8M rows a statement (the warehouse's
memory limit bounds it); spilling starts above ~4M rows; the full shared panel builds ~4%
faster at 3M rows a statement than at 1M.
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.features.alpha158 import LOOKBACK_ROWS  # noqa: E402
from pipeline.features.build import BATCH_ROWS, EPOCH, _stock_batches, build_features  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.warehouse import run_sql, sql_text  # noqa: E402
from tests.code.alpha158_reference import alpha158_reference  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
REFERENCE_ROWS = 1_000_000   # rows per call of the pandas reference (see the side by side)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def scratch_warehouse(path: Path, data: Path) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE prices AS SELECT CAST(date AS DATE) date, * EXCLUDE (date) "
                "FROM read_parquet($f)", {"f": str(data / "daily.parquet")})
    con.execute("CREATE TABLE membership AS SELECT index_name, instrument, CAST(start_date AS DATE) "
                "start_date, CAST(end_date AS DATE) end_date FROM read_parquet($f)",
                {"f": str(data / "membership.parquet")})
    con.execute("CREATE TABLE index_prices AS SELECT CAST(date AS DATE) date, * EXCLUDE (date) "
                "FROM read_parquet($f)", {"f": str(data / "index.parquet")})
    con.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default="/tmp/miga-bench")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--sample", type=int, default=40, help="stocks for the side-by-side (0: all)")
    ap.add_argument("--chunk", type=int, default=0, help="stocks per SQL statement / reference call "
                    "(0: as `miga features` packs them, up to BATCH_ROWS rows a statement)")
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--compare-sql", help="another alpha158 SQL file (e.g. `git show OLD:sql/features/"
                    "alpha158.sql > old.sql`) timed on the same stocks, before/after")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = Settings.from_env(args.home).ensure()
    scratch_warehouse(settings.warehouse, Path(args.data))
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} (other work shares them)")

    con = duckdb.connect(str(settings.warehouse), read_only=True)
    n_stocks, n_rows = con.execute("SELECT count(DISTINCT instrument), count(*) FROM prices").fetchall()[0]
    con.close()
    if not args.skip_full:
        t, c = time.perf_counter(), cpu()
        summary = build_features(settings, force=True)
        wall, cpus = time.perf_counter() - t, cpu() - c
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(summary)
        print(f"FULL PANEL ({n_stocks} stocks, {n_rows:,} rows): features+labels+market "
              f"{wall:.1f} s wall, {cpus:.1f} s CPU, peak RSS {rss:.2f} GB "
              f"(Qlib Alpha158 handler: 209 s, 14.6 GB)")
        feat_s = next(s for tname, _, _, s in summary.steps if tname == "features")
        print(f"  Alpha158 alone: {feat_s:.1f} s = {n_stocks / feat_s:.1f} stocks/s")

    con = duckdb.connect(str(settings.warehouse), read_only=True)
    insts = [r[0] for r in con.execute("SELECT DISTINCT instrument FROM prices ORDER BY hash(instrument) "
                                       "LIMIT $k", {"k": args.sample or n_stocks}).fetchall()]
    query = sql_text("features/alpha158")
    ways = {"DataFrame via Arrow": _to_frame, "DataFrame via .df()": _to_df, "DuckDB temp table": _to_temp}
    if args.compare_sql:
        other = Path(args.compare_sql).read_text()
        ways[f"{args.compare_sql} (Arrow)"] = lambda c, _, p: _to_frame(c, other, p)
    timings = {how: [0.0, 0.0] for how in ways} | {"reference": [0.0, 0.0]}
    rows = 0
    warm = {"instruments": insts[:1], "after": "1900-01-01", "lookback": LOOKBACK_ROWS}
    for run in ways.values():       # untimed: the first statement of a process pays ~0.1 s more
        run(con, query, warm)
    alpha158_reference(con.execute("SELECT * FROM prices WHERE instrument = $i", {"i": insts[0]}).df())
    # chunks of stocks, each timed both ways one after the other (the reference keeps a whole
    # call's DataFrame in memory, as the SQL's result does); results are dropped
    # The reference gets calls of up to REFERENCE_ROWS rows whatever the statements' size: it is
    # ~2% slower on 3M-row frames than on 1M (1,800 stocks, alternating: 86.7-88.7 s vs 85.7 s).
    stock_rows = dict(run_sql(con, "features/instruments", {"after": EPOCH, "lookback": LOOKBACK_ROWS}).fetchall())
    chunks = _chunks(stock_rows, insts, args.chunk)
    for chunk in chunks:
        params = {"instruments": chunk, "after": "1900-01-01", "lookback": LOOKBACK_ROWS}
        for how, run in ways.items():
            t, c = time.perf_counter(), cpu()
            run(con, query, params)
            timings[how][0] += time.perf_counter() - t
            timings[how][1] += cpu() - c
        for part in _stock_batches([(i, stock_rows[i]) for i in chunk], REFERENCE_ROWS):
            px = con.execute("SELECT * FROM prices WHERE list_contains($i, instrument)", {"i": part}).df()
            rows += len(px)
            t, c = time.perf_counter(), cpu()
            alpha158_reference(px)
            timings["reference"][0] += time.perf_counter() - t
            timings["reference"][1] += cpu() - c
            del px
    con.close()
    k = len(insts)
    ref_wall, ref_cpu = timings.pop("reference")
    print(f"SAME {k} STOCKS ({rows:,} rows, {len(chunks)} statement{'s' * (len(chunks) > 1)} of {k / len(chunks):.0f} stocks on average"
          f"{'' if args.chunk else ', packed as miga features packs them'}): pandas reference "
          f"{ref_wall:.2f} s wall / {ref_cpu:.2f} s CPU ({k / ref_wall:.1f} stocks/s); the SQL:")
    for how, (wall, cpus) in timings.items():
        print(f"  {how:<20} {wall:6.2f} s wall / {cpus:6.2f} s CPU ({k / wall:5.1f} stocks/s): "
              f"speed-up {ref_wall / wall:.2f}x wall, {ref_cpu / cpus:.1f}x CPU")


def _chunks(stock_rows: dict[str, int], insts: list[str], chunk: int) -> list[list[str]]:
    """The stocks in statements: `chunk` stocks each, or (0) as `miga features` packs them, by
    the rows each reads, up to BATCH_ROWS a statement, in its order."""
    if chunk:
        return [insts[i:i + chunk] for i in range(0, len(insts), chunk)]
    keep = set(insts)
    return _stock_batches([(i, n) for i, n in stock_rows.items() if i in keep], BATCH_ROWS)


def _to_frame(con, query: str, params: dict):
    """The features as a pandas DataFrame, as the reference returns them, via a relation's Arrow
    result, as DuckDB advises. It binds the 1,000-expression statement twice (~0.14 s), but
    `con.execute(...).to_arrow_table()` copies the materialised rows once more (~0.7-1 s more per
    1M-row statement, measured); fetchall()'s Python tuples would cost more than the SQL."""
    return con.sql(query, params=params).to_arrow_table().to_pandas(date_as_object=False)


def _to_df(con, query: str, params: dict):
    """The same DataFrame through DuckDB's own pandas conversion (slower on 158 FLOAT columns)."""
    return con.execute(query, params).df()


def _to_temp(con, query: str, params: dict) -> None:
    """The features as a DuckDB table in memory: what `miga features` computes, without the
    compression and disk write of the warehouse table."""
    con.execute("CREATE OR REPLACE TEMP TABLE bench_features AS " + query, params)


if __name__ == "__main__":
    main()
