"""`veloxy serve --watch`: notice that the config file changed, so that the proxy reloads it.

Why polling with stat() and not inotify: Kubernetes updates a mounted ConfigMap by writing the
new files into a fresh hidden directory and atomically renaming the `..data` symlink onto it
(`veloxy.yaml -> ..data/veloxy.yaml`). An inotify watch on the file is a watch on the old
inode, which never changes; the event is on the directory, and only on some of the links
involved. stat() of the path follows every symlink each time, so it sees the new file however
it was put there (the symlink swap, an editor's write-and-rename, an in-place write), and it
works the same on Linux, macOS and Windows. A stat of one small file every POLL_INTERVAL costs
microseconds.

What counts as a change: the resolved file's identity and metadata (device, inode, size,
mtime); then its bytes are compared with those last loaded, so a `touch` or a ConfigMap
update that rewrites the same text does not reload. A change is acted on once the file has
looked the same for two polls in a row, so a file caught half-written by a non-atomic writer
is not loaded (it would only be refused). A file that disappears is waited for: the running
config stays.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import NamedTuple

log = logging.getLogger("veloxy.watch")

#: Seconds between two looks at the file: a change is seen within two of them.
POLL_INTERVAL = 0.25


class FileState(NamedTuple):
    device: int
    inode: int
    size: int
    mtime_ns: int


def file_state(path: str) -> FileState | None:
    """The state of the file `path` leads to (symlinks followed), None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileState(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _digest(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).digest()
    except OSError:
        return None


class ConfigFileWatch:
    """Call `changed()` every POLL_INTERVAL; True means: load the file again now."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._loaded_state = file_state(path)  # the file as the running config read it
        self._loaded_digest = _digest(path)
        self._last_seen = self._loaded_state
        self._missing_logged = False

    def changed(self) -> bool:
        state = file_state(self.path)
        previous, self._last_seen = self._last_seen, state
        if state is None:
            if not self._missing_logged:
                log.warning("config file %s is gone; keeping the running config until it "
                            "is back", self.path)
                self._missing_logged = True
            return False
        self._missing_logged = False
        if state == self._loaded_state or state != previous:
            return False  # unchanged, or still changing: look again at the next poll
        self._loaded_state = state
        digest = _digest(self.path)
        if digest is None or digest == self._loaded_digest:
            return False
        self._loaded_digest = digest
        log.info("config file %s changed; reloading", self.path)
        return True
