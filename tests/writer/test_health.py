"""The health probe after a commit that could not write: probes must prove space until one succeeds."""

from __future__ import annotations

from writer.health import DatabaseHealth


async def test_a_rolled_back_write_makes_probes_prove_space_until_one_succeeds() -> None:
    asked: list[bool] = []
    changes: list[str | None] = []
    full = {"disk": True}

    async def probe(prove_space: bool) -> None:
        asked.append(prove_space)
        if prove_space and full["disk"]:
            raise OSError("no space left on device")

    health = DatabaseHealth(probe, changes.append, interval_s=0.25)
    assert await health.check() and asked == [False]  # a heartbeat alone passes on a full disk
    health.cannot_write("53100")
    assert not await health.check()
    assert not health.up and changes == ["the database cannot commit (OSError)"]
    full["disk"] = False
    assert await health.check()
    assert health.up and changes[-1] is None and asked == [False, True, True]
    assert await health.check() and asked[-1] is False
