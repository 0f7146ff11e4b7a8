"""Atomic file writes: a reader (or a requeued job) never sees a half-written file.

Written files get the mode a plain ``open`` would give them (0666 less the umask), so results and
caches on shared storage are as readable as the user's umask says. A failed write names the file
and, when the disk is full, the device and its free space, instead of a bare library error.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

GB = 1e9


class WriteError(OSError):
    """A file could not be written; the message names the file and the cause."""


class DiskFullError(WriteError):
    """Not enough free space for a write (checked before it starts, or the write ran out)."""


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes for unprivileged users on the filesystem holding ``path`` (tests replace this probe)."""
    return shutil.disk_usage(path).free


def device_of(path: str | os.PathLike) -> str:
    """The mount point holding ``path`` and, when /proc/mounts names it, its device: "/dev/sda1 (/scratch)"."""
    mount = Path(os.path.abspath(path))
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1 and fields[1] == str(mount):
                return f"{fields[0]} ({mount})"
    except OSError:
        pass
    return str(mount)


def require_free_space(directory: str | os.PathLike, needed: int, what: str) -> None:
    """Raise DiskFullError "no space left on DEVICE for WHAT (N GB needed, M free)" when short."""
    free = free_bytes(directory)
    if free < needed:
        raise DiskFullError(errno.ENOSPC, f"no space left on {device_of(directory)} for {what} "
                            f"({needed / GB:.2f} GB needed, {free / GB:.2f} GB free); free space or move "
                            "paths.sweeps to a larger disk")


def current_umask() -> int:
    try:  # Linux reports it without changing it (os.umask can only set it, racing other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_failure(path: Path, error: BaseException) -> WriteError:
    """The clear form of a failed write. torch reports a full disk as "unexpected pos" (no errno)."""
    full = getattr(error, "errno", None) == errno.ENOSPC or "unexpected pos" in str(error)
    try:
        free = free_bytes(path.parent)
    except OSError:
        free = None
    if full or free == 0:
        where = f"{device_of(path.parent)}" + (f", {free / GB:.2f} GB free" if free is not None else "")
        return DiskFullError(errno.ENOSPC, f"no space left on {where} while writing {path}")
    reason = getattr(error, "strerror", None) or str(error)
    return WriteError(getattr(error, "errno", None) or errno.EIO, f"cannot write {path}: {reason}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write`` on a temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temp file lives in the target directory so os.replace is a same-filesystem rename.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _write_failure(path, error) from error
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp creates 0600
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:
        Path(tmp).unlink(missing_ok=True)
        raise _write_failure(path, error) from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_orphaned_temp_files(directory: str | os.PathLike, name: str) -> list[Path]:
    """Delete the temp files a killed atomic write of ``directory/name`` left behind. Only for a
    directory this process owns exclusively (a run directory under its lock): a live writer's temp
    file would go too."""
    removed = []
    for orphan in Path(directory).glob(f".{name}.*.tmp"):
        orphan.unlink(missing_ok=True)
        removed.append(orphan)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document in ``path``, or None when it is absent or unreadable (a reader never crashes on
    a file another process is writing or a user damaged)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch  # here, so that readers of results (analysis/) need not import torch

    atomic_write(path, lambda handle: torch.save(obj, handle))
