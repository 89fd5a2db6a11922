"""The disk caches' one key recipe, one file format per kind, and one damaged-file rule.

- ``KINDS``: every disk cache of the workbench, with its one file format and its code version.
- ``cache_key``: the key of a cached value, from what it was computed from: the weights, the data,
  the settings and the code version of its kind. ``cache_file`` names its file.
- ``read_cached``: a cached file is checked before it is trusted. A file that cannot be read, or
  holds values of the wrong type or out of range, is warned about by name and computed again; it
  is never handed on. The checks below say what is wrong in a ``ValueError`` that the warning quotes.

Example:
    >>> key = cache_key("curve", weights="w1", data="d1", settings=("snip", 24))
    >>> cache_file("cache", "curve", key).name == f"curve-{key}.csv"
    True
"""

from __future__ import annotations

import hashlib
import math
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.paths import read_places
from workbench.core.stats import METRICS_VERSION

T = TypeVar("T")

# (low, high) of the values a cache keeps: fractions (AUCs, rates, sparsities), signed differences
FRACTION = (0.0, 1.0)
DIFFERENCE = (-1.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)


@dataclass(frozen=True)
class Kind:
    """One disk cache: its file format and the version of the code that computes its values."""

    suffix: str  # the one format of its files ("": a folder of JSON files)
    version: int | tuple  # part of every key: bump it when the cached values' meaning changes
    holds: str  # what a file holds, in words


# Every disk cache of the workbench. A version bump makes every older file of the kind unread (its
# key changes), so values computed by older code are computed again rather than trusted. Kinds that
# hold metrics carry ``stats.METRICS_VERSION`` too (see ``stats.METRIC_CHANGES``).
KINDS = {
    # prune/scores.Scorer: the gradient statistics every gradient criterion scores from
    "gradients": Kind(".npz", 1, "gradient statistics"),
    # prune/scores.Scorer: HRank's mean feature-map rank per unit (prune/activations)
    "activations": Kind(".npz", 1, "feature-map ranks"),
    # explore/session.Explorer: the dense model's probabilities on validation and test
    "dense": Kind(".npz", 1, "dense pass"),
    # explore/session.Explorer: one setting's metrics and probabilities (arrays and JSON text)
    "point": Kind(".npz", (1, METRICS_VERSION), "point"),
    # analysis/curve_cache: a finished sparsity curve
    "curve": Kind(".csv", (1, METRICS_VERSION), "curve"),
    # analysis/sensitivity: a table's cells (3: cells also hold the output distortion)
    "sensitivity": Kind("", 3, "sensitivity table"),
    # model/train.baseline: a trained model (its history beside it)
    "baseline": Kind(".keras", 1, "trained baseline"),
}


def cache_key(kind: str, *, weights, data, settings=()) -> str:
    """The key of a cached value of ``kind``: what it was computed from, and by which code.

    Args:
        kind: a row of ``KINDS``; its version is part of the key.
        weights: what fixes the model's numbers (``Scorer.fingerprint()``, or a builder's name or a
            file's bytes before training).
        data: the images and labels it was computed on (``Dataset.fingerprint()``, arrays, or a
            tuple of them).
        settings: everything else the value depends on (numbers, strings, tuples of them).

    Returns:
        24 hex digits; any change to any part, or to the kind's version, changes them.

    Raises:
        WorkbenchError: for a ``kind`` not in ``KINDS``.
    """
    return fingerprint(kind, _kind(kind).version, weights, data, settings)


def cache_file(folder: str | Path, kind: str, key: str, label: str = "") -> Path:
    """Where ``folder`` keeps the value of ``kind`` under ``key``: ``<kind>-[<label>-]<key><suffix>``."""
    name = "-".join(part for part in (kind, label, key) if part)
    return Path(folder) / f"{name}{_kind(kind).suffix}"


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise WorkbenchError(f"kind must be one of the disk caches {tuple(KINDS)}, got {kind!r}")
    return KINDS[kind]


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
    """A short hash of arrays, strings, numbers and tuples, lists and dicts of them, to any depth."""
    digest = hashlib.sha256()
    for part in parts:
        _update(digest, part)
    return digest.hexdigest()[:24]


def _update(digest, part) -> None:
    """Hash ``part`` into ``digest``: every byte of an array (its repr would elide the middle)."""
    if isinstance(part, np.ndarray):
        digest.update(f"{part.dtype}{part.shape}".encode())
        digest.update(np.ascontiguousarray(part).tobytes())
    elif isinstance(part, bytes):  # a file's contents
        digest.update(f"bytes({len(part)})".encode())
        digest.update(part)
    elif isinstance(part, tuple | list | dict):
        items = sorted(part.items(), key=lambda item: repr(item[0])) if isinstance(part, dict) else part
        digest.update(f"{type(part).__name__}({len(part)})".encode())
        for item in items:
            _update(digest, item)
    else:
        digest.update(repr(part).encode())
    digest.update(b"\0")
