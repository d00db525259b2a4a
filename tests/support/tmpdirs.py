"""Temporary directories that PostgreSQL's OS user can traverse (its data directories go below them)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def world_traversable_tmpdir(prefix: str) -> Path:
    """A new temporary directory, mode 755: mkdtemp's 700 would lock the ``postgres`` user out."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path
