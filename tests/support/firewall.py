"""The root namespace's firewall as a Docker engine leaves it, for as long as a test needs it.

dockerd (20.10, as Debian ships it) sets the FORWARD policy of iptables'
filter table to DROP and loads br_netfilter with
``net.bridge.bridge-nf-call-iptables=1``: frames bridged in the root
namespace then go through FORWARD and are dropped. ``docker_forward_state``
puts the root namespace in that state and, on the way out, undoes only what
it changed itself: a policy that was DROP already stays (an engine may run),
and one that someone changed meanwhile is left as they set it. While the
state is in place it holds ``POLICY_LOCK`` (flock), so that two runs of this
test, or a test Docker engine that takes the same lock, do not undo each
other's policy.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BRIDGE_NF_CALL_IPTABLES = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
DROP = "DROP"
# Whoever changes the root namespace's FORWARD policy for a while holds this.
POLICY_LOCK = Path("/run/lock/reactions-forward-policy.lock")
# Another holder keeps it for a test's length at most.
LOCK_WAIT_S = 120.0
LOCK_POLL_S = 0.1


class FirewallError(RuntimeError):
    """iptables, modprobe or the sysctl did not do what was asked."""


def iptables(*args: str) -> str:
    done = subprocess.run(["iptables", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FirewallError(f"iptables {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def forward_policy() -> str:
    """The FORWARD chain's policy in the root namespace (``-P FORWARD ACCEPT`` -> ACCEPT)."""
    for line in iptables("-S", "FORWARD").splitlines():
        if line.startswith("-P FORWARD "):
            return line.split()[2]
    raise FirewallError("iptables -S FORWARD printed no policy")


@functools.cache
def firewall_unavailable() -> str | None:
    """Why the root namespace's FORWARD policy cannot be set here (one line), or None when it can."""
    if shutil.which("iptables") is None:
        return "no iptables command: install iptables (scripts/system-deps.sh)"
    try:
        forward_policy()
    except FirewallError as exc:
        return str(exc)
    return None


def require_firewall() -> None:
    reason = firewall_unavailable()
    if reason is not None:
        pytest.skip(reason)


def load_br_netfilter() -> bool:
    """Make sure br_netfilter is there; whether this call loaded it."""
    if BRIDGE_NF_CALL_IPTABLES.exists():
        return False
    done = subprocess.run(["modprobe", "br_netfilter"], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not BRIDGE_NF_CALL_IPTABLES.exists():
        raise FirewallError(f"cannot load br_netfilter: {done.stderr.strip()}")
    return True


@contextlib.contextmanager
def policy_lock() -> Iterator[None]:
    """``POLICY_LOCK`` held, waited for at most ``LOCK_WAIT_S``."""
    POLICY_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(POLICY_LOCK, "a") as lock:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FirewallError(f"{POLICY_LOCK} still held after {LOCK_WAIT_S:.0f}s") from None
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def docker_forward_state() -> Iterator[None]:
    """FORWARD policy DROP and bridged frames through iptables, as dockerd leaves them; undone as described above."""
    with policy_lock(), forward_drop_state():
        yield


@contextlib.contextmanager
def forward_drop_state() -> Iterator[None]:
    """``docker_forward_state`` for a caller that holds ``policy_lock`` already."""
    loaded = load_br_netfilter()
    old_sysctl = BRIDGE_NF_CALL_IPTABLES.read_text().strip()
    old_policy = forward_policy()
    try:
        if old_sysctl != "1":
            BRIDGE_NF_CALL_IPTABLES.write_text("1\n")
        if old_policy != DROP:
            iptables("-P", "FORWARD", DROP)
        yield
    finally:
        if old_policy != DROP and forward_policy() == DROP:
            iptables("-P", "FORWARD", old_policy)
        if old_sysctl != "1" and BRIDGE_NF_CALL_IPTABLES.read_text().strip() == "1":
            BRIDGE_NF_CALL_IPTABLES.write_text(old_sysctl + "\n")
        if loaded:  # a module someone else started using meanwhile stays
            subprocess.run(["modprobe", "-r", "br_netfilter"], capture_output=True, check=False)
