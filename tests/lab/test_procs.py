"""The lab's /proc readers (veloxy.lab.procs), which the test suite's process helpers and
the benchmarks share, against this very process and a real loopback connection."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from veloxy.lab.procs import (
    child_pids,
    cpu_model,
    established_inodes,
    rss_bytes,
    session_members,
    socket_inodes,
    status_kib,
    tree_pids,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_memory_lines_of_this_process() -> None:
    rss, peak = status_kib(os.getpid(), "VmRSS"), status_kib(os.getpid(), "VmHWM")
    assert rss is not None and peak is not None and 0 < rss <= peak
    assert rss_bytes(os.getpid()) is not None
    assert status_kib(os.getpid(), "NoSuchLine") is None


def test_a_forked_child_is_in_the_tree_the_children_and_the_session() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child waits until the parent has looked
        os.close(write)
        os.read(read, 1)
        os._exit(0)
    os.close(read)
    try:
        assert pid in child_pids(os.getpid())
        assert {os.getpid(), pid} <= set(tree_pids(os.getpid()))
        assert pid in session_members(os.getsid(0))
    finally:
        os.close(write)
        os.waitpid(pid, 0)
    deadline = time.monotonic() + 2
    while pid in child_pids(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pid not in child_pids(os.getpid())


def test_a_loopback_connection_is_found_by_port_and_owner() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            with accepted:
                client_port = client.getsockname()[1]
                mine = socket_inodes([os.getpid()])
                to_server = established_inodes(remote_port=port)
                at_server = established_inodes(local_port=port)
                assert len(to_server & mine) == 1 and len(at_server & mine) == 1
                assert to_server & at_server == set()  # two ends, two sockets
                assert established_inodes(local_port=client_port, remote_port=port) \
                    == to_server & mine


def test_cpu_model_names_the_processor() -> None:
    with open("/proc/cpuinfo") as f:
        listed = any(line.startswith("model name") for line in f)
    model = cpu_model()
    assert (model is not None and model.strip() == model and model != "") == listed
