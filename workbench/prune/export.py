"""Export a (pruned) model: ``.keras``, TFLite float, TFLite int8; their sizes and their accuracy.

Models run in LiteRT's interpreter (``ai-edge-litert``), the successor of the deprecated
``tf.lite.Interpreter``. TFLite int8 is full-integer post-training quantization: every op runs
in int8, calibrated on a representative set of images. Its **input and output stay float32**
(a QUANTIZE op first, a DEQUANTIZE op last): callers feed the same [0, 1] images as to Keras
and get probabilities back, the two edge ops cost next to nothing on 28x28 images, and an int8
softmax output would have only 256 levels either way. ``TFLiteModel`` also runs models with
int8 inputs/outputs.

Sizes: ``gzip_size`` is the file gzip-compressed at level 9. A ``.keras`` file is an uncompressed
zip, so unstructured zeros only pay off once it is gzipped; a slim model is small as it stands.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from ai_edge_litert.interpreter import Interpreter

from workbench.core import fs
from workbench.core.errors import WorkbenchError
from workbench.core.metrics import multilabel_metrics, validated_metrics
from workbench.data.dataset import Split, evaluation_splits
from workbench.model.builders import batch_shape, check_images
from workbench.model.compat import keras, tf
from workbench.model.heads import Head, as_head, detect_head, predict_probabilities, saved_compile_config
from workbench.model.train import save_atomically
from workbench.prune.pruning import copy_model

log = logging.getLogger(__name__)

FORMATS = ("keras", "tflite", "int8")
SUFFIXES = {"keras": ".keras", "tflite": ".tflite", "int8": ".int8.tflite"}


def save_keras(
    model: keras.Model, path: str | Path, head: Head | str | None = None, *, overwrite: bool = False
) -> Path:
    """Save ``model`` for inference as a ``.keras`` file (atomically) and return its path.

    What is saved is a copy: architecture and weights, without the optimizer state that a trained
    model carries (Adam's two moments would triple the file). A model whose outputs are sigmoid
    logits is saved compiled with its loss only, so that the file tells what its outputs mean.

    Raises:
        ValueError: if ``path`` does not end in ``.keras``.
        FileExistsError: if ``path`` is a file the workbench did not write, and not ``overwrite``.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise WorkbenchError(f"path must end in .keras, got {path.name!r}")
    fs.check_claim(path.parent, [path.name], overwrite)
    copy = copy_model(model)
    try:
        head = as_head(model, head)
    except ValueError:
        head = None  # a head nobody can read: the file says no more than the model does
    if head is not None and head.kind.endswith("_logits"):
        copy.compile(loss=head.loss())
    with fs.claim(path.parent, [path.name], overwrite):
        return save_atomically(copy, path)


def gzip_size(source: str | Path | bytes) -> int:
    """Bytes of a file (or of ``bytes``) after gzip compression at level 9."""
    payload = source if isinstance(source, bytes) else Path(source).read_bytes()
    return len(gzip.compress(payload, compresslevel=9))


# --- TFLite conversion ------------------------------------------------------------------------


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
    converter = tf.lite.TFLiteConverter.from_keras_model(_with_probabilities(model, head))
    if quantize == "int8":
        calibration = _check_calibration(model, calibration)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return _quietly(converter.convert)
    except Exception as error:  # the converter's own errors (MLIR, TOCO) have no common base class
        missing = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", str(error))))
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        why = f"LiteRT has no builtin op for {', '.join(missing)}; save it as .keras" if missing else first
        raise WorkbenchError(
            f"LiteRT's converter could not convert {model.name!r} ({quantize}): {why}"
        ) from None


def _with_probabilities(model: keras.Model, head: Head | str | None) -> keras.Model:
    """``model``, or a wrapper whose output is its head's probabilities where those are not its outputs."""
    head = as_head(model, head)
    if head.kind in ("softmax", "multilabel"):
        return model
    inputs = keras.Input(model.input_shape[1:])
    return keras.Model(inputs, keras.layers.Lambda(head.probabilities)(model(inputs)), name=model.name)


def _check_calibration(model: keras.Model, calibration: np.ndarray | None) -> np.ndarray:
    if calibration is None or len(np.atleast_1d(calibration)) == 0:
        raise WorkbenchError(
            f"calibration must be images of shape {batch_shape(model.input_shape[1:])} for int8"
        )
    return check_images(model, calibration, "calibration").astype(np.float32)


def _representative(images: np.ndarray) -> Iterator[list[np.ndarray]]:
    for index in range(len(images)):
        yield [images[index : index + 1]]


def _quietly(action):
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


# --- files and their accuracy -----------------------------------------------------------------


def export_all(
    model: keras.Model,
    folder: str | Path,
    name: str,
    calibration: np.ndarray,
    head: Head | str | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``name.keras``, ``name.tflite`` and ``name.int8.tflite`` into ``folder``: all three or,
    when a conversion fails (``to_tflite``'s ValueError), none.

    Files the workbench wrote there before are replaced; files of those names that it did not
    write are not, unless ``overwrite``.

    Returns:
        {format: path} for the formats in ``FORMATS``.

    Raises:
        FileExistsError: naming a file of the user's in the way (checked before converting; nothing
            is written).
    """
    folder = Path(folder)
    paths = {fmt: folder / f"{name}{suffix}" for fmt, suffix in SUFFIXES.items()}
    names = [path.name for path in paths.values()]
    fs.check_claim(folder, names, overwrite)  # before the conversions, which take seconds
    converted = {
        "tflite": to_tflite(model, head=head),
        "int8": to_tflite(model, "int8", calibration, head=head),
    }
    with fs.claim(folder, names, overwrite):
        save_keras(model, paths["keras"], head, overwrite=overwrite)
        for fmt, content in converted.items():
            fs.write_atomically(paths[fmt], content)
    return paths


def probabilities(
    path: str | Path, images: np.ndarray, batch_size: int = 64, head: Head | str | None = None
) -> np.ndarray:
    """Run an exported model file on ``images``; return probabilities (images x classes or labels).

    A ``.keras`` file's outputs go through its head, read from the file as ``load_user_model`` reads
    it (or ``head``); a ``.tflite`` file written by ``to_tflite`` outputs probabilities already.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a ``.keras`` or ``.tflite`` file, or not a model of its kind
            (naming the file: LiteRT and Keras don't).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    if path.suffix == ".keras":
        model = _load_keras(path)
        if not isinstance(head, Head):
            head = detect_head(model, head, compile_config=saved_compile_config(path))
        return predict_probabilities(model, images, head)
    if path.suffix == ".tflite":
        with fs.naming(path):
            content = path.read_bytes()
        try:
            run = TFLiteModel(content, batch_size=max(1, min(batch_size, len(images))))
        except ValueError as err:  # LiteRT: "The model is not a valid Flatbuffer buffer", no file named
            raise WorkbenchError(f"{path}: not a TFLite model ({err})") from None
        return run.predict(images)
    raise WorkbenchError(f"path must be a .keras or .tflite file, got {path.name!r}")


def _load_keras(path: Path) -> keras.Model:
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - Keras raises many kinds for broken archives
        if not zipfile.is_zipfile(path):  # Keras then says "File not found" of a file that is there
            raise WorkbenchError(f"{path}: not a .keras model (a .keras model is a zip archive)") from None
        raise WorkbenchError(f"{path}: could not load the model: {err}") from err


def file_metrics(
    path: str | Path, val, test: Split | None = None, positive: int = 1, head: Head | str | None = None
) -> dict:
    """Size, gzip size and clinical test metrics of one exported model (thresholds chosen on val).

    ``val`` is the Dataset (its val and test splits are used), or the validation Split with ``test``.
    """
    val, test = evaluation_splits(val, test)
    val_probs = probabilities(path, val.images, head=head)
    test_probs = probabilities(path, test.images, head=head)
    if np.ndim(test.labels) == 2:  # multi-label
        metrics = multilabel_metrics(val_probs, val.labels, test_probs, test.labels)
    else:
        metrics = validated_metrics(val_probs, val.labels, test_probs, test.labels, positive)
    return {
        "file": Path(path).name,
        "bytes": Path(path).stat().st_size,
        "gzip_bytes": gzip_size(path),
        **metrics,
    }


def export_table(
    paths: dict[str, Path], val: Split, test: Split, head: Head | str | None = None
) -> pd.DataFrame:
    """One row per exported file: format, bytes, gzip bytes, test accuracy, AUC, sensitivity, specificity.

    ``head``: the model's output head, when a ``.keras`` file cannot tell it (see ``probabilities``).
    """
    columns = ["file", "bytes", "gzip_bytes", "accuracy", "auc", "sensitivity", "specificity"]
    rows = []
    for fmt, path in paths.items():
        metrics = file_metrics(path, val, test, head=head)
        rows.append({"format": fmt, **{key: metrics[key] for key in columns}})
    return pd.DataFrame(rows).set_index("format")
