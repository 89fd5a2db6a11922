"""How fast a curve and one re-evaluation are, for seed_cnn on the 468-image pneumonia test set.

    .venv/bin/python benchmarks/sweep_speed.py

Targets (issue 3): a 50-point ε curve in <= 2 s; one re-evaluation at a new ε in <= 50 ms.
Exits non-zero if a target is missed.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _common import pneumonia, report_target, timings_ms

import workbench as wb


def main() -> int:
    data = pneumonia()
    model, _ = wb.baseline(data, "seed_cnn", wb.Recipe(), progress=False)
    scorer = wb.Scorer(model, data.val.images, data.val.labels)
    start = time.perf_counter()
    scorer.scores("gradient")
    elapsed_ms = 1000 * (time.perf_counter() - start)
    print(f"{'gradient accumulation over 270 val images (once)':48s} {elapsed_ms:9.1f} ms")
    evaluator = wb.Evaluator(model, data)
    grid = wb.log_grid(*wb.epsilon_range(scorer.scores("gradient")), points=50)
    spec = wb.PruneSpec(criterion="gradient")

    curve_ms = timings_ms(lambda: wb.curve(scorer, evaluator, spec, epsilons=grid), repeats=5, warmup=1)
    rng = np.random.default_rng(0)
    single_ms = timings_ms(
        lambda: evaluator.evaluate(
            wb.make_masks(scorer, wb.PruneSpec(criterion="gradient", epsilon=rng.choice(grid))).keep
        ),
        repeats=60,
    )

    images = f"{len(data.test)} test + {len(data.val)} val images"
    print(f"seed_cnn, {images} per point, criterion=gradient, scope=global")
    ok = report_target("50-point curve (median of 5)", float(np.median(curve_ms)), 2000, "ms")
    ok &= report_target(
        "one re-evaluation at a new epsilon (p50 of 60)", float(np.median(single_ms)), 50, "ms"
    )
    print(f"{'one re-evaluation (p95 of 60)':48s} {np.percentile(single_ms, 95):9.1f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
