"""Shared set-up for benchmarks: the real pneumonia data and its cached seed_cnn baselines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np

import workbench as wb
from workbench.core.paths import SHARED_PNEUMONIA
from workbench.data.medmnist import CLASS_NAMES


def pneumonia() -> wb.Dataset:
    """Load ../shared/data/pneumoniamnist.npz, or exit with a clear message if it is absent."""
    if not SHARED_PNEUMONIA.is_file():
        sys.exit(f"benchmark needs {SHARED_PNEUMONIA} (real chest X-rays beside the checkout); not found")
    return wb.load_npz(SHARED_PNEUMONIA, class_names=CLASS_NAMES["pneumoniamnist"])


def timings_ms(action: Callable[[], object], repeats: int, warmup: int = 2) -> np.ndarray:
    """Wall-clock milliseconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        action()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        out.append(1000 * (time.perf_counter() - start))
    return np.array(out)


def report_target(label: str, value: float, limit: float, unit: str) -> bool:
    """Print one measured figure against its target; return whether it met it."""
    ok = value <= limit
    print(f"{label:48s} {value:9.1f} {unit}   target <= {limit:g} {unit}   {'MET' if ok else 'MISSED'}")
    return ok
