"""A working directory for a local run: the one asked for (kept), else a temporary one."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def workdir(path: str | None, prefix: str) -> Iterator[Path]:
    """`path` (created if missing and kept), else a temporary directory removed afterwards."""
    if path:
        os.makedirs(path, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        yield Path(scratch)
