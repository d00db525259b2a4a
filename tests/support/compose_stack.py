"""Reactions under Docker compose on a private engine: a copy of this repository, driven as a user would.

The copy (the working tree, as it is now, without venv, tests, secrets and
wheelhouse) is what a fresh clone holds; ``make`` runs there with this
repository's venv. Each stack has its own compose project, published port
and fixed network (REACTIONS_NET) inside the engine's block of 198.19.0.0/16.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.docker_engine import DockerEngine

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
COMPOSE = VENV / "bin" / "docker-compose"
# What a clone holds that the stack does not need, and what must never be copied.
LEFT_OUT = (".venv", ".git", "var", "tests", "perf", "docs", "__pycache__", ".pytest_cache", ".mypy_cache",
            ".ruff_cache", ".hypothesis", "secrets", "wheelhouse")
# make docker-up: base, wheelhouse, build, start and the first exact answer.
UP_TIMEOUT_S = 900.0


def copy_repository(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*LEFT_OUT), symlinks=True)
    return dest


@dataclass
class ComposeStack:
    engine: DockerEngine
    project_dir: Path
    project: str
    port: int
    net: str  # the first three numbers of the stack's network

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**self.engine.env(), "PORT": str(self.port), "REACTIONS_NET": self.net,
                "COMPOSE_PROJECT_NAME": self.project, "REACTIONS_DOCKER_UP_TIMEOUT_S": "240"}

    def run(self, argv: list[str], timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(argv, cwd=self.project_dir, env=self.env(), capture_output=True, text=True,
                                timeout=timeout_s)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                                 f"{result.stderr[-3000:]}")
        return result

    def make(self, target: str, timeout_s: float = UP_TIMEOUT_S) -> str:
        return self.run(["make", target, f"VENV={VENV}"], timeout_s=timeout_s).stdout

    def compose(self, *args: str, timeout_s: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run([str(COMPOSE), *args], timeout_s=timeout_s, check=check)

    def container(self, service: str) -> str:
        return self.compose("ps", "-a", "-q", service).stdout.strip()

    def state(self, service: str) -> dict[str, object]:
        out = self.engine.docker("inspect", "-f", "{{json .State}}", self.container(service)).stdout
        return dict(json.loads(out))

    def pid(self, service: str) -> int:
        """The main process of the service's container, as the host sees it."""
        return int(self.engine.docker("inspect", "-f", "{{.State.Pid}}", self.container(service)).stdout)

    def health(self) -> dict[str, str]:
        """Each service's container: its health status, or its state where it has no health check."""
        found = {}
        for line in self.compose("ps", "-a", "--format", "{{.Service}} {{.State}} {{.Health}}").stdout.splitlines():
            service, state, *health = line.split()
            found[service] = health[0] if health and state == "running" else state
        return found

    def password(self) -> str:
        return (self.project_dir / "docker" / "secrets" / "postgres_password").read_text().strip()

    def address(self, service: str) -> str:
        return self.engine.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                  self.container(service)).stdout.strip()

    def dsn(self, pg_service: str) -> str:
        """A shard's DSN from this host: its fixed address, with the password."""
        return f"postgresql://postgres:{self.password()}@{self.address(pg_service)}:5432/reactions"

    def down(self, volumes: bool) -> None:
        self.compose("down", *(["-v"] if volumes else []), "--remove-orphans", timeout_s=120, check=False)


def wait_for(check: object, what: str, deadline_s: float, poll_s: float = 0.5) -> None:
    """A blocking wait on a condition with a deadline, for fixtures outside the event loop."""
    deadline = time.monotonic() + deadline_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s:.0f}s: {what}")
        time.sleep(poll_s)

