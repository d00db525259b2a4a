"""A size-limited tmpfs for a test: a filesystem that really runs out of space (ENOSPC), always unmounted."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# Written in chunks this big until the filesystem refuses.
FILL_CHUNK = 1 << 20


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")


@contextlib.contextmanager
def tmpfs(mount_point: Path, size_mb: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_mb`` at ``mount_point`` (world-traversable); always unmounted on the way out."""
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(mount_point)],
                   check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
        shutil.rmtree(mount_point, ignore_errors=True)


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem is full; the bytes written."""
    written = 0
    chunk = b"\0" * FILL_CHUNK
    with open(path, "wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        with contextlib.suppress(OSError):  # the last few bytes, one page at a time
            while True:
                written += out.write(b"\0" * 4096)
    return written


def is_mounted(mount_point: Path) -> bool:
    return any(line.split()[1] == str(mount_point) for line in Path("/proc/mounts").read_text().splitlines())
