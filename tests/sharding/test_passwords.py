"""No database accepts a connection without the password; the password lives only in the passfile."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import asyncpg
import pytest

from sharding.local.passfile import PassfileError, ensure_passfile, password_of, scram_verifier
from sharding.local.postgres import PG_USER, LocalPostgres
from sharding.local.processes import free_port
from tests.support.tmpdirs import world_traversable_tmpdir


def test_passfile_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    ensure_passfile(path, PG_USER)
    secret = password_of(path, PG_USER)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(secret) >= 40
    ensure_passfile(path, PG_USER)
    assert password_of(path, PG_USER) == secret, "a second start keeps the secret"
    os.chmod(path, 0o644)
    with pytest.raises(PassfileError, match="readable by others"):
        password_of(path, PG_USER)


async def test_a_connection_without_the_password_is_refused(postgres: LocalPostgres, tmp_path: Path) -> None:
    empty = tmp_path / "none"
    empty.write_text("")
    empty.chmod(0o600)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(postgres.dsn, passfile=str(empty))
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(postgres.dsn, password="wrong")
    conn = await asyncpg.connect(postgres.dsn, passfile=str(postgres.passfile))
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def test_every_rule_of_pg_hba_asks_for_scram(postgres: LocalPostgres) -> None:
    rules = [line.split() for line in (postgres.data_dir / "pg_hba.conf").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules), rules


async def test_a_data_directory_made_with_trust_gets_the_password(tmp_path: Path) -> None:
    """An older DATA_DIR (trust everywhere) requires the password after its next start."""
    root = world_traversable_tmpdir("reactions-trust-")
    pg = LocalPostgres(root / "pg", free_port(), passfile=root / "pgpass")
    pg.start()
    try:
        hba = pg.data_dir / "pg_hba.conf"
        hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
        pg.stop()
        pg.start()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(pg.dsn, password="wrong")
        conn = await asyncpg.connect(pg.dsn, passfile=str(root / "pgpass"))
        await conn.close()
    finally:
        pg.stop("immediate")


def test_the_verifier_is_postgresqls_own(postgres: LocalPostgres) -> None:
    """A role given scram_verifier's text logs in with the password (PostgreSQL checks it, not us)."""
    verifier = scram_verifier("open sesame")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    psql = [*postgres._psql("postgres"), "-f", "-"]
    env = {**os.environ, "PGPASSFILE": str(postgres.passfile)}
    subprocess.run(psql, input="DROP ROLE IF EXISTS verifier_check; "
                   f"CREATE ROLE verifier_check LOGIN PASSWORD '{verifier}';", check=True, env=env, text=True,
                   capture_output=True)
    done = subprocess.run([*postgres._psql("postgres"), "-U", "verifier_check", "-c", "SELECT 1"],
                          env={**os.environ, "PGPASSWORD": "open sesame"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
