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

Late delivery (README, Invariants 8: what a partition that heals does, by TCP
retransmission): the stdin line ``hold SECONDS HEX`` arms a hold (``armed``).
The next chunk from a client that contains the bytes HEX is held with
everything after it on that connection, and delivered SECONDS after it came
(``held PORT``, then ``delivered PORT``; PORT is the relay's own port on the
target's side, the client port the target sees). If the client goes away
meanwhile, the target's side stays open: the bytes still reach it, and its
answer is read until it closes or falls quiet, then the relay closes that side
and prints ``closed PORT HEX-OF-THE-ANSWER``: the signal that the late bytes
were delivered and their outcome is final.
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
from dataclasses import dataclass, field
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
# A held connection whose client left: its answer ends when the target closes,
# when nothing more came for ANSWER_QUIET_S, or ANSWER_MAX_S after the delivery.
ANSWER_QUIET_S = 0.5
ANSWER_MAX_S = 5.0
# The answer printed by ``closed`` (hex), at most this many bytes.
ANSWER_PRINTED = 4096
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


@dataclass
class Hold:
    """What the next held connection waits for, and how long its bytes are kept."""

    seconds: float
    pattern: bytes


@dataclass
class Held:
    """A connection whose client→target bytes are held (see the module's docstring)."""

    port: int
    due: float  # loop time
    client_gone: bool = False
    delivered_at: float | None = None
    answer: bytearray = field(default_factory=bytearray)
    answered_at: float | None = None
    target_closed: bool = False


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


async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay_s: Callable[[], float],
               held: list[Held] | None = None) -> None:
    """Forward one direction in order, each chunk ``delay_s()`` after it arrived; pass EOF on.

    ``held`` (target to client): once the link's bytes are held, what the
    target says after their delivery is kept as its answer, and nothing is
    written to a client that has gone.
    """
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[Chunk] = asyncio.Queue(QUEUE_CHUNKS)
    delivering = asyncio.create_task(deliver(chunks, sink, held))
    try:
        while True:
            chunk = await source.read(CHUNK)
            if held:
                keep_answer(held[0], chunk, loop.time())
                if held[0].client_gone:
                    if not chunk:
                        return
                    continue
            await chunks.put((loop.time() + delay_s(), chunk, False))
            if not chunk:
                break
        await delivering
    finally:
        delivering.cancel()


# A chunk to write: when it is due, its bytes (b"": pass EOF on; None: end without
# it, a held link whose client left), and whether it is the held one.
Chunk = tuple[float, bytes | None, bool]


async def deliver(chunks: asyncio.Queue[Chunk], sink: asyncio.StreamWriter, held: list[Held] | None) -> None:
    """Write each chunk when due. On a held link a client gone is no error, and the held chunk is announced."""
    loop = asyncio.get_running_loop()
    while True:
        due, chunk, caught = await chunks.get()
        await asyncio.sleep(max(0.0, due - loop.time()))
        if chunk is None:
            return
        try:
            if not chunk:
                if sink.can_write_eof():
                    sink.write_eof()
                return
            sink.write(chunk)
            await sink.drain()
        except ConnectionError:
            if not held:
                raise
        if caught and held:
            held[0].delivered_at = loop.time()
            print(f"delivered {held[0].port}", flush=True)


def keep_answer(held: Held, chunk: bytes, now: float) -> None:
    if held.delivered_at is None:
        return
    held.answer += chunk
    held.answered_at = now
    held.target_closed = not chunk


class RelayServer:
    """The listener and its links."""

    def __init__(self, target: tuple[str, int], delay_s: float) -> None:
        self.target = target
        self.configured_delay_s = delay_s
        self.delay_s = delay_s
        self.links: set[Link] = set()
        self.handlers: set[asyncio.Task[None]] = set()
        self.hold: Hold | None = None

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
        held: list[Held] = []  # set once this link's bytes are held
        link = Link(writer, up_writer,
                    asyncio.create_task(self.both_ways(reader, up_reader, writer, up_writer, held)))
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
            if held:
                print(f"closed {held[0].port} {bytes(held[0].answer[:ANSWER_PRINTED]).hex() or '-'}", flush=True)
        finally:
            self.links.discard(link)

    async def both_ways(self, reader: asyncio.StreamReader, up_reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, up_writer: asyncio.StreamWriter, held: list[Held]) -> None:
        async with asyncio.TaskGroup() as both:
            both.create_task(self.pump_out(reader, up_writer, held))
            both.create_task(pump(up_reader, writer, self.current_delay, held))

    async def pump_out(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, held: list[Held]) -> None:
        """Client to target, as ``pump``, except that an armed hold may catch a chunk and keep it (and the rest)."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[Chunk] = asyncio.Queue(QUEUE_CHUNKS)
        delivering = asyncio.create_task(deliver(chunks, sink, held))
        try:
            while True:
                try:
                    chunk = await source.read(CHUNK)
                except ConnectionError:
                    if not held:
                        raise
                    chunk = b""
                catch = not held and self.hold is not None and bool(chunk) and self.hold.pattern in chunk
                if catch:
                    held.append(self.catch(sink, loop.time()))
                due = loop.time() + self.delay_s
                if held:
                    due = max(due, held[0].due)
                    if not chunk:  # the client left: the bytes still go, the target's side stays open
                        held[0].client_gone = True
                        await chunks.put((due, None, False))
                        break
                await chunks.put((due, chunk, catch))
                if not chunk:
                    break
            await delivering
            if held and held[0].client_gone:
                await read_answer(held[0], sink)
        finally:
            delivering.cancel()

    def catch(self, sink: asyncio.StreamWriter, now: float) -> Held:
        assert self.hold is not None
        port = sink.get_extra_info("sockname")[1]
        caught, self.hold = Held(port=port, due=now + self.hold.seconds), None
        print(f"held {port}", flush=True)
        return caught

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


async def read_answer(held: Held, sink: asyncio.StreamWriter) -> None:
    """Wait for the target's answer to the late bytes (see ANSWER_QUIET_S), then close its side."""
    loop = asyncio.get_running_loop()
    assert held.delivered_at is not None
    while not held.target_closed and loop.time() - held.delivered_at < ANSWER_MAX_S:
        if held.answered_at is not None and loop.time() - held.answered_at >= ANSWER_QUIET_S:
            break
        await asyncio.sleep(0.02)
    sink.close()


async def serve(listen: tuple[str, int], target: tuple[str, int], delay_s: float) -> None:
    """Relay until SIGTERM or the end of stdin; cut on SIGUSR1."""
    loop = asyncio.get_running_loop()
    relay = RelayServer(target, delay_s)
    server = await asyncio.start_server(relay.handle, *listen, reuse_address=True)
    host, port = server.sockets[0].getsockname()[:2]
    signals: asyncio.Queue[signal.Signals | str | None] = asyncio.Queue()
    for each in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
        loop.add_signal_handler(each, signals.put_nowait, each)
    # The test that started us holds our stdin: if it dies, the pipe ends and so do we.
    # A daemon thread, so that one still blocked in read() does not hold up the exit.
    # os.read, not sys.stdin: a buffered reader's lock held by this thread aborts the interpreter's exit.
    # Each line on it is a command (``hold``).
    def watch_stdin() -> None:
        pending = b""
        while data := os.read(sys.stdin.fileno(), CHUNK):
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                loop.call_soon_threadsafe(signals.put_nowait, line.decode())
        loop.call_soon_threadsafe(signals.put_nowait, None)
    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"listening {host}:{port}", flush=True)
    while True:
        sig = await signals.get()
        if sig is signal.SIGUSR1:
            print(f"cut {relay.cut()}", flush=True)
        elif sig is signal.SIGUSR2:
            print(f"delay {relay.switch_delay() * 1000:g}", flush=True)
        elif isinstance(sig, str):
            command(relay, sig)
        else:
            break
    server.close()
    relay.cut()
    if relay.handlers:  # a handler cancelled at exit would log a traceback: let them end
        await asyncio.wait(relay.handlers, timeout=STOP_HANDLERS_S)
    await server.wait_closed()


def command(relay: RelayServer, line: str) -> None:
    """``hold SECONDS HEX``: arm a hold (see the module's docstring)."""
    words = line.split()
    if len(words) == 3 and words[0] == "hold":
        relay.hold = Hold(float(words[1]), bytes.fromhex(words[2]))
        print("armed", flush=True)
    elif words:
        print(f"unknown command {line!r}", flush=True)


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

    def hold(self, seconds: float, pattern: bytes, timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        """Hold the next client chunk holding ``pattern`` (and the rest of its connection) for ``seconds``."""
        if self._proc is None or self._proc.poll() is not None or self._proc.stdin is None:
            raise RelayError("the relay is not running")
        self._proc.stdin.write(f"hold {seconds:g} {pattern.hex()}\n")
        self._proc.stdin.flush()
        self._answer("armed", timeout_s)

    def held(self, timeout_s: float) -> int:
        """Wait until the armed hold caught its bytes; the port the target sees them come from."""
        return int(self._answer("held", timeout_s).split()[1])

    def delivered(self, timeout_s: float) -> int:
        """Wait until the held bytes were written to the target; their port."""
        return int(self._answer("delivered", timeout_s).split()[1])

    def closed(self, timeout_s: float) -> tuple[int, bytes]:
        """Wait until the held connection is closed: its port, and what the target answered the late bytes."""
        _, port, answer = self._answer("closed", timeout_s).split()
        return int(port), b"" if answer == "-" else bytes.fromhex(answer)

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
