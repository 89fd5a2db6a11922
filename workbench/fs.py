"""File-system safety in one place: atomic writes, exclusive claims, and probing an owner process.

Everything the workbench writes for the user goes through here, so that a file is either whole or
absent, a claimed piece of work is done by one process at a time, and a folder is cleaned up only
when the process that made it is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

PARTIAL_PREFIX = ".partial-"


def _umask() -> int:
    """The process's umask (it can only be read by setting it: restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_usual_mode(path: Path) -> None:
    """Give a file or folder made by ``mkstemp``/``mkdtemp`` (0600/0700, private) the mode an
    ordinary ``open``/``mkdir`` would: a class's shared data folder must be readable by students."""
    usual = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, usual & ~_umask())


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends cleanly it becomes ``path``.

    For writers that need a file name (``model.save``, a streamed download). If the block raises,
    even KeyboardInterrupt, the temporary file is removed and ``path`` is untouched. The temporary
    name keeps ``path``'s suffix, which some writers insist on (``.keras``).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "hello.txt"
        >>> with atomic_path(target) as temporary:
        ...     _ = temporary.write_text("hello")
        >>> target.read_text()
        'hello'
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(
        dir=path.parent, prefix=f"{PARTIAL_PREFIX}{path.name}.", suffix=path.suffix
    )
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        give_usual_mode(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: Path, payload: bytes | str) -> None:
    """Write ``payload`` to ``path`` so that ``path`` is either complete or untouched, never half-written."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(payload.encode() if isinstance(payload, str) else payload)


def write_json(path: Path, value) -> None:
    """Write ``value`` as indented, key-sorted JSON, atomically."""
    write_atomically(path, json.dumps(value, indent=2, sort_keys=True))


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (a process we may not signal counts)."""
    if os.name != "posix":  # os.kill(pid, 0) would send a signal on Windows: assume it lives
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def owner() -> dict:
    """This process as the owner of something it creates: its host and process id."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def owner_gone(record: dict) -> bool:
    """Whether the owner recorded by ``owner()`` has exited (only knowable on this host)."""
    pid = record.get("pid")
    return record.get("host") == socket.gethostname() and isinstance(pid, int) and not process_alive(pid)


@contextlib.contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Try to hold an exclusive lock on ``path`` for the block; yields whether it was granted.

    The lock is not blocking, and the operating system drops it when its process dies, even by
    SIGKILL, so a killed owner never leaves a stale claim behind. The lock file itself stays.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(handle)  # closing releases the lock
