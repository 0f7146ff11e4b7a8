"""Exclusive file locks that say who holds them.

A second identical command (or a second job of an array) blocks on the same lock. Silent waiting
looks like a hang, so the waiter prints one line naming the holder's PID and host, which the holder
writes into the lock file once it has the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _holder_line(handle) -> str:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "null")
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"PID {holder.get('pid')} on {holder.get('host')} (since {since})"


@contextmanager
def exclusive_lock(path: str | Path, *, what: str, announce: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive flock on ``path``; when another process holds it, announce
    "xsample: waiting for the WHAT lock held by PID N on HOST (since ...): PATH" once, then wait."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    announce = announce or (lambda line: print(line, flush=True))
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            announce(f"xsample: waiting for the {what} lock held by {_holder_line(handle)}: {path}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
            handle.flush()
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
