"""The single place the workbench imports TensorFlow and Keras.

Everything else does ``from workbench.compat import keras, tf``, so the quiet logging and the
Keras 3 check happen once, and modules that don't need TensorFlow never pay for importing it.
"""

import os

# Must be set before TensorFlow is imported: hide the C++ INFO banners (oneDNN, CUDA probing).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

if int(keras.__version__.split(".")[0]) < 3:
    raise ImportError(
        f"the workbench needs native Keras 3 (found keras {keras.__version__}); "
        "unset TF_USE_LEGACY_KERAS and reinstall with `pip install -e .`"
    )

# Same inputs, same numbers, in every process: without this, gradients summed by multi-threaded
# kernels differ in the 8th digit between a process that trained a baseline (training turned
# determinism on) and one that loaded it from the cache, and the ε grid moved between runs.
tf.config.experimental.enable_op_determinism()

__all__ = ["keras", "tf"]
