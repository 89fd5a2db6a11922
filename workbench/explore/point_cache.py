"""The explorer's disk cache of exact answers: the dense pass and every exact point shown.

Files are .npz (arrays, and the rest as one JSON text: no pickle, which would run whatever code
a file holds), read through ``workbench.core.cache.read_cached``: a damaged file is warned about
by name and computed again.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from workbench.core.cache import DIFFERENCE, FRACTION, check_array, check_fields, check_number, read_cached
from workbench.core.fs import write_atomically
from workbench.prune.pruning import PruneSpec

# The (low, high) of a cached point's metrics checked when present: AUCs and rates, the AUC change
_POINT_BOUNDS = {
    **dict.fromkeys(("auc_low", "auc_high", "dense_auc", "accuracy", "sensitivity", "specificity"), FRACTION),
    **dict.fromkeys(("auc_difference", "auc_difference_low", "auc_difference_high"), DIFFERENCE),
}


class PointCache:
    """Exact metrics by spec, in memory and (when ``file`` gives a path) on disk.

    Args:
        file: ``file(kind, suffix, *parts)`` is the cache file of ``kind`` under the explorer's
            weights, data and evaluation, or None without a disk cache.
        sizes: (validation images, test images), to refuse a file of other images.
        seed: the explorer's seed (a point's file is keyed by it).
    """

    def __init__(self, file: Callable[..., Path | None], sizes: tuple[int, int], seed: int):
        self.file, self.sizes, self.seed = file, sizes, seed
        self._points: dict[PruneSpec, dict] = {}
        self._columns: int | None = None  # the dense pass's outputs, once known

    def dense(self) -> tuple[np.ndarray, np.ndarray, float] | None:
        """(val, test probabilities, seconds) of the cached dense pass, or None."""
        path = self.file("dense")
        return read_cached(path, _read_dense, self._check_dense, "cached dense pass") if path else None

    def save_dense(self, val: np.ndarray, test: np.ndarray, seconds: float) -> None:
        """Keep the dense pass on disk (nothing without a disk cache)."""
        self._columns = test.shape[1]
        path = self.file("dense")
        if path is None:
            return
        buffer = io.BytesIO()
        np.savez(buffer, val=val, test=test, seconds=seconds)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, buffer.getvalue())

    def known(self, spec: PruneSpec) -> dict | None:
        """The exact metrics of ``spec`` if they were computed before (memory, then disk), else None."""
        if spec not in self._points:
            path = self._point_file(spec)
            metrics = read_cached(path, _read_point, self._check_point, "cached point") if path else None
            if metrics is None:
                return None
            self._points[spec] = metrics
        return self._points[spec]

    def remember(self, spec: PruneSpec, metrics: dict) -> None:
        """Keep ``spec``'s exact metrics in memory and on disk."""
        self._points[spec] = metrics
        path = self._point_file(spec)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, _point_bytes(metrics))

    def _point_file(self, spec: PruneSpec) -> Path | None:
        return self.file("point", self.seed, repr(spec))

    def _check_dense(self, dense: tuple) -> None:
        """Refuse a cached dense pass whose probabilities do not fit the evaluation images."""
        val, test, seconds = dense
        check_array(val, "val", (self.sizes[0], None), FRACTION)
        check_array(test, "test", (self.sizes[1], val.shape[1]), FRACTION)
        check_number(seconds, "seconds", (1e-9, math.inf))
        self._columns = test.shape[1]

    def _check_point(self, metrics: dict) -> None:
        """Refuse cached metrics with an AUC or rate of the wrong type or out of range, or arrays
        that do not fit the test images."""
        bounds = {name: limits for name, limits in _POINT_BOUNDS.items() if name in metrics}
        check_fields(metrics, {"auc": FRACTION, **bounds}, optional={"auc", *bounds})
        n = self.sizes[1]
        check_array(metrics.get("changed"), "changed", (None,), (0, n - 1))
        check_array(metrics.get("test_probs"), "test_probs", (n, self._columns), FRACTION)


def _read_dense(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    with np.load(path, allow_pickle=False) as saved:
        return saved["val"], saved["test"], float(saved["seconds"])


def _point_bytes(metrics: dict) -> bytes:
    """A point's metrics as .npz bytes: its arrays as arrays, everything else as one JSON text."""
    arrays = {name: value for name, value in metrics.items() if isinstance(value, np.ndarray)}
    rest = {name: value for name, value in metrics.items() if name not in arrays}
    buffer = io.BytesIO()
    text = json.dumps(rest, default=lambda value: value.item())  # NumPy scalars as numbers
    np.savez(buffer, _json=np.array(text), **arrays)
    return buffer.getvalue()


def _read_point(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as saved:
        arrays = {name: saved[name] for name in saved.files if name != "_json"}
        return json.loads(str(saved["_json"])) | arrays
