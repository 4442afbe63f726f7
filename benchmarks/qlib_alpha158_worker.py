"""Qlib's own Alpha158 on a dataset in Qlib's binary layout; run by bench_qlib.py with the
interpreter of an environment that has `pyqlib` (Qlib is not a dependency of this project).

    QLIB_PYTHON worker.py PROVIDER_DIR INSTRUMENTS_FILE START END OUT.parquet KERNELS

Computes `Alpha158DL.get_feature_config()` (the 158 expressions of Qlib's Alpha158 handler)
with `D.features`, Qlib's expression engine, without caches, and writes them to OUT.parquet
(index instrument, datetime). Prints one JSON line: wall seconds of `D.features`, rows.
"""
from __future__ import annotations

import json
import sys
import time


def main() -> None:
    provider, inst_file, start, end, out, kernels = sys.argv[1:7]
    import qlib
    from qlib.constant import REG_CN
    from qlib.contrib.data.loader import Alpha158DL
    from qlib.data import D

    qlib.init(provider_uri=provider, region=REG_CN, expression_cache=None, dataset_cache=None,
              kernels=int(kernels), logging_level="WARNING")
    instruments = [line.strip() for line in open(inst_file) if line.strip()]
    fields, names = Alpha158DL.get_feature_config()
    t0 = time.perf_counter()
    df = D.features(instruments, fields, start_time=start, end_time=end, freq="day")
    seconds = time.perf_counter() - t0
    df.columns = names
    df.to_parquet(out)
    print(json.dumps({"seconds": seconds, "rows": len(df), "columns": len(names)}))


if __name__ == "__main__":
    main()
