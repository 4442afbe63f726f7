"""Expectations on the real data (../shared/data): it ingests, passes every suite, and looks
like the README says. One ingest for the module (~15-20 s on 2 cores)."""
from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest

from pipeline.data.ingest import ingest
from pipeline.data.validate import validate_warehouse
from pipeline.settings import Settings
from pipeline.warehouse import open_warehouse

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


@pytest.fixture(scope="module")
def warehouse(shared_data, tmp_path_factory):
    settings = Settings.from_env(tmp_path_factory.mktemp("home")).ensure()
    report = ingest(settings, shared_data)
    con = open_warehouse(settings, read_only=True)
    yield settings, report, con
    con.close()


def q(con, sql):
    return con.execute(sql).fetchall()


def test_every_row_lands(warehouse, shared_data):
    _, report, con = warehouse
    for table, f in (("prices", "daily"), ("membership", "membership"), ("index_prices", "index")):
        n = pq.read_metadata(shared_data / f"{f}.parquet").num_rows
        assert report.totals[table] == n == q(con, f"SELECT count(*) FROM {table}")[0][0]
    assert report.totals["prices"] == 7_250_734


def test_readme_facts(warehouse):
    _, _, con = warehouse
    assert q(con, "SELECT min(date), max(date) FROM prices")[0] == (dt.date(2010, 1, 4), dt.date(2020, 12, 31))
    assert q(con, "SELECT count(DISTINCT instrument) FROM prices")[0][0] == 4202
    # Point-in-time sets have their nominal size on any day.
    sizes = dict(q(con, """SELECT index_name, count(*) FROM membership
                           WHERE DATE '2016-03-01' BETWEEN start_date AND end_date GROUP BY 1"""))
    assert sizes == {"csi300": 300, "csi500": 500, "csi1000": 1000}
    # Every market trading day has its csi300 and csi500 levels.
    assert q(con, """SELECT count(*) FROM (SELECT DISTINCT date FROM prices) d
                     ANTI JOIN (SELECT date FROM index_prices WHERE index_name = 'csi300') USING (date)""")[0][0] == 0


def test_suites_pass_on_the_warehouse(warehouse):
    settings, _, _ = warehouse
    summary = validate_warehouse(settings)
    assert all(t.success for t in summary.tables)
