"""The disk caches' one key recipe (``fingerprint``) and one damaged-file rule:
a cached file is checked before it is trusted.

A file that cannot be read, or holds values of the wrong type or out of range, is warned about by
name and computed again; it is never handed on. ``read_cached`` is the one place a cache of the
workbench reads a file (sensitivity cells, the Explorer's dense pass and points, curves, gradient
statistics); the checks below say what is wrong in a ``ValueError`` that the warning quotes.

Example:
    >>> cell = read_cached(path, lambda p: json.loads(p.read_text()), check_cell)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.paths import read_places

T = TypeVar("T")

# (low, high) of the values a cache keeps: fractions (AUCs, rates, sparsities), signed differences
FRACTION = (0.0, 1.0)
DIFFERENCE = (-1.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)


def read_cached(
    path: str | Path,
    read: Callable[[Path], T],
    check: Callable[[T], None] | None = None,
    what: str = "cache file",
) -> T | None:
    """Read a cached file with ``read`` and ``check`` it; None if it is missing or damaged.

    Args:
        path: the cached file.
        read: turns the file into its value (any exception it raises marks the file damaged).
        check: raises (``ValueError`` saying what is wrong) unless the value can be trusted.
        what: what the file holds, for the warning ("sensitivity cell", "cached curve", ...).

    A ``path`` in the user's folder is read from the shared data folder first (``paths.read_places``).

    Returns:
        The value, or None when there is no file or it is damaged; a damaged file is warned about
        (``UserWarning`` naming it and the fault) and the caller computes the value again.
    """
    path = next((place for place in read_places(path) if place.is_file()), None)
    if path is None:
        return None
    try:
        value = read(path)
        if check is not None:
            check(value)
    except Exception as err:  # noqa: BLE001 - whatever a damaged file raises, it is computed again
        warnings.warn(
            f"ignoring the damaged {what} {path} ({type(err).__name__}: {err}): computing it again",
            stacklevel=user_stacklevel(),
        )
        return None
    return value


def check_number(value, name: str, bounds: tuple[float, float] = (-math.inf, math.inf)) -> None:
    """Refuse anything but a finite real number within ``bounds`` (ValueError naming ``name``)."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise WorkbenchError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise WorkbenchError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")


def check_fields(record, fields: Mapping[str, tuple[float, float]], *, optional=()) -> None:
    """Refuse a ``record`` that is not a dict holding every one of ``fields`` as a number within its
    bounds; names in ``optional`` may also be None (a metric undefined on these images)."""
    if not isinstance(record, dict):
        raise WorkbenchError(f"expected a JSON object, got {type(record).__name__}")
    for name, bounds in fields.items():
        if name not in record:
            raise WorkbenchError(f"{name} is missing")
        if record[name] is not None or name not in optional:
            check_number(record[name], name, bounds)


def check_array(array, name: str, shape: tuple, bounds: tuple[float, float] = (-math.inf, math.inf)) -> None:
    """Refuse ``array`` unless numeric, shaped ``shape`` (None: any size), finite and within ``bounds``."""
    array = np.asarray(array)
    fits = len(array.shape) == len(shape) and all(
        s is None or a == s for a, s in zip(array.shape, shape, strict=True)
    )
    if not fits or array.dtype.kind not in "iuf":
        raise WorkbenchError(
            f"{name} must be a numeric array shaped {shape}, got {array.dtype} {array.shape}"
        )
    low, high = bounds
    if array.size and not (np.isfinite(array).all() and array.min() >= low and array.max() <= high):
        raise WorkbenchError(f"{name} must hold finite numbers in [{low}, {high}]")


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside this package."""
    package = str(Path(__file__).parents[1])  # workbench/, not core/
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def fingerprint(*parts) -> str:
    """A short hash of arrays, strings, numbers and tuples of them (the disk cache's key)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]
