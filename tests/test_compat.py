"""workbench.compat: importing the workbench leaves a user's own TensorFlow work as it was."""

from __future__ import annotations

import subprocess
import sys

UNSEEDED_FIT = """
import numpy as np
import workbench.compat
import keras
model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5), keras.layers.Dense(1, "sigmoid")])
model.compile("adam", "binary_crossentropy")
model.fit(np.linspace(0, 1, 32).reshape(8, 4), np.arange(8) % 2, epochs=2, batch_size=2, verbose=0)
print(repr(float(model.layers[-1].kernel.numpy().sum())))
"""


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_import_UnseededFitWithShuffleAndDropout_RunsAndStaysRandom():
    # op determinism is on after the import; unseeded random ops must still run, and differ by process
    assert _run(UNSEEDED_FIT) != _run(UNSEEDED_FIT)


def test_import_KeepsAGlobalSeedTheUserSetBefore():
    code = "import tensorflow as tf; tf.random.set_seed(7); import workbench.compat; "
    code += "print(tf.compat.v1.get_seed(0)[0])"
    assert _run(code) == "7"
