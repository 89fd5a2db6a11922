"""ONNX: a Keras model converted by Keras's own ``model.export(path, format="onnx")`` and run in onnxruntime.

Keras hands the model's traced function to ``tf2onnx``. The file outputs probabilities whatever
the head, as the TFLite files do. tf2onnx does not fail on an op it has no handler for: it logs
"Tensorflow op [node: Op] is not supported" and writes a file that onnxruntime then refuses.
``to_onnx`` collects those records and raises, naming the op and the Keras layer it belongs to.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime

from workbench.core.errors import WorkbenchError
from workbench.model.builders import batch_shape
from workbench.model.compat import keras
from workbench.model.heads import Head
from workbench.prune.litert import quietly, with_probabilities

log = logging.getLogger(__name__)

_UNSUPPORTED = re.compile(r"Tensorflow op \[(?P<node>[^:\]]+): (?P<op>\w+)\] is not supported")


def to_onnx(model: keras.Model, head: Head | str | None = None) -> bytes:
    """Convert ``model`` to ONNX through ``model.export(..., format="onnx")``; return the file's bytes.

    Raises:
        ValueError: when the converter fails or leaves ops it cannot convert, naming each op and
            the layer that holds it; or when onnxruntime cannot load the result.
    """
    wrapped = with_probabilities(model, head)
    wrapped(np.zeros((1, *model.input_shape[1:]), np.float32))  # Keras exports only a model that was called
    with tempfile.TemporaryDirectory() as folder, _unsupported_ops() as unsupported:
        path = Path(folder) / f"{model.name}.onnx"
        try:
            quietly(lambda: wrapped.export(str(path), format="onnx", verbose=False))
        except Exception as error:  # noqa: BLE001 - tf2onnx raises many kinds
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise WorkbenchError(
                f"the ONNX converter (tf2onnx) could not convert {model.name!r}: {first}"
            ) from None
        if unsupported:
            raise WorkbenchError(
                f"the ONNX converter (tf2onnx) has no conversion for {_describe(unsupported, model)} "
                f"in {model.name!r}; the .keras and TFLite files do not need it"
            )
        content = path.read_bytes()
    OnnxModel(content)  # onnxruntime loads it, or the error says so now rather than at first use
    return content


@contextlib.contextmanager
def _unsupported_ops() -> Iterator[list[tuple[str, str]]]:
    """Collect tf2onnx's "op is not supported" records as (node, op); keep its log off the terminal."""
    found: list[tuple[str, str]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = _UNSUPPORTED.search(record.getMessage())
            if match:
                found.append((match["node"], match["op"]))
            log.debug("tf2onnx: %s", record.getMessage())

    logger = logging.getLogger("tf2onnx")
    handler, propagate = Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _describe(unsupported: list[tuple[str, str]], model: keras.Model) -> str:
    """ "op Bucketize (layer 'odd')" for each distinct (op, layer); tf2onnx's node names carry the layer's."""
    names = {layer.name for layer in _all_layers(model)}
    described = []
    for node, op in unsupported:
        parts = [re.sub(r"_\d+$", "", part) for part in node.split("/")[:-1]]
        layer = next((p for p in reversed(parts) if p in names), None)
        text = f"op {op} (layer {layer!r})" if layer else f"op {op} (node {node!r})"
        if text not in described:
            described.append(text)
    return ", ".join(described)


def _all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


class OnnxModel:
    """An ONNX model run by onnxruntime on the CPU; ``num_threads`` None lets onnxruntime choose.

    Example (not run here: converting takes seconds)::

        run = OnnxModel(to_onnx(model), num_threads=1)
        probs = run.predict(data.test.images)
    """

    def __init__(self, content: bytes, num_threads: int | None = None):
        if not isinstance(content, bytes):
            raise WorkbenchError(f"content must be the bytes of an .onnx model, got {type(content).__name__}")
        options = onnxruntime.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads, options.inter_op_num_threads = num_threads, 1
        try:
            self.session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime's errors have no common public base
            raise WorkbenchError(f"onnxruntime could not load it: {str(error)[:300]}") from None
        self.input = self.session.get_inputs()[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for one batch of any size (the latency path)."""
        return self.session.run(None, {self.input.name: np.asarray(batch, np.float32)})[0]

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities for any number of images, in batches of ``batch_size``."""
        images = np.asarray(images, np.float32)
        expected = tuple(self.input.shape[1:])
        if images.ndim != len(expected) + 1 or images.shape[1:] != expected or len(images) == 0:
            raise WorkbenchError(
                f"images must have shape {batch_shape(expected)} for this model, got {images.shape}"
            )
        return np.concatenate([self(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
