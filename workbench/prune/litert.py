"""LiteRT: convert a Keras model to TFLite (float or full-integer int8) and run it.

Models run in LiteRT's interpreter (``ai-edge-litert``), the successor of the deprecated
``tf.lite.Interpreter``. TFLite int8 is full-integer post-training quantization: every op runs
in int8, calibrated on a representative set of images. Its **input and output stay float32**
(a QUANTIZE op first, a DEQUANTIZE op last): callers feed the same [0, 1] images as to Keras
and get probabilities back, the two edge ops cost next to nothing on 28x28 images, and an int8
softmax output would have only 256 levels either way. ``TFLiteModel`` also runs models with
int8 inputs/outputs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from workbench.core.errors import WorkbenchError
from workbench.model.builders import batch_shape, check_images
from workbench.model.compat import keras, tf
from workbench.model.heads import Head, as_head

log = logging.getLogger(__name__)


def to_tflite(
    model: keras.Model,
    quantize: str = "float",
    calibration: np.ndarray | None = None,
    head: Head | str | None = None,
) -> bytes:
    """Convert ``model`` with ``tf.lite.TFLiteConverter.from_keras_model``; the file outputs
    probabilities whatever the head (``workbench.model.heads``): a logits model's softmax, a one-sigmoid
    model's (p(0), p(1)).

    Args:
        quantize: ``"float"`` (float32 weights and ops) or ``"int8"`` (full-integer ops, float I/O).
        calibration: images (N, H, W, C) for int8's representative dataset; a few hundred
            training images are plenty.
        head: the output head, when it cannot be read from ``model``.

    Raises:
        ValueError: for an unknown ``quantize``, ``"int8"`` without calibration images of the
            model's input shape, or a model LiteRT's converter cannot convert (naming why).
    """
    if quantize not in ("float", "int8"):
        raise WorkbenchError(f"quantize must be 'float' or 'int8', got {quantize!r}")
    if quantize == "int8":
        calibration = check_calibration(model, calibration)
    converter = make_converter(model, calibration if quantize == "int8" else None, head)
    if quantize == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return convert(converter.convert, model, quantize)


def make_converter(
    model: keras.Model, calibration: np.ndarray | None = None, head: Head | str | None = None
) -> tf.lite.TFLiteConverter:
    """LiteRT's converter for ``model`` with probabilities as its output; quantizing, calibrated on
    ``calibration``, when images are given (``prune.quantize`` hands it to LiteRT's debugger)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(with_probabilities(model, head))
    if calibration is not None:
        calibration = check_calibration(model, calibration)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: representative(calibration)
    return converter


def convert(action, model: keras.Model, quantize: str) -> bytes:
    """Run a conversion (``converter.convert`` or the debugger's), its errors naming the missing op."""
    try:
        return quietly(action)
    except Exception as error:  # the converter's own errors (MLIR, TOCO) have no common base class
        missing = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", str(error))))
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        why = f"LiteRT has no builtin op for {', '.join(missing)}; save it as .keras" if missing else first
        raise WorkbenchError(
            f"LiteRT's converter could not convert {model.name!r} ({quantize}): {why}"
        ) from None


def with_probabilities(model: keras.Model, head: Head | str | None) -> keras.Model:
    """``model``, or a wrapper whose output is its head's probabilities where those are not its outputs."""
    head = as_head(model, head)
    if head.kind in ("softmax", "multilabel"):
        return model
    inputs = keras.Input(model.input_shape[1:])
    return keras.Model(inputs, keras.layers.Lambda(head.probabilities)(model(inputs)), name=model.name)


def check_calibration(model: keras.Model, calibration: np.ndarray | None) -> np.ndarray:
    """``calibration`` as float32 images of the model's input shape, or a WorkbenchError naming it."""
    if calibration is None or len(np.atleast_1d(calibration)) == 0:
        raise WorkbenchError(
            f"calibration must be images of shape {batch_shape(model.input_shape[1:])} for int8"
        )
    return check_images(model, calibration, "calibration").astype(np.float32)


def representative(images: np.ndarray) -> Iterator[list[np.ndarray]]:
    """One image at a time, as LiteRT's calibration and debugger read a representative dataset."""
    for index in range(len(images)):
        yield [images[index : index + 1]]


def quietly(action):
    """Run a converter step, sending Keras' export prints to the debug log instead of stdout."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = action()
    log.debug("%s", captured.getvalue())
    return result


# --- running TFLite ---------------------------------------------------------------------------


class TFLiteModel:
    """A TFLite model run by LiteRT's interpreter on batches of one fixed size (resized once, reused).

    ``num_threads`` None lets LiteRT choose; give it to make latency figures reproducible.

    Example (not run here: converting takes seconds)::

        run = TFLiteModel(to_tflite(model), batch_size=64)
        probs = run.predict(data.test.images)
    """

    def __init__(self, content: bytes, batch_size: int = 1, num_threads: int | None = None):
        if not isinstance(content, bytes):
            raise WorkbenchError(
                "content must be the bytes of a .tflite model (e.g. Path(file).read_bytes()), "
                f"got {type(content).__name__}"
            )
        if batch_size < 1:
            raise WorkbenchError(f"batch_size must be >= 1, got {batch_size}")
        self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
        self.num_threads = num_threads
        self.input, self.output = (
            self.interpreter.get_input_details()[0],
            self.interpreter.get_output_details()[0],
        )
        self.batch_size = batch_size
        shape = [batch_size, *self.input["shape"][1:]]
        self.interpreter.resize_tensor_input(self.input["index"], shape)
        self.interpreter.allocate_tensors()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for exactly ``batch_size`` images (the latency path: no copies, no padding)."""
        self.interpreter.set_tensor(self.input["index"], self._to_input(batch))
        self.interpreter.invoke()
        return self._from_output(self.interpreter.get_tensor(self.output["index"]))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for any number of images (the last batch is padded, then trimmed)."""
        images = np.asarray(images, np.float32)
        expected = tuple(int(n) for n in self.input["shape"][1:])
        if images.ndim != len(expected) + 1 or images.shape[1:] != expected or len(images) == 0:
            raise WorkbenchError(
                f"images must have shape {batch_shape(expected)} for this model, got {images.shape}"
            )
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            padded = np.concatenate([batch, np.repeat(batch[-1:], self.batch_size - len(batch), axis=0)])
            out.append(self(padded)[: len(batch)])
        return np.concatenate(out)

    def _to_input(self, batch: np.ndarray) -> np.ndarray:
        if self.input["dtype"] == np.float32:
            return np.asarray(batch, np.float32)
        scale, zero = self.input["quantization"]
        info = np.iinfo(self.input["dtype"])
        return np.clip(np.round(batch / scale + zero), info.min, info.max).astype(self.input["dtype"])

    def _from_output(self, values: np.ndarray) -> np.ndarray:
        if self.output["dtype"] == np.float32:
            return values.copy()
        scale, zero = self.output["quantization"]
        return (values.astype(np.float32) - zero) * scale
