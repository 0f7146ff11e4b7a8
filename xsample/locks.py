"""Exclusive flocks that say who holds them.

A second identical command (or a second job of an array) blocks on the same lock. Silent waiting
looks like a hang, so the waiter prints one line naming the holder: the PID the kernel lists for the
lock (/proc/locks, this host), else what the caller knows (a run's heartbeat names its host and PID).
Nothing is written into the locked path, so a directory can be locked before it is known to be ours.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def local_lock_holder(path: str | Path) -> int | None:
    """PID of a process on this host holding a flock on ``path`` (from /proc/locks), if any."""
    try:
        status = os.stat(path)
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    for line in locks:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 24922 00:2d:1234 0 EOF"; waiters have "->" after the number.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
            return int(fields[4])
    return None


def _open_for_lock(path: Path) -> int:
    if path.is_dir():
        return os.open(path, os.O_RDONLY)
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)


@contextmanager
def exclusive_lock(path: str | Path, *, what: str, announce: Callable[[str], None] | None = None,
                   holder: Callable[[], str | None] | None = None) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (a directory or a lock file, created if missing). When
    another process holds it, announce "xsample: waiting for the WHAT lock held by PID N on HOST: PATH"
    once, then wait. ``holder()`` describes the holder when /proc/locks cannot (another host)."""
    path = Path(path)
    announce = announce or (lambda line: print(line, flush=True))
    descriptor = _open_for_lock(path)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = local_lock_holder(path)
            who = f"PID {pid} on {socket.gethostname()}" if pid is not None else (holder and holder()) or "another process"
            announce(f"xsample: waiting for the {what} lock held by {who}: {path}")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
