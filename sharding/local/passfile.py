"""The PostgreSQL password of a cluster: generated once, kept in a libpq passfile (mode 0600).

One passfile per cluster holds one line, ``*:*:*:postgres:SECRET``: every
shard's PostgreSQL of the cluster has that password for its ``postgres`` role
(scram-sha-256), and every client (writers, aggregators, ``apply``, psql) finds
it through ``PGPASSFILE`` or asyncpg's ``passfile=``. The secret never appears
in a DSN, an argument, an environment variable's value, a log or ``status``.
Across hosts, the user copies this one file to every host (docs/operations.md, Running on
several hosts). SCRAM never sends the password itself to the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

# 32 random bytes, URL-safe: no ':' or '\\' to escape in the passfile.
SECRET_BYTES = 32
# PostgreSQL's own default iteration count for scram-sha-256.
SCRAM_ITERATIONS = 4096


class PassfileError(RuntimeError):
    """The passfile is missing, unreadable, malformed or readable by others."""


def ensure_passfile(path: Path, user: str) -> None:
    """Create the passfile with a new secret unless it exists (O_EXCL: two starts never race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as out:
        out.write(f"*:*:*:{user}:{secrets.token_urlsafe(SECRET_BYTES)}\n")


def password_of(path: Path, user: str) -> str:
    """The password the passfile gives ``user`` (its first wildcard line for that user)."""
    try:
        mode = path.stat().st_mode
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise PassfileError(f"cannot read the passfile {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise PassfileError(f"{path} is readable by others: chmod 600 {path}")
    for line in lines:
        fields = line.split(":")
        if len(fields) == 5 and fields[:3] == ["*", "*", "*"] and fields[3] == user and fields[4]:
            return fields[4]
    raise PassfileError(f"{path} has no line '*:*:*:{user}:PASSWORD'")


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The scram-sha-256 verifier PostgreSQL stores: ``ALTER ROLE ... PASSWORD`` with it never sends the password."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
            f"${b64(stored_key).decode()}:{b64(server_key).decode()}")
