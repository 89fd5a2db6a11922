"""Physical filter removal: from a structured keep-mask, a smaller model that computes the same thing.

    keep (structured) -> couple_masks -> mask_structured (the masked reference) -> slim_model (smaller)

**Channel spaces.** The last axis of every layer's output is a channel space. A Conv2D or Dense
starts a new one (its units). Channel-wise layers (BatchNormalization, activations, pooling,
dropout, padding) pass their input's space through. An elementwise merge (Add, Subtract, Average,
Multiply, Maximum, Minimum) joins the spaces of its inputs into one: a *coupled group*, whose
channels can only be removed together. Flatten (channels-last) makes a derived space whose input
index ``i`` belongs to channel ``i % C``.

**Coupling rule.** ``couple_masks(rule="any")`` keeps a coupled channel if any member producer
keeps it, restoring the other members' trained filters: accuracy first, sparsity a little lower
than asked. ``rule="all"`` prunes it if any member prunes it: sparsity first. ``slim_model`` also
accepts an uncoupled mask; it then physically keeps the union of the group's channels, with the
pruned members' filters as zeros, so it still equals ``mask_structured`` but is less small.
Channels that must stay (the class logits, and a model input fed into an add) are always kept.

**BatchNorm.** A pruned filter of a bias-free conv followed by BN does not output zero but the
constant ``beta - gamma * mean / sqrt(var + eps)``. ``mask_structured`` therefore also zeros
``gamma`` and ``beta`` of every BN channel whose input is dead, so a pruned channel is exactly zero
everywhere and removing it changes nothing. Training would regrow those (and dead units' biases),
so fine-tune with ``fine_tune_structured``, which pins them at zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from workbench.compat import keras
from workbench.data import Dataset
from workbench.masks import Masks, alive_units
from workbench.prune import FINE_TUNE_RECIPE, MaskConstraint, apply_masks, fine_tune
from workbench.registry import prunable_layers
from workbench.train import Recipe

log = logging.getLogger(__name__)
layers = keras.layers

PRODUCERS = (layers.Conv2D, layers.Dense)  # start a channel space of their own units
MERGES = (layers.Add, layers.Subtract, layers.Average, layers.Multiply, layers.Maximum, layers.Minimum)
ACTIVATIONS = (layers.Activation, layers.ReLU, layers.LeakyReLU, layers.ELU, layers.Softmax)
CHANNELWISE = ACTIVATIONS + (
    layers.BatchNormalization,
    layers.MaxPooling2D,
    layers.AveragePooling2D,
    layers.GlobalAveragePooling2D,
    layers.GlobalMaxPooling2D,
    layers.Dropout,
    layers.SpatialDropout2D,
    layers.ZeroPadding2D,
    layers.Cropping2D,
    layers.Identity,
)
RULES = ("any", "all")
_INPUT = "__input__"  # the pseudo-layer feeding a Sequential model


# --- the layer graph and its channel spaces ---------------------------------------------------


@dataclass(frozen=True)
class _Node:
    name: str
    layer: object | None  # None for a model input
    inbound: tuple[str, ...]


def _graph(model: keras.Model) -> list[_Node]:
    """The model's layers in forward order, each with the names of the layers feeding it."""
    if not model.built or not model.inputs:
        raise ValueError(f"model must be built with a known input shape; {model.name!r} is not")
    if isinstance(model, keras.Sequential):
        names = [_INPUT] + [layer.name for layer in model.layers]
        nodes = [_Node(_INPUT, None, ())]
        return nodes + [_Node(n, model.get_layer(n), (names[i],)) for i, n in enumerate(names[1:])]
    nodes = []
    for entry in model.get_config()["layers"]:
        if len(entry["inbound_nodes"]) > 1:
            raise ValueError(f"model must not reuse layers; {entry['name']!r} is called more than once")
        inbound = tuple(_history_names(entry["inbound_nodes"]))
        layer = None if entry["class_name"] == "InputLayer" else model.get_layer(entry["name"])
        nodes.append(_Node(entry["name"], layer, inbound))
    return nodes


def _history_names(tree) -> list[str]:
    """Names of the layers whose tensors appear anywhere in a serialized call's arguments."""
    if isinstance(tree, dict):
        config = tree.get("config")
        if isinstance(config, dict) and "keras_history" in config:
            return [config["keras_history"][0]]
        return [name for value in tree.values() for name in _history_names(value)]
    if isinstance(tree, list | tuple):
        return [name for value in tree for name in _history_names(value)]
    return []


def _check_supported(node: _Node) -> None:
    layer = node.layer
    if layer is None:
        return
    if isinstance(layer, keras.Model):
        raise ValueError(f"model must be flat; nested model {layer.name!r} is not supported by slim")
    if not isinstance(layer, PRODUCERS + MERGES + CHANNELWISE + (layers.Flatten,)) or isinstance(
        layer, layers.DepthwiseConv2D
    ):
        raise ValueError(
            f"slim supports Conv2D, Dense, BatchNormalization, channel-wise, merge and Flatten layers; "
            f"layer {layer.name!r} is a {type(layer).__name__}"
        )
    if getattr(layer, "data_format", "channels_last") != "channels_last" or getattr(layer, "groups", 1) != 1:
        raise ValueError(f"slim needs channels-last, ungrouped layers; layer {layer.name!r} is not")
    if isinstance(layer, layers.BatchNormalization) and layer.axis not in (-1, len(layer.input.shape) - 1):
        raise ValueError(
            f"slim needs BatchNormalization over the last axis; {layer.name!r} has axis {layer.axis}"
        )


class _Spaces:
    """Union-find over layer outputs: layers in one set share one channel space."""

    def __init__(self, graph: list[_Node], outputs: set[str]):
        self.parent = {node.name: node.name for node in graph}
        self.nodes = {node.name: node for node in graph}
        for node in graph:
            _check_supported(node)
            if node.layer is not None and not isinstance(node.layer, PRODUCERS + (layers.Flatten,)):
                for source in node.inbound:
                    self.union(node.name, source)
        self.fixed = {self.find(n) for n in outputs} | {self.find(n.name) for n in graph if n.layer is None}

    def find(self, name: str) -> str:
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)

    def members(self, root: str) -> list[_Node]:
        return [node for name, node in self.nodes.items() if self.find(name) == root]


def _output_names(model: keras.Model, graph: list[_Node]) -> set[str]:
    if isinstance(model, keras.Sequential):
        return {graph[-1].name}
    return {name for name, *_ in _as_list(model.get_config()["output_layers"])}


def _as_list(entries) -> list:
    return entries if entries and isinstance(entries[0], list) else [entries]


def _channels(node: _Node) -> int:
    return int(node.layer.output.shape[-1]) if node.layer is not None else -1


def coupled_groups(model: keras.Model) -> list[tuple[str, ...]]:
    """Return the groups of Conv2D/Dense layers whose output channels meet in an elementwise merge.

    A channel of a group can only be removed if every layer of the group prunes it.

    Example:
        >>> coupled_groups(small_resnet((28, 28, 1), 2))  # doctest: +SKIP
        [('stem_conv', 'block1_b_conv'), ('block2_proj_conv', 'block2_b_conv')]
    """
    graph = _graph(model)
    spaces = _Spaces(graph, _output_names(model, graph))
    groups: dict[str, list[str]] = {}
    for node in graph:
        if isinstance(node.layer, PRODUCERS):
            groups.setdefault(spaces.find(node.name), []).append(node.name)
    return [tuple(names) for names in groups.values() if len(names) > 1]


# --- checking and coupling masks --------------------------------------------------------------


def check_structured(model: keras.Model, keep: Masks) -> None:
    """Raise ValueError unless ``keep`` fits ``model``'s prunable layers and prunes whole units only."""
    infos = prunable_layers(model)
    unknown = sorted(set(keep) - {info.name for info in infos})
    if unknown:
        raise ValueError(f"keep names layers that {model.name!r} does not have: {unknown}")
    for info in infos:
        mask = keep.get(info.name)
        if mask is None or tuple(np.shape(mask)) != info.shape:
            got = None if mask is None else np.shape(mask)
            raise ValueError(f"keep must give layer {info.name!r} a mask of shape {info.shape}, got {got}")
        columns = np.asarray(mask, bool).reshape(-1, int(np.prod(info.units_shape)))
        if not np.all(columns.all(axis=0) | ~columns.any(axis=0)):
            raise ValueError(
                f"keep must be a structured mask (whole filters/units kept or pruned); layer {info.name!r} "
                "prunes single weights. Build it with PruneSpec(granularity='structured')"
            )


def unit_alive(keep: Masks) -> dict[str, np.ndarray]:
    """Which units (output filters/neurons) of each layer a structured mask keeps."""
    return {name: alive_units(mask, mask.shape[-1]) for name, mask in keep.items()}


def couple_masks(model: keras.Model, keep: Masks, rule: str = "any") -> Masks:
    """Make a structured mask physically realisable: coupled channels agree, fixed channels stay.

    Args:
        rule: ``"any"`` keeps a coupled channel if any member keeps it (restoring the others'
            filters); ``"all"`` prunes it if any member prunes it.

    Returns:
        A new mask. Layers feeding the model's outputs (the class logits), or merged with a
        model input, keep every unit.

    Raises:
        ValueError: for an unknown rule, or a mask that isn't structured or doesn't fit ``model``.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    check_structured(model, keep)
    graph = _graph(model)
    spaces, alive = _Spaces(graph, _output_names(model, graph)), unit_alive(keep)
    coupled = {name: np.asarray(mask, bool).copy() for name, mask in keep.items()}
    for root in {spaces.find(n.name) for n in graph if isinstance(n.layer, PRODUCERS)}:
        names = [n.name for n in spaces.members(root) if isinstance(n.layer, PRODUCERS)]
        combine = np.any if rule == "any" else np.all
        agreed = combine([alive[n] for n in names], axis=0) | (root in spaces.fixed)
        for name in names:
            coupled[name] = np.broadcast_to(agreed, coupled[name].shape).copy()
    return coupled


# --- the masked reference ---------------------------------------------------------------------


def _path_alive(graph: list[_Node], alive: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Which output channels of each layer carry signal in the masked model (merges: any input)."""
    out: dict[str, np.ndarray] = {}
    for node in graph:
        if node.layer is None:
            out[node.name] = None  # a model input: every channel
        elif isinstance(node.layer, PRODUCERS):
            out[node.name] = alive[node.name]
        elif isinstance(node.layer, layers.Flatten):
            source = out[node.inbound[0]]
            out[node.name] = None if source is None else _tile(source, node.layer)
        else:
            sources = [out[n] for n in node.inbound]
            out[node.name] = None if any(s is None for s in sources) else np.any(sources, axis=0)
    return out


def _tile(channel_alive: np.ndarray, flatten) -> np.ndarray:
    """Channels-last flatten: input index i belongs to channel i % C."""
    return np.tile(channel_alive, int(flatten.output.shape[-1]) // len(channel_alive))


def mask_structured(model: keras.Model, keep: Masks) -> keras.Model:
    """Return a masked copy in which every pruned unit outputs exactly zero; ``model`` is untouched.

    Zeros the pruned kernels and biases (``apply_masks(structured=True)``) and, after a dead
    channel, BatchNormalization's gamma and beta, so the copy equals ``slim_model(model, keep)``.

    Raises:
        ValueError: if ``keep`` isn't a structured mask for ``model``, or the model has a layer slim
            doesn't support.
    """
    check_structured(model, keep)
    masked = apply_masks(model, keep, structured=True)
    graph = _graph(masked)
    for node in graph:
        _check_supported(node)
    paths = _path_alive(graph, unit_alive(keep))
    for node in graph:
        if isinstance(node.layer, layers.BatchNormalization) and paths[node.name] is not None:
            for weight in (node.layer.gamma, node.layer.beta):
                if weight is not None:
                    weight.assign(np.asarray(weight) * paths[node.name])
    return masked


def pin_dead_units(model: keras.Model, keep: Masks) -> None:
    """Keep dead units' biases and BN gamma/beta at zero through later training of ``model``."""
    graph = _graph(model)
    paths = _path_alive(graph, unit_alive(keep))
    for node in graph:
        layer, alive = node.layer, paths[node.name]
        if alive is None or alive.all() or not isinstance(layer, PRODUCERS + (layers.BatchNormalization,)):
            continue
        variables = [layer.bias] if isinstance(layer, PRODUCERS) else [layer.gamma, layer.beta]
        for variable in variables:
            if variable is not None:
                variable.constraint = MaskConstraint(alive)


def fine_tune_structured(
    model: keras.Model,
    keep: Masks,
    dataset: Dataset,
    recipe: Recipe = FINE_TUNE_RECIPE,
    *,
    progress: bool = True,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Fine-tune ``mask_structured(model, keep)`` with dead units pinned, so it stays slimmable.

    Returns:
        (the fine-tuned masked model, its history); ``slim_model`` of it equals it.
    """
    masked = mask_structured(model, keep)
    pin_dead_units(masked, keep)
    history = fine_tune(masked, keep, dataset, recipe, progress=progress)
    return masked, history


# --- the slim model ---------------------------------------------------------------------------


def channel_plan(model: keras.Model, keep: Masks) -> dict[str, np.ndarray]:
    """Return {layer name: which output channels the slim model keeps physically}.

    A channel space keeps the union of its producers' kept units (so an uncoupled mask still
    gives a model equal to the masked one); fixed spaces (outputs, inputs) keep everything, and
    a space never drops to zero channels.
    """
    check_structured(model, keep)
    graph = _graph(model)
    spaces, alive = _Spaces(graph, _output_names(model, graph)), unit_alive(keep)
    plan: dict[str, np.ndarray] = {}
    for node in graph:  # forward order: a Flatten's source is planned before it
        root = spaces.find(node.name)
        members = spaces.members(root)
        if root in spaces.fixed or node.layer is None:
            kept = np.ones(_channels(node) if node.layer is not None else 0, bool)
        else:
            kept = np.any([_source_alive(m, alive, plan) for m in members if _is_source(m)], axis=0)
        plan[node.name] = kept if kept.any() or kept.size == 0 else _first_only(kept)
    return plan


def _is_source(node: _Node) -> bool:
    return isinstance(node.layer, PRODUCERS + (layers.Flatten,))


def _source_alive(node: _Node, alive: dict[str, np.ndarray], plan: dict[str, np.ndarray]) -> np.ndarray:
    if isinstance(node.layer, PRODUCERS):
        return alive[node.name]
    source = plan[node.inbound[0]]
    if source.size == 0:  # flattening a model input: every index stays
        return np.ones(_channels(node), bool)
    return _tile(source, node.layer)


def _first_only(kept: np.ndarray) -> np.ndarray:
    """Keep one (all-zero) channel so the layer stays valid; its output is zero either way."""
    out = np.zeros_like(kept)
    out[0] = True
    return out


def slim_model(model: keras.Model, keep: Masks) -> keras.Model:
    """Build a new, physically smaller model equal to ``mask_structured(model, keep)``.

    Pruned Conv2D filters and Dense units are removed, and the inputs of the layers they fed
    (convs, Dense after Flatten, BatchNormalization) are sliced to match. The output layer keeps
    every unit. Call ``couple_masks`` first, or coupled channels are kept as zeros.

    Example:
        >>> keep = couple_masks(model, make_masks(scorer, PruneSpec(granularity="structured",
        ...                     sparsity=0.5, scope="layerwise")).keep)          # doctest: +SKIP
        >>> slim = slim_model(model, keep)                                        # doctest: +SKIP

    Raises:
        ValueError: if ``keep`` isn't a structured mask for ``model``, or a layer can't be slimmed.
    """
    masked = mask_structured(model, keep)
    plan = channel_plan(masked, keep)
    graph = _graph(masked)
    _check_zero_preserving(graph, plan)
    inputs = {node.name: plan[node.inbound[0]] for node in graph if node.inbound}
    slim = keras.models.clone_model(masked, clone_function=lambda layer: _resized(layer, plan[layer.name]))
    for node in graph:
        if node.layer is not None and node.layer.weights:
            slim.get_layer(node.name).set_weights(
                _sliced_weights(node.layer, inputs[node.name], plan[node.name])
            )
    _log_kept_zeros(keep, plan)
    return slim


def _resized(layer, kept: np.ndarray):
    config = layer.get_config()
    if isinstance(layer, layers.Conv2D):
        config["filters"] = int(kept.sum())
    elif isinstance(layer, layers.Dense):
        config["units"] = int(kept.sum())
    return type(layer).from_config(config)


def _sliced_weights(layer, kept_in: np.ndarray, kept_out: np.ndarray) -> list[np.ndarray]:
    weights = [np.asarray(w) for w in layer.get_weights()]
    if isinstance(layer, layers.BatchNormalization):
        return [w[kept_out] for w in weights]
    kernel = weights[0] if kept_in.size == 0 else weights[0][..., kept_in, :]
    return [kernel[..., kept_out]] + [bias[kept_out] for bias in weights[1:]]


def _check_zero_preserving(graph: list[_Node], plan: dict[str, np.ndarray]) -> None:
    """A removed channel must be exactly zero in the masked model: f(0) = 0 for its activations."""
    for node in graph:
        if node.layer is None or plan[node.name].all():
            continue
        activation = getattr(node.layer, "activation", None) if isinstance(node.layer, PRODUCERS) else None
        if isinstance(node.layer, ACTIVATIONS):
            activation = node.layer
        if activation is not None and np.any(np.asarray(activation(np.zeros((1, 2), np.float32))) != 0):
            raise ValueError(
                f"layer {node.name!r} maps 0 to a non-zero value, so its pruned channels can't be removed"
            )


def _log_kept_zeros(keep: Masks, plan: dict[str, np.ndarray]) -> None:
    alive = unit_alive(keep)
    extra = {name: int((plan[name] & ~alive[name]).sum()) for name in alive}
    extra = {name: n for name, n in extra.items() if n}
    if extra:
        log.info("kept pruned units physically (coupled or output channels, as zeros): %s", extra)
