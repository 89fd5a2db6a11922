"""Physical filter removal: from a structured keep-mask, a smaller model that computes the same thing.

    keep (structured) -> couple_masks -> apply_masks(structured=True) (the masked reference)
                      -> slim_model (smaller, equal outputs)

The channel graph (which channels are coupled, dead, needed) is ``workbench.model.graph``; this module
only checks masks, couples them, and rebuilds the model with the planned channels.

**Coupling rule.** ``couple_masks(rule="any")`` keeps a coupled channel if any of its layers
keeps it, restoring the others' trained filters: accuracy first, sparsity a little lower than
asked. ``rule="all"`` prunes it if any layer prunes it: sparsity first. ``slim_model`` also
accepts an uncoupled mask; a channel some consumer still reads then stays (its pruned filters as
zeros), so the slim model still equals the masked reference but is less small.

**What is not slimmed.** Layers and Keras ops slim can't follow (unknown kinds, grouped or
channels-first convs, depth multipliers > 1, softmax in the middle, Normalization/per-channel
Rescaling, ops outside ``registry.OPS`` or with per-channel constants) keep all their channels;
they are logged with the reason and still pruned by their masks. The output layer is never cut.
To fine-tune a structured model and keep it slimmable, use ``fine_tune(..., structured=True)``,
which pins dead channels' biases and BatchNorm γ/β at zero.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.masks import Masks, overall_sparsity
from workbench.model.compat import keras
from workbench.model.graph import Graph, Node, reference_factors
from workbench.model.registry import flat_layers, get_kernels, kernel_of, prunable_layers
from workbench.prune.pruning import apply_masks

log = logging.getLogger(__name__)
RULES = ("any", "all")


# --- checking and coupling masks --------------------------------------------------------------


def check_structured(model: keras.Model, keep: Masks) -> None:
    """Raise ValueError unless ``keep`` fits ``model``'s prunable layers and prunes whole units only."""
    infos = prunable_layers(model)
    unknown = sorted(set(keep) - {info.name for info in infos})
    if unknown:
        raise WorkbenchError(f"keep names layers that {model.name!r} does not have: {unknown}")
    for info in infos:
        mask = keep.get(info.name)
        if mask is None or tuple(np.shape(mask)) != info.shape:
            got = None if mask is None else np.shape(mask)
            raise WorkbenchError(
                f"keep must give layer {info.name!r} a mask of shape {info.shape}, got {got}"
            )
        columns = np.asarray(mask, bool).reshape(-1, int(np.prod(info.units_shape)))
        if not np.all(columns.all(axis=0) | ~columns.any(axis=0)):
            raise WorkbenchError(
                f"keep must be a structured mask (whole filters/units kept or pruned); layer {info.name!r} "
                "prunes single weights. Build it with PruneSpec(granularity='structured')"
            )


def unit_alive(keep: Masks, model: keras.Model | None = None) -> dict[str, np.ndarray]:
    """Which units (output channels) of each layer a structured mask keeps."""
    if model is not None:
        return Graph.of(model).unit_alive(keep)
    return {
        name: np.asarray(mask, bool).reshape(-1, mask.shape[-1]).any(axis=0) for name, mask in keep.items()
    }


def coupled_groups(model: keras.Model) -> list[tuple[str, ...]]:
    """Return the groups of prunable layers whose output channels are one space (``model.graph``).

    A channel of a group can only be removed if every layer of the group prunes it.
    """
    return Graph.of(model).coupled_groups()


def couple_masks(model: keras.Model, keep: Masks, rule: str = "any", *, quiet: bool = False) -> Masks:
    """Make a structured mask physically realisable: coupled channels agree, fixed channels stay.

    Args:
        rule: ``"any"`` keeps a coupled channel if any member keeps it (restoring the others'
            filters); ``"all"`` prunes it if any member prunes it.
        quiet: no warning when coupling changes the sparsity by more than 0.05 (for searches
            that couple many candidate masks on purpose).

    Returns:
        A new mask. Layers whose channels are fixed (the model's outputs, a model input fed into
        an add, a layer slim can't resize) keep every unit.

    Raises:
        ValueError: for an unknown rule, or a mask that isn't structured or doesn't fit ``model``.
    """
    if rule not in RULES:
        raise WorkbenchError(f"rule must be one of {RULES}, got {rule!r}")
    check_structured(model, keep)
    graph = Graph.of(model)
    alive = graph.unit_alive(keep)
    coupled = {name: np.asarray(mask, bool).copy() for name, mask in keep.items()}
    combine = np.any if rule == "any" else np.all
    for space in graph.members:
        names = graph.unit_owners(space)
        if not names:
            continue
        agreed = combine([alive[n] for n in names], axis=0) | (space in graph.fixed)
        for name in names:
            units = agreed.reshape(coupled[name].shape[-_unit_axes(graph, name) :])
            coupled[name] = np.broadcast_to(units, coupled[name].shape).copy()
    before, after = overall_sparsity(keep), overall_sparsity(coupled)
    if not quiet and abs(before - after) > 0.05:
        warnings.warn(
            f"couple_masks(rule={rule!r}) changed the sparsity from {before:.2f} to {after:.2f}: residual "
            "adds, concatenations and depthwise convs tie channels together, and fixed channels stay; the "
            "slim model is only as much smaller (budget.allocate plans structured budgets with the coupling)",
            stacklevel=2,
        )
    return coupled


def _unit_axes(graph: Graph, name: str) -> int:
    return 2 if graph.nodes[name].role == "depthwise" else 1


def mask_structured(model: keras.Model, keep: Masks) -> keras.Model:
    """The exact masked reference of a structured mask: ``apply_masks(model, keep, structured=True)``."""
    check_structured(model, keep)
    return apply_masks(model, keep, structured=True)


def channel_plan(model: keras.Model, keep: Masks) -> dict[str, np.ndarray]:
    """Return {layer name: which output channels the slim model keeps physically}."""
    check_structured(model, keep)
    return Graph.of(model).plan(keep)


# --- the slim model ---------------------------------------------------------------------------


def slim_model(model: keras.Model, keep: Masks) -> keras.Model:
    """Build a new, physically smaller model equal to ``apply_masks(model, keep, structured=True)``.

    Removed channels are exactly zero or read by nobody in the masked reference (see
    ``workbench.model.graph``); convs, dense, depthwise and separable layers lose those filters and
    the matching input slices, BatchNorm loses those channels, nested models are rebuilt inside.
    The output layer keeps every unit. Call ``couple_masks`` first, or coupled channels are kept
    as zeros.

    Example:
        >>> spec = PruneSpec(granularity="structured", sparsity=0.5, scope="layerwise")
        >>> keep = couple_masks(model, make_masks(scorer, spec).keep)
        >>> slim = slim_model(model, keep)
        >>> slim.count_params() < model.count_params()
        True

    Raises:
        ValueError: if ``keep`` isn't a structured mask for ``model``.
    """
    check_structured(model, keep)
    graph = Graph.of(model)
    plan, factors = graph.plan(keep), reference_factors(graph, keep)
    _log_unslimmed(graph)
    config = model.get_config()
    nodes = {n.name: n for n in graph.nodes.values() if n.layer is not None}
    fed = {model: [int(plan[s].sum()) for s in sources] for model, sources in graph.feeds.items()}
    _resize_config(config, nodes, plan, fed)
    slim = type(model).from_config(config)
    slim_layers = {layer.name: layer for layer in flat_layers(slim)}
    changed = []  # layers whose weights the reference changes
    for node in graph.nodes.values():
        if node.weights:
            values = _reference_values(node.layer, keep, factors)
            if any(not np.array_equal(w, v) for w, v in zip(node.weights, values, strict=True)):
                changed.append(node.name)
            for variable, value in zip(
                slim_layers[node.name].weights, _sliced_weights(node, graph, plan, values), strict=True
            ):
                variable.assign(value)
    if changed and _masks_applied(model, keep):
        warnings.warn(
            f"slim_model: the model's kernels are pruned to these masks, but the removed channels of "
            f"{changed[:5]}{' ...' if len(changed) > 5 else ''} still carry a bias or BatchNorm γ/β, so "
            "the slim model is apply_masks(model, keep, structured=True), not the model as it is (its "
            "outputs differ); apply and fine-tune with structured=True to keep the model slimmable",
            stacklevel=2,
        )
    return slim


def _masks_applied(model: keras.Model, keep: Masks) -> bool:
    """Whether every weight ``keep`` removes is zero in ``model`` already (pruned, not dense)."""
    kernels = get_kernels(model)
    return all(not np.any(np.where(mask, 0, kernels[name])) for name, mask in keep.items())


def _reference_values(layer, keep: Masks, factors: dict) -> list[np.ndarray]:
    """The layer's weights in the masked reference (as ``apply_masks(structured=True)`` sets them)."""
    values = []
    for weight in layer.weights:
        value = np.asarray(weight)
        if weight is kernel_of(layer) and layer.name in keep:
            value = value * keep[layer.name]
        for attr in ("bias", "gamma", "beta", "moving_mean"):
            if weight is getattr(layer, attr, None) and (layer.name, attr) in factors:
                value = value * factors[(layer.name, attr)]
        values.append(value)
    return values


def _resize_config(tree, nodes: dict[str, Node], plan: dict[str, np.ndarray], fed: dict) -> None:
    """Set filters/units (and a channel-preserving Reshape's target) to the planned widths, in place;
    ``fed`` gives each nested model the planned widths of the tensors feeding its inputs."""
    if isinstance(tree, list):
        for value in tree:
            _resize_config(value, nodes, plan, fed)
        return
    if not isinstance(tree, dict):
        return
    tree.pop("build_config", None)  # widths changed: let each layer build from its new input
    config, name = tree.get("config"), None
    if isinstance(config, dict) and isinstance(config.get("name"), str):
        name = config["name"]
    if name in fed and isinstance(config.get("layers"), list):
        _resize_inputs(config, fed[name])
    node = nodes.get(name)
    if node is not None and tree.get("class_name") == type(node.layer).__name__ and node.role != "opaque":
        width = int(plan[name].sum())
        for key in ("filters", "units"):
            if key in config and node.role == "producer":
                config[key] = width
        if "target_shape" in config and config["target_shape"][-1] == node.channels:
            config["target_shape"] = [*config["target_shape"][:-1], width]
    for value in tree.values():
        _resize_config(value, nodes, plan, fed)


def _resize_inputs(config: dict, widths: list[int]) -> None:
    """Give a nested model's input layers (and a Sequential's build shape) the widths fed to them."""
    layers_ = config["layers"]
    if "input_layers" in config:  # functional: [name, 0, 0] or a list of them
        refs = config["input_layers"]
        names = [ref[0] for ref in (refs if refs and isinstance(refs[0], list) else [refs])]
    else:  # Sequential: its first layer, if it is an InputLayer
        first = layers_[0] if layers_ else {}
        names = [first["config"]["name"]] if first.get("class_name") == "InputLayer" else []
        if config.get("build_input_shape"):
            config["build_input_shape"] = [*config["build_input_shape"][:-1], widths[0]]
    for entry in layers_:
        if entry.get("class_name") == "InputLayer" and entry["config"]["name"] in names:
            shape = entry["config"]["batch_shape"]
            entry["config"]["batch_shape"] = [*shape[:-1], widths[names.index(entry["config"]["name"])]]


def _sliced_weights(node: Node, graph: Graph, plan: dict[str, np.ndarray], values: list) -> list[np.ndarray]:
    """The node's weights with removed input/output channels cut out (opaque layers: unchanged)."""
    layer = node.layer
    if node.role == "opaque":
        return values
    out = plan[node.name]
    if node.role == "producer":
        kept_in = plan[node.inbound[0]]
        return [
            _slice_producer(layer, w, v, kept_in, out) for w, v in zip(layer.weights, values, strict=True)
        ]
    if node.role == "depthwise":
        return [v[..., out, :] if v.ndim > 1 else v[out] for v in values]
    return [v[..., out] if v.ndim and v.shape[-1] == node.channels else v for v in values]


def _slice_producer(
    layer, weight, value: np.ndarray, kept_in: np.ndarray, kept_out: np.ndarray
) -> np.ndarray:
    if value.ndim == 1:
        return value[kept_out]
    if weight is getattr(layer, "depthwise_kernel", None):
        return value[..., kept_in, :]
    if weight is getattr(layer, "pointwise_kernel", None):
        rows = np.repeat(kept_in, layer.depth_multiplier)
        return value[..., rows, :][..., kept_out]
    return value[..., kept_in, :][..., kept_out]


def _log_unslimmed(graph: Graph) -> None:
    for name, why in graph.opaque().items():
        log.info("slim keeps layer %r whole (pruned by masks only): %s", name, why)


def slim_report(model: keras.Model) -> dict[str, str]:
    """{layer: why slim keeps it and its channels whole}; empty if every layer can be slimmed."""
    return Graph.of(model).opaque()
