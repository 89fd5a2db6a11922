"""Finished sparsity curves on disk, keyed by ``core.cache.cache_key("curve", ...)`` of the weights,
data, calibration and spec, and read through the one damaged-file rule (``core.cache.read_cached``)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from workbench.core.cache import FRACTION, NON_NEGATIVE, cache_file, check_array, read_cached
from workbench.core.errors import WorkbenchError
from workbench.core.fs import write_atomically


def read_cached_curve(folder: str | Path, key: str, rows: int | None = None) -> pd.DataFrame | None:
    """The curve cached under ``key`` in ``folder``; None if there is none, or it is damaged
    (``cache.read_cached``: unreadable, values out of range, or not ``rows`` rows when given)."""
    table = read_cached(
        cache_file(folder, "curve", key), pd.read_csv, lambda t: check_curve(t, rows), "cached curve"
    )
    if table is not None:
        table["guarded"] = table["guarded"].fillna("").astype(str)
    return table


def check_curve(table: pd.DataFrame, rows: int | None = None) -> None:
    """Refuse a curve table (ValueError) unless its sparsities are fractions, its metrics fractions
    or NaN (undefined), its ``changed`` counts >= 0, and it has ``rows`` rows when given."""
    if rows is not None and len(table) != rows:
        raise WorkbenchError(f"expected {rows} rows, got {len(table)} (a truncated file?)")
    for name in ("sparsity", "changed", "guarded"):
        if name not in table:
            raise WorkbenchError(f"column {name!r} is missing")
    for name in table.columns.drop(["guarded", "epsilon", "target"], errors="ignore"):
        column = table[name]
        if name.startswith("sparsity") or name == "changed":  # always defined
            bounds = FRACTION if name != "changed" else NON_NEGATIVE
            check_array(column.to_numpy(), name, (None,), bounds)
        else:  # a metric: NaN where it is undefined (a class missing from test)
            check_array(column.dropna().to_numpy(), name, (None,), FRACTION)


def write_cached_curve(folder: str | Path, key: str, table: pd.DataFrame) -> Path:
    """Write ``table`` to the cache under ``key`` (atomically); returns the file's path."""
    path = cache_file(folder, "curve", key)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, float_format="%.17g")
    write_atomically(path, buffer.getvalue())
    return path
