"""Writers on Unix sockets beside their TCP ports, where nginx shares their host (the local cluster's option).

A writer given a directory (``REACTIONS_WRITER_SOCKETS``) also listens on
``DIR/writer-PORT.sock``; nginx's upstreams then name ``unix:DIR/writer-PORT.sock``
instead of ``host:PORT``. nginx's consistent hash hashes those server strings
(sharding/ring.py), so a batch is placed on the ring of the same strings:
every writer of the cluster and its nginx share one directory.
"""

from __future__ import annotations

# A socket's path must fit in sockaddr_un's sun_path (108 bytes with its NUL).
MAX_PATH_BYTES = 107


def socket_path(directory: str, address: str) -> str:
    """Where the writer at ``address`` (host:port) listens in ``directory``."""
    path = f"{directory.rstrip('/')}/writer-{address.rsplit(':', 1)[1]}.sock"
    if len(path.encode()) > MAX_PATH_BYTES:
        raise ValueError(f"{path}: a Unix socket's path must be at most {MAX_PATH_BYTES} bytes")
    return path


def writer_server(address: str, directory: str = "") -> str:
    """The ``server`` string nginx is given for this writer: its socket if ``directory``, else its address."""
    return f"unix:{socket_path(directory, address)}" if directory else address
