"""Time from a control change to the redrawn dashboard figure, driven through the widgets' Python API.

    .venv/bin/python benchmarks/dashboard_latency.py

seed_cnn on the 468-image pneumonia test set (../shared/data/pneumoniamnist.npz). Setting a
widget's value runs its callback synchronously, so the time around the assignment is the time
until the new PNG is in the Image widget (the browser then only has to paint it).
Targets (issue 4): ε slider p50 <= 100 ms and p95 <= 250 ms. Exits non-zero if one is missed.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _common import pneumonia, report_target

from workbench.sweep import Explorer
from workbench.train import Recipe, baseline
from workbench.widgets import Dashboard


def timed_changes(dashboard: Dashboard, control: str, values) -> np.ndarray:
    """Milliseconds per value change, asserting each one produced a new figure."""
    times = []
    for value in values:
        before = dashboard.image.value
        start = time.perf_counter()
        dashboard.controls[control].value = value
        times.append(1000 * (time.perf_counter() - start))
        if dashboard.message.value:
            sys.exit(f"dashboard reported an error: {dashboard.message.value}")
        if dashboard.image.value == before:
            sys.exit(f"setting {control}={value!r} did not redraw the figure")
    return np.array(times)


def main() -> int:
    data = pneumonia()
    model, _ = baseline(data, "seed_cnn", Recipe(), progress=False)
    start = time.perf_counter()
    dashboard = Dashboard(Explorer(model, data))
    started = time.perf_counter() - start
    print(f"{'dashboard start (scores, 30-point curve, first figure)':56s} {started:7.2f} s")
    slider = dashboard.controls["epsilon"]
    rng = np.random.default_rng(0)
    moves = [float(v) for v in 10 ** rng.uniform(slider.min, slider.max, 100)]
    eps_ms = timed_changes(dashboard, "epsilon", moves)
    dashboard.controls["mode"].value = "sparsity"
    targets = [float(v) for v in np.round(rng.uniform(0, 0.99, 40), 2)]
    sparsity_ms = timed_changes(dashboard, "sparsity", targets)
    dashboard.controls["mode"].value = "epsilon"
    layer_ms = timed_changes(dashboard, "layer", ["conv2", "dense1", "conv1", "logits", "conv3"] * 4)
    criteria = ["gradient", "snip", "magnitude", "taylor", "random"]
    first_switch = timed_changes(dashboard, "criterion", criteria[1:])
    cached_switch = timed_changes(dashboard, "criterion", criteria)

    print(f"seed_cnn, pneumoniamnist test set ({len(data.test)} images) + val ({len(data.val)}) per redraw")
    ok = report_target("ε slider move, p50 of 100", float(np.median(eps_ms)), 100, "ms")
    ok &= report_target("ε slider move, p95 of 100", float(np.percentile(eps_ms, 95)), 250, "ms")
    for label, values in (
        ("target-sparsity slider move, p50 / p95 of 40", sparsity_ms),
        ("layer picker change, p50 / p95 of 20", layer_ms),
        ("criterion switch, cached curve, p50 / p95 of 5", cached_switch),
    ):
        print(f"{label:56s} {np.median(values):7.1f} / {np.percentile(values, 95):.1f} ms")
    label = "criterion switch, first time (new 30-point curve), median"
    print(f"{label:56s} {np.median(first_switch):7.1f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
