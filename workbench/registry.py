"""Which layers are prunable, which weight of each, and what a structured "unit" is in it.

The table is the whole policy: kernels of Conv2D, DepthwiseConv2D and Dense are pruned; biases
and BatchNorm parameters are not (they are reported, see ``other_parameters``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.compat import keras

# layer class -> number of trailing kernel axes that index one structured unit.
#   Conv2D (kh, kw, in, out): a unit is an output filter.       Dense (in, out): an output neuron.
#   DepthwiseConv2D (kh, kw, in, multiplier): a unit is one output channel (in x multiplier).
PRUNABLE: dict[type, int] = {
    keras.layers.DepthwiseConv2D: 2,  # not a Conv2D subclass in Keras 3
    keras.layers.Conv2D: 1,
    keras.layers.Dense: 1,
}


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


def _unit_axes(layer) -> int | None:
    for kind, axes in PRUNABLE.items():
        if isinstance(layer, kind):
            return axes
    return None


def prunable_layers(model: keras.Model) -> list[LayerInfo]:
    """Describe every prunable layer of ``model`` in forward order.

    Raises:
        ValueError: if the model has no Conv2D, DepthwiseConv2D or Dense layer.
    """
    infos = [
        LayerInfo(layer.name, type(layer).__name__, tuple(layer.kernel.shape), axes)
        for layer in _flat_layers(model)
        if (axes := _unit_axes(layer)) is not None
    ]
    if not infos:
        raise ValueError(
            f"model {model.name!r} has no prunable layers; expected Conv2D, DepthwiseConv2D or Dense"
        )
    return infos


def _flat_layers(model: keras.Model) -> list:
    """All layers, with nested models opened up, in forward order."""
    flat = []
    for layer in model.layers:
        flat.extend(_flat_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return flat


def layer_by_name(model: keras.Model, name: str):
    """Return the (possibly nested) layer called ``name``."""
    for layer in _flat_layers(model):
        if layer.name == name:
            return layer
    raise ValueError(f"layer must be one of the model's layers, got {name!r}")


def get_kernels(model: keras.Model) -> dict[str, np.ndarray]:
    """Return {layer name: kernel as a NumPy array} for every prunable layer."""
    return {info.name: np.asarray(layer_by_name(model, info.name).kernel) for info in prunable_layers(model)}


def kernel_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """Return {layer name: kernel variable} for every prunable layer (for in-place assigns)."""
    return {info.name: layer_by_name(model, info.name).kernel for info in prunable_layers(model)}


def other_parameters(model: keras.Model) -> list[tuple[str, str, tuple[int, ...], int]]:
    """List the parameters that are never pruned: (layer, weight name, shape, count)."""
    prunable = {info.name for info in prunable_layers(model)}
    rows = []
    for layer in _flat_layers(model):
        for weight in layer.weights:
            is_kernel = layer.name in prunable and weight is layer.kernel
            if not is_kernel:
                rows.append((layer.name, weight.name, tuple(weight.shape), int(np.prod(weight.shape))))
    return rows
