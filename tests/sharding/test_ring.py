"""The Python ring predicts nginx's ``hash ... consistent`` (tests/e2e compares with the real nginx)."""

from __future__ import annotations

import statistics
import zlib

import pytest

from sharding.ring import POINTS_PER_WEIGHT, Ring, key_hash, server_base_hash, server_points

THREE = ("127.0.0.1:18101", "127.0.0.1:18102", "127.0.0.1:18103")


def test_key_hash_is_the_ieee_crc32_nginx_uses() -> None:
    # The standard CRC-32 check value: ngx_crc32_long computes the same function.
    assert key_hash("123456789") == 0xCBF43926
    assert key_hash("alice") == key_hash(b"alice") == 0x278EBC47


def test_server_base_hash_splits_host_and_port_like_nginx() -> None:
    assert server_base_hash("127.0.0.1:8101") == zlib.crc32(b"127.0.0.1\x008101") == 0x5D1B88A6
    assert server_base_hash("writer-a:8080") == 0x6148C146
    # No port: the whole string is the host, followed by the "\0".
    assert server_base_hash("writer-a") == zlib.crc32(b"writer-a\x00") == 0xCEB475C1
    assert server_base_hash("unix:/tmp/x.sock") == zlib.crc32(b"/tmp/x.sock\x00")


def test_points_are_chained_from_the_base_over_little_endian_bytes() -> None:
    points = server_points("127.0.0.1:8101")
    assert len(points) == POINTS_PER_WEIGHT == 160  # nginx's constant
    assert [hex(p) for p in points[:3]] == ["0x1a8e352e", "0x20a186e7", "0x38ec86fd"]
    base = server_base_hash("127.0.0.1:8101")
    assert points[0] == zlib.crc32(b"\0\0\0\0", base)
    assert points[1] == zlib.crc32(points[0].to_bytes(4, "little"), base)
    assert len(server_points("127.0.0.1:8101", weight=2)) == 2 * POINTS_PER_WEIGHT


def test_lookups_pinned_to_what_nginx_1_22_answered() -> None:
    # Observed through a real nginx with these three servers in this order.
    ring = Ring.build(THREE)
    expected = {"user0": "18101", "user1": "18101", "user3": "18103", "user7": "18101"}
    assert {user: ring.lookup(user)[-5:] for user in expected} == expected
    assert len(ring.hashes) == 480
    assert list(ring.hashes) == sorted(set(ring.hashes))


def test_lookup_is_the_first_point_at_or_after_the_key_with_wrap_around() -> None:
    ring = Ring.build(THREE)
    past_the_end = next(k for k in (f"k{i}" for i in range(100_000)) if key_hash(k) > ring.hashes[-1])
    assert ring.lookup(past_the_end) == ring.owners[0]
    on_a_point = next(k for k in (f"k{i}" for i in range(100_000)) if key_hash(k) < ring.hashes[-1])
    h = key_hash(on_a_point)
    index = next(i for i, p in enumerate(ring.hashes) if p >= h)
    assert ring.lookup(on_a_point) == ring.owners[index]


def test_down_servers_fall_to_the_next_point_clockwise() -> None:
    ring = Ring.build(THREE)
    down = {"127.0.0.1:18101"}
    assert {u: ring.lookup(u, down)[-5:] for u in ("user0", "user7")} == {"user0": "18103", "user7": "18102"}
    for key in (f"user{i}" for i in range(2000)):
        if ring.lookup(key) not in down:
            assert ring.lookup(key, down) == ring.lookup(key)
        else:
            assert ring.lookup(key, down) not in down
    with pytest.raises(LookupError):
        ring.lookup("x", down=set(THREE))


def test_distribution_spread_is_bounded() -> None:
    servers = [f"127.0.0.1:{8101 + i}" for i in range(4)]
    ring = Ring.build(servers)
    counts = {s: 0 for s in servers}
    for i in range(40_000):
        counts[ring.lookup(f"user-{i}")] += 1
    mean = statistics.mean(counts.values())
    # 160 points per server: each holds its quarter within about 20%.
    assert all(abs(c - mean) / mean < 0.2 for c in counts.values()), counts


def test_adding_a_server_moves_keys_only_to_it() -> None:
    before = Ring.build(THREE)
    added = "127.0.0.1:18104"
    after = Ring.build((*THREE, added))
    keys = [f"user-{i}" for i in range(20_000)]
    moved = [k for k in keys if before.lookup(k) != after.lookup(k)]
    assert all(after.lookup(k) == added for k in moved)
    # About a quarter of the keys move to the fourth server.
    assert 0.15 < len(moved) / len(keys) < 0.35


def test_server_order_does_not_change_the_ring() -> None:
    assert Ring.build(THREE) == Ring.build(reversed(THREE))


def test_weights_multiply_points() -> None:
    ring = Ring.build(THREE, weights={THREE[0]: 3})
    assert len(ring.hashes) == 5 * POINTS_PER_WEIGHT
    share = sum(1 for i in range(10_000) if ring.lookup(f"u{i}") == THREE[0]) / 10_000
    assert 0.45 < share < 0.75


def test_empty_ring_is_refused() -> None:
    with pytest.raises(ValueError):
        Ring.build([])


def test_a_ring_of_socket_names_is_their_ring_with_other_owners() -> None:
    sockets = {f"unix:/run/r/writer-{a[-5:]}.sock": a for a in THREE}
    ring = Ring.build(sockets, owner_of=sockets.__getitem__)
    by_name = Ring.build(sockets)
    assert ring.hashes == by_name.hashes, "the points are the hashes of the names nginx is given"
    assert ring.owners == tuple(sockets[o] for o in by_name.owners)
    users = [f"user{i}" for i in range(500)]
    assert any(ring.lookup(u) != Ring.build(THREE).lookup(u) for u in users), "other names, another ring"
    assert ring.lookup("user0", down={ring.lookup("user0")}) == sockets[by_name.lookup("user0",
                                                                                     down={by_name.lookup("user0")})]
