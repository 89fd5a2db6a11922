"""workbench.model.compat: importing the workbench leaves a user's own TensorFlow work as it was."""

from __future__ import annotations

import subprocess
import sys

UNSEEDED_FIT = """
import numpy as np
import workbench.model.compat
import keras, tensorflow as tf
model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5), keras.layers.Dense(1, "sigmoid")])
model.compile("adam", "binary_crossentropy")
model.fit(np.linspace(0, 1, 32).reshape(8, 4), np.arange(8) % 2, epochs=2, batch_size=2, verbose=0)
print(float(tf.random.uniform(())))
"""


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_import_UnseededFitWithShuffleAndDropout_RunsAndTensorFlowStaysRandom():
    # op determinism is on after the import: unseeded random ops must still run, and differ by process
    assert _run(UNSEEDED_FIT) != _run(UNSEEDED_FIT)


def test_import_ASeedTheUserSetBefore_GivesTheSameRandomNumbersAsWithoutTheImport():
    seeded = "import tensorflow as tf; tf.random.set_seed(7); {} print(float(tf.random.uniform(())))"
    assert _run(seeded.format("import workbench.model.compat;")) == _run(seeded.format(""))


def test_import_AfterTheUserTurnedDeterminismOnWithoutASeed_Works():
    code = "import tensorflow as tf; tf.config.experimental.enable_op_determinism(); "
    assert float(_run(code + "import workbench.model.compat; print(float(tf.random.uniform(())))")) < 1
