"""Structured pruning that keeps its AUC: one-shot, iterative, distilled, iterative + distilled (#27).

    .venv/bin/python benchmarks/structured_recovery.py [--quick] [--seeds 0 1 2] [--models ...]

On ../shared/data/pneumoniamnist.npz, per seed:
- ``seed_cnn`` (28 px, the whole file, its cached 12-epoch baseline) at 90% and 95% of filters
  (structured, layer-wise, ``--criterion`` scores, Taylor by default);
- MobileNetV2 and DenseNet121 (64 px, built and trained as in ``model_zoo.py`` on seeded subsets)
  at FLOPs budgets of 25% and 10% of dense: the uniform (layer-wise) allocation of that budget.

Every method gets the SAME total fine-tuning budget (``--epochs`` for seed_cnn,
``--backbone-epochs`` for the backbones; the iterative schedule splits it over its rounds) and
seed. "distilled" learns from the dense model's logits too (``wb.Distillation()``: T = 4,
alpha = 0.5). A recipe is a method at a learning rate (``--learning-rates``, ``--backbone-rates``);
the one reported against each target has the best mean VALIDATION AUC: test AUC never chooses.

Backbones: the best recipe's slim model is timed in LiteRT at batch 1 (``model_zoo.speedup``) against
the dense one, beside its FLOPs ratio. At MobileNetV2's budgets the sensitivity allocation
(``wb.allocate``) is compared with uniform and global, each fine-tuned with the best recipe that
applies to a given mask (one-shot or distilled: an iterative schedule re-scores toward one sparsity,
which a per-layer allocation is not), by the paired DeLong difference on test, beside the headroom
(dense test AUC minus the better reference's).

Targets (exit 1 on a miss): seed_cnn 90%: test AUC >= dense - 0.02, spread (std) over seeds <= 0.02;
seed_cnn 95%: >= dense - 0.04; backbones: FLOPs 25% >= dense - 0.01, 10% >= dense - 0.02; LiteRT
batch-1 speedup >= 0.5 x FLOPs ratio; the sensitivity allocation better than both references beyond
the paired interval (every seed) at one budget at least, and never significantly worse.
``--quick``: one seed, seed_cnn only (a smoke run: the backbone targets are not checked).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from _common import pneumonia
from model_zoo import build, speedup, subset

import workbench as wb
from workbench.analysis.sensitivity import dense_keep
from workbench.core.cache import fingerprint
from workbench.core.fs import atomic_path
from workbench.model.compat import keras
from workbench.model.registry import prunable_layers

METHODS = ("one-shot", "iterative", "distilled", "iterative+distilled")
FIXED_MASK = ("one-shot", "distilled")  # the recipes that apply to any given mask
SEED_CNN_SETTINGS = (0.9, 0.95)  # fractions of filters
BUDGETS = (0.25, 0.1)  # fractions of dense FLOPs
BACKBONES = ("MobileNetV2", "DenseNet121")
# the tolerated test AUC drop from dense at each setting (by its label in the table)
TARGET_DROP = {"90% filters": 0.02, "95% filters": 0.04, "FLOPs 25%": 0.01, "FLOPs 10%": 0.02}


@dataclass
class Case:
    """One trained dense model on its data, for one seed."""

    name: str
    data: wb.Dataset
    dense: keras.Model
    seed: int
    calibration: wb.Split

    def scorer(self, model: keras.Model) -> wb.Scorer:
        return wb.Scorer(model, self.calibration, seed=self.seed)

    @cached_property
    def dense_auc(self) -> float:
        return self.aucs(self.dense)[1]

    def aucs(self, model: keras.Model) -> tuple[float, float, np.ndarray]:
        """Validation AUC, test AUC and the test probabilities of the positive class."""
        val = model.predict(self.data.val.images, batch_size=256, verbose=0)[:, 1]
        test = model.predict(self.data.test.images, batch_size=256, verbose=0)[:, 1]
        return wb.auc_ci(self.data.val.labels, val)[0], wb.auc_ci(self.data.test.labels, test)[0], test


def recover(case: Case, method: str, spec: wb.PruneSpec, keep, recipe: wb.Recipe, rounds: int):
    """The dense model pruned by ``keep`` (one-shot) or toward ``spec`` (iterative), fine-tuned by
    ``method`` within ``recipe.epochs`` in all; returns (model, its structured keep)."""
    iterative, distilled = method.startswith("iterative"), method.endswith("distilled")
    start = dense_keep(case.scorer(case.dense).infos) if iterative else keep
    model = wb.apply_masks(case.dense, start, structured=True)
    schedule = wb.Iterative(case.scorer, spec, rounds) if iterative else wb.OneShot()
    recipe = replace(recipe, distillation=wb.Distillation() if distilled else None)
    teacher = case.dense if distilled else None
    wb.fine_tune(
        model, start, case.data, recipe, teacher=teacher, schedule=schedule, structured=True, progress=False
    )
    return model, unit_keep(model) if iterative else keep


def unit_keep(model: keras.Model) -> dict:
    """The structured keep of a model whose dead units are exactly zero: a unit lives if any weight does."""
    nonzero = wb.masks_from_weights(model)
    keep = {}
    for info in prunable_layers(model):
        alive = nonzero[info.name].reshape(-1, int(np.prod(info.units_shape))).any(axis=0)
        keep[info.name] = np.broadcast_to(alive.reshape(info.units_shape), info.shape).copy()
    return keep


def methods_rows(case: Case, setting, spec: wb.PruneSpec, keep, recipe: wb.Recipe, rates, args) -> list[dict]:
    """Every method at one setting: validation and test AUC, the fraction of dense FLOPs kept, time."""
    rows, dense_flops = [], wb.flops(case.dense)["dense"]
    for method, rate in [(method, rate) for method in args.methods for rate in rates]:
        started = time.perf_counter()
        tuned = replace(recipe, learning_rate=rate)
        model, final = recover(case, method, spec, keep, tuned, args.rounds)
        val_auc, test_auc, probs = case.aucs(model)
        row = dict(model=case.name, seed=case.seed, setting=setting, method=method, lr=rate, val_auc=val_auc)
        row |= dict(
            test_auc=test_auc, probs=probs, flops=wb.flops(model, final)["filter_pruned"] / dense_flops
        )
        row |= dict(seconds=time.perf_counter() - started, dense_auc=case.dense_auc, final=final)
        row["model_object"] = model
        rows.append(row)
        print(
            f"  {case.name} seed {case.seed} {setting}: {method:20s} lr {rate:g} val AUC {val_auc:.3f} "
            f"test AUC {test_auc:.3f} FLOPs {row['flops']:.3f} ({row['seconds']:.0f} s)",
            flush=True,
        )
    return rows


def seed_cnn_rows(data: wb.Dataset, seed: int, args) -> list[dict]:
    dense, _ = wb.baseline(data, "seed_cnn", wb.Recipe(seed=seed), progress=False)
    case = Case("seed_cnn", data, dense, seed, wb.stratified_sample(data.train, 512, seed))
    recipe = replace(wb.FINE_TUNE_RECIPE, epochs=args.epochs, seed=seed)
    rows = []
    for sparsity in SEED_CNN_SETTINGS:
        spec = wb.PruneSpec(args.criterion, "structured", "layerwise", sparsity=sparsity)
        keep = wb.couple_masks(dense, wb.make_masks(case.scorer(dense), spec).keep, quiet=True)
        rows += methods_rows(case, f"{sparsity:.0%} filters", spec, keep, recipe, args.learning_rates, args)
    for row in rows:
        del row["model_object"]  # seed_cnn is not timed
    return rows


def trained_backbone(name: str, data: wb.Dataset, seed: int, epochs: int) -> keras.Model:
    """``model_zoo``'s backbone trained ``epochs`` from scratch, BatchNorm recalibrated; cached."""
    key = fingerprint(name, seed, epochs, data.fingerprint())
    path = wb.cache_dir() / f"bench-structured-recovery-{name}-{key}.keras"
    if path.is_file():
        return keras.models.load_model(path)
    keras.utils.set_random_seed(seed)
    model = wb.compile_model(build(name, data.image_shape, data.num_classes))
    wb.fit(model, data, wb.Recipe(epochs=epochs, batch_size=32, seed=seed), progress=False)
    wb.recalibrate_batchnorm(model, data.train.images)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        model.save(temporary)
    return model


def backbone_rows(name: str, full: wb.Dataset, seed: int, args) -> tuple[list[dict], list[dict]]:
    """The four methods at each FLOPs budget (uniform allocation), the best one's LiteRT speedup,
    and at MobileNetV2's budgets the three allocations with the best fixed-mask recipe."""
    sizes = {"train": args.train, "val": args.test, "test": args.test}
    data = subset(full, sizes, (64, 64, 3), seed)
    dense = trained_backbone(name, data, seed, args.train_epochs)
    case = Case(name, data, dense, seed, wb.stratified_sample(data.train, args.calibration, seed))
    subject = wb.Subject.build(dense, data, calibration_size=args.calibration, seed=seed)
    recipe = wb.Recipe(epochs=args.backbone_epochs, batch_size=32, seed=seed)
    rows, versus = [], []
    tables = Path(tempfile.mkdtemp(prefix="structured-recovery-"))  # one sensitivity table per model
    for budget in args.budgets:
        uniform = wb.allocate(subject, "flops", budget, method="uniform", criterion=args.criterion)
        sparsity = max(uniform.layer_sparsity.values())  # the one layer-wise sparsity it chose
        spec = wb.PruneSpec(args.criterion, "structured", "layerwise", sparsity=sparsity)
        found = methods_rows(
            case, f"FLOPs {budget:.0%}", spec, uniform.keep, recipe, args.backbone_rates, args
        )
        best = max(found, key=lambda row: row["val_auc"])
        slim = wb.slim_model(best["model_object"], best["final"])
        lite = [
            wb.TFLiteModel(wb.to_tflite(m), batch_size=1, num_threads=args.threads) for m in (dense, slim)
        ]
        best["lite_b1"] = speedup(*lite, data.test.images, 1, args.repeats)
        best["flops_ratio"] = wb.flops(dense)["dense"] / wb.flops(slim)["dense"]
        print(
            f"  {name} FLOPs {budget:.0%}: {best['method']} slim LiteRT batch-1 speedup "
            f"{best['lite_b1']:.2f}x, FLOPs ratio {best['flops_ratio']:.2f}x",
            flush=True,
        )
        for row in found:
            del row["model_object"]
        rows += found
        if name == "MobileNetV2":
            fixed = max(
                (r for r in found if r["method"] in FIXED_MASK), key=lambda row: row["val_auc"], default=None
            )
            if fixed is None:
                continue  # no fixed-mask recipe was run (--methods)
            fixed_recipe = replace(recipe, learning_rate=fixed["lr"])
            versus += allocation_rows(case, subject, budget, fixed["method"], fixed_recipe, args, tables)
    shutil.rmtree(tables)
    return rows, versus


def allocation_rows(
    case: Case, subject, budget: float, method: str, recipe: wb.Recipe, args, tables: Path
) -> list[dict]:
    """Sensitivity allocation vs uniform vs global at ``budget``, each recovered by ``method``;
    ``tables`` caches the sensitivity table, which every budget reads."""
    answers = {
        m: wb.allocate(subject, "flops", budget, method=m, criterion=args.criterion, cache=tables)
        for m in ("sensitivity", "uniform", "global")
    }
    rows = []
    for allocation_method, allocation in answers.items():
        model, _ = recover(case, method, None, allocation.keep, recipe, args.rounds)
        _, test_auc, probs = case.aucs(model)
        rows.append(
            dict(
                seed=case.seed,
                budget=budget,
                allocation=allocation_method,
                recipe=method,
                candidate=allocation.candidate,
                flops=allocation.flops,
                test_auc=test_auc,
                probs=probs,
                dense_auc=case.dense_auc,
                labels=case.data.test.labels.reshape(-1),
            )
        )
        print(
            f"  {case.name} seed {case.seed} FLOPs {budget:.0%} {allocation_method:11s} "
            f"({allocation.candidate}) + {method}: test AUC {test_auc:.3f}",
            flush=True,
        )
    return rows


# --- the tables and the targets ---------------------------------------------------------------


def method_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds per model, setting and method; ``chosen`` marks the best on validation."""
    table = rows.groupby(["model", "setting", "method", "lr"], sort=False).agg(
        val_auc=("val_auc", "mean"),
        test_auc=("test_auc", "mean"),
        test_std=("test_auc", "std"),
        dense_auc=("dense_auc", "mean"),
        flops=("flops", "mean"),
        seconds=("seconds", "mean"),
    )
    table["test_std"] = table["test_std"].fillna(0.0)
    best = table.groupby(level=["model", "setting"], sort=False)["val_auc"].transform("max")
    table["chosen"] = np.where(table["val_auc"] == best, "<- best on val", "")
    return table


def check_recovery(table: pd.DataFrame) -> list[bool]:
    met = []
    for (model, setting), part in table[table["chosen"] != ""].groupby(level=[0, 1], sort=False):
        row, drop = part.iloc[0], TARGET_DROP[setting]
        ok = row["test_auc"] >= row["dense_auc"] - drop
        spread = setting == "90% filters"
        if spread:
            ok &= row["test_std"] <= 0.02
        print(
            f"{model:12s} {setting:12s} {part.index[0][2]:20s} lr {part.index[0][3]:g} "
            f"test AUC {row['test_auc']:.3f} (std {row['test_std']:.3f}) "
            f">= dense {row['dense_auc']:.3f} - {drop}"
            f"{' and std <= 0.02' if spread else ''}: {'MET' if ok else 'MISSED'}"
        )
        met.append(bool(ok))
    return met


def check_speed(rows: pd.DataFrame) -> list[bool]:
    met = []
    for _, row in rows.dropna(subset=["lite_b1"]).iterrows():
        ok = row["lite_b1"] >= 0.5 * row["flops_ratio"]
        print(
            f"{row['model']:12s} seed {row['seed']} {row['setting']:10s} LiteRT batch-1 speedup "
            f"{row['lite_b1']:.2f}x >= 0.5 x FLOPs ratio {row['flops_ratio']:.2f}x: "
            f"{'MET' if ok else 'MISSED'}"
        )
        met.append(bool(ok))
    return met


def check_allocation(versus: pd.DataFrame) -> list[bool]:
    """Paired DeLong: the sensitivity allocation minus the better reference, per seed and budget."""
    out = []
    for (seed, budget), part in versus.groupby(["seed", "budget"]):
        by = part.set_index("allocation")
        reference = max(("uniform", "global"), key=lambda m: by.loc[m, "test_auc"])
        labels = by.loc["sensitivity", "labels"]  # each seed's own test subset
        test = wb.compare_auc(labels, by.loc[reference, "probs"], by.loc["sensitivity", "probs"])
        out.append(
            dict(
                seed=seed,
                budget=budget,
                recipe=by.loc["sensitivity", "recipe"],
                candidate=by.loc["sensitivity", "candidate"],
                reference=reference,
                headroom=by.loc[reference, "dense_auc"] - by.loc[reference, "test_auc"],
                difference=test["difference"],
                ci_low=test["ci_low"],
                ci_high=test["ci_high"],
            )
        )
    table = pd.DataFrame(out)
    print(
        "\nMobileNetV2: sensitivity allocation minus the better of uniform and global (paired DeLong on test;"
        " headroom = dense test AUC minus that reference's)"
    )
    print(table.round(4).to_string(index=False))
    never_worse = bool((table["ci_high"] >= 0).all())
    better = bool(table.groupby("budget")["ci_low"].apply(lambda low: (low > 0).all()).any())
    print(f"never significantly worse than the better reference: {'MET' if never_worse else 'MISSED'}")
    print(f"better beyond the interval at one budget at least (every seed): {'MET' if better else 'MISSED'}")
    return [never_worse, better]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, seed_cnn only (a smoke run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--models", nargs="+", default=["seed_cnn", *BACKBONES], choices=["seed_cnn", *BACKBONES]
    )
    parser.add_argument("--criterion", default="taylor", help="structured scores of every method")
    parser.add_argument("--epochs", type=int, default=6, help="seed_cnn's fine-tuning budget, every method")
    parser.add_argument("--backbone-epochs", type=int, default=3, help="the backbones' fine-tuning budget")
    parser.add_argument(
        "--learning-rates",
        type=float,
        nargs="+",
        default=[5e-4, 2e-3],
        help="seed_cnn: recipes tried, chosen on val",
    )
    parser.add_argument(
        "--backbone-rates",
        type=float,
        nargs="+",
        default=[1e-3],
        help="backbones: recipes tried, chosen on val",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS), help="backbones: FLOPs")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the iterative schedule")
    parser.add_argument("--train", type=int, default=512, help="backbones: training images (a subset)")
    parser.add_argument("--test", type=int, default=256, help="backbones: validation and test images each")
    parser.add_argument(
        "--train-epochs", type=int, default=3, help="backbones: dense training epochs (cached)"
    )
    parser.add_argument("--calibration", type=int, default=128, help="backbones: images for the scores")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT interpreter threads")
    parser.add_argument("--repeats", type=int, default=20, help="timed LiteRT calls at batch 1")
    args = parser.parse_args()
    seeds, models = (args.seeds[:1], ["seed_cnn"]) if args.quick else (args.seeds, args.models)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1/5 min), {os.cpu_count()} CPUs")
    started, full = time.perf_counter(), pneumonia()
    rows, versus = [], []
    for seed in seeds:
        if "seed_cnn" in models:
            rows += seed_cnn_rows(full, seed, args)
        for name in [m for m in models if m in BACKBONES]:
            found, against = backbone_rows(name, full, seed, args)
            rows, versus = rows + found, versus + against
    return report(pd.DataFrame(rows), pd.DataFrame(versus), seeds, args, started)


def report(rows: pd.DataFrame, versus: pd.DataFrame, seeds, args, started: float) -> int:
    """Print the tables, check every target; the exit status."""
    pd.set_option("display.width", 200, "display.max_rows", 200)
    print(
        f"\nStructured recovery, mean over seeds {seeds}. SAME total fine-tuning budget for every method: "
        f"seed_cnn {args.epochs} epochs, backbones {args.backbone_epochs} epochs (iterative: "
        f"{args.rounds} rounds splitting them); criterion {args.criterion}, layer-wise. "
        f"Backbones: 64 px, subsets of {args.train} "
        f"training and {args.test} validation/test images, dense trained {args.train_epochs} epochs."
    )
    print(method_table(rows).round(3).to_string())
    met = check_recovery(method_table(rows))
    if "lite_b1" in rows:
        met += check_speed(rows)
    if not versus.empty:
        met += check_allocation(versus)
    seconds = time.perf_counter() - started
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    full = not args.quick and set(args.models) == {"seed_cnn", *BACKBONES} and len(seeds) >= 3
    if not full:
        print(f"total time {seconds:.0f} s (a partial run: the whole run's target is < 3600 s)")
    else:
        met.append(seconds < 3600)
        print(f"total time {seconds:.0f} s, target < 3600 s: {'MET' if met[-1] else 'MISSED'}")
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
