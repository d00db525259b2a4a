"""Every container of the stack started at once, with no depends_on order, reaches the contract within 60 s.

The compose file as rendered, less every ``depends_on``: as an engine (or a
node's reboot) starts the containers. nginx finds every name in its hosts
file (fixed addresses), the writers retry their databases, the aggregators
read the mounted shard file. The images are the session's.
"""

from __future__ import annotations

import os
import time

import aiohttp
import pytest
import yaml

from common.hours import current_hour, now_ms
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


async def test_every_container_started_at_once_reaches_the_contract(spare_stack: ComposeStack) -> None:
    without_order(spare_stack)
    began = time.monotonic()
    spare_stack.compose("up", "-d", "--no-build")
    ts = now_ms()

    acked, unknown = [], []

    async def takes_a_write() -> bool:
        async with aiohttp.ClientSession() as session:
            status, stale, _ = await get_hour(session, spare_stack.base_url, current_hour())
            if status != 200 or stale:
                return False
            user = f"first-{os.urandom(4).hex()}"
            async with session.post(f"{spare_stack.base_url}/analytics?timestamp={ts}&user={user}&click") as answer:
                if answer.status == 204:
                    acked.append(user)
                elif answer.headers.get("X-Reactions-Outcome") == "unknown":
                    unknown.append(user)  # may be stored
            return bool(acked)
    await wait_until(takes_a_write, "a read and a write through nginx", CONVERGE_S - (time.monotonic() - began),
                     poll_s=0.5)

    async def exact() -> bool:
        """Every acknowledged click counted, and at most the unknown outcomes besides (each user clicked once)."""
        async with aiohttp.ClientSession() as session:
            status, stale, counted = await get_hour(session, spare_stack.base_url, current_hour())
            return (status == 200 and not stale and counted is not None and counted.impressions == 0
                    and counted.unique_users == counted.clicks
                    and len(acked) <= counted.clicks <= len(acked) + len(unknown))
    await wait_until(exact, "the writes counted exactly", max(1.0, CONVERGE_S - (time.monotonic() - began)),
                     poll_s=0.2)
    await wait_until(lambda: set(spare_stack.health().values()) == {"healthy"}, "every container healthy",
                     max(1.0, CONVERGE_S - (time.monotonic() - began)), poll_s=0.5)
    docker = spare_stack.engine.docker
    restarts = {name: docker("inspect", "-f", "{{.RestartCount}}", spare_stack.container(name)).stdout.strip()
                for name in spare_stack.health()}
    print(f"\nstarted at once: exact within {time.monotonic() - began:.0f}s; restarts by the policy: {restarts}")
