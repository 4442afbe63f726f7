"""What the flow's cache keys are made of (no Prefect here, so tests need no engine)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def stable_key(*parts: Any) -> str:
    """A short hash of JSON-able parts: cache keys for the flow's steps."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def folder_signature(data_dir: str | Path) -> list:
    """Name, size and mtime of each input file: changes whenever a file is replaced or grows."""
    from pipeline.data.ingest import FILES

    out = []
    for name in FILES.values():
        p = Path(data_dir) / name
        if p.exists():
            st = p.stat()
            out.append([name, st.st_size, st.st_mtime_ns])
    return out
