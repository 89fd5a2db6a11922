"""Is a pruned seed_cnn non-inferior to the dense one? Evidence on real chest X-rays.

    .venv/bin/python benchmarks/clinical_evidence.py [--finetune-epochs 3] [--margin 0.02]

On ../shared/data/pneumoniamnist.npz, prunes the cached seed_cnn baseline (gradient and taylor
scores, global scope) to 50/75/90/95% sparsity, fine-tunes 3 epochs with the masks pinned, and
prints for each: test AUC with its 95% DeLong interval, the paired difference from dense with
its interval and p-value, the non-inferiority verdict at δ, and sensitivity/specificity (Wilson
intervals) at the threshold chosen on validation for sensitivity >= 0.95.

Exits non-zero if an assertion fails: dense against itself must give difference 0 and
"non-inferior"; the fast Evaluator and evaluate_model must agree exactly, also with every kernel
pruned; the validation sensitivity at the chosen threshold must reach the target; fine-tuned
models must keep their sparsity.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _common import pneumonia

import workbench as wb
from workbench.analysis.curves import split_probabilities, stacked_images
from workbench.core.metrics import images_fingerprint, settle

SPARSITIES = (0.5, 0.75, 0.9, 0.95)
CRITERIA = ("gradient", "taylor")


def check(ok: bool, message: str, failures: list[str]) -> None:
    """Record a failed assertion (the run goes on, so the table is complete) and print it."""
    if not ok:
        failures.append(message)
        print(f"FAILED: {message}")


def check_dense_against_itself(evaluator: wb.Evaluator, failures: list[str]) -> None:
    val, test = evaluator.val, evaluator.test  # the evaluator's own dense pass of these images
    images = images_fingerprint(val.images, test.images)
    dense = wb.Predictions(evaluator.dense_val, evaluator.dense_test, val.labels, test.labels, images)
    same = wb.compare_to_dense(dense, dense)
    check(same["auc_difference"] == 0, f"dense vs dense difference {same['auc_difference']}", failures)
    check(
        same["noninferiority"] == "non-inferior", f"dense vs dense verdict {same['noninferiority']}", failures
    )


def check_paths_agree(model, data, evaluator: wb.Evaluator, failures: list[str]) -> None:
    """Every kernel pruned (structured): the fast and one-shot paths must report identical evidence."""
    nothing = {name: np.zeros(kernel.shape, bool) for name, kernel in wb.get_kernels(model).items()}
    fast = evaluator.evaluate(nothing, structured=True)
    slow = wb.evaluate_model(
        wb.apply_masks(model, nothing, structured=True),
        data.val,
        data.test,
        dense=model,
        operating=evaluator.operating,
    )
    differing = [key for key in wb.EVIDENCE_KEYS if fast[key] != slow[key]]
    check(not differing, f"Evaluator and evaluate_model differ on {differing}", failures)
    check(fast["auc"] == 0.5, f"every kernel pruned: AUC {fast['auc']}, expected 0.5 (all tied)", failures)


def check_validation_target(
    model, data, metrics: dict, target: float, label: str, failures: list[str]
) -> None:
    images = stacked_images(data.val, data.test)
    val_probs, _ = split_probabilities(model, wb.as_head(model), images, len(data.val))
    positives = data.val.labels == 1
    achieved = float((settle(val_probs)[positives, 1] >= metrics["threshold"]).mean())
    check(achieved >= target, f"{label}: validation sensitivity {achieved:.3f} < target {target}", failures)


def row(label: str, m: dict) -> str:
    def ci(value, low, high):
        return "undefined" if value is None else f"{value:.3f} [{low:.3f}, {high:.3f}]"

    difference = ci(m["auc_difference"], m["auc_difference_low"], m["auc_difference_high"])
    p = "-" if m["auc_difference_p"] is None else f"{m['auc_difference_p']:.3g}"
    return (
        f"{label:16s} {ci(m['auc'], m['auc_low'], m['auc_high']):22s} {difference:25s} {p:>8s} "
        f"{m['noninferiority']:13s} {ci(m['sensitivity'], m['sensitivity_low'], m['sensitivity_high']):22s} "
        f"{ci(m['specificity'], m['specificity_low'], m['specificity_high']):22s} {m['mcnemar_p']:8.3g}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetune-epochs", type=int, default=wb.FINE_TUNE_RECIPE.epochs)
    parser.add_argument("--margin", type=float, default=0.02)
    parser.add_argument("--sensitivity", type=float, default=0.95, help="validation sensitivity target")
    args = parser.parse_args()
    start = time.perf_counter()
    data = pneumonia()
    model, _ = wb.baseline(data, "seed_cnn", wb.Recipe(), progress=False)
    operating = wb.OperatingPoint("sensitivity", args.sensitivity)
    evaluator = wb.Evaluator(model, data, operating=operating, margin=args.margin)
    calibration = wb.stratified_sample(data.train, 512, seed=0)  # the X-ray file is sorted by class
    scorer = wb.Scorer(model, calibration)
    recipe = wb.Recipe(epochs=args.finetune_epochs, learning_rate=wb.FINE_TUNE_RECIPE.learning_rate)
    failures: list[str] = []
    check_dense_against_itself(evaluator, failures)
    check_paths_agree(model, data, evaluator, failures)

    print(f"seed_cnn on pneumoniamnist: test {len(data.test)} images, validation {len(data.val)}")
    print(f"threshold rule: {operating} on validation; δ = {args.margin}; fine-tuning {recipe.epochs} epochs")
    print(
        f"{'model':16s} {'AUC [95% CI]':22s} {'ΔAUC vs dense [95% CI]':25s} {'p':>8s} {'verdict':13s} "
        f"{'sensitivity [CI]':22s} {'specificity [CI]':22s} {'McNemar':>8s}"
    )
    print(row("dense", evaluator.dense_metrics))
    for criterion in CRITERIA:
        for sparsity in SPARSITIES:
            keep = wb.make_masks(
                scorer, wb.PruneSpec(criterion=criterion, scope="global", sparsity=sparsity)
            ).keep
            pruned = wb.apply_masks(model, keep)
            wb.fine_tune(pruned, keep, data, recipe, progress=False)
            achieved = wb.overall_sparsity(wb.masks_from_weights(pruned))
            label = f"{criterion} {sparsity:.0%}"
            check(
                abs(achieved - sparsity) <= 0.01,
                f"{label}: sparsity {achieved:.4f} after fine-tuning",
                failures,
            )
            metrics = wb.evaluate_model(pruned, data, dense=model, operating=operating, margin=args.margin)
            check_validation_target(pruned, data, metrics, args.sensitivity, label, failures)
            print(row(label, metrics), flush=True)
    print(f"total time {time.perf_counter() - start:.0f} s")
    if failures:
        print(f"{len(failures)} assertion(s) FAILED")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
