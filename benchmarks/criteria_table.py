"""Compare pruning criteria on real chest X-rays: seed_cnn on ../shared/data/pneumoniamnist.npz.

    .venv/bin/python benchmarks/criteria_table.py [--seeds 0 1 2] [--finetune-epochs 3] [--granularities ...]

For every criterion that scores weights, layer-wise and global scope, and sparsity 50/75/90/95%
of the weights; then structured, for every criterion (FPGM and HRank are filter criteria, structured
only), layer-wise (filter scores of different layers differ in scale) at 50/75/90/95% of the
filters: prints test AUC, accuracy and sensitivity/specificity (operating threshold chosen on
validation), one-shot and after masked fine-tuning (structured: dead filters' biases and BatchNorm
pinned too), as the mean over seeds (each seed trains its own baseline).
Exits non-zero if a pruned weight is non-zero after fine-tuning or a target sparsity is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import pandas as pd
from _common import pneumonia

import workbench as wb

SPARSITIES = (0.5, 0.75, 0.9, 0.95)
SCOPES = ("layerwise", "global")
GRANULARITIES = ("unstructured", "structured")
METRICS = ("auc", "accuracy", "sensitivity", "specificity")


def settings(granularities=GRANULARITIES) -> list[tuple[str, str, str]]:
    """(granularity, criterion, scope) rows: each criterion at the granularities it scores."""
    rows = []
    for granularity in granularities:
        scopes = SCOPES if granularity == "unstructured" else ("layerwise",)
        for criterion, row in wb.CRITERIA.items():
            if granularity in row.granularities:
                rows += [(granularity, criterion, scope) for scope in scopes]
    return rows


def one_seed(data, seed: int, finetune_epochs: int, granularities=GRANULARITIES) -> list[dict]:
    model, _ = wb.baseline(data, "seed_cnn", wb.Recipe(seed=seed), progress=False)
    calibration = wb.stratified_sample(data.train, 512, seed)  # the X-ray file is sorted by class
    scorer = wb.Scorer(model, calibration, seed=seed)
    evaluator = wb.Evaluator(model, data)
    dense = dict(granularity="-", criterion="dense", scope="-", sparsity=0.0, stage="one-shot")
    rows = [dict(seed=seed, **dense, **_pick(evaluator.dense_metrics))]
    recipe = replace(wb.FINE_TUNE_RECIPE, epochs=finetune_epochs, seed=seed)
    for granularity, criterion, scope in settings(granularities):
        for sparsity in SPARSITIES:
            spec = wb.PruneSpec(criterion=criterion, granularity=granularity, scope=scope, sparsity=sparsity)
            keep = wb.make_masks(scorer, spec).keep
            common = dict(
                seed=seed, granularity=granularity, criterion=criterion, scope=scope, sparsity=sparsity
            )
            rows.append(
                dict(common, stage="one-shot", **_pick(evaluator.evaluate(keep, structured=spec.structured)))
            )
            pruned = wb.apply_masks(model, keep, structured=spec.structured)
            wb.fine_tune(pruned, keep, data, recipe, structured=spec.structured, progress=False)
            _check_exact(pruned, keep, None if spec.structured else sparsity)
            tuned = wb.evaluate_model(pruned, data)
            rows.append(dict(common, stage=f"fine-tuned {finetune_epochs} ep", **_pick(tuned)))
    return rows


def _pick(metrics: dict) -> dict:
    return {key: metrics[key] for key in METRICS}


def _check_exact(model, keep, sparsity: float | None) -> None:
    """Pruned weights are exactly zero; an unstructured mask also has its target sparsity."""
    nonzero = wb.masks_from_weights(model)
    if any((nonzero[n] & ~keep[n]).any() for n in keep):
        sys.exit("FAILED: a pruned weight is non-zero after fine-tuning")
    if sparsity is not None and abs(wb.overall_sparsity(nonzero) - sparsity) > 0.01:
        sys.exit(f"FAILED: sparsity {wb.overall_sparsity(nonzero):.4f} after fine-tuning, target {sparsity}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--granularities", nargs="+", default=list(GRANULARITIES), choices=GRANULARITIES)
    args = parser.parse_args()
    data = pneumonia()
    start = time.perf_counter()
    rows = [
        row for seed in args.seeds for row in one_seed(data, seed, args.finetune_epochs, args.granularities)
    ]
    table = (
        pd.DataFrame(rows)
        .groupby(["stage", "granularity", "criterion", "scope", "sparsity"], sort=False)[list(METRICS)]
        .mean()
    )
    pd.set_option("display.width", 160, "display.max_rows", 200)
    print(f"seed_cnn on pneumoniamnist test ({len(data.test)} images), mean over seeds {args.seeds}")
    print(table.round(3).to_string())
    print(f"total time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
