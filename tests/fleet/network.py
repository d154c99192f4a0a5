"""A private network of Linux network namespaces for the fleet test, and the processes in it.

Why namespaces: a fleet is several machines, each with its own addresses and ports, and the
things the test must show (a balancer's health checks ejecting an instance, a restart of one
machine, load from other machines) only mean something when the instances do not share one
loopback. Each node is a namespace (`ip netns`) with one veth interface on a bridge that
lives in a hub namespace of its own, so nothing is added to the host's network: the host
neither sees nor routes these addresses, and deleting the namespaces removes every link.

Everything is named with a per-run prefix, so two runs (or a stale leftover) never collide,
and `Network.close()` stops every process it started (by pid) and deletes every namespace,
also when the test failed.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.proc import _die_with_parent, base_command, child_env

SUBNET = "10.213.0"  # a /24 that exists only inside the namespaces


def missing_requirements() -> str | None:
    """Why the fleet test cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux-only (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed (.ci/run installs it)"
    if shutil.which("haproxy") is None:
        return "haproxy is not installed (.ci/run installs Debian's package)"
    probe = subprocess.run(["ip", "netns", "add", f"vxprobe{os.getpid()}"], capture_output=True,
                           text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"vxprobe{os.getpid()}"], capture_output=True)
    return None


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")


class Process:
    """A command running in a namespace; stderr and stdout kept for failure messages."""

    def __init__(self, netns: str, argv: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.argv = argv
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid  # `ip netns exec` execs the command: the same pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {text!r}\n{self.output}")
            time.sleep(0.02)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 5 s."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self._reader.join(2)


class Network:
    """Namespaces on one bridge: `node(role, host)` gives the namespace of 10.213.0.<host>."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.prefix = f"vx{os.getpid() % 100000}"
        self.hub = f"{self.prefix}-hub"
        self.namespaces: list[str] = []
        self.processes: list[Process] = []
        _ip("netns", "add", self.hub)
        self.namespaces.append(self.hub)
        _ip("link", "add", "br0", "type", "bridge", netns=self.hub)
        _ip("link", "set", "br0", "up", netns=self.hub)

    def node(self, role: str, host: int) -> str:
        """A namespace named for `role`, with 127.0.0.1 and 10.213.0.<host>/24 up."""
        netns = f"{self.prefix}-{role}"
        _ip("netns", "add", netns)
        self.namespaces.append(netns)
        _ip("link", "set", "lo", "up", netns=netns)
        peer = f"h{host}"
        _ip("link", "add", "eth0", "netns", netns, "type", "veth", "peer", "name", peer,
            "netns", self.hub)
        _ip("link", "set", peer, "master", "br0", netns=self.hub)
        _ip("link", "set", peer, "up", netns=self.hub)
        _ip("addr", "add", f"{SUBNET}.{host}/24", "dev", "eth0", netns=netns)
        _ip("link", "set", "eth0", "up", netns=netns)
        return netns

    def run(self, netns: str, argv: list[str], name: str,
            env: dict[str, str] | None = None) -> Process:
        proc = Process(netns, argv, child_env(None, env), name)
        self.processes.append(proc)
        return proc

    def veloxy(self, netns: str, args: list[str], name: str,
               env: dict[str, str] | None = None) -> Process:
        return self.run(netns, [*base_command(), *args], name, env)

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        for netns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=10)


class HAProxyStats:
    """HAProxy's runtime API on its stats socket (a Unix socket in the test's directory, so
    the test reaches it from outside the namespace)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self, backend: str) -> dict[str, dict[str, str]]:
        """`show stat` rows of `backend`'s servers: {server: {column: value}}."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(text.splitlines())
        return {row["svname"]: row for row in rows
                if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_status(self, backend: str, server: str, status: str, timeout: float) -> float:
        """Seconds until `server` shows `status` (UP, DOWN...); fails after `timeout`."""
        start = time.monotonic()
        while True:
            now = self.servers(backend)[server]["status"]
            if now.startswith(status):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{server} is {now}, not {status}, after {timeout}s")
            time.sleep(0.02)
