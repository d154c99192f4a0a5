"""Spawn mode's handoff (workers.py), in this process: the supervisor's Handoff read back by
a worker, with the socket-sharing functions injected as Windows' socket.share()/fromshare()
would be used (bytes made for the worker's pid, no inherited descriptor), and a worker that
serves on what it was handed and stops on the supervisor's "stop" and on EOF."""

from __future__ import annotations

import io
import os
import signal
import socket
import threading
import time

import pytest

from veloxy import workers
from veloxy.net.listen import listen_socket


def test_handoff_round_trip_with_windows_style_sharing() -> None:
    listener = listen_socket("127.0.0.1", 0, backlog=16)
    shared: dict[bytes, socket.socket] = {}
    asked_for: list[int] = []

    def share(sock: socket.socket, pid: int) -> bytes:  # as socket.share(pid): opaque bytes
        asked_for.append(pid)
        token = f"share-{len(shared)}-for-{pid}".encode()
        shared[token] = sock.dup()
        return token

    pipe = io.BytesIO()
    workers.write_handoff(pipe, workers.Handoff(
        1, 2, os.getpid(), [share(listener, 4242)], {"config": "latest"}, "win32"))
    pipe.seek(0)
    handoff = workers.read_handoff(pipe)
    assert (handoff.index, handoff.count, handoff.supervisor) == (1, 2, os.getpid())
    assert handoff.extra == {"config": "latest"} and handoff.sharing == "win32"
    assert asked_for == [4242] and handoff.sockets == [b"share-0-for-4242"]
    taken = shared[handoff.sockets[0]]
    try:
        with socket.create_connection(listener.getsockname()[:2], timeout=2):
            conn, _ = taken.accept()  # the handed socket accepts from the same queue
            conn.close()
    finally:
        taken.close()
        listener.close()


def test_platform_sharing_picks_windows_share_and_posix_inheritance() -> None:
    share, fromshare, inherit = workers.platform_sharing("linux")
    assert inherit is True
    sock = socket.socket()
    try:
        data = share(sock, 1234)
        assert data == str(sock.fileno()).encode()
        same = fromshare(data)
        assert same.fileno() == sock.fileno()
        same.detach()
    finally:
        sock.close()
    share, fromshare, inherit = workers.platform_sharing("win32")
    assert inherit is False and share is workers._share_windows
    assert fromshare is workers._from_share_windows


def test_a_truncated_handoff_is_an_error_not_a_hang() -> None:
    with pytest.raises(RuntimeError, match="closed the handoff pipe early"):
        workers.read_handoff(io.BytesIO(b"\x00\x00\x01\x00abc"))


@pytest.mark.parametrize("command", [b"stop\n", b""])
def test_the_worker_stops_on_stop_or_when_the_supervisor_goes(command: bytes) -> None:
    listener = listen_socket("127.0.0.1", 0, backlog=16)
    read_end, write_end = os.pipe()
    handoff = io.BytesIO()
    workers.write_handoff(handoff, workers.Handoff(0, 2, os.getpid(), [b"listener"], None))
    os.write(write_end, handoff.getvalue())
    stdin = os.fdopen(read_end, "rb")
    stdout = io.BytesIO()
    stopped = threading.Event()
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    previous_hup = signal.getsignal(signal.SIGHUP)

    def worker_main(sockets: list[socket.socket], ready) -> None:
        seen.append(sockets[0].getsockname()[1])
        ready()
        os.write(write_end, command)
        if not command:
            os.close(write_end)  # the supervisor is gone
        # Python runs signal handlers in the main thread between bytecodes (serve()'s loop
        # wakes through its wakeup fd): poll here.
        deadline = time.monotonic() + 5
        while not stopped.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stopped.is_set(), "the worker was not told to stop"

    try:
        workers.run_spawned_worker(worker_main, stdin=stdin, stdout=stdout,
                                   fromshare=lambda data: listener)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)  # run_spawned_worker ignores it
        if command:
            os.close(write_end)
        stdin.close()
        listener.close()
        workers.current = None
    assert len(seen) == 1 and seen[0] > 0
    assert stdout.getvalue() == b"ready\n"
