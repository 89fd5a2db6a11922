"""The single place the workbench imports TensorFlow and Keras.

Everything else does ``from workbench.model.compat import keras, tf``, so the quiet logging and the
Keras 3 check happen once, and modules that don't need TensorFlow never pay for importing it.
"""

import os

# Must be set before TensorFlow is imported: hide the C++ INFO banners (oneDNN, CUDA probing).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN kernels on by default only on CPUs it lists (recent Intel ones); on
# others, such as this AMD EPYC, convolutions fall back to Eigen's. With oneDNN on, seed_cnn's
# forward pass over 738 X-rays takes 74 ms instead of 118 ms (its 1-channel first convolution
# 11 ms instead of 51 ms), DenseNet121's over 500 images at 64 px 4.0 s instead of 4.5 s. A
# user's own choice (the variable set to 0) wins. Numbers differ from Eigen's in the last bits.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# Which kernels computed a result: part of every cache key that holds computed numbers.
NUMERICS = f"oneDNN={os.environ['TF_ENABLE_ONEDNN_OPTS']}"

from workbench.model.quiet import native_stderr_silenced  # noqa: E402

# TensorFlow's C++ start-up lines (oneDNN, "Could not find cuda drivers", and at the first device
# probe "failed call to cuInit: CUDA error") go to file descriptor 2 before TF_CPP_MIN_LOG_LEVEL
# applies; Jupyter shows them as a red stderr box in every student's notebook. Import and probe
# the devices here, with that descriptor pointed at the null device.
with native_stderr_silenced():
    import keras
    import tensorflow as tf
    from keras.src.models.functional import Functional  # models whose layer graph can be read

    tf.config.list_logical_devices()

if int(keras.__version__.split(".")[0]) < 3:
    raise ImportError(
        f"the workbench needs native Keras 3 (found keras {keras.__version__}); "
        "unset TF_USE_LEGACY_KERAS and reinstall with `pip install -e .`"
    )

# Determinism makes TensorFlow refuse a random op without a seed: a user's unseeded ``fit`` (its
# shuffle) would fail after importing the workbench. Without a global seed yet, one drawn at random
# lets such ops run, as random as they were; a seed the user set is kept, and ours are explicit.
from tensorflow.python.eager import context  # noqa: E402 - a read-only look: get_seed draws an op seed

if context.global_seed() is None:
    tf.random.set_seed(int.from_bytes(os.urandom(4), "little") >> 1)
# Same inputs, same numbers, in every process: without this, gradients summed by multi-threaded
# kernels differ in the 8th digit between a process that trained a baseline (training turned
# determinism on) and one that loaded it from the cache, and the ε grid moved between runs.
tf.config.experimental.enable_op_determinism()


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its native start-up lines hidden (as importing this module does).

    Kept for notebooks that call it first; TensorFlow is imported quietly whichever workbench
    name imports it first.
    """


__all__ = ["NUMERICS", "Functional", "import_tensorflow_quietly", "keras", "tf"]
