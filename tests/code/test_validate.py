"""GX suites: JSON is the source of truth, SQL full scan and GX agree, warehouse validation."""
from __future__ import annotations

import json

import duckdb
import pytest

from pipeline.data import validate as v
from pipeline.data.ingest import ingest
from pipeline.data.synth import SynthSpec, write_synthetic
from pipeline.errors import DataError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data"),
                           SynthSpec(n_stocks=20, n_days=40, seed=9, n_features=20))


@pytest.mark.parametrize("table", v.TABLES)
def test_suites_load_in_gx_and_cover_the_issue(table):
    import great_expectations as gx

    suite = v.load_suite(table)
    gx.ExpectationSuite(**suite)                     # valid GX 1.x suite JSON
    types = {e["type"] for e in suite["expectations"]}
    assert {"expect_table_row_count_to_be_between", "expect_column_values_to_not_be_null",
            "expect_compound_columns_to_be_unique"} <= types


def test_prices_suite_has_the_required_rules():
    exps = v.load_suite("prices")["expectations"]
    keyed = {(e["type"], e["kwargs"].get("column") or e["kwargs"].get("column_A")): e["kwargs"]
             for e in exps}
    for c in ("open", "high", "low", "close", "factor"):
        assert keyed[("expect_column_values_to_be_between", c)]["strict_min"] is True
    for c in ("volume", "amount"):
        assert keyed[("expect_column_values_to_be_between", c)]["min_value"] == 0
    assert keyed[("expect_column_pair_values_a_to_be_greater_than_b", "high")]["or_equal"]
    assert keyed[("expect_column_values_to_be_between", "date")]["max_value"] == {"$PARAMETER": "today"}


def test_feature_templates_expand_to_every_feature_column():
    suite = v.load_suite("feature_panel")
    exps = v.expand_suite(suite, ["date", "instrument", "a", "b"])
    per_col = [e for e in exps if e["kwargs"].get("column") == "b"]
    assert {e["type"] for e in per_col} == {"expect_column_values_to_not_be_null",
                                            "expect_column_values_to_be_between",
                                            "expect_column_values_to_be_in_type_list"}
    assert all(e["meta"]["feature_template"] for e in per_col)


def test_every_row_is_checked_not_a_sample(tmp_path):
    # One bad row at the very end of 300k rows: a sample or head would miss it.
    con = duckdb.connect()
    con.execute("""CREATE TABLE t AS SELECT DATE '2015-01-01' + (i % 3000)::INT AS date,
                   'S' || (i // 3000)::VARCHAR AS instrument, 1.0::DOUBLE AS f0000
                   FROM range(300000) r(i)""")
    con.execute("UPDATE t SET f0000 = 'inf'::DOUBLE WHERE instrument = 'S99' AND date = DATE '2015-01-01' + 2999")
    with pytest.raises(DataError) as info:
        v.validate(con, "feature_panel", "t", "t", "memory:t", tmp_path)
    assert info.value.count == 1 and info.value.column == "f0000"
    assert "S99" in str(info.value)


def test_nan_counts_as_missing_like_gx_on_pandas(tmp_path):
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT DATE '2020-01-02' AS date, 'A' AS instrument, 'nan'::DOUBLE AS f0000")
    with pytest.raises(DataError) as info:
        v.validate(con, "feature_panel", "t", "t", "memory:t", tmp_path, gx="always")
    assert info.value.expectation == "expect_column_values_to_not_be_null"
    report = json.loads(open(info.value.report).read())
    gx_failed = {r["expectation_config"]["type"] for r in report["gx_result"]["results"] if not r["success"]}
    assert gx_failed == {"expect_column_values_to_not_be_null"}   # GX agrees, nothing else fails


def test_expectation_without_sql_mapping_is_an_error(tmp_path, monkeypatch):
    suite = v.load_suite("membership")
    suite["expectations"].append({"type": "expect_column_values_to_match_regex",
                                  "kwargs": {"column": "instrument", "regex": "^S[HZ]"}})
    monkeypatch.setattr(v, "load_suite", lambda table: suite)
    con = duckdb.connect()
    con.execute("CREATE TABLE m AS SELECT 'csi300' AS index_name, 'SH600000' AS instrument, "
                "DATE '2020-01-01' AS start_date, DATE '2020-02-01' AS end_date")
    with pytest.raises(ValueError, match="no SQL mapping"):
        v.validate(con, "membership", "m", "m", "memory:m", tmp_path)


def test_validate_warehouse_passes_then_catches_a_corrupted_table(settings, folder):
    ingest(settings, folder)
    summary = v.validate_warehouse(settings)
    assert [t.table for t in summary.tables] == list(v.TABLES)
    assert all(t.success for t in summary.tables) and "prices" in str(summary)
    reports = sorted(settings.reports_dir.glob("validation-prices-*.json"))
    gx_report = json.loads(reports[-1].read_text())
    assert gx_report["gx_result"]["success"] is True and gx_report["rows_checked"] > 0
    # The feature panel: every column scanned, GX re-runs a bounded number of them.
    fp = json.loads(sorted(settings.reports_dir.glob("validation-feature_panel-*.json"))[-1].read_text())
    assert len(fp["full_scan"]) > fp["gx_expectations_run"] >= 8 * 3

    con = duckdb.connect(str(settings.warehouse))
    con.execute("UPDATE prices SET low = high * 2 WHERE instrument IN "
                "(SELECT DISTINCT instrument FROM prices ORDER BY 1 LIMIT 2)")
    bad = con.execute("SELECT count(*) FROM prices WHERE low > high").fetchall()[0][0]
    con.close()
    with pytest.raises(DataError) as info:
        v.validate_warehouse(settings)
    assert info.value.file == "warehouse:prices" and info.value.count == bad
    assert info.value.expectation == "expect_column_pair_values_a_to_be_greater_than_b"


def test_missing_warehouse_table_is_reported(settings):
    duckdb.connect(str(settings.warehouse)).close()
    with pytest.raises(DataError, match="prices is missing"):
        v.validate_warehouse(settings)


def test_plausibility_bounds_are_in_the_suites():
    """Implausible values (1e300, a unit slip) are refused by bounds written in the suites,
    each with the real data's maximum it was chosen from (meta.notes)."""
    def between(table):
        return {e["kwargs"]["column"]: e for e in v.load_suite(table)["expectations"]
                if e["type"] == "expect_column_values_to_be_between"}
    prices, index = between("prices"), between("index_prices")
    for col, hi in (("close", 1e5), ("amount", 1e13), ("volume", 1e12), ("adj_high", 1e8),
                    ("adj_close_ratio", 5)):
        assert prices[col]["kwargs"]["max_value"] == hi and "shared/data" in prices[col]["meta"]["notes"]
    assert prices["adj_close_ratio"]["kwargs"]["min_value"] == 0.2
    assert index["close"]["kwargs"]["max_value"] == 1e7
    template = {t["type"]: t for t in v.load_suite("feature_panel")["meta"]["feature_columns"]["expectations"]}
    assert template["expect_column_values_to_be_between"]["kwargs"] == {"min_value": -1e15, "max_value": 1e15}


def test_checks_across_rows_run_in_sql_and_in_gx(tmp_path):
    """Derived columns (here: the earlier overlapping interval) are computed over every row, and
    GX, re-run on the evidence rows that carry them, agrees on the failure."""
    con = duckdb.connect()
    con.execute("""CREATE TABLE m AS SELECT * FROM (VALUES
        ('csi300', 'SH600000', DATE '2015-01-01', DATE '2015-12-31'),
        ('csi300', 'SH600000', DATE '2016-01-01', DATE '2016-06-30'),
        ('csi300', 'SH600000', DATE '2016-03-01', DATE '2016-04-30'),   -- inside the one before
        ('csi500', 'SH600000', DATE '2016-03-01', DATE '2016-04-30'),   -- another index: fine
        ('csi300', 'SZ000001', DATE '2015-01-01', DATE '2020-12-31'),
        ('csi300', 'SZ000001', DATE '2016-01-01', DATE '2016-02-01'),   -- inside
        ('csi300', 'SZ000001', DATE '2017-01-01', DATE '2017-02-01')    -- inside the first one too
        ) t(index_name, instrument, start_date, end_date)""")
    with pytest.raises(DataError) as info:
        v.validate(con, "membership", "m", "m", "memory:m", tmp_path, gx="always")
    err = info.value
    assert err.expectation == "expect_column_pair_values_a_to_be_greater_than_b" and err.count == 3
    got = {(r["instrument"], str(r["start_date"].date()), str(r["overlapped_start"].date()),
            str(r["overlapped_end"].date())) for r in err.examples}
    assert got == {("SH600000", "2016-03-01", "2016-01-01", "2016-06-30"),
                   ("SZ000001", "2016-01-01", "2015-01-01", "2020-12-31"),
                   ("SZ000001", "2017-01-01", "2015-01-01", "2020-12-31")}
    assert "overlapped_end=" in str(err) and "\n" not in str(err)
    report = json.loads(open(err.report).read())
    gx_failed = [r for r in report["gx_result"]["results"] if not r["success"]]
    assert [r["expectation_config"]["kwargs"]["column_B"] for r in gx_failed] == ["overlapped_end"]
    assert gx_failed[0]["result"]["unexpected_count"] == 3


def test_validate_warehouse_catches_an_implausible_move(settings, folder):
    ingest(settings, folder)
    con = duckdb.connect(str(settings.warehouse))
    con.execute("""UPDATE prices SET open = open * 100, high = high * 100, low = low * 100,
                   close = close * 100 WHERE date = (SELECT max(date) FROM prices)""")
    con.close()
    with pytest.raises(DataError) as info:
        v.validate_warehouse(settings, gx="failures")
    assert info.value.column == "adj_close_ratio" and info.value.file == "warehouse:prices"
    assert "\n" not in str(info.value)
