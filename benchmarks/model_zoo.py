"""Model zoo: structured pruning and slimming of users' backbones, timed where the speed-up is real.

    .venv/bin/python benchmarks/model_zoo.py [--train 512] [--epochs 3] [--models MobileNetV2 ...]

On ../shared/data/pneumoniamnist.npz (seeded random subsets; images upsampled to 64x64x3 for the
keras.applications backbones, 28x28x1 for small_resnet and seed_cnn): MobileNetV2, DenseNet121,
ResNet50, EfficientNetB0 (weights=None, nested under GlobalAveragePooling + Dense(2, softmax)),
small_resnet and seed_cnn, each trained for ``--epochs`` epochs from scratch, then its BatchNorm
statistics recalibrated on the training images (``train.recalibrate_batchnorm``). For each it
prints parameters, Taylor scoring time, and at 50% and 75% structured (per layer, coupled "any"):
parameters, FLOPs, the speed-up of the slim model against the dense one, and test AUC after one
epoch of structured fine-tuning (dead units pinned) and BatchNorm recalibration, with the slim model
checked against the fine-tuned masked reference. Beside each float AUC, the AUC of the same model as
a full-integer int8 TFLite file (``auc_int8``), calibrated on ``--calibration`` training images.

Where the speed shows: Keras on the CPU (``keras_b32``, ``predict_on_batch``, TensorFlow's own
threads) hardly shows a slim model's gain; the inference runtimes do. ``lite_b1``/``lite_b32``:
LiteRT interpreter (ai-edge-litert, XNNPACK) at batch 1 and 32; ``onnx_b1``/``onnx_b32``:
onnxruntime (CPU provider) on the ``.onnx`` file of ``wb.to_onnx``. Each with ``--threads``
threads (Keras excepted), 3 warm-up calls, then dense and slim timed round-robin; medians;
speed-up = dense / slim. Targets (exit 1 on a miss): every model slims exactly
(max |slim - reference| <= 1e-4), and at 50% structured every keras.applications backbone's
batch-32 LiteRT speedup is >= 0.5 x its FLOPs ratio. Printed, not targets: the int8 AUC (an
int8 drop over ``wb.INT8_AUC_MARGIN`` is flagged) and the onnxruntime speed-ups.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
from _common import pneumonia

import workbench as wb
from workbench.core.metrics import auc
from workbench.model.compat import keras, tf

BACKBONES = ("MobileNetV2", "DenseNet121", "ResNet50", "EfficientNetB0")
MODELS = (*BACKBONES, "small_resnet", "seed_cnn")
SPARSITIES = (0.5, 0.75)
STRUCTURED = wb.PruneSpec(criterion="taylor", granularity="structured", scope="layerwise")
TOLERANCE = 1e-4
FINE_TUNE = wb.Recipe(epochs=1, batch_size=32, learning_rate=1e-3)


def subset(data: wb.Dataset, sizes: dict[str, int], shape: tuple[int, int, int], seed: int = 0) -> wb.Dataset:
    """Seeded random subsets (the file is sorted by class), resized and channel-tiled to ``shape``."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name, split in data.splits().items():
        pick = rng.permutation(len(split))[: sizes[name]]
        images = split.images[pick]
        if images.shape[1:3] != shape[:2]:
            images = tf.image.resize(images, shape[:2]).numpy()
        images = np.clip(np.repeat(images, shape[2] // images.shape[3], axis=3), 0, 1).astype(np.float32)
        splits[name] = wb.Split(images, split.labels[pick], split.sources[pick])
    return wb.Dataset(data.name, **splits, class_names=data.class_names)


def build(name: str, shape: tuple[int, int, int], classes: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    if name == "seed_cnn":
        return wb.seed_cnn(shape, classes)
    if name == "small_resnet":
        return wb.small_resnet(shape, classes)
    base = getattr(keras.applications, name)(include_top=False, weights=None, input_shape=shape)
    inputs = keras.Input(shape)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(base(inputs))
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="head_out")(x))


def speedup(dense, slim, images: np.ndarray, batch: int, repeats: int) -> float:
    """Median latency of dense / slim (callables on one batch) at ``batch``, round-robin after 3 warm-ups."""
    runs, x = (dense, slim), images[:batch]
    for run in runs:
        for _ in range(3):
            run(x)
    times = [[], []]
    for _ in range(repeats):
        for which, run in enumerate(runs):
            start = time.perf_counter()
            run(x)
            times[which].append(time.perf_counter() - start)
    return float(np.median(times[0]) / np.median(times[1]))


def speedups(dense: keras.Model, slim: keras.Model, images: np.ndarray, args) -> dict[str, float]:
    """The slim model's speed-up in Keras (batch 32), LiteRT and onnxruntime (batch 1 and 32)."""
    lite = [wb.to_tflite(model) for model in (dense, slim)]
    onnx = [wb.OnnxModel(wb.to_onnx(model), num_threads=args.threads) for model in (dense, slim)]
    few = _big(args)
    found = {"keras_b32": speedup(dense.predict_on_batch, slim.predict_on_batch, images, 32, few)}
    for batch, repeats in ((1, args.repeats), (32, few)):
        runs = [wb.TFLiteModel(content, batch_size=batch, num_threads=args.threads) for content in lite]
        found[f"lite_b{batch}"] = speedup(*runs, images, batch, repeats)
        found[f"onnx_b{batch}"] = speedup(*onnx, images, batch, repeats)
    return found


def test_auc(model: keras.Model, data: wb.Dataset) -> float:
    return auc(model.predict(data.test.images, batch_size=64, verbose=0), data.test.labels)


def int8_auc(model: keras.Model, data: wb.Dataset, calibration: np.ndarray) -> float:
    """Test AUC of ``model`` as a full-integer int8 TFLite file."""
    run = wb.TFLiteModel(wb.to_tflite(model, "int8", calibration), batch_size=64)
    return auc(run.predict(data.test.images), data.test.labels)


def benchmark(name: str, data: wb.Dataset, args) -> list[dict]:
    """One model: train briefly, score, then prune/slim/time/fine-tune at each sparsity."""
    model = wb.compile_model(build(name, data.image_shape, data.num_classes))
    wb.fit(model, data, replace(FINE_TUNE, epochs=args.epochs), progress=False)
    wb.recalibrate_batchnorm(model, data.train.images)  # moving statistics of a brief training lag behind
    calibration = wb.stratified_sample(data.train, args.calibration)  # the X-ray file is sorted by class
    start = time.perf_counter()
    scorer = wb.Scorer(model, calibration)
    scorer.scores(STRUCTURED.criterion, STRUCTURED.granularity)
    scoring = time.perf_counter() - start
    dense_flops = wb.flops(model)["dense"]
    rows = [dict(model=name, sparsity=0.0, params=model.count_params(), MFLOPs=dense_flops / 1e6)]
    rows[0] |= dict(score_s=scoring, auc=test_auc(model, data), exact=True)
    rows[0] |= dict(auc_int8=int8_auc(model, data, calibration.images))
    for sparsity in SPARSITIES:
        keep = wb.couple_masks(model, wb.make_masks(scorer, replace(STRUCTURED, sparsity=sparsity)).keep)
        masked = wb.apply_masks(model, keep, structured=True)
        wb.fine_tune(masked, keep, data, FINE_TUNE, structured=True, progress=False)
        wb.recalibrate_batchnorm(masked, data.train.images)
        slim = wb.slim_model(masked, keep)
        gap = np.abs(slim.predict(data.test.images, verbose=0) - masked.predict(data.test.images, verbose=0))
        slim_flops = wb.flops(slim)["dense"]
        rows.append(
            dict(model=name, sparsity=sparsity, params=slim.count_params(), MFLOPs=slim_flops / 1e6)
            | dict(flops_ratio=dense_flops / slim_flops, **speedups(model, slim, data.test.images, args))
            | dict(auc=test_auc(slim, data), auc_int8=int8_auc(slim, data, calibration.images))
            | dict(exact=bool(gap.max() <= TOLERANCE), gap=float(gap.max()))
        )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"), flush=True)
    return rows


def _big(args) -> int:
    return max(3, args.repeats // 4)  # batch-32 calls are slow: fewer of them


def check_targets(table: pd.DataFrame) -> bool:
    ok = True
    for name, rows in table.groupby("model", sort=False):
        exact = bool(rows["exact"].all())
        print(
            f"{name:16s} slims exactly (|slim - reference| <= {TOLERANCE:g}): {'MET' if exact else 'MISSED'}"
        )
        ok &= exact
        if name in BACKBONES:
            half = rows[rows["sparsity"] == 0.5].iloc[0]
            met = half["lite_b32"] >= 0.5 * half["flops_ratio"]
            print(
                f"{name:16s} 50% LiteRT speedup {half['lite_b32']:.2f}x (batch 32) >= 0.5 x FLOPs ratio "
                f"{half['flops_ratio']:.2f}x: {'MET' if met else 'MISSED'}"
            )
            ok &= bool(met)
        drops = rows["auc"] - rows["auc_int8"]
        worst = drops.idxmax()
        flag = "over the margin" if drops[worst] > wb.INT8_AUC_MARGIN else "within the margin"
        print(
            f"{name:16s} int8 AUC drop at most {drops[worst]:.3f} "
            f"(sparsity {rows.loc[worst, 'sparsity']:g}), "
            f"{flag} {wb.INT8_AUC_MARGIN:g} (printed, not a target)"
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--train", type=int, default=512, help="training images per model")
    parser.add_argument("--test", type=int, default=256, help="val and test images")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs before pruning")
    parser.add_argument("--calibration", type=int, default=64, help="images for the Taylor scores")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT and onnxruntime threads")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per model at batch 1")
    args = parser.parse_args()
    full = pneumonia()
    sizes = {"train": args.train, "val": args.test, "test": args.test}
    started, rows = time.perf_counter(), []
    for name in args.models:
        shape = (64, 64, 3) if name in BACKBONES else full.image_shape
        rows += benchmark(name, subset(full, sizes, shape), args)
    table = pd.DataFrame(rows)
    print(
        f"\nLiteRT (ai-edge-litert) and onnxruntime: num_threads={args.threads}; Keras: TensorFlow's threads;"
    )
    print(
        f"3 warm-up calls, medians of {args.repeats} (batch 1) / {_big(args)} (batch 32) round-robin calls;"
    )
    print(
        f"speedup = dense / slim. Load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} "
        f"on {os.cpu_count()} CPUs"
    )
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0 if check_targets(table) else 1


if __name__ == "__main__":
    sys.exit(main())
