"""Temporary directories of the test session, removed at its end when every test passed.

They hold PostgreSQL data directories (about 300 MB a server) and logs: a
run that leaves them fills the disk after a few dozen runs, and a failed
run keeps them for its logs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

MADE: list[Path] = []


def session_tmpdir(prefix: str) -> Path:
    """A new temporary directory (mode 700), removed with the others at the end of a passing session."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    MADE.append(path)
    return path


def world_traversable_tmpdir(prefix: str) -> Path:
    """The same, mode 755: mkdtemp's 700 would lock the ``postgres`` user out of data directories below it."""
    path = session_tmpdir(prefix)
    os.chmod(path, 0o755)
    return path


def remove_session_tmpdirs() -> None:
    while MADE:
        shutil.rmtree(MADE.pop(), ignore_errors=True)
