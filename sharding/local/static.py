"""The dashboard's files where the local nginx's workers can read them.

nginx started as root runs its workers as an unprivileged user (``nobody``),
so they read only what any user may. The repository's own ``dashboard/`` is
served as it is (edits show on the next reload of the page) whenever that
holds; a clone in a private folder (a home directory of mode 700) would
answer 403, so then a copy goes into the cluster's nginx folder, which the
cluster keeps traversable.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from sharding.nginx import DASHBOARD_DIR

READABLE = stat.S_IROTH
TRAVERSABLE = stat.S_IXOTH


def readable_by_anyone(folder: Path) -> bool:
    """Whether any user can reach ``folder`` and read every file in it."""
    folder = folder.resolve()
    if any(not parent.stat().st_mode & TRAVERSABLE for parent in folder.parents):
        return False
    if folder.stat().st_mode & (READABLE | TRAVERSABLE) != READABLE | TRAVERSABLE:
        return False
    return all(path.stat().st_mode & READABLE for path in folder.iterdir())


def served_dashboard(nginx_dir: Path, source: Path = DASHBOARD_DIR) -> Path:
    """The folder nginx should serve the dashboard from: ``source`` itself, or a fresh readable copy."""
    if readable_by_anyone(source):
        return source
    copy = nginx_dir / "dashboard"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source, copy)
    copy.chmod(0o755)
    for path in copy.iterdir():
        path.chmod(0o644)
    return copy
