"""The tensor store: dense, memory-mapped (day x stock x feature) arrays built from the warehouse.

    arrays.py   TensorStore (read a built store), StoreWriter (write one); numpy only
    build.py    from the warehouse: fingerprint, full build, extension after new days, pruning

    store = build_store(settings, config)        # `miga store`: build or reuse
    store = open_store(settings, fingerprint)    # a store whose fingerprint the caller knows
    store = current_store(settings, config)      # the store of the current warehouse and config

The build functions are loaded on first use, so reading a store (the loader, training) does
not import DuckDB and the ingest.
"""
from pipeline.store.arrays import StoreWriter, TensorStore

_BUILD = ("build_store", "built_stores", "current_store", "open_store")
__all__ = ["StoreWriter", "TensorStore", *_BUILD]


def __getattr__(name: str):
    if name in _BUILD:
        from pipeline.store import build

        return getattr(build, name)
    raise AttributeError(f"module 'pipeline.store' has no attribute {name!r}")
