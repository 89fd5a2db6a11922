"""Where the workbench keeps generated data, downloads and cached models.

Notebooks run with their own folder as working directory, so paths are anchored at the project
root rather than the current directory. Set ``WORKBENCH_DATA`` to keep data elsewhere.

The data folder may be shared and read-only (a teacher prepares it for a class). Reading works
there as anywhere; writing falls back to the same name in the user's folder (``user_dir()``), one
rule for every writer: ``writable(name)`` is where to write, ``find(name)`` where to read (the
shared folder first); ``cache_dir()``, ``cache_dirs()`` and ``find_cached`` are those for the cache.
"""

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Real chest X-rays that sit beside a development checkout; users' clones don't have them.
SHARED_PNEUMONIA = PROJECT_ROOT.parent / "shared" / "data" / "pneumoniamnist.npz"

_noted: set[Path] = set()  # read-only folders already reported, so the note appears once


def data_dir() -> Path:
    """Return the data folder: ``$WORKBENCH_DATA`` if set, else ``<project>/data``."""
    return Path(os.environ.get("WORKBENCH_DATA", PROJECT_ROOT / "data"))


def user_dir() -> Path:
    """Return the user's own workbench folder: ``$XDG_CACHE_HOME/workbench``, else ``~/.cache/workbench``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "workbench"


def writable(name: str | Path) -> Path:
    """Return where to write ``name`` (a file or folder of the data folder): ``data_dir() / name``
    when that can be written, else ``user_dir() / name``, with a one-line note the first time.

    A shared, read-only data folder is read, never written.
    """
    shared = data_dir() / name
    if is_writable(shared):
        return shared
    fallback = user_dir() / name
    if shared not in _noted:
        _noted.add(shared)
        log.warning("%s is read-only; the workbench writes %s instead", shared, fallback)
    return fallback


def readable(name: str | Path) -> list[Path]:
    """Return where ``name`` may have been written, in the order to read it: the data folder first."""
    places = [data_dir() / name, user_dir() / name]
    return places[:1] if places[0] == places[1] else places


def find(name: str | Path) -> Path | None:
    """Return the first of ``readable(name)`` that exists, or None."""
    return next((place for place in readable(name) if place.exists()), None)


def cache_dir() -> Path:
    """Return the folder to write cached results into (trained baselines, curves, sensitivity cells):
    ``data_dir()/cache``, or ``user_dir()/cache`` when the data folder is read-only (see ``writable``)."""
    return writable("cache")


def cache_dirs() -> list[Path]:
    """Return the folders to read cached results from, the data folder's ``cache`` first."""
    return readable("cache")


def read_places(path: str | Path) -> list[Path]:
    """Return where a file that would be written at ``path`` may already be, in the order to read it.

    A path in the user's folder (where ``writable`` sends writes when the data folder is read-only)
    is read from the shared data folder first: a teacher's prepared caches serve the class.
    """
    path = Path(path)
    try:
        shared = data_dir() / path.relative_to(user_dir())
    except ValueError:
        return [path]
    return [shared, path]


def find_cached(name: str | Path) -> Path | None:
    """Return the first existing ``<folder>/name`` over ``cache_dirs()``, or None if none has it."""
    return find(Path("cache") / name)


def is_writable(place: Path) -> bool:
    """Whether ``place`` (a file or folder, which need not exist yet) can be written.

    Tried with a temporary file in it or its nearest existing folder, not read from the mode bits:
    those say nothing of read-only mounts and do not stop root. Nothing is created.
    """
    folder = place if place.is_dir() else place.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        _try_write(folder)
    except OSError:
        return False
    return True


def _try_write(folder: Path) -> None:
    handle, name = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    os.close(handle)
    os.unlink(name)
