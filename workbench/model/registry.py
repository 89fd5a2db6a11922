"""Every layer kind the workbench understands, in one table: what is prunable and how channels flow.

``KINDS`` is the whole policy (tfmot's ``prune_registry``, Torch-Pruning's ``PrunerBox``). Each
kind has a *role* in the channel graph (see ``workbench.model.graph``):

- ``producer``: Conv1D/2D/3D, SeparableConv, Dense. Its kernel is prunable; a structured unit is
  one output filter/neuron; it starts a new channel space and slices its input channels.
- ``depthwise``: DepthwiseConv (multiplier 1). Its kernel is prunable per output channel; it is
  channel-wise, so its output shares its input's channel space.
- ``channelwise``: BatchNormalization, activations, pooling, global pooling, dropout, padding,
  cropping, Rescaling, Normalization, channel-preserving Reshape. Output space = input space;
  ``per_channel`` names the weights sliced with the channels (BatchNorm's four vectors).
- ``merge`` (Add, Subtract, Average, Maximum, Minimum) and ``multiply``: join their inputs' spaces.
- ``concat`` (Concatenate on the last axis) and ``flatten``: a new space derived from the inputs'.
- Anything else is *opaque*: kept whole, with all its input channels (pruned by masks only).

``OPS`` is the same table for Keras ops recorded as nodes of a functional model (``x + 3.0``,
``ops.relu6(x)``, ``a * b``): they have no weights, only a role.

Biases and BatchNorm parameters are never pruned by a mask; a structured mask zeroes those of
dead units (``workbench.model.graph.reference_factors``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.model.compat import keras

layers = keras.layers


@dataclass(frozen=True)
class Kind:
    """How one layer class takes part in pruning and in the channel graph."""

    role: str
    kernel: str | None = None  # the prunable kernel's attribute
    unit_axes: int = 1  # trailing kernel axes that index one structured unit
    per_channel: tuple[str, ...] = ()  # weights that live on the channel axis


_BN = Kind("channelwise", per_channel=("gamma", "beta", "moving_mean", "moving_variance"))
_PASS = Kind("channelwise")
KINDS: dict[type, Kind] = {
    layers.Conv1D: Kind("producer", "kernel"),
    layers.Conv2D: Kind("producer", "kernel"),
    layers.Conv3D: Kind("producer", "kernel"),
    layers.Dense: Kind("producer", "kernel"),
    layers.SeparableConv1D: Kind("producer", "pointwise_kernel"),
    layers.SeparableConv2D: Kind("producer", "pointwise_kernel"),
    layers.DepthwiseConv1D: Kind("depthwise", "kernel", unit_axes=2),
    layers.DepthwiseConv2D: Kind("depthwise", "kernel", unit_axes=2),
    layers.BatchNormalization: _BN,
    layers.Add: Kind("merge"),
    layers.Subtract: Kind("merge"),
    layers.Average: Kind("merge"),
    layers.Maximum: Kind("merge"),
    layers.Minimum: Kind("merge"),
    layers.Multiply: Kind("multiply"),
    layers.Concatenate: Kind("concat"),
    layers.Flatten: Kind("flatten"),
    **{
        kind: _PASS
        for kind in (
            layers.Activation,
            layers.ReLU,
            layers.LeakyReLU,
            layers.ELU,
            layers.Dropout,
            layers.SpatialDropout1D,
            layers.SpatialDropout2D,
            layers.SpatialDropout3D,
            layers.GaussianDropout,
            layers.GaussianNoise,
            layers.MaxPooling1D,
            layers.MaxPooling2D,
            layers.MaxPooling3D,
            layers.AveragePooling1D,
            layers.AveragePooling2D,
            layers.AveragePooling3D,
            layers.GlobalAveragePooling1D,
            layers.GlobalAveragePooling2D,
            layers.GlobalAveragePooling3D,
            layers.GlobalMaxPooling1D,
            layers.GlobalMaxPooling2D,
            layers.GlobalMaxPooling3D,
            layers.ZeroPadding1D,
            layers.ZeroPadding2D,
            layers.ZeroPadding3D,
            layers.Cropping1D,
            layers.Cropping2D,
            layers.Cropping3D,
            layers.UpSampling1D,
            layers.UpSampling2D,
            layers.UpSampling3D,
            layers.Identity,
            layers.Rescaling,
            layers.Normalization,
            layers.Reshape,
        )
    },
}


def kind_of(layer) -> Kind | None:
    """The table entry for ``layer``'s class or its nearest listed base class (None: opaque)."""
    for cls in type(layer).__mro__:
        if cls in KINDS:
            return KINDS[cls]
    return None


# Keras ops a functional model records as graph nodes when written as ops, not layers: ``x + 3.0``,
# ``ops.relu6(x)``, ``inputs + y`` (MobileNetV3's hard-sigmoid, ConvNeXt's residual). They have no
# weights. Looked up by class name among Keras's own ops (``keras.src.ops``). A merge or multiply
# with one tensor and scalar constants acts channel-wise; a ``scale`` op (x / 6, x ** 2) is followed
# only with its tensor first and scalars after. Anything else (reshape, mean, softmax, ...) is opaque.
_ELEMENTWISE_OPS = (
    *("Abs", "Absolute", "Negative", "Square", "Sqrt", "Cbrt", "Exp", "Expm1", "Sign", "Clip"),
    *("Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Celu", "Gelu", "Silu", "HardSilu", "HardSigmoid"),
    *("Sigmoid", "LogSigmoid", "Softplus", "Softsign", "Tanh", "HardTanh", "SparsePlus", "Squareplus"),
    *("HardShrink", "SoftShrink", "TanhShrink", "Threshold", "Round", "Floor", "Ceil", "Trunc"),
)
OPS: dict[str, Kind] = {
    "Add": Kind("merge"),
    "Subtract": Kind("merge"),
    "Maximum": Kind("merge"),
    "Minimum": Kind("merge"),
    "Multiply": Kind("multiply"),
    "Divide": Kind("scale"),
    "TrueDivide": Kind("scale"),
    "Power": Kind("scale"),
    **{name: _PASS for name in _ELEMENTWISE_OPS},
}


def is_op(operation) -> bool:
    """Whether a functional model's node is a Keras op (``keras.src.ops``), not a layer."""
    return not isinstance(operation, layers.Layer)


def op_kind(operation) -> Kind | None:
    """The ``OPS`` entry of a Keras op node (None: opaque, or not one of Keras's own ops)."""
    if not type(operation).__module__.startswith("keras.src.ops"):
        return None
    return OPS.get(type(operation).__name__)


@dataclass(frozen=True)
class LayerInfo:
    """A prunable layer: its name, kind, kernel shape, and the shape of its structured units."""

    name: str
    kind: str
    shape: tuple[int, ...]
    unit_axes: int

    @property
    def units_shape(self) -> tuple[int, ...]:
        return self.shape[-self.unit_axes :]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def kernel_of(layer):
    """The prunable kernel variable of ``layer``, or None if its kind has none."""
    kind = kind_of(layer)
    return None if kind is None or kind.kernel is None else getattr(layer, kind.kernel, None)


def prunable_layers(model: keras.Model) -> list[LayerInfo]:
    """Describe every prunable layer of ``model`` (nested models opened) in forward order.

    Raises:
        ValueError: if the model has no layer with a prunable kernel (see ``KINDS``).
    """
    infos = [
        LayerInfo(layer.name, type(layer).__name__, tuple(kernel.shape), kind_of(layer).unit_axes)
        for layer in flat_layers(model)
        if (kernel := kernel_of(layer)) is not None
    ]
    if not infos:
        raise WorkbenchError(
            f"model {model.name!r} has no prunable layers; expected one of "
            f"{sorted(k.__name__ for k, v in KINDS.items() if v.kernel)}"
        )
    return infos


# Layers with weights that are not pruned by design: like BatchNorm's, their weights are per channel.
NORMALISATIONS = (layers.LayerNormalization, layers.GroupNormalization, layers.Normalization)


def unpruned_weighted_layers(model: keras.Model) -> list[str]:
    """Layers that hold weights the table does not prune (e.g. Conv2DTranspose, Embedding, LSTM):
    their weights stay dense and count in no sparsity. ``NORMALISATIONS`` are left out."""
    return [
        f"{layer.name} ({type(layer).__name__})"
        for layer in flat_layers(model)
        if layer.weights and kind_of(layer) is None and not isinstance(layer, NORMALISATIONS)
    ]


def flat_layers(model: keras.Model) -> list:
    """All layers, with nested models opened up, in forward order."""
    flat = []
    for layer in model.layers:
        flat.extend(flat_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return flat


def kernel_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """Return {layer name: kernel variable} for every prunable layer (for in-place assigns)."""
    by_name = {layer.name: layer for layer in flat_layers(model)}
    return {info.name: kernel_of(by_name[info.name]) for info in prunable_layers(model)}


def get_kernels(model: keras.Model) -> dict[str, np.ndarray]:
    """Return {layer name: kernel as a NumPy array} for every prunable layer."""
    return {name: np.asarray(variable) for name, variable in kernel_variables(model).items()}


def other_parameters(model: keras.Model) -> list[tuple[str, str, tuple[int, ...], int]]:
    """List the parameters that are never pruned: (layer, weight name, shape, count)."""
    rows = []
    for layer in flat_layers(model):
        kernel = kernel_of(layer)
        for weight in layer.weights:
            if weight is not kernel:
                rows.append((layer.name, weight.name, tuple(weight.shape), int(np.prod(weight.shape))))
    return rows
