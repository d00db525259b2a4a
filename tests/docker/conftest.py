"""A private Docker engine and Reactions' compose stack on it, built once per run.

Package-scoped: the engine stops (and the FORWARD policy it set is restored)
as soon as tests/docker is done, before the other packages' network tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sharding.local.processes import free_port
from tests.support.compose_stack import ComposeStack, copy_repository
from tests.support.docker_engine import (
    DockerEngine,
    DockerEngineSettings,
    EngineUnavailable,
    forward_policy,
    interfaces_in,
    other_dockerd_runs,
)
from tests.support.tmpdirs import world_traversable_tmpdir


@pytest.fixture(scope="package")
def engine() -> Iterator[DockerEngine]:
    try:
        with DockerEngine.start(DockerEngineSettings.from_env()) as started:
            yield started
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine can start here: {exc}")
    # Stopped: what it changed on the host is as it found it (the FORWARD policy blocks bridged test networks).
    if not other_dockerd_runs(-1):
        assert forward_policy() == started.before.forward_policy, "the engine left the FORWARD policy changed"
        assert not interfaces_in(started.slot.block), "the engine left a bridge behind"


def new_stack(engine: DockerEngine, name: str, net_index: int) -> ComposeStack:
    project_dir = copy_repository(world_traversable_tmpdir(f"reactions-docker-{name}-") / "reactions")
    return ComposeStack(engine, project_dir, f"rx{engine.slot.number}{name}", free_port(),
                        engine.slot.fixed_net(net_index))


@pytest.fixture(scope="package")
def stack(engine: DockerEngine) -> Iterator[ComposeStack]:
    """`make docker-up` in a fresh copy of the repository: the images are built here, once a session."""
    started = new_stack(engine, "main", 1)
    began = time.monotonic()
    try:
        output = started.make("docker-up")
        print(f"\nmake docker-up: {time.monotonic() - began:.0f}s\n{output[-1500:]}")
        yield started
    finally:
        started.down(volumes=True)


@pytest.fixture
def spare_stack(engine: DockerEngine, stack: ComposeStack) -> Iterator[ComposeStack]:
    """A second project on the same engine and images (after the session's build), removed at the end."""
    spare = new_stack(engine, "spare", 2)
    try:
        yield spare
    finally:
        spare.down(volumes=True)
