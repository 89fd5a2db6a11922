"""File-system safety in one place: atomic writes, claimed file names, exclusive locks, and
probing an owner process.

Everything the workbench writes for the user goes through here, so that a file is either whole or
absent, a file the user made is never replaced unasked (``claim``), an error names the file it is
about, a claimed piece of work is done by one process at a time, and a folder is cleaned up only
when the process that made it is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

PARTIAL_PREFIX = ".partial-"
MANIFEST = ".workbench-files.json"  # in a folder the user chose: the files the workbench wrote there
OVERWRITE_HELP = "replace files of those names that the workbench did not write (or that were changed since)"


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
    with naming(path):
        handle, name = tempfile.mkstemp(
            dir=path.parent, prefix=f"{PARTIAL_PREFIX}{path.name}.", suffix=path.suffix
        )
    os.close(handle)
    temporary = Path(name)
    try:
        with naming(path):
            yield temporary
            give_usual_mode(temporary)
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Make an OSError raised in the block name ``path``, the file the user knows.

    A write into a full disk says only "[Errno 28] No space left on device", and an error about
    ``atomic_path``'s temporary file names a file that is gone a moment later. An error that names
    another file already says what it is about and passes unchanged.
    """
    try:
        yield
    except OSError as err:
        if err.filename is not None and not _is_temporary_of(err.filename, Path(path)):
            raise
        if err.errno is None:  # the workbench's own message (a download's ConnectionError names its URL)
            raise
        raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from err


def _is_temporary_of(filename, path: Path) -> bool:
    if not isinstance(filename, str | bytes | os.PathLike):  # a file descriptor
        return False
    name = Path(os.fsdecode(filename))
    return name.parent == path.parent and name.name.startswith(f"{PARTIAL_PREFIX}{path.name}.")


def write_atomically(path: Path, payload: bytes | str) -> None:
    """Write ``payload`` to ``path`` so that ``path`` is either complete or untouched, never half-written."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(payload.encode() if isinstance(payload, str) else payload)


def write_json(path: Path, value) -> None:
    """Write ``value`` as indented, key-sorted JSON, atomically."""
    write_atomically(path, json.dumps(value, indent=2, sort_keys=True))


# --- files the workbench wrote in a folder the user chose ------------------------------------


def check_claim(
    folder: Path, names: Iterable[str], overwrite: bool = False, *, allow: str = "overwrite=True", ours=()
) -> None:
    """Refuse, before anything is written, to replace a file in ``folder`` that the workbench did not write.

    A file counts as the workbench's while its manifest (``MANIFEST``) records it with the content
    it has now: one the user made, or changed since, is theirs.

    Args:
        names: the file names about to be written into ``folder``.
        overwrite: replace such files all the same.
        allow: how the caller allows it, for the message (``"--overwrite"`` on the command line).
        ours: names the caller knows to be the workbench's by other means (an older manifest).

    Raises:
        FileExistsError: naming the first such file and how to allow replacing it.
    """
    if overwrite:
        return
    folder = Path(folder)
    written = _manifest(folder)
    for name in names:
        path = folder / name
        if path.exists() and name not in ours and written.get(name) != _digest(path):
            raise FileExistsError(
                f"{path} exists and was not written by the workbench (or was changed since); "
                f"{allow} replaces it (nothing was written)"
            )


@contextlib.contextmanager
def claim(
    folder: Path, names: Iterable[str], overwrite: bool = False, *, allow: str = "overwrite=True", ours=()
) -> Iterator[Path]:
    """Check ``names`` with ``check_claim``, create ``folder``, yield it for the writing, then record
    the files written in its manifest, so that the next call may replace them.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for _ in range(2):  # a re-run replaces what the first run wrote
        ...     with claim(folder, ["a.txt"]) as out:
        ...         write_atomically(out / "a.txt", "hello")
        >>> sorted(p.name for p in folder.iterdir())
        ['.workbench-files.json', 'a.txt']
    """
    names = list(names)
    folder = Path(folder)
    check_claim(folder, names, overwrite, allow=allow, ours=ours)
    with naming(folder):
        folder.mkdir(parents=True, exist_ok=True)
    before = {name: _identity(folder / name) for name in names}
    try:
        yield folder
    finally:  # what was written is the workbench's, even if a later write failed
        changed = [n for n in names if (folder / n).is_file() and _identity(folder / n) != before[n]]
        if changed:
            written = _manifest(folder)
            write_json(folder / MANIFEST, {"files": {**written, **{n: _digest(folder / n) for n in changed}}})


def _manifest(folder: Path) -> dict[str, str]:
    """{name: digest} of the files the workbench wrote into ``folder`` ({} if none, or unreadable)."""
    try:
        files = json.loads((folder / MANIFEST).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): v for k, v in files.items() if isinstance(v, str)} if isinstance(files, dict) else {}


def _digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:  # a folder, or unreadable: not a file the workbench could have written
        return None


def _identity(path: Path) -> tuple | None:
    """What tells a file replaced by ``atomic_path`` from the one before (a new inode: both existed
    at once, so the number cannot be reused)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


# --- owners and locks -------------------------------------------------------------------------


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
