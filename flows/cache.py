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
    """Name, size and mtime of each input file (the files of daily/ and features/ included):
    changes whenever a file is replaced, grows, or a file is added to or removed from a folder."""
    from pipeline.data.ingest import FILES, FOLDERS, folder_files

    out = []
    files = [Path(data_dir) / name for name in FILES.values()]
    for table, name in FOLDERS.items():
        if (Path(data_dir) / name).is_dir():
            files += folder_files(Path(data_dir), table)
    for p in files:
        if p.exists():
            st = p.stat()
            out.append([p.relative_to(data_dir).as_posix(), st.st_size, st.st_mtime_ns])
    return out
