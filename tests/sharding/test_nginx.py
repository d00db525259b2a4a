"""nginx rendering, and the rendered configuration run by the real nginx in front of stub upstreams.

The stubs answer with their own port, so each test sees where nginx sent a
request; the services themselves are exercised in tests/e2e.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from sharding import nginx
from sharding.config import RETIRED, ConfigError, Topology, parse
from sharding.local import static
from sharding.local.processes import free_port
from sharding.local.static import served_dashboard
from sharding.placement import Placement
from sharding.ring import Ring
from sharding.sockets import socket_path
from tests.support.tmpdirs import world_traversable_tmpdir
from tests.waiting import wait_until

# Every request through nginx is answered within this (docs/design.md, Invariants 6).
ANSWER_BOUND_S = 3.0


def topology_for(writer_ports: list[int], aggregator_ports: list[int], retired: int | None = None) -> Topology:
    shards = [{"name": f"s{i}", "writers": [f"127.0.0.1:{p}"], "dsn": f"postgresql://postgres@127.0.0.1:{p}/r",
               "state": RETIRED if i == retired else "active"} for i, p in enumerate(writer_ports)]
    return parse({"shards": shards, "aggregators": [f"127.0.0.1:{p}" for p in aggregator_ports]})


def test_render_routes_writes_to_active_writers_only() -> None:
    topology = topology_for([9101, 9102, 9103], [9201, 9202], retired=1)
    text = nginx.render(topology, nginx.NginxLayout.local("127.0.0.1", 9000, Path("/tmp/x")))
    writers = text.split("upstream reactions_writers {")[1].split("}")[0]
    assert "hash $reactions_user consistent;" in writers
    assert "127.0.0.1:9101" in writers and "127.0.0.1:9103" in writers
    assert "9102" not in text, "a retired shard's writer gets no writes"
    readers = text.split("upstream reactions_aggregators {")[1].split("}")[0]
    assert "least_conn;" in readers and "127.0.0.1:9201" in readers and "127.0.0.1:9202" in readers
    assert "listen 127.0.0.1:9000;" in text and "pid /tmp/x/nginx.pid;" in text
    assert "proxy_next_upstream error timeout;" in text, "a POST that reached a writer is never resent"
    assert "{{" not in text


def test_batches_have_their_own_location_limit_and_round_robin_upstream() -> None:
    topology = topology_for([9101, 9102, 9103], [9201], retired=1)
    text = nginx.render(topology, nginx.NginxLayout.local("127.0.0.1", 9000, Path("/tmp/x")))
    upstream = text.split("upstream reactions_batch_writers {")[1].split("}")[0]
    assert "hash" not in upstream and "least_conn" not in upstream, "round robin"
    assert "127.0.0.1:9101 max_fails=1" in upstream and "127.0.0.1:9103" in upstream and "9102" not in upstream
    assert "keepalive 64;" in upstream
    location = text.split("location = /analytics/batch {")[1].split("\n        }\n")[0]
    assert "client_max_body_size 1m;" in location and "proxy_pass http://reactions_batch_writers;" in location
    assert "proxy_set_header" not in location, "it would drop the inherited ones, keep-alive's among them"
    assert text.count('proxy_set_header Connection "";') == 1


def test_generation_changes_with_the_routing() -> None:
    layout = nginx.NginxLayout.local("127.0.0.1", 9000, Path("/tmp/x"))
    three = nginx.render(topology_for([9101, 9102, 9103], [9201]), layout)
    retired = nginx.render(topology_for([9101, 9102, 9103], [9201], retired=2), layout)
    assert nginx.generation_of(three) != nginx.generation_of(retired)
    assert nginx.generation_of(three) == nginx.generation_of(nginx.render(topology_for([9101, 9102, 9103], [9201]),
                                                                          layout))


def test_writer_sockets_change_only_the_writers_server_names() -> None:
    topology = topology_for([9101, 9102, 9103], [9201], retired=1)
    layout = nginx.NginxLayout.local("127.0.0.1", 9000, Path("/tmp/x"))
    tcp = nginx.render(topology, layout)
    assert nginx.render(topology, replace(layout, writer_sockets="")) == tcp
    unix = nginx.render(topology, replace(layout, writer_sockets="/run/r"))
    for name in ("reactions_writers", "reactions_batch_writers"):
        upstream = unix.split(f"upstream {name} {{")[1].split("}")[0]
        assert "server unix:/run/r/writer-9101.sock max_fails=1 fail_timeout=5s;" in upstream
        assert "unix:/run/r/writer-9103.sock" in upstream and "9102" not in upstream and "127.0.0.1:91" not in upstream
    assert "server 127.0.0.1:9201 max_fails=1" in unix, "aggregators stay on TCP"
    changed = {line for line in set(unix.splitlines()) ^ set(tcp.splitlines()) if "Generation" not in line}
    assert changed == {line for line in changed if "writer-91" in line or "127.0.0.1:910" in line}


def test_render_refuses_a_topology_nginx_could_not_serve() -> None:
    layout = nginx.NginxLayout.local("127.0.0.1", 9000, Path("/tmp/x"))
    with pytest.raises(ConfigError, match="no aggregators"):
        nginx.render(topology_for([9101], []), layout)


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    path = world_traversable_tmpdir("reactions-nginx-")
    yield path


@pytest.mark.parametrize("layout_kind", ["local", "container"])
def test_rendered_config_passes_nginx_t(runtime_dir: Path, layout_kind: str) -> None:
    if layout_kind == "local":
        layout = nginx.NginxLayout.local("127.0.0.1", free_port(), runtime_dir)
    else:
        container = nginx.NginxLayout.container()
        layout = nginx.NginxLayout(listen="127.0.0.1:8000", runtime_dir=str(runtime_dir), access_log="/dev/stdout",
                                   error_log="stderr", access_log_buffer="")
        assert container.access_log == layout.access_log
    conf = runtime_dir / "nginx.conf"
    conf.write_text(nginx.render(topology_for([9101, 9102], [9201]), layout))
    nginx.check(conf, runtime_dir)
    conf.write_text(nginx.render(topology_for([9101, 9102], [9201]), replace(layout, writer_sockets=str(runtime_dir))))
    nginx.check(conf, runtime_dir)
    conf.write_text(conf.read_text().replace("least_conn;", "least_conn"))
    with pytest.raises(ConfigError, match="nginx -t failed"):
        nginx.check(conf, runtime_dir)


STUB_PORT = web.AppKey("stub_port", int)


async def stub(request: web.Request) -> web.Response:
    port = request.app[STUB_PORT]
    return web.Response(text=f"{port} {request.method} {request.raw_path}\n")


async def start_stub(port: int, unix_path: str | None = None) -> web.AppRunner:
    """A stub answering with ``port``, there (and on a Unix socket if ``unix_path``, mode 0666 like a writer's)."""
    app = web.Application()
    app[STUB_PORT] = port
    app.router.add_route("*", "/{tail:.*}", stub)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    if unix_path is not None:
        await web.UnixSite(runner, unix_path).start()
        os.chmod(unix_path, 0o666)
    return runner


@pytest.fixture
async def stubs() -> AsyncIterator[dict[str, list[int]]]:
    """Three writers and one aggregator that answer with their own port."""
    ports = {"writers": [free_port() for _ in range(3)], "aggregators": [free_port()]}
    runners = [await start_stub(port) for port in ports["writers"] + ports["aggregators"]]
    yield ports
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def run_nginx(runtime_dir: Path) -> Iterator[object]:
    """Start the real nginx on a rendered configuration; stopped by pid."""
    started: list[subprocess.Popen[bytes]] = []

    def start(topology: Topology, writer_sockets: str = "") -> str:
        port = free_port()
        conf = runtime_dir / "nginx.conf"
        layout = replace(nginx.NginxLayout.local("127.0.0.1", port, runtime_dir, served_dashboard(runtime_dir)),
                         writer_sockets=writer_sockets)
        conf.write_text(nginx.render(topology, layout))
        proc = subprocess.Popen(nginx.nginx_command(conf, runtime_dir, "-g", "daemon off;"))
        started.append(proc)
        deadline = time.monotonic() + 10
        while not (runtime_dir / "nginx.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


async def post(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """POST exactly this URL (yarl would otherwise re-quote it)."""
    async with session.post(URL(url, encoded=True)) as resp:
        return resp.status, await resp.text()


async def test_writes_follow_the_python_ring_and_skip_retired_shards(stubs: dict[str, list[int]],
                                                                     run_nginx: object) -> None:
    topology = topology_for(stubs["writers"], stubs["aggregators"], retired=1)
    base = run_nginx(topology)  # type: ignore[operator]
    ring = Ring.build(nginx.writer_addresses(topology))
    async with aiohttp.ClientSession() as session:
        for i in range(150):
            user = f"user {i}/é" if i % 3 == 0 else f"user{i}"
            raw = quote(user, safe="")
            status, body = await post(session, f"{base}/analytics?timestamp=1&user={raw}&click")
            assert status == 200 and body.split()[0] == ring.lookup(raw).rsplit(":", 1)[1], (user, body)
            status, body = await post(session, f"{base}/analytics/1/{raw}/click?id=k{i}")
            assert status == 200 and body.split()[0] == ring.lookup(raw).rsplit(":", 1)[1], (user, body)
            assert body.split()[2] == f"/analytics/1/{raw}/click?id=k{i}", "the path reaches the writer untouched"
            assert body.split()[0] != str(stubs["writers"][1])


async def test_writes_over_sockets_follow_the_ring_of_the_socket_names(runtime_dir: Path, run_nginx: object) -> None:
    """nginx hashes the ``unix:`` names it is given: batches are placed on their ring (sharding/placement.py)."""
    ports = [free_port() for _ in range(4)]
    topology = topology_for(ports[:3], ports[3:])
    sockets = str(runtime_dir)
    # Each writer stub answers its port on its TCP port and on its socket alike: the access log tells which.
    runners = [await start_stub(p, socket_path(sockets, f"127.0.0.1:{p}")) for p in ports[:3]]
    runners.append(await start_stub(ports[3]))
    try:
        base = run_nginx(topology, sockets)  # type: ignore[operator]
        by_sockets, by_addresses = Placement.of(topology, sockets), Placement.of(topology)
        users = [f"user{i}" for i in range(120)]
        assert any(by_sockets.writer(u) != by_addresses.writer(u) for u in users), "the test could not fail"
        async with aiohttp.ClientSession() as session:
            for user in users:
                status, body = await post(session, f"{base}/analytics?timestamp=1&user={user}&click")
                assert status == 200 and f"127.0.0.1:{body.split()[0]}" == by_sockets.writer(user), (user, body)
        access_log = runtime_dir / "access.log"
        await wait_until(lambda: "upstream=unix:" in access_log.read_text() if access_log.exists() else False,
                         "nginx to log the socket it used")
        assert f"upstream=127.0.0.1:{ports[0]}" not in access_log.read_text()
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_methods_paths_and_nginx_own_answers(stubs: dict[str, list[int]], run_nginx: object) -> None:
    base = run_nginx(topology_for(stubs["writers"], stubs["aggregators"]))  # type: ignore[operator]
    aggregator = str(stubs["aggregators"][0])
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/analytics?timestamp=1") as resp:
            assert resp.status == 200 and (await resp.text()).split()[:2] == [aggregator, "GET"]
        async with session.head(f"{base}/analytics?timestamp=1") as resp:
            assert resp.status == 200
        for method, path, allow in [("PUT", "/analytics", "GET, HEAD, POST"),
                                    ("DELETE", "/analytics", "GET, HEAD, POST"),
                                    ("GET", "/analytics/1/bob/click", "POST")]:
            async with session.request(method, f"{base}{path}") as resp:
                assert (resp.status, resp.headers.get("Allow")) == (405, allow), (method, path)
        for path in ["/analytic", "/analytics/", "/analytics/1/bob", "/analytics/1//click", "/analytics/1/a/b/c"]:
            async with session.post(f"{base}{path}") as resp:
                assert resp.status == 404, path
                assert await resp.text() == "not found\n"
        async with session.post(f"{base}/analytics?user=a", data=b"x" * 4096) as resp:
            assert resp.status == 413 and await resp.text() == "request body too large\n"
        async with session.get(f"{base}/healthz") as resp:
            assert resp.status == 200 and len(resp.headers["X-Reactions-Generation"]) == 12


async def test_the_series_goes_to_the_aggregators_for_reads_only(stubs: dict[str, list[int]],
                                                                 run_nginx: object) -> None:
    base = run_nginx(topology_for(stubs["writers"], stubs["aggregators"]))  # type: ignore[operator]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/analytics/series?from=0&to=3600000") as resp:
            assert resp.status == 200
            assert (await resp.text()).split() == [str(stubs["aggregators"][0]), "GET",
                                                   "/analytics/series?from=0&to=3600000"]
        for method in ("POST", "PUT", "DELETE"):
            async with session.request(method, f"{base}/analytics/series?from=0&to=1") as resp:
                assert (resp.status, resp.headers.get("Allow")) == (405, "GET, HEAD"), method


async def test_the_dashboard_is_served_at_the_root_and_nothing_else_changed(stubs: dict[str, list[int]],
                                                                           run_nginx: object) -> None:
    base = run_nginx(topology_for(stubs["writers"], stubs["aggregators"]))  # type: ignore[operator]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "text/html; charset=utf-8"
            assert await resp.text() == (nginx.DASHBOARD_DIR / "index.html").read_text()
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"], "nothing beyond the entry point"
        for name, kind in [("dashboard.js", "application/javascript"), ("dashboard.css", "text/css")]:
            async with session.get(f"{base}/dashboard/{name}") as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith(kind), name
                assert await resp.read() == (nginx.DASHBOARD_DIR / name).read_bytes()
        for path in ["/dashboard/missing.js", "/index.html", "/dashboard.js", "/dashboard/../README.md"]:
            async with session.get(f"{base}{path}") as resp:
                assert resp.status == 404 and await resp.text() == "not found\n", path
        for path in ["/", "/dashboard/index.html"]:
            async with session.post(f"{base}{path}") as resp:
                assert (resp.status, resp.headers.get("Allow")) == (405, "GET, HEAD"), path


def test_a_dashboard_nginx_workers_cannot_read_is_served_from_a_copy() -> None:
    private = world_traversable_tmpdir("reactions-clone-") / "home"
    (private / "dashboard").mkdir(parents=True)
    (private / "dashboard" / "index.html").write_text("hi")
    private.chmod(0o755)
    runtime = world_traversable_tmpdir("reactions-static-")
    assert served_dashboard(runtime, private / "dashboard") == private / "dashboard"
    private.chmod(0o700)  # a clone in a private home directory
    copy = served_dashboard(runtime, private / "dashboard")
    assert copy == runtime / "dashboard" and (copy / "index.html").read_text() == "hi"
    assert static.readable_by_anyone(copy)


async def test_no_writer_answering_is_503_with_retry_after(stubs: dict[str, list[int]], run_nginx: object) -> None:
    dead = [free_port(), free_port()]
    base = run_nginx(topology_for(dead, stubs["aggregators"]))  # type: ignore[operator]
    async with aiohttp.ClientSession() as session, session.post(f"{base}/analytics?user=a") as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert "X-Reactions-Outcome" not in resp.headers, "nothing reached a writer: certainly not stored"


async def test_a_refused_connection_falls_to_the_next_writer_on_the_ring(stubs: dict[str, list[int]],
                                                                        run_nginx: object) -> None:
    dead = free_port()
    topology = topology_for([*stubs["writers"], dead], stubs["aggregators"])
    base = run_nginx(topology)  # type: ignore[operator]
    ring = Ring.build(nginx.writer_addresses(topology))
    down = {f"127.0.0.1:{dead}"}
    users = [f"user{i}" for i in range(200)]
    assert any(ring.lookup(u) in down for u in users)
    async with aiohttp.ClientSession() as session:
        for user in users:
            status, body = await post(session, f"{base}/analytics?user={user}")
            assert status == 200 and body.split()[0] == ring.lookup(user, down).rsplit(":", 1)[1]


@pytest.fixture
def silent_writer() -> Iterator[int]:
    """A writer host that accepts connections (the kernel does) and never answers: a frozen process."""


    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def test_a_post_that_reached_a_silent_writer_is_unknown_not_503(silent_writer: int,
                                                                     stubs: dict[str, list[int]],
                                                                     run_nginx: object) -> None:
    base = run_nginx(topology_for([silent_writer], stubs["aggregators"]))  # type: ignore[operator]
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.post(f"{base}/analytics?user=a") as resp:
        body = await resp.text()
        assert resp.status == 504 and resp.headers["X-Reactions-Outcome"] == "unknown", body
        assert resp.headers["Retry-After"] == "1" and "Idempotency-Key" in body
    # nginx's read timeout is 2.2 s: the answer comes within the 3 s answer bound.
    assert time.monotonic() - started < ANSWER_BOUND_S


async def test_a_get_that_no_aggregator_answers_is_a_plain_503(silent_writer: int, stubs: dict[str, list[int]],
                                                               run_nginx: object) -> None:
    base = run_nginx(topology_for(stubs["writers"], [silent_writer]))  # type: ignore[operator]
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.get(f"{base}/analytics?timestamp=1") as resp:
        assert resp.status == 503 and "X-Reactions-Outcome" not in resp.headers
    assert time.monotonic() - started < ANSWER_BOUND_S


class Aggregator:
    """A stub aggregator that counts the requests reaching it and answers as told."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[str] = []
        self.status = 200
        self.headers: dict[str, str] = {}
        self.runner: web.AppRunner | None = None

    async def answer(self, request: web.Request) -> web.Response:
        self.seen.append(request.raw_path)
        return web.Response(status=self.status, headers=self.headers, text=f"answer {len(self.seen)}\n")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/analytics", self.answer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def aggregator() -> AsyncIterator[Aggregator]:
    stub_aggregator = Aggregator()
    await stub_aggregator.start()
    yield stub_aggregator
    await stub_aggregator.stop()


HOUR_MS = 3_600_000
# A past hour (2020-01-01T00): cacheable.
PAST_HOUR_MS = 1_577_836_800_000


async def get_many(session: aiohttp.ClientSession, base: str, queries: list[str]) -> list[tuple[int, str]]:
    found = []
    for query in queries:
        async with session.get(f"{base}/analytics?{query}") as resp:
            found.append((resp.status, await resp.text()))
    return found


async def test_every_timestamp_of_an_hour_shares_one_cache_entry(aggregator: Aggregator, run_nginx: object) -> None:
    base = run_nginx(topology_for([free_port()], [aggregator.port]))  # type: ignore[operator]
    queries = [f"timestamp={PAST_HOUR_MS + i * 90_001}" for i in range(40)]
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        answers = await get_many(session, base, queries)
        elapsed = time.monotonic() - started
    assert {status for status, _ in answers} == {200}
    # One request per half-second window at most (the windows the loop spanned, plus the one it started in).
    assert len(aggregator.seen) <= int(elapsed / 0.5) + 2 < len(queries), (len(aggregator.seen), elapsed)
    assert len({body for _, body in answers}) == len(aggregator.seen), "answers come from the shared entry"


async def test_what_must_not_be_cached_always_reaches_an_aggregator(aggregator: Aggregator,
                                                                    run_nginx: object) -> None:
    base = run_nginx(topology_for([free_port()], [aggregator.port]))  # type: ignore[operator]
    future = (time.time_ns() // 1_000_000 // HOUR_MS + 2) * HOUR_MS
    plain = f"timestamp={PAST_HOUR_MS}"
    cases = [
        (200, {}, [f"timestamp={future}"] * 5),  # a future hour
        (200, {}, [f"{plain}&x=1", f"x=1&{plain}", f"timestamp=+{PAST_HOUR_MS}"] * 2),  # not a plain query
        (400, {}, [plain] * 5),
        (503, {}, [f"timestamp={PAST_HOUR_MS + 1}"] * 5),
        (200, {"X-Reactions-Stale": "true", "X-Reactions-Stale-Since": "Wed, 01 Jan 2020 00:00:00 GMT"},
         [f"timestamp={PAST_HOUR_MS + 2}"] * 5),
    ]
    async with aiohttp.ClientSession() as session:
        for status, headers, queries in cases:
            aggregator.status, aggregator.headers = status, headers
            before = len(aggregator.seen)
            answers = await get_many(session, base, queries)
            assert [s for s, _ in answers] == [status] * len(queries), (status, queries)
            assert len(aggregator.seen) - before == len(queries), f"cached: {status} {headers} {queries}"
            assert len({body for _, body in answers}) == len(queries)


async def answer_of(session: aiohttp.ClientSession, url: str) -> tuple[int, str, dict[str, str]]:
    async with session.get(url) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def test_with_no_aggregator_a_cached_hour_is_served_stale_and_others_get_503(aggregator: Aggregator,
                                                                                   run_nginx: object) -> None:
    base = run_nginx(topology_for([free_port()], [aggregator.port]))  # type: ignore[operator]
    cached = f"{base}/analytics?timestamp={PAST_HOUR_MS}"
    async with aiohttp.ClientSession() as session:
        status, body, headers = await answer_of(session, cached)
        assert status == 200 and "X-Reactions-Stale" not in headers
        aggregator.status = 503
        answers: list[tuple[int, str, dict[str, str]]] = []

        async def aggregator_503_arrives() -> bool:
            answers.append(await answer_of(session, f"{base}/analytics?timestamp={PAST_HOUR_MS + 7}"))
            return answers[-1][0] == 503

        # Within the half-second of the fresh entry, that entry; then the aggregator's own 503, unchanged.
        await wait_until(aggregator_503_arrives, "the aggregator's 503 passes through", deadline_s=2.0)
        assert all((s, b) == (200, body) for s, b, _ in answers[:-1]), answers
        assert "X-Reactions-Stale" not in answers[-1][2] and answers[-1][1].startswith("answer")
        await aggregator.stop()
        answers.clear()

        async def copy_served() -> bool:
            answers.append(await answer_of(session, f"{base}/analytics?timestamp={PAST_HOUR_MS + 99}"))
            return "X-Reactions-Stale" in answers[-1][2]

        await wait_until(copy_served, "the last good answer is served marked stale", deadline_s=2 * ANSWER_BOUND_S)
        assert all((s, b) == (200, body) for s, b, _ in answers), answers
        assert answers[-1][2]["X-Reactions-Stale"] == "true"
        assert answers[-1][2]["X-Reactions-Stale-Since"].endswith(" GMT")
        started = time.monotonic()
        status, _, headers = await answer_of(session, f"{base}/analytics?timestamp={PAST_HOUR_MS + HOUR_MS}")
        assert status == 503 and headers["Retry-After"] == "1" and "X-Reactions-Stale" not in headers
        status, _, _ = await answer_of(session, f"{cached}&x=1")
        assert status == 503, "an uncached query has no copy"
        assert time.monotonic() - started < 2 * ANSWER_BOUND_S
