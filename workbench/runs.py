"""Results of a notebook run, written where a sweep (or a person) can read them back.

A notebook given ``results_dir`` calls ``write_results``: ``metrics.json`` (JSON values) and,
if given, ``layers.csv`` (the per-layer table). Files are written atomically, so a killed run
never leaves a half-written ``metrics.json`` that looks complete.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def json_safe(value):
    """Convert NumPy scalars/arrays and non-finite floats into plain JSON values (NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(directory: str | Path, metrics: dict, layers: pd.DataFrame | None = None) -> Path:
    """Write ``metrics.json`` (and ``layers.csv``) into ``directory``; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if layers is not None:
        _atomic_write(directory / "layers.csv", layers.to_csv(index=False))
    _atomic_write(directory / "metrics.json", json.dumps(json_safe(metrics), indent=2, sort_keys=True))
    return directory


def _atomic_write(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
