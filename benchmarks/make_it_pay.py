"""Make pruning pay: accuracy, size and measured latency of pruned seed_cnn, beside tfmot.

    .venv/bin/python benchmarks/make_it_pay.py [--quick] [--seeds 0 1 2] [--finetune-epochs 3]

On ../shared/data/pneumoniamnist.npz, from the same trained baselines (one per seed), at
sparsity 50/75/90/95% with the same fine-tuning budget:

- workbench unstructured: the workbench's best recipe, gradual pruning with the Taylor criterion
  (|g.w|), global scope, cubic ramp over the first 2/3 of the fine-tuning steps. A masked model.
- workbench structured: that fraction of filters/units removed per layer (Taylor filter scores,
  one-shot), coupling-consistent, fine-tuned with dead units pinned, then physically slimmed.
- tfmot: prune_low_magnitude with PolynomialDecay on the same ramp, in a tf_keras subprocess
  (benchmarks/tfmot_baseline.py; needs the benchmark extra).

Prints test AUC/accuracy (mean over seeds), then for the first seed: parameters, FLOPs, file sizes
(.keras, gzip, TFLite float and int8) with the exported files' own test accuracy, and median
latency at batch 1 and 64 (Keras through a compiled tf.function, and the TFLite interpreter),
measured interleaved after warm-up. Exits non-zero if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from _common import pneumonia

import workbench as wb
from workbench.core.paths import SHARED_PNEUMONIA
from workbench.model.compat import keras, tf
from workbench.model.registry import prunable_layers

SPARSITIES = (0.5, 0.75, 0.9, 0.95)
BEST_UNSTRUCTURED = wb.PruneSpec(criterion="taylor", scope="global")
STRUCTURED = wb.PruneSpec(criterion="taylor", granularity="structured", scope="layerwise")
HERE = Path(__file__).resolve().parent
CALIBRATION = 512  # training images for scores and for int8 calibration


# --- the three ways to prune ------------------------------------------------------------------


def workbench_unstructured(model, data, sparsity: float, recipe: wb.Recipe):
    """The workbench's best recipe: gradual Taylor pruning, global scope. Returns (model, keep)."""
    # the X-ray file is sorted by class
    calibration = wb.stratified_sample(data.train, CALIBRATION, recipe.seed)
    spec = replace(BEST_UNSTRUCTURED, sparsity=sparsity)
    pruned, _, _ = wb.prune_gradually(
        model,
        lambda m: wb.Scorer(m, calibration, seed=recipe.seed),
        spec,
        data,
        recipe,
        progress=False,
    )
    return pruned, wb.masks_from_weights(pruned)


def workbench_structured(model, data, sparsity: float, recipe: wb.Recipe):
    """Remove ``sparsity`` of each layer's filters (one-shot Taylor), fine-tune, slim."""
    calibration = wb.stratified_sample(data.train, CALIBRATION, recipe.seed)
    scorer = wb.Scorer(model, calibration, seed=recipe.seed)
    spec = replace(STRUCTURED, sparsity=sparsity)
    keep = wb.couple_masks(model, wb.make_masks(scorer, spec).keep)
    masked = wb.apply_masks(model, keep, structured=True)
    wb.fine_tune(masked, keep, data, recipe, structured=True, progress=False)
    slim = wb.slim_model(masked, keep)
    gap = np.abs(np.asarray(slim(data.test.images)) - np.asarray(masked(data.test.images))).max()
    if gap > 1e-5:
        sys.exit(f"FAILED: slim model differs from the masked model by {gap:.2e} at sparsity {sparsity}")
    return masked, slim, keep


def run_tfmot(models: dict, data, args, workdir: Path) -> dict[tuple[int, float], keras.Model]:
    """Prune every baseline with tfmot in a tf_keras subprocess; load the results into Keras 3 models."""
    paths = []
    for seed, model in models.items():
        paths.append(workdir / f"baseline-seed{seed}.npz")
        np.savez(paths[-1], *model.get_weights())
    command = [sys.executable, str(HERE / "tfmot_baseline.py"), "--data", str(SHARED_PNEUMONIA)]
    command += ["--baselines", *map(str, paths), "--seeds", *map(str, models)]
    command += ["--sparsities", *map(str, SPARSITIES), "--epochs", str(args.finetune_epochs)]
    command += ["--out", str(workdir / "tfmot")]
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(
            "FAILED: the tfmot subprocess failed (install the benchmark extra: "
            f"tensorflow-model-optimization and tf_keras):\n{done.stderr[-3000:]}"
        )
    return {
        (seed, s): _load_tfmot(workdir / "tfmot" / f"tfmot-seed{seed}-{s:g}.npz", data)
        for seed in models
        for s in SPARSITIES
    }


def _load_tfmot(path: Path, data) -> keras.Model:
    model = wb.seed_cnn(data.image_shape, data.num_classes)
    with np.load(path) as archive:
        model.set_weights([archive[f"arr_{i}"] for i in range(len(archive.files))])
    return model


# --- measuring --------------------------------------------------------------------------------


def keras_runner(model, batch: np.ndarray):
    """A compiled forward pass on a fixed batch (tf.function, inference mode)."""
    forward = tf.function(lambda x: model(x, training=False))
    x = tf.constant(batch)
    return lambda: forward(x).numpy()


def tflite_runner(content: bytes, batch: np.ndarray, threads: int):
    """The interpreter resized once to the batch; each call is set_tensor, invoke, get_tensor."""
    run = wb.TFLiteModel(content, batch_size=len(batch), num_threads=threads)
    return lambda: run(batch)


def interleaved_medians(runners: dict[str, callable], repeats: int, rounds: int = 5) -> dict[str, float]:
    """Median ms per call, timing the runners round-robin so load from other jobs hits all alike."""
    samples = {name: [] for name in runners}
    for run in runners.values():
        for _ in range(max(3, repeats // 20)):
            run()  # warm-up: tracing, allocation, caches
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(max(1, repeats // rounds)):
                start = time.perf_counter()
                run()
                samples[name].append(1000 * (time.perf_counter() - start))
    return {name: float(np.median(values)) for name, values in samples.items()}


def costs(name: str, model, flop_count: int, data, folder: Path) -> dict:
    """Parameters, FLOPs, file sizes and the exported files' own test metrics of one model."""
    calibration = wb.stratified_sample(data.train, CALIBRATION).images
    paths = wb.export_all(model, folder, name, calibration=calibration)
    metrics = {fmt: wb.file_metrics(path, data) for fmt, path in paths.items()}
    params = wb.parameter_counts(model)
    return {
        "params": params["nonzero"],
        "MFLOPs": flop_count / 1e6,
        "keras_KB": metrics["keras"]["bytes"] / 1e3,
        "keras_gz_KB": metrics["keras"]["gzip_bytes"] / 1e3,
        "tflite_KB": metrics["tflite"]["bytes"] / 1e3,
        "int8_KB": metrics["int8"]["bytes"] / 1e3,
        "int8_gz_KB": metrics["int8"]["gzip_bytes"] / 1e3,
        "tflite_acc": metrics["tflite"]["accuracy"],
        "int8_acc": metrics["int8"]["accuracy"],
        "int8_auc": metrics["int8"]["auc"],
        "_tflite": paths["tflite"].read_bytes(),
        "_int8": paths["int8"].read_bytes(),
    }


def latencies(models: dict, tables: dict, data, repeats: int, threads: int) -> pd.DataFrame:
    """Median latency (ms) of every model at batch 1 and 64: Keras tf.function, TFLite float, TFLite int8."""
    columns = {}
    for batch_size, reps in ((1, repeats), (64, max(10, repeats // 5))):
        batch = data.test.images[:batch_size]
        for backend in ("keras", "tflite", "int8"):
            runners = {
                name: keras_runner(model, batch)
                if backend == "keras"
                else tflite_runner(tables[name][f"_{backend}"], batch, threads)
                for name, model in models.items()
            }
            columns[f"{backend}_b{batch_size}_ms"] = interleaved_medians(runners, reps)
    return pd.DataFrame(columns)


# --- the run ----------------------------------------------------------------------------------


def prune_all(data, args, workdir: Path):
    """Every (family, sparsity, seed): its model, FLOPs, and quality. Returns (rows, seed-0 models)."""
    baselines = {
        seed: wb.baseline(data, "seed_cnn", wb.Recipe(seed=seed), progress=False)[0] for seed in args.seeds
    }
    start = time.perf_counter()
    tfmot_models = run_tfmot(baselines, data, args, workdir)
    print(f"tfmot subprocess: {time.perf_counter() - start:.0f} s", flush=True)
    rows, first = [], {}
    for seed, model in baselines.items():
        recipe = replace(wb.FINE_TUNE_RECIPE, epochs=args.finetune_epochs, seed=seed)
        rows.append(_row("dense", 0.0, seed, model, wb.flops(model)["dense"], data))
        first.setdefault(("dense", 0.0), (model, rows[-1]["_flops"]))
        for s in SPARSITIES:
            unstructured, keep = workbench_unstructured(model, data, s, recipe)
            masked, slim, skeep = workbench_structured(model, data, s, recipe)
            tfmot = tfmot_models[(seed, s)]
            found = [
                ("workbench unstructured (masked)", unstructured, wb.flops(model, keep)["masked"]),
                ("workbench structured (slim)", slim, wb.flops(slim)["dense"]),
                ("tfmot (masked)", tfmot, wb.flops(tfmot, wb.masks_from_weights(tfmot))["masked"]),
            ]
            for family, pruned, flop_count in found:
                rows.append(_row(family, s, seed, pruned, flop_count, data))
                first.setdefault((family, s), (pruned, flop_count))
            print(f"seed {seed} sparsity {s:.0%}: pruned and fine-tuned", flush=True)
    return rows, first


def _row(family: str, sparsity: float, seed: int, model, flop_count: int, data) -> dict:
    metrics = wb.evaluate_model(model, data)
    kernels = wb.masks_from_weights(model)
    dense_weights = sum(
        info.size for info in prunable_layers(wb.seed_cnn(data.image_shape, data.num_classes))
    )
    return {
        "family": family,
        "sparsity": sparsity,
        "seed": seed,
        "auc": metrics["auc"],
        "accuracy": metrics["accuracy"],
        "pruned_weights": 1 - sum(int(m.sum()) for m in kernels.values()) / dense_weights,
        "_flops": flop_count,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, fewer timing repeats (~3 min)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=500, help="timed batch-1 calls per model")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="TFLite interpreter threads")
    parser.add_argument("--out", type=Path, help="keep the exported files here (default: a temporary folder)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.repeats = args.seeds[:1], 100
    data = pneumonia()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.out or Path(scratch)
        rows, first = prune_all(data, args, workdir)
        quality = _quality_table(rows)
        cost = {
            _label(k): costs(_file_name(k), m, f, data, workdir / "export") for k, (m, f) in first.items()
        }
        models = {_label(k): m for k, (m, _) in first.items()}
        timing = latencies(models, cost, data, args.repeats, args.threads)
    cost_table = pd.DataFrame(
        {k: {c: v for c, v in row.items() if not c.startswith("_")} for k, row in cost.items()}
    ).T
    ratios = speed_ratios(cost_table, timing)
    _print_tables(quality, cost_table, timing, ratios, args, data)
    ok = check_targets(quality, cost_table, ratios, args)
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


def _label(key: tuple[str, float]) -> str:
    family, sparsity = key
    short = {
        "dense": "dense",
        "workbench unstructured (masked)": "wb-unstr",
        "workbench structured (slim)": "wb-slim",
    }
    return f"{short.get(family, 'tfmot')} {sparsity:.0%}"


def _file_name(key: tuple[str, float]) -> str:
    return _label(key).replace(" ", "-").replace("%", "")


def _quality_table(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(["family", "sparsity"], sort=False)
    table = grouped[["auc", "accuracy", "pruned_weights"]].mean()
    table["auc_sd"] = grouped["auc"].std(ddof=0)
    table["seeds"] = grouped["seed"].count()
    return table[["auc", "auc_sd", "accuracy", "pruned_weights", "seeds"]]


def _print_tables(quality, cost, timing, ratios, args, data) -> None:
    pd.set_option("display.width", 220, "display.max_columns", 30)
    epochs = args.finetune_epochs
    print(f"\nseed_cnn on pneumoniamnist test ({len(data.test)} images), fine-tuning {epochs} epochs")
    print(f"quality: mean over seeds {args.seeds} (pruned_weights: kernel weights zero or removed)")
    print(quality.round(4).to_string())
    first = args.seeds[0]
    print(f"\nsize and exported-file accuracy, seed {first} (params: non-zero; MFLOPs: conv/dense per")
    print(
        "  image, for masked rows only the non-zero weights, which dense kernels don't skip; KB = 1000 bytes)"
    )
    print(cost.astype(float).round(3).to_string())
    print(f"\nmedian latency in ms, seed {first}: keras = model(x, training=False) in a compiled tf.function")
    print(f"  (TF's default thread pool, {os.cpu_count()} cores); tflite / int8 = tf.lite.Interpreter.invoke")
    print(f"  (XNNPACK, num_threads={args.threads}); models timed round-robin after warm-up")
    print(timing.round(3).to_string())
    print("\nratios measured in this run: dense / slim (speedup), and speedup / FLOPs ratio (of theory)")
    print(ratios.round(2).to_string())


def speed_ratios(cost: pd.DataFrame, timing: pd.DataFrame) -> pd.DataFrame:
    """For every slim row: the FLOPs ratio, each measured speedup, and speedup / FLOPs ratio."""
    slim = [label for label in cost.index if label.startswith("wb-slim")]
    table = pd.DataFrame(index=slim)
    table["flops_ratio"] = cost.loc["dense 0%", "MFLOPs"] / cost.loc[slim, "MFLOPs"]
    for column in timing.columns:
        name = column.removesuffix("_ms")
        table[name] = timing.loc["dense 0%", column] / timing.loc[slim, column]
        table[f"{name}/theory"] = table[name] / table["flops_ratio"]
    return table


def check_targets(quality, cost, ratios, args) -> bool:
    """Print MET/MISSED per target; return whether all were met."""
    print("\ntargets")
    results = [_speed_target(ratios), _gzip_target(cost), *_int8_targets(cost)]
    results += [_auc_target(quality, s, args) for s in (0.9, 0.95)]
    return all(results)


def _report(label: str, value: float, limit: float, why: str = "") -> bool:
    ok = value >= limit
    print(f"  {label:66s} {value:8.3f}  target >= {limit:6.2f}   {'MET' if ok else f'MISSED: {why}'}")
    return ok


def _speed_target(ratios: pd.DataFrame) -> bool:
    row = ratios.loc["wb-slim 50%"]
    keras = row["keras_b64/theory"]
    print(
        f"  (info, not the target: keras tf.function at batch 64 reaches {keras:.2f} of theory"
        + (f", {0.8 - keras:.2f} short of 0.8" if keras < 0.8 else ", also >= 0.8")
        + ": TF runs bias, ReLU, pooling and layout reorders as separate ops whose cost halves, not quarters)"
    )
    why = f"short by {0.8 - row['tflite_b64/theory']:.2f}; contended CPU or per-op overhead"
    return _report(
        "slim 50% filters: speedup / FLOPs ratio (TFLite float, batch 64)", row["tflite_b64/theory"], 0.8, why
    )


def _gzip_target(cost: pd.DataFrame) -> bool:
    ratio = cost.loc["dense 0%", "keras_gz_KB"] / cost.loc["wb-unstr 90%", "keras_gz_KB"]
    why = f"short by {5 - ratio:.2f}x; the kept float32 weights don't compress"
    return _report("unstructured 90%: gzip(dense .keras) / gzip(masked .keras)", ratio, 5.0, why)


def _int8_targets(cost: pd.DataFrame) -> list[bool]:
    dense = cost.loc["dense 0%", "keras_KB"]
    slim = dense / cost.loc["wb-slim 90%", "int8_KB"]
    unstructured = dense / cost.loc["wb-unstr 90%", "int8_gz_KB"]
    return [
        _report("slim 90%: dense .keras / int8 .tflite", slim, 15.0, f"short by {15 - slim:.1f}x"),
        _report(
            "unstructured 90%: dense .keras / gzip(int8 .tflite)",
            unstructured,
            15.0,
            f"short by {15 - unstructured:.1f}x",
        ),
    ]


def _auc_target(quality: pd.DataFrame, sparsity: float, args) -> bool:
    ours = quality.loc[("workbench unstructured (masked)", sparsity), "auc"]
    theirs = quality.loc[("tfmot (masked)", sparsity), "auc"]
    label = f"{sparsity:.0%}: workbench AUC - tfmot AUC, mean of {len(args.seeds)} seed(s)"
    return _report(label, ours - theirs, 0.0, f"lower by {theirs - ours:.4f}")


if __name__ == "__main__":
    sys.exit(main())
