"""Export a (pruned) model: ``.keras``, TFLite float, TFLite int8 and ONNX; their sizes and their accuracy.

The TFLite files are made and run by ``prune.litert``, the int8 file is checked against the float
one by ``prune.quantize``, the ONNX file is made and run by ``prune.onnx_export`` (onnxruntime).

Sizes: ``gzip_size`` is the file gzip-compressed at level 9. A ``.keras`` file is an uncompressed
zip, so unstructured zeros only pay off once it is gzipped; a slim model is small as it stands.
"""

from __future__ import annotations

import gzip
import logging
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.core import fs
from workbench.core.errors import WorkbenchError
from workbench.core.metrics import multilabel_metrics, validated_metrics
from workbench.data.dataset import Split, evaluation_splits
from workbench.model.compat import keras
from workbench.model.heads import Head, as_head, detect_head, predict_probabilities, saved_compile_config
from workbench.model.train import save_atomically
from workbench.prune.litert import TFLiteModel, to_tflite
from workbench.prune.onnx_export import OnnxModel, to_onnx
from workbench.prune.pruning import copy_model
from workbench.prune.quantize import (
    INT8_AUC_MARGIN,
    compare_quantized,
    quantization_errors,
    to_int8_selective,
)

log = logging.getLogger(__name__)

FORMATS = ("keras", "tflite", "int8", "onnx")
SUFFIXES = {"keras": ".keras", "tflite": ".tflite", "int8": ".int8.tflite", "onnx": ".onnx"}
SELECTIVE = "int8_selective"  # int8 with its worst tensors kept in float (export_all's keep_float)
SUFFIXES[SELECTIVE] = ".int8-selective.tflite"


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


# --- files and their accuracy -----------------------------------------------------------------


@dataclass(eq=False)
class Exported(Mapping):
    """What ``export_all`` wrote: ``{format: path}`` (a Mapping), with ``check``, one row per
    converted format measured against the Keras model (``prune.quantize.compare_quantized``'s
    columns plus ``max_abs_diff`` of the probabilities), and ``failed``, ``{format: why}`` for a
    format whose converter failed while the others were written (ONNX)."""

    paths: dict[str, Path]
    check: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, fmt: str) -> Path:
        return self.paths[fmt]

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def export_all(
    model: keras.Model,
    folder: str | Path,
    name: str,
    calibration: np.ndarray,
    head: Head | str | None = None,
    *,
    validation: Split | None = None,
    keep_float: int = 0,
    auc_margin: float = INT8_AUC_MARGIN,
    overwrite: bool = False,
) -> Exported:
    """Write ``name.keras``, ``name.tflite``, ``name.int8.tflite`` and ``name.onnx`` into ``folder``,
    and measure each converted file against the model.

    A LiteRT conversion that fails writes nothing (``to_tflite``'s ValueError). An ONNX conversion
    that fails is warned about, naming the op, and the other files are written. When the int8 file
    (or any other) loses more than ``auc_margin`` AUC against the model, an ``Int8Warning`` names
    the drop; ``check`` holds the same figures.

    Args:
        calibration: images for int8's calibration (a few hundred training images).
        validation: a labelled Split to measure the files on; by default the calibration images,
            against the model's own decisions.
        keep_float: also write ``name.int8-selective.tflite``, int8 with this many tensors that
            quantization damages most kept in float (``prune.quantize.to_int8_selective``).

    Raises:
        FileExistsError: naming a file of the user's in the way (checked before converting; nothing
            is written).
    """
    folder = Path(folder)
    wanted = [*FORMATS, SELECTIVE] if keep_float else list(FORMATS)
    paths = {fmt: folder / f"{name}{SUFFIXES[fmt]}" for fmt in wanted}
    fs.check_claim(folder, [path.name for path in paths.values()], overwrite)  # conversions take seconds
    converted, failed = _convert(model, calibration, head, keep_float)
    paths = {fmt: path for fmt, path in paths.items() if fmt == "keras" or fmt in converted}
    images, labels = (calibration, None) if validation is None else (validation.images, validation.labels)
    check = _check(model, converted, np.asarray(images, np.float32), labels, head, auc_margin)
    with fs.claim(folder, [path.name for path in paths.values()], overwrite):
        save_keras(model, paths["keras"], head, overwrite=overwrite)
        for fmt, content in converted.items():
            fs.write_atomically(paths[fmt], content)
    return Exported(paths, check, failed)


def _convert(
    model: keras.Model, calibration: np.ndarray, head, keep_float: int
) -> tuple[dict[str, bytes], dict[str, str]]:
    """{format: file content} of every converted format, and {format: why} of ONNX if it failed."""
    converted = {
        "tflite": to_tflite(model, head=head),
        "int8": to_tflite(model, "int8", calibration, head=head),
    }
    if keep_float:
        errors = quantization_errors(model, calibration, head)
        converted[SELECTIVE] = to_int8_selective(model, calibration, keep_float, head, errors)
    failed = {}
    try:
        converted["onnx"] = to_onnx(model, head)
    except ValueError as error:
        failed["onnx"] = str(error)
        warnings.warn(f"{error}; the other formats are written", UserWarning, stacklevel=3)
    return converted, failed


def _check(model, converted: dict[str, bytes], images, labels, head, margin: float) -> pd.DataFrame:
    """One row per converted file: its decisions and AUC against the Keras model's on ``images``."""
    reference = predict_probabilities(model, images, head)
    rows = []
    for fmt, content in converted.items():
        if fmt == "onnx":
            probs = OnnxModel(content).predict(images)
        else:
            probs = TFLiteModel(content, batch_size=min(64, len(images))).predict(images)
        row = compare_quantized(reference, probs, labels, margin, name=fmt)
        rows.append(row | {"max_abs_diff": float(np.max(np.abs(probs - reference)))})
    return pd.DataFrame(rows).set_index("format")


def probabilities(
    path: str | Path,
    images: np.ndarray,
    batch_size: int = 64,
    head: Head | str | None = None,
    *,
    custom_objects: dict | None = None,
    safe_mode: bool = True,
) -> np.ndarray:
    """Run an exported model file on ``images``; return probabilities (images x classes or labels).

    A ``.keras`` file's outputs go through its head, read from the file as ``load_user_model`` reads
    it (or ``head``); a ``.tflite`` or ``.onnx`` file written by ``export_all`` outputs probabilities
    already. ``custom_objects`` and ``safe_mode`` are ``load_user_model``'s, for a ``.keras`` file
    with custom layers or a ``Lambda``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a ``.keras``, ``.tflite`` or ``.onnx`` file, or not a model of
            its kind (naming the file: LiteRT and Keras don't).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    if path.suffix == ".keras":
        model = _load_keras(path, custom_objects, safe_mode)
        if not isinstance(head, Head):
            head = detect_head(model, head, compile_config=saved_compile_config(path))
        return predict_probabilities(model, images, head)
    if path.suffix not in (".tflite", ".onnx"):
        raise WorkbenchError(f"path must be a .keras, .tflite or .onnx file, got {path.name!r}")
    with fs.naming(path):
        content = path.read_bytes()
    try:
        if path.suffix == ".onnx":
            return OnnxModel(content).predict(images, batch_size)
        run = TFLiteModel(content, batch_size=max(1, min(batch_size, len(images))))
    except ValueError as err:  # LiteRT: "The model is not a valid Flatbuffer buffer", no file named
        kind = "an ONNX" if path.suffix == ".onnx" else "a TFLite"
        raise WorkbenchError(f"{path}: not {kind} model ({err})") from None
    return run.predict(images)


def _load_keras(path: Path, custom_objects: dict | None = None, safe_mode: bool = True) -> keras.Model:
    try:
        return keras.models.load_model(
            path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode
        )
    except Exception as err:  # noqa: BLE001 - Keras raises many kinds for broken archives
        if not zipfile.is_zipfile(path):  # Keras then says "File not found" of a file that is there
            raise WorkbenchError(f"{path}: not a .keras model (a .keras model is a zip archive)") from None
        raise WorkbenchError(f"{path}: could not load the model: {err}") from err


def file_metrics(
    path: str | Path,
    val,
    test: Split | None = None,
    positive: int = 1,
    head: Head | str | None = None,
    **load,
) -> dict:
    """Size, gzip size and clinical test metrics of one exported model (thresholds chosen on val).

    ``val`` is the Dataset (its val and test splits are used), or the validation Split with ``test``;
    ``load``: ``custom_objects`` and ``safe_mode`` for a ``.keras`` file (see ``probabilities``).
    """
    val, test = evaluation_splits(val, test)
    val_probs = probabilities(path, val.images, head=head, **load)
    test_probs = probabilities(path, test.images, head=head, **load)
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
