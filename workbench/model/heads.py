"""What a model's output means: the loss it was trained with, and how its outputs become probabilities.

A head is read from the model's last layer, never guessed:

====================  ==================================  ===========================  ================
kind                  last layer                          loss                         probabilities
====================  ==================================  ===========================  ================
``softmax``           softmax over C >= 2 units           sparse categorical CE        the outputs
``logits``            linear, C >= 2 units                the same, from logits        softmax(z)
``sigmoid``           one sigmoid unit (binary)           binary CE                    (1 - p, p)
``sigmoid_logits``    one linear unit, compiled as logits binary CE, from logits       (1 - σ(z), σ(z))
``multilabel``        L sigmoid units                     binary CE per label          the outputs
``multilabel_logits`` L linear units, compiled as logits  binary CE, from logits       σ(z)
====================  ==================================  ===========================  ================

A linear last layer over C >= 2 units is read as logits unless the model was compiled with a
binary cross-entropy (then multi-label logits). One linear unit is read only from the compile
config (it could be a regression). ``detect_head(model, "logits")`` overrides the detection.

Probabilities are (N, C) class probabilities for single-label heads (binary heads give two
columns, so binary metrics treat a sigmoid and a 2-way softmax alike) and (N, L) per-label
probabilities for multi-label heads.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.model.compat import keras, tf

log = logging.getLogger(__name__)

HEADS = ("softmax", "logits", "sigmoid", "sigmoid_logits", "multilabel", "multilabel_logits")
TASKS = ("binary", "multiclass", "multilabel")


@dataclass(frozen=True)
class Head:
    """A model's output head: its kind (one of ``HEADS``) and number of output units."""

    kind: str
    units: int

    def __post_init__(self):
        if self.kind not in HEADS:
            raise WorkbenchError(f"head must be one of {HEADS}, got {self.kind!r}")
        if not isinstance(self.units, int) or self.units < 1:
            raise WorkbenchError(f"head units must be a positive integer, got {self.units!r}")
        single = self.kind.startswith("sigmoid")
        if single != (self.units == 1):
            raise WorkbenchError(
                f"head {self.kind!r} needs {'exactly one' if single else 'at least two'} output units, "
                f"the model has {self.units}"
            )

    @property
    def from_logits(self) -> bool:
        return self.kind.endswith("logits")

    @property
    def multilabel(self) -> bool:
        return self.kind.startswith("multilabel")

    @property
    def task(self) -> str:
        """'binary', 'multiclass' or 'multilabel': the kind of labels this head is trained on."""
        if self.multilabel:
            return "multilabel"
        return "binary" if self.classes == 2 else "multiclass"

    @property
    def classes(self) -> int:
        """Columns of ``probabilities``: classes (2 for a one-unit binary head) or labels."""
        return 2 if self.units == 1 else self.units

    def loss(self) -> keras.losses.Loss:
        """The loss the model is trained with (and scored by)."""
        if self.kind in ("softmax", "logits"):
            return keras.losses.SparseCategoricalCrossentropy(from_logits=self.from_logits)
        return keras.losses.BinaryCrossentropy(from_logits=self.from_logits)

    def targets(self, labels: np.ndarray) -> np.ndarray:
        """Labels in the form ``loss`` takes: class indices (N,), or float 0/1 of shape (N, units)."""
        labels = np.asarray(labels)
        if self.kind in ("softmax", "logits"):
            return labels.reshape(-1)
        return labels.reshape(len(labels), self.units).astype(np.float32)

    def probabilities(self, outputs):
        """Map model outputs (a tensor) to probabilities, with TensorFlow ops (usable in tf.function)."""
        outputs = tf.convert_to_tensor(outputs)
        if self.kind == "logits":
            return tf.nn.softmax(outputs, axis=-1)  # the op a softmax layer uses: identical results
        p = tf.sigmoid(outputs) if self.kind.endswith("_logits") else outputs
        return tf.concat([1.0 - p, p], axis=-1) if self.units == 1 else p

    def check_labels(self, labels: np.ndarray, name: str = "labels") -> None:
        """Raise ValueError unless ``labels`` fit this head (class indices, or 0/1 per label)."""
        labels = np.asarray(labels)
        if labels.size == 0:
            raise WorkbenchError(f"{name} must not be empty")
        if not np.issubdtype(labels.dtype, np.number) or not np.isfinite(labels).all():
            raise WorkbenchError(f"{name} must be finite numbers, got dtype {labels.dtype}")
        if self.multilabel:
            if labels.ndim != 2 or labels.shape[1] != self.units or not np.isin(labels, (0, 1)).all():
                raise WorkbenchError(
                    f"{name} must be 0/1 of shape (N, {self.units}) for a {self.units}-label head, "
                    f"got shape {labels.shape} with values {np.unique(labels)[:5]}"
                )
            return
        flat = labels.reshape(-1)
        if len(flat) != len(labels):
            hint = (
                f"; (N, {labels.shape[1]}) labels are read as multi-label flags: one-hot labels of a "
                "single-label task become class indices with labels.argmax(1)"
                if labels.ndim == 2
                else ""
            )
            raise WorkbenchError(
                f"{name} must be class indices of shape (N,), got shape {labels.shape}{hint}"
            )
        wrong = (flat != np.round(flat)) | (flat < 0)
        if wrong.any():
            raise WorkbenchError(
                f"{name} must be class indices (whole numbers >= 0), got {np.unique(flat[wrong])[:5]}"
            )
        if flat.max() >= self.classes:
            raise WorkbenchError(
                f"{name} must be in [0, {self.classes}) for a {self.kind} head with {self.units} output(s), "
                f"got {flat.min()}..{flat.max()}"
            )


def as_head(model: keras.Model, head: Head | str | None = None) -> Head:
    """Return ``head`` if it is a Head, else ``detect_head(model, head)``."""
    return head if isinstance(head, Head) else detect_head(model, head)


def predict_probabilities(
    model: keras.Model, images: np.ndarray, head: Head | str | None = None
) -> np.ndarray:
    """The model's probabilities (images x classes, or x labels), whatever its head: a one-sigmoid
    model gives two columns (p(0), p(1)), a logits model its softmax."""
    outputs = model.predict(np.asarray(images, np.float32), verbose=0)
    return np.asarray(as_head(model, head).probabilities(outputs))


def detect_head(model: keras.Model, head: str | None = None, *, compile_config: dict | None = None) -> Head:
    """Read the head from the model's last layer (or take ``head``, one of ``HEADS``, as given).

    Args:
        head: overrides the detection, e.g. ``"logits"`` for a model whose last layer is linear.
        compile_config: the model's compile config, if it was loaded without compiling
            (``saved_compile_config`` reads it from a ``.keras`` file); otherwise the model's own.

    Raises:
        ValueError: for a model with several outputs, an output that is not (N, units), an
            unknown ``head``, or a head that cannot be identified (say which with ``head=``).
    """
    shape = model.output_shape
    if isinstance(shape, list) or len(shape) != 2:
        raise WorkbenchError(f"model must have one output of shape (N, units), got output shape {shape}")
    units = int(shape[-1])
    activation = output_activation(model)
    if head is not None:
        if head not in HEADS:
            raise WorkbenchError(f"head must be one of {HEADS} or None (detect), got {head!r}")
        given = Head(head, units)
        _check_head_fits_activation(head, activation)
        return given
    loss = _compiled_loss(model, compile_config)
    kind = _kind(activation, units, loss)
    if kind is None:
        raise WorkbenchError(
            f"cannot tell what the model's output means: last layer activation {activation!r} over "
            f"{units} unit(s), compiled loss {loss or 'unknown'}; pass head= one of {HEADS}"
        )
    log.info("model head: %s over %d unit(s) (activation %s)", kind, units, activation)
    return Head(kind, units)


# The heads each known last activation can produce; another activation (relu, a custom one) takes any.
HEADS_OF_ACTIVATION = {
    "softmax": ("softmax",),
    "sigmoid": ("sigmoid", "multilabel"),
    "linear": ("logits", "sigmoid_logits", "multilabel_logits"),
}


def _check_head_fits_activation(head: str, activation: str) -> None:
    """An override that contradicts the last layer: 'logits' on a softmax output applied softmax twice
    (probabilities squeezed towards uniform), 'softmax' on a linear one read logits as probabilities."""
    fitting = HEADS_OF_ACTIVATION.get(activation, HEADS)
    if head not in fitting:
        raise WorkbenchError(
            f"head={head!r} does not fit the model's last layer, whose activation is {activation!r}: "
            f"its outputs are {'logits' if activation == 'linear' else 'probabilities already'}; "
            f"pass one of {fitting}, or head=None to read it from the model"
        )


def _kind(activation: str, units: int, loss: dict | None) -> str | None:
    binary_loss = loss is not None and "binary" in loss["name"]
    if activation == "softmax" and units >= 2:
        return "softmax"
    if activation == "sigmoid":
        return "sigmoid" if units == 1 else "multilabel"
    if activation != "linear":
        return None
    if binary_loss and loss["from_logits"]:
        return "sigmoid_logits" if units == 1 else "multilabel_logits"
    return "logits" if units >= 2 else None


def output_activation(model: keras.Model) -> str:
    """The name of the activation that produces the model's output ('softmax', 'sigmoid', 'linear', ...)."""
    layer = model.layers[-1] if model.layers else None
    while isinstance(layer, keras.Model):  # a nested model as the last layer
        layer = layer.layers[-1]
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    if isinstance(layer, keras.layers.Activation) or hasattr(layer, "activation"):
        activation = layer.activation
        return activation if isinstance(activation, str) else getattr(activation, "__name__", str(activation))
    return f"none ({type(layer).__name__} last)"


def _compiled_loss(model: keras.Model, compile_config: dict | None) -> dict | None:
    """{'name', 'from_logits'} of the loss the model was compiled with, if known."""
    config = compile_config
    if config is None and getattr(model, "compiled", False):
        config = model.get_compile_config()
    loss = (config or {}).get("loss")
    if isinstance(loss, str):
        return {"name": loss.lower(), "from_logits": False}
    if isinstance(loss, dict):
        inner = loss.get("config") if isinstance(loss.get("config"), dict) else {}
        name = str(loss.get("class_name") or inner.get("name") or "").lower()
        return {"name": name, "from_logits": bool(inner.get("from_logits", False))}
    if isinstance(loss, keras.losses.Loss):
        return {"name": type(loss).__name__.lower(), "from_logits": bool(getattr(loss, "from_logits", False))}
    return None


def saved_compile_config(path: str | Path) -> dict | None:
    """The compile config stored in a ``.keras`` archive (None if it was saved uncompiled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json")).get("compile_config")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
