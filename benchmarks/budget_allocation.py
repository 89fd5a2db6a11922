"""Pruning to a budget: the sensitivity allocation against uniform layer-wise and global ranking.

    .venv/bin/python benchmarks/budget_allocation.py [--quick] [--models ...] [--seeds 0 1 2]

On ../shared/data/pneumoniamnist.npz, from cached trained baselines (one per model and seed):
FLOPs budgets of 50/25/10% of dense (structured, Taylor filter scores) and parameter budgets of
10/5% (unstructured, Taylor weight scores). Each allocation is followed by the same 3-epoch masked
fine-tune (``FINE_TUNE_RECIPE``; structured ones with dead units pinned, ``fine_tune(structured=True)``).
Prints test AUC with DeLong's 95% interval per allocation, and the paired DeLong difference of the
sensitivity allocation against the better of the two references, with the headroom (dense test AUC
minus that reference's: what any allocation could still win). The sensitivity allocation keeps the
best on validation of the table's two answers (over the AUC drop and over the output distortion) and
the two one-knob answers; the column ``candidate`` says which it kept (when it kept a reference, its
test AUC is that reference's). With ``--select-after-fine-tune`` it compares them on validation
after the same fine-tune (``allocate(recipe=...)``; the references are then the candidates it
fine-tuned). ``--tightest`` runs only FLOPs 10% and params 5%.

Targets (exit 1 on a miss):
- the allocation is never significantly worse than the better reference (paired CI high >= 0);
- at the tightest budget of each kind it is better beyond the interval (paired CI low > 0);
- the sensitivity matrix of seed_cnn (structured + unstructured, with the random baseline) takes
  <= 5 min, and reopening it from the cache <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from _common import pneumonia, report_target

import workbench as wb

BUDGETS = [("flops", 0.5), ("flops", 0.25), ("flops", 0.1), ("params", 0.1), ("params", 0.05)]
TIGHTEST = {("flops", 0.1), ("params", 0.05)}
METHODS = ("sensitivity", "uniform", "global")
CRITERION = "taylor"


def allocations(subject: wb.Subject, goal: str, value: float, cache: Path, data, recipe, after: bool) -> dict:
    """The three methods' answers to a goal, each fine-tuned with ``recipe`` (``tuned_model``).

    ``after``: the sensitivity method picks its candidate after that fine-tune, and the references
    are the candidates it fine-tuned (the same recipe and seed: one fine-tune each, not two).
    """
    options = dict(criterion=CRITERION, dataset=data, recipe=recipe)
    if not after:
        answers = {m: wb.allocate(subject, goal, value, method=m, cache=cache) for m in METHODS}
        return {m: wb.fine_tune_allocation(subject.model, a, data, recipe) for m, a in answers.items()}
    chosen = wb.allocate(subject, goal, value, cache=cache, **options)
    measured = {c.candidate: c for c in chosen.measured}
    answers = {"sensitivity": chosen}
    for method in METHODS[1:]:  # a reference that could not reach the budget raises as on its own
        answers[method] = measured.get(method) or wb.allocate(subject, goal, value, method=method, **options)
    return answers


def time_matrix(subject: wb.Subject, folder: Path) -> tuple[float, float]:
    """Seconds to compute both tables from an empty cache, and to reopen them."""
    start = time.perf_counter()
    for granularity in ("structured", "unstructured"):
        wb.sensitivity(subject, CRITERION, granularity, cache=folder, progress=False)
    computed = time.perf_counter() - start
    start = time.perf_counter()
    for granularity in ("structured", "unstructured"):
        table = wb.sensitivity(subject, CRITERION, granularity, cache=folder, progress=False)
        assert table.computed == 0
    return computed, time.perf_counter() - start


def run_seed(
    name: str, seed: int, data, budgets, epochs: int, folder: Path, after_fine_tune: bool = False
) -> tuple[list[dict], dict]:
    model, _ = wb.baseline(data, name, wb.Recipe(epochs=epochs, seed=seed), progress=False)
    subject = wb.Subject.build(model, data, calibration_size=512, seed=seed)
    timings = dict(
        zip(("matrix_s", "reopen_s"), time_matrix(subject, folder / f"{name}-{seed}"), strict=True)
    )
    dense_auc = wb.auc_ci(data.test.labels, model.predict(data.test.images, verbose=0)[:, 1])
    rows = []
    recipe = replace(wb.FINE_TUNE_RECIPE, seed=seed)
    for goal, value in budgets:
        answers = allocations(subject, goal, value, folder / f"{name}-{seed}", data, recipe, after_fine_tune)
        for method, allocation in answers.items():
            probs = allocation.tuned_model.predict(data.test.images, batch_size=512, verbose=0)[:, 1]
            auc, low, high = wb.auc_ci(data.test.labels, probs)
            rows.append(
                dict(
                    model=name,
                    seed=seed,
                    goal=goal,
                    value=value,
                    method=method,
                    candidate=allocation.candidate,
                    flops=allocation.flops,
                    params=allocation.params,
                    val_drop=allocation.val_drop,
                    auc=auc,
                    low=low,
                    high=high,
                    probs=probs,
                    dense_auc=dense_auc[0],
                )
            )
            print(
                f"  {name} seed {seed} {goal}={value:<5} {method:11s} ({allocation.candidate:7s}) "
                f"flops {allocation.flops:.3f} "
                f"params {allocation.params:.3f} val drop {allocation.val_drop:+.3f} "
                f"test AUC {auc:.3f} [{low:.3f}, {high:.3f}]",
                flush=True,
            )
        if after_fine_tune:
            tuned = ", ".join(f"{c.candidate} {c.tuned_val_auc:.3f}" for c in answers["sensitivity"].measured)
            print(f"    validation AUC after the fine-tune: {tuned}", flush=True)
    return rows, timings


def paired(results: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Per (model, seed, budget): the allocation minus the better reference, DeLong paired on test."""
    out = []
    for key, part in results.groupby(["model", "seed", "goal", "value"]):
        by = part.set_index("method")
        best = max(("uniform", "global"), key=lambda m: by.loc[m, "auc"])
        test = wb.compare_auc(labels, by.loc[best, "probs"], by.loc["sensitivity", "probs"])
        out.append(
            dict(
                zip(("model", "seed", "goal", "value"), key, strict=True),
                best=best,
                headroom=by.loc[best, "dense_auc"] - by.loc[best, "auc"],
                candidate=by.loc["sensitivity", "candidate"],
                difference=test["difference"],
                ci_low=test["ci_low"],
                ci_high=test["ci_high"],
            )
        )
    return pd.DataFrame(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["seed_cnn", "small_resnet"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12, help="baseline training epochs (cached)")
    parser.add_argument("--quick", action="store_true", help="one seed; seed_cnn all budgets, resnet two")
    parser.add_argument(
        "--tightest", action="store_true", help="only the tightest budgets (FLOPs 10%%, params 5%%)"
    )
    parser.add_argument(
        "--select-after-fine-tune",
        action="store_true",
        help="the sensitivity method fine-tunes its candidates and keeps the best validation AUC after it",
    )
    args = parser.parse_args()
    data = pneumonia()
    labels = data.test.labels.reshape(-1)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1/5 min), {os.cpu_count()} CPUs")
    seeds = args.seeds[:1] if args.quick else args.seeds
    rows, timings = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            tight = args.tightest or (args.quick and name != "seed_cnn")
            budgets = [b for b in BUDGETS if b in TIGHTEST] if tight else BUDGETS
            for seed in seeds:
                seed_rows, timings[name, seed] = run_seed(
                    name, seed, data, budgets, args.epochs, Path(tmp), args.select_after_fine_tune
                )
                rows += seed_rows
    results = pd.DataFrame(rows)
    summary = results.groupby(["model", "goal", "value", "method"], sort=False)[
        ["flops", "params", "auc", "low", "high"]
    ]
    print("\nTest AUC after the 3-epoch fine-tune (mean over seeds; DeLong 95% CI of each run, averaged)")
    print(summary.mean().round(3).to_string())
    dense = results.groupby("model", sort=False)["dense_auc"].mean().round(3)
    print("dense test AUC (mean over seeds): " + ", ".join(f"{m} {a}" for m, a in dense.items()))
    versus = paired(results, labels)
    print(
        "\nSensitivity allocation minus the better reference (paired DeLong on test, per seed;"
        " headroom = dense test AUC minus that reference's)"
    )
    print(versus.round(4).to_string(index=False))
    ok = bool((versus["ci_high"] >= 0).all())
    print(f"never significantly worse than the better reference: {'MET' if ok else 'MISSED'}")
    tight = versus[[(g, v) in TIGHTEST for g, v in zip(versus["goal"], versus["value"], strict=True)]]
    better = bool((tight["ci_low"] > 0).all()) and not tight.empty
    print(f"better beyond the CI at the tightest budgets: {'MET' if better else 'MISSED'}")
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    met = [ok, better]
    for (name, seed), t in timings.items():
        if name == "seed_cnn":
            met.append(
                report_target(f"sensitivity matrix seed_cnn seed {seed} (2 tables)", t["matrix_s"], 300, "s")
            )
            met.append(report_target(f"reopen from cache seed_cnn seed {seed}", t["reopen_s"], 1, "s"))
        else:
            print(
                f"sensitivity matrix {name} seed {seed}: {t['matrix_s']:.1f} s, reopen {t['reopen_s']:.2f} s"
            )
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
