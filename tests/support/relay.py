"""A TCP relay that delays every chunk and can cut its connections: a slow or flaky link, in a process of its own.

    python -m tests.support.relay --listen 127.0.0.1:0 --target 198.18.0.2:5432 --delay-ms 50

Each accepted connection is joined to a new one to the target. Both
directions are forwarded in order, each chunk ``delay-ms`` later than it
arrived, so a round trip grows by twice that (this kernel has no netem).
SIGUSR1 cuts every current connection abruptly (SO_LINGER 0: both peers see
a reset) while the listener keeps accepting; SIGUSR2 switches the delay off
and on again (a link that turns slow, on the connections already open too);
SIGTERM, or the end of stdin (the test that started it died), stops the
relay. It prints ``listening HOST:PORT`` once it accepts, ``cut N`` after
each cut and ``delay MS`` after each switch.
It listens on and forwards to loopback or RFC 2544 addresses only
(the test hosts of tests/support/netns.py).

``Relay`` starts one for a test, waits until it listens, cuts and stops it by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from tests.support.netns import BENCHMARK_RANGE

# Bytes read at once; a chunk is the unit that gets delayed.
CHUNK = 65536
# Chunks in flight per direction before reading pauses (memory stays bounded).
QUEUE_CHUNKS = 256
# After a cut at exit, handlers end at once; one still connecting to the target gets this long.
STOP_HANDLERS_S = 1.0
# What the wrapper's reader puts after the relay's last line (it exited).
EXITED = "exited"
# How long the wrapper waits for the relay to listen, to cut, to stop.
START_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0
REPO_ROOT = Path(__file__).resolve().parents[2]
# struct linger {int l_onoff; int l_linger;} with onoff=1, linger=0: close() sends RST.
LINGER_RESET = struct.pack("ii", 1, 0)


def endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` parsed; only loopback and RFC 2544 hosts (never a real network)."""
    host, _, port = text.rpartition(":")
    address = ipaddress.ip_address(host)
    if not (address.is_loopback or address in BENCHMARK_RANGE):
        raise argparse.ArgumentTypeError(f"{host}: only loopback or {BENCHMARK_RANGE} (test hosts)")
    return host, int(port)


# -- the relay process -------------------------------------------------------


class Link:
    """One relayed connection: the client's side, the target's side, and the task pumping both ways."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter,
                 pumping: asyncio.Task[None]) -> None:
        self.client = client
        self.upstream = upstream
        self.pumping = pumping

    def reset(self) -> None:
        """Close both sides with a reset, and stop pumping."""
        for writer in (self.client, self.upstream):
            reset(writer)
        self.pumping.cancel()


def reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    writer.transport.abort()


async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay_s: Callable[[], float]) -> None:
    """Forward one direction in order, each chunk ``delay_s()`` after it arrived; pass EOF on."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

    async def deliver() -> None:
        while True:
            due, chunk = await chunks.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not chunk:
                if sink.can_write_eof():
                    sink.write_eof()
                return
            sink.write(chunk)
            await sink.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            chunk = await source.read(CHUNK)
            await chunks.put((loop.time() + delay_s(), chunk))
            if not chunk:
                break
        await delivering
    finally:
        delivering.cancel()


class RelayServer:
    """The listener and its links."""

    def __init__(self, target: tuple[str, int], delay_s: float) -> None:
        self.target = target
        self.configured_delay_s = delay_s
        self.delay_s = delay_s
        self.links: set[Link] = set()
        self.handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self.handlers.add(handler)
        try:
            await self.relay(reader, writer)
        finally:
            self.handlers.discard(handler)

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            reset(writer)  # the target refused: so does the relay
            return
        link = Link(writer, up_writer, asyncio.create_task(self.both_ways(reader, up_reader, writer, up_writer)))
        self.links.add(link)
        try:
            # wait() rather than await: a cut cancels the pumping, not this handler.
            await asyncio.wait({link.pumping})
            if link.pumping.cancelled():
                return
            if link.pumping.exception() is None:
                for side in (writer, up_writer):
                    side.close()
            else:
                link.reset()  # one side reset: the other sees a reset too
        finally:
            self.links.discard(link)

    async def both_ways(self, reader: asyncio.StreamReader, up_reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, up_writer: asyncio.StreamWriter) -> None:
        async with asyncio.TaskGroup() as both:
            both.create_task(pump(reader, up_writer, self.current_delay))
            both.create_task(pump(up_reader, writer, self.current_delay))

    def current_delay(self) -> float:
        return self.delay_s

    def switch_delay(self) -> float:
        """Off if on, back to the configured delay if off; returns the delay now."""
        self.delay_s = 0.0 if self.delay_s else self.configured_delay_s
        return self.delay_s

    def cut(self) -> int:
        links = list(self.links)
        for link in links:
            link.reset()
        return len(links)


async def serve(listen: tuple[str, int], target: tuple[str, int], delay_s: float) -> None:
    """Relay until SIGTERM or the end of stdin; cut on SIGUSR1."""
    loop = asyncio.get_running_loop()
    relay = RelayServer(target, delay_s)
    server = await asyncio.start_server(relay.handle, *listen, reuse_address=True)
    host, port = server.sockets[0].getsockname()[:2]
    signals: asyncio.Queue[signal.Signals | None] = asyncio.Queue()
    for each in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
        loop.add_signal_handler(each, signals.put_nowait, each)
    # The test that started us holds our stdin: if it dies, the pipe ends and so do we.
    # A daemon thread, so that one still blocked in read() does not hold up the exit.
    # os.read, not sys.stdin: a buffered reader's lock held by this thread aborts the interpreter's exit.
    def watch_stdin() -> None:
        while os.read(sys.stdin.fileno(), CHUNK):
            pass
        loop.call_soon_threadsafe(signals.put_nowait, None)
    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"listening {host}:{port}", flush=True)
    while True:
        sig = await signals.get()
        if sig is signal.SIGUSR1:
            print(f"cut {relay.cut()}", flush=True)
        elif sig is signal.SIGUSR2:
            print(f"delay {relay.switch_delay() * 1000:g}", flush=True)
        else:
            break
    server.close()
    relay.cut()
    if relay.handlers:  # a handler cancelled at exit would log a traceback: let them end
        await asyncio.wait(relay.handlers, timeout=STOP_HANDLERS_S)
    await server.wait_closed()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.relay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=endpoint, required=True, help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--target", type=endpoint, required=True, help="HOST:PORT")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay added to every chunk")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.target, args.delay_ms / 1000))


# -- the wrapper for tests ---------------------------------------------------


class RelayError(RuntimeError):
    """The relay did not start, answer or stop in time."""


class Relay:
    """A relay process for one test: ``with Relay(target, delay_ms=50) as relay: connect to relay.address``."""

    def __init__(self, target: tuple[str, int], delay_ms: float = 0.0, listen: tuple[str, int] = ("127.0.0.1", 0),
                 command_prefix: Sequence[str] = ()) -> None:
        self.target = target
        self.delay_ms = delay_ms
        self.listen = listen
        self.command_prefix = list(command_prefix)  # e.g. Host.command's: relay from inside a test host
        self.address: tuple[str, int] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> Relay:
        """Start the process and return once it listens (``address`` is then set)."""
        argv = [*self.command_prefix, sys.executable, "-m", "tests.support.relay",
                "--listen", "{}:{}".format(*self.listen), "--target", "{}:{}".format(*self.target),
                "--delay-ms", str(self.delay_ms)]
        self._proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)
        self._reader = threading.Thread(target=self._read_lines, args=(self._proc,), daemon=True)
        self._reader.start()
        line = self._answer("listening", timeout_s)
        host, _, port = line.split()[1].rpartition(":")
        self.address = (host, int(port))
        return self

    def _read_lines(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.put(line.strip())
        self._lines.put(EXITED)

    def _answer(self, word: str, timeout_s: float) -> str:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            self.stop()
            raise RelayError(f"the relay did not say '{word}' within {timeout_s:.0f}s") from None
        if not line.startswith(word):
            self.stop()
            raise RelayError(f"the relay said {line!r}, expected '{word} ...'")
        return line

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RelayError("the relay is not started")
        return self._proc.pid

    def cut(self, timeout_s: float = ANSWER_TIMEOUT_S) -> int:
        """Reset every current connection (the listener stays); returns how many were cut."""
        if self._proc is None or self._proc.poll() is not None:
            raise RelayError("the relay is not running")
        self._proc.send_signal(signal.SIGUSR1)  # Popen signals its own pid, never a name
        return int(self._answer("cut", timeout_s).split()[1])

    def switch_delay(self, timeout_s: float = ANSWER_TIMEOUT_S) -> float:
        """Turn the delay off, or back on (open connections too); returns the delay now, in ms."""
        if self._proc is None or self._proc.poll() is not None:
            raise RelayError("the relay is not running")
        self._proc.send_signal(signal.SIGUSR2)
        return float(self._answer("delay", timeout_s).split()[1])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM by pid and wait; SIGKILL past the deadline. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout_s)  # it ends at the pipe's EOF; closing under it would raise there
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":
    main()
