"""The private engines' addresses: inside 198.19.0.0/16, disjoint, never the network namespace tests' 198.18.0.0/16."""

from __future__ import annotations

import ipaddress

from tests.support.docker_engine import NETWORK, SLOTS, Slot, mine


def test_each_slot_has_a_block_of_its_own_inside_the_docker_test_range() -> None:
    blocks = [Slot(n).block for n in range(SLOTS)]
    assert all(b.subnet_of(NETWORK) for b in blocks)  # type: ignore[arg-type]
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1:])
    assert not any(b.overlaps(ipaddress.ip_network("198.18.0.0/16")) for b in blocks)


def test_the_bridge_the_pool_and_the_fixed_networks_never_overlap() -> None:
    for n in range(SLOTS):
        slot = Slot(n)
        bridge = ipaddress.ip_interface(slot.bridge_cidr).network
        pool = ipaddress.ip_network(slot.pool.split(",")[0].removeprefix("base="))
        fixed = [ipaddress.ip_network(f"{slot.fixed_net(i)}.0/24") for i in range(1, 8)]
        nets = [bridge, pool, *fixed]
        assert all(net.subnet_of(slot.block) for net in nets)  # type: ignore[arg-type]
        assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:]), n


def test_only_rules_naming_the_engines_own_addresses_are_its_own() -> None:
    subnets = {"198.19.16.0/20"}
    assert mine("198.19.17.0/24", subnets) and mine("198.19.17.5/32", subnets)
    assert not mine("198.19.0.0/24", subnets) and not mine("172.17.0.0/16", subnets)
    assert not mine("DOCKER", subnets) and not mine("-j", subnets)
