"""Compare warehouse contents before and after an operation (shared by the ingest tests)."""
from __future__ import annotations

import pandas as pd

from pipeline.settings import Settings
from pipeline.warehouse import open_warehouse


def snapshot(settings: Settings, tables: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """Each existing table of `tables`, sorted, so contents compare regardless of row order."""
    con = open_warehouse(settings, read_only=True)
    try:
        names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        # identifiers come from the tests' own constant tuples, never from data
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").df() for t in tables if t in names}
    finally:
        con.close()


def refused(settings: Settings, data, tables: tuple[str, ...], *needles: str):
    """Ingest `data`, which must be refused with one line containing every needle, the tables
    `tables` exactly as before; returns the DataError."""
    import pytest

    from pipeline.data.ingest import ingest
    from pipeline.errors import DataError

    before = snapshot(settings, tables)
    with pytest.raises(DataError) as info:
        ingest(settings, data)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    after = snapshot(settings, tables)
    assert before.keys() == after.keys()
    for t in before:
        pd.testing.assert_frame_equal(before[t], after[t])
    return info.value
