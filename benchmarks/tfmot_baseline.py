"""tfmot's prune_low_magnitude on seed_cnn, run in its own process (tfmot needs tf_keras, not Keras 3).

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/tfmot_baseline.py --data DATA.npz \\
        --baselines seed0.npz seed1.npz --seeds 0 1 --sparsities 0.9 0.95 --epochs 3 --out DIR

Called by make_it_pay.py, which trains the baselines with the workbench and hands over their
weights as .npz files (``arr_0 ... arr_n`` in ``model.get_weights()`` order). For each baseline and
sparsity this rebuilds seed_cnn in tf_keras, loads the weights, prunes with PolynomialDecay from
0 to the sparsity while fine-tuning (the same schedule as ``workbench.prune.pruning.prune_gradually``:
cubic ramp over the first two thirds of the steps, 8 mask updates), strips the wrappers and
writes ``DIR/tfmot-seed{seed}-{sparsity}.npz``. Needs the benchmark extra: tensorflow-model-optimization
and tf_keras.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported: tf.keras is tf_keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

import workbench as wb  # noqa: E402  (NumPy only: no Keras 3 import)

keras = tf.keras
sparsity_api = tfmot.sparsity.keras


def seed_cnn(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """workbench.model.builders.seed_cnn, layer for layer, in tf_keras."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(32, 3, activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(64, 3, activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Conv2D(64, 3, activation="relu", name="conv3"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name="dense1"),
            layers.Dense(num_classes, activation="softmax", name="logits"),
        ],
        name="seed_cnn",
    )


def schedule(train_size: int, epochs: int, batch_size: int, sparsity: float) -> sparsity_api.PolynomialDecay:
    """PolynomialDecay 0 -> sparsity over the first 2/3 of the steps, as prune_gradually does."""
    steps = epochs * int(np.ceil(train_size / batch_size))
    end_step = max(1, (2 * steps) // 3)
    return sparsity_api.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=sparsity,
        begin_step=0,
        end_step=end_step,
        power=3,
        frequency=max(1, end_step // 8),
    )


def prune_one(data, weights: list[np.ndarray], sparsity: float, args, seed: int) -> list[np.ndarray]:
    """Prune one baseline to ``sparsity`` while fine-tuning; return the stripped model's weights."""
    keras.utils.set_random_seed(seed)
    model = seed_cnn(data.image_shape, data.num_classes)
    model.set_weights(weights)
    pruned = sparsity_api.prune_low_magnitude(
        model, pruning_schedule=schedule(len(data.train), args.epochs, args.batch_size, sparsity)
    )
    pruned.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    pruned.fit(
        data.train.images,
        data.train.labels,
        epochs=args.epochs,
        batch_size=args.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[sparsity_api.UpdatePruningStep()],
    )
    return sparsity_api.strip_pruning(pruned).get_weights()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--baselines", type=Path, nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--sparsities", type=float, nargs="+", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if len(args.baselines) != len(args.seeds):
        parser.error("give one --seeds value per --baselines file")
    tf.config.experimental.enable_op_determinism()
    data = wb.load_npz(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    for path, seed in zip(args.baselines, args.seeds, strict=True):
        with np.load(path) as archive:
            weights = [archive[f"arr_{i}"] for i in range(len(archive.files))]
        for sparsity in args.sparsities:
            pruned = prune_one(data, weights, sparsity, args, seed)
            np.savez(args.out / f"tfmot-seed{seed}-{sparsity:g}.npz", *pruned)
            print(f"tfmot seed {seed} sparsity {sparsity:g}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
