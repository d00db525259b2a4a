"""Every container of the stack started at once, with no depends_on order, reaches the contract within 60 s.

The compose file as rendered, less every ``depends_on``: as an engine (or a
node's reboot) starts the containers. The images are the session's.
"""

from __future__ import annotations

import os
import time

import aiohttp
import pytest
import yaml

from common.hours import current_hour, now_ms
from perf.ledger import HourCounts
from tests.faults.load import get_hour
from tests.support.compose_stack import ComposeStack
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(600)

CONVERGE_S = 60.0


def without_order(stack: ComposeStack) -> None:
    path = stack.project_dir / "docker-compose.yml"
    document = yaml.safe_load(path.read_text())
    for service in document["services"].values():
        service.pop("depends_on", None)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    secrets = stack.project_dir / "docker" / "secrets"
    secrets.mkdir(mode=0o700)
    password = os.urandom(16).hex()
    for name, text in [("postgres_password", f"{password}\n"), ("pgpass", f"*:*:*:postgres:{password}\n")]:
        (secrets / name).write_text(text)
        (secrets / name).chmod(0o600)


@pytest.mark.xfail(strict=False, reason="before branch converge (issue 18, item 3) the parts do not wait for "
                   "each other: they retry or exit and are restarted; measured here at 57 s of the 60 s")
async def test_every_container_started_at_once_reaches_the_contract(spare_stack: ComposeStack) -> None:
    without_order(spare_stack)
    began = time.monotonic()
    spare_stack.compose("up", "-d", "--no-build")
    ts = now_ms()

    acked: list[str] = []

    async def takes_a_write() -> bool:
        async with aiohttp.ClientSession() as session:
            status, stale, _ = await get_hour(session, spare_stack.base_url, current_hour())
            if status != 200 or stale:
                return False
            user = f"first-{len(acked)}-{os.urandom(3).hex()}"
            async with session.post(f"{spare_stack.base_url}/analytics?timestamp={ts}&user={user}&click") as answer:
                assert "X-Reactions-Outcome" not in answer.headers, "an outcome unknown would blur the count"
                if answer.status == 204:
                    acked.append(user)
            return bool(acked)
    await wait_until(takes_a_write, "a read and a write through nginx", CONVERGE_S - (time.monotonic() - began),
                     poll_s=0.5)

    async def exact() -> bool:
        async with aiohttp.ClientSession() as session:
            status, stale, counted = await get_hour(session, spare_stack.base_url, current_hour())
            return status == 200 and not stale and counted == HourCounts(len(acked), len(acked), 0)
    await wait_until(exact, "the write counted exactly", max(1.0, CONVERGE_S - (time.monotonic() - began)),
                     poll_s=0.2)
    await wait_until(lambda: set(spare_stack.health().values()) == {"healthy"}, "every container healthy",
                     max(1.0, CONVERGE_S - (time.monotonic() - began)), poll_s=0.5)
    docker = spare_stack.engine.docker
    restarts = {name: docker("inspect", "-f", "{{.RestartCount}}", spare_stack.container(name)).stdout.strip()
                for name in spare_stack.health()}
    print(f"\nstarted at once: exact within {time.monotonic() - began:.0f}s; restarts by the policy: {restarts}")
