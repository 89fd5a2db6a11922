"""The layer graph, its channel spaces, and what a structured mask does to them: one model for all.

Coupling (``couple_masks``), the exact masked reference (``reference_factors``), slimming
(``channel_plan``) and FLOPs (``flops``) all read this one graph. Layer kinds come from
``workbench.model.registry.KINDS``.

**Nodes.** Every layer of the model, and every Keras op a functional model records (``x + 3.0``,
``ops.relu6(x)``, ``inputs + y``: ``registry.OPS``), nested models (functional or Sequential)
opened with their inputs wired to the outer tensors that feed them, in forward order; each knows
the nodes feeding it. A layer or op with several outputs is one opaque node per output.

**Channel spaces.** The last axis of every node's output is a channel space. A producer (conv,
dense) starts a new one; channel-wise layers, depthwise convs and elementwise merges share their
inputs' space, so a channel of a space can only be removed from all its tensors together (the
*coupled group*). Concatenate and Flatten make a space derived from their inputs'. Opaque layers
(unknown kinds, and known kinds used in ways slim can't follow) keep all channels, in and out.

**Alive.** In the masked reference of a structured mask a channel is exactly zero ("dead") when
its unit is pruned, when a channel-wise layer sees a dead input (its per-channel γ/β and biases
are zeroed too, so it stays zero), when every input of an add is dead, or when any input of a
multiply is dead. A layer that maps 0 to something else (sigmoid, a Normalization) revives it.

**Kept.** A channel is *needed* if some consumer reads a non-zero value from it (a conv reads
its alive input channels), or if it is needed downstream of a channel-wise path. The slim model
keeps the needed channels of each space; everything else is zero or unread, so removing it
changes nothing. Model inputs and outputs keep every channel.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.masks import Masks, alive_units
from workbench.model.compat import keras
from workbench.model.registry import flat_layers, is_op, kind_of, op_kind, prunable_layers

log = logging.getLogger(__name__)

_CHANNEL_MIXING = ("softmax", "log_softmax")  # these mix channels
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its Graph (Graph.of)


@dataclass(frozen=True)
class Node:
    """One layer or Keras op (or a model input, ``layer=None``) and the names of the nodes feeding it."""

    name: str
    layer: object | None
    inbound: tuple[str, ...]
    role: str  # input, producer, depthwise, channelwise, merge, multiply, concat, flatten, opaque
    why_opaque: str = ""
    input_channels: int = 0  # a model input's width (layers know their own)
    call: dict = field(default_factory=dict, compare=False)  # a Keras op's serialized call (its constants)
    output: int = 0  # which output of a layer or op with several (ops.split): one node each

    @property
    def channels(self) -> int:
        """Width of the node's output channel axis."""
        if self.layer is None:
            return self.input_channels
        output = self.layer.output
        return int((output[self.output] if isinstance(output, list | tuple) else output).shape[-1])

    @property
    def weights(self) -> list:
        """The layer's weights ([] for a model input, a Keras op, and all but a layer's first output)."""
        return list(getattr(self.layer, "weights", None) or []) if self.output == 0 else []


class Graph:
    """The layer graph of a (possibly nested) Keras model, with its channel spaces.

    Example:
        >>> Graph.of(model).coupled_groups()  # a chain; a residual Add couples e.g. ('stem', 'b1_conv')
        []
    """

    def __init__(self, model: keras.Model):
        if not model.built or not model.inputs:
            raise WorkbenchError(f"model must be built with a known input shape; {model.name!r} is not")
        self.prunable = prunable_layers(model)  # not the model: ``of`` caches graphs by model, weakly
        self.nodes: dict[str, Node] = {}
        self.feeds: dict[str, list[str]] = {}  # nested model -> the outer nodes feeding its inputs
        self.outputs = set(self._add_model(model, None))
        self.consumers: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for source in node.inbound:
                self.consumers[source].append(node.name)
        self._parent = {name: name for name in self.nodes}
        for node in self.nodes.values():
            if node.role in ("channelwise", "depthwise", "merge", "multiply"):
                for source in node.inbound:
                    self._union(node.name, source)
        self.fixed = {self.space(n) for n in self.outputs} | {
            self.space(n.name) for n in self.nodes.values() if n.role in ("input", "opaque") or _pins(n)
        }
        self.fixed |= {self.space(n.name) for n in self._mixed_derived()}

    @classmethod
    def of(cls, model: keras.Model) -> Graph:
        """``model``'s graph, built once per model: a Keras model's layers and wiring never change,
        and reading a backbone's config takes ~0.5 s (a budget's bisection asks ~20 times)."""
        graph = _GRAPHS.get(model)
        if graph is None:
            graph = _GRAPHS[model] = cls(model)
        return graph

    # --- building ------------------------------------------------------------------------------

    def _add_model(self, model: keras.Model, sources: list[str] | None) -> list[str]:
        """Add ``model``'s layers; ``sources`` feed its inputs (None: it is the outer model)."""
        if sources is not None:
            self.feeds[model.name] = list(sources)
        if isinstance(model, keras.Sequential):
            return self._add_sequential(model, sources)
        config = model.get_config()
        operations = {op.name: op for op in model.operations}
        alias: dict[tuple[str, int], str] = {}
        for i, (name, *_) in enumerate(_as_list(config["input_layers"])):
            if sources is None:
                self._add(Node(name, None, (), "input", input_channels=int(model.inputs[i].shape[-1])))
                alias[(name, 0)] = name
            else:
                alias[(name, 0)] = sources[i]
        for entry in config["layers"]:
            if entry["class_name"] == "InputLayer":
                continue
            if len(entry["inbound_nodes"]) > 1:
                raise WorkbenchError(
                    f"model must not reuse layers; {entry['name']!r} is called more than once"
                )
            inbound = [alias[ref] for ref in _history(entry["inbound_nodes"])]
            layer = operations[entry["name"]]
            if isinstance(layer, keras.Model):
                for index, out in enumerate(self._add_model(layer, inbound)):
                    alias[(layer.name, index)] = out
            else:
                for node in _nodes_of(layer, tuple(inbound), entry["inbound_nodes"][0]):
                    self._add(node)
                    alias[(layer.name, node.output)] = node.name
        return [alias[(name, index)] for name, _, index in _as_list(config["output_layers"])]

    def _add_sequential(self, model: keras.Sequential, sources: list[str] | None) -> list[str]:
        if sources is None:
            name = f"{model.name}_input"
            self._add(Node(name, None, (), "input", input_channels=int(model.inputs[0].shape[-1])))
            sources = [name]
        previous = sources[0]
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                previous = self._add_model(layer, [previous])[0]
            else:
                self._add(_node(layer, (previous,)))
                previous = layer.name
        return [previous]

    def _add(self, node: Node) -> None:
        if node.name in self.nodes:
            raise WorkbenchError(
                f"layer names must be unique across nested models; {node.name!r} occurs twice"
            )
        self.nodes[node.name] = node

    def _mixed_derived(self) -> list[Node]:
        """Concat/flatten outputs merged with another source: their channels can't follow both."""
        sources: dict[str, list[Node]] = {}
        for node in self.nodes.values():
            if node.role in ("producer", "concat", "flatten", "input", "opaque"):
                sources.setdefault(self.space(node.name), []).append(node)
        return [
            n
            for group in sources.values()
            if len(group) > 1
            for n in group
            if n.role in ("concat", "flatten")
        ]

    # --- channel spaces --------------------------------------------------------------------------

    def space(self, name: str) -> str:
        """The representative node of ``name``'s channel space."""
        while self._parent[name] != name:
            self._parent[name] = self._parent[self._parent[name]]
            name = self._parent[name]
        return name

    def _union(self, a: str, b: str) -> None:
        self._parent[self.space(a)] = self.space(b)

    @cached_property
    def members(self) -> dict[str, list[str]]:
        """{space: names of the nodes whose output is in it}, in forward order."""
        out: dict[str, list[str]] = {}
        for name in self.nodes:
            out.setdefault(self.space(name), []).append(name)
        return out

    def unit_owners(self, space: str) -> list[str]:
        """The prunable layers whose units are the channels of ``space``."""
        return [n for n in self.members[space] if self.nodes[n].role in ("producer", "depthwise")]

    def coupled_groups(self) -> list[tuple[str, ...]]:
        """Groups of prunable layers whose output channels are one space (removed together)."""
        groups = [tuple(self.unit_owners(space)) for space in self.members]
        return [group for group in groups if len(group) > 1]

    def opaque(self) -> dict[str, str]:
        """{layer: why slim keeps it and its channels whole} for every layer slim can't follow."""
        return {n.name: n.why_opaque for n in self.nodes.values() if n.role == "opaque" and n.output == 0}

    # --- what a structured mask does -----------------------------------------------------------

    def unit_alive(self, keep: Masks) -> dict[str, np.ndarray]:
        """{prunable layer: which of its units keep weights} (all True for a missing mask)."""
        out = {}
        for info in self.prunable:
            units = int(np.prod(info.units_shape))
            out[info.name] = (
                alive_units(keep[info.name], units) if info.name in keep else np.ones(units, bool)
            )
        return out

    def alive(self, keep: Masks) -> dict[str, np.ndarray]:
        """{node: which output channels are non-zero in the masked reference of ``keep``}."""
        units, out = self.unit_alive(keep), {}
        for node in self.nodes.values():
            if self._keeps_zero[node.name]:
                out[node.name] = _alive(node, [out[s] for s in node.inbound], units.get(node.name))
            else:  # it maps zero elsewhere (a sigmoid, an offset): every channel is non-zero after it
                out[node.name] = np.ones(node.channels, bool)
        return out

    @cached_property
    def _keeps_zero(self) -> dict[str, bool]:
        """{node: whether it maps an all-zero channel to zero}: probed once (a layer call each, which
        ``alive`` would otherwise repeat for every node of every mask a budget's search tries)."""
        return {name: _maps_zero_to_zero(node) for name, node in self.nodes.items()}

    def needed(self, alive: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{space: which channels some consumer reads as non-zero, or the output/inputs need}."""
        need = {space: np.full(self._width(space), space in self.fixed) for space in self.members}
        changed = True
        while changed:  # need only grows; a DAG settles in a few passes
            changed = False
            for node in reversed(self.nodes.values()):
                for source, wanted in self._reads(node, alive, need):
                    space = self.space(source)
                    grown = need[space] | wanted
                    if (grown != need[space]).any():
                        need[space], changed = grown, True
        return need

    def _reads(self, node: Node, alive, need):
        """(input node, channels of it that ``node`` needs) for each input of ``node``."""
        if node.role == "producer":
            return [(node.inbound[0], alive[node.inbound[0]])]
        if node.role == "opaque":
            return [(s, np.ones(self.nodes[s].channels, bool)) for s in node.inbound]
        mine = need[self.space(node.name)]
        if node.role == "concat":
            bounds = np.cumsum([0] + [self.nodes[s].channels for s in node.inbound])
            return [(s, mine[bounds[i] : bounds[i + 1]]) for i, s in enumerate(node.inbound)]
        if node.role == "flatten":
            channels = self.nodes[node.inbound[0]].channels
            return [(node.inbound[0], mine.reshape(-1, channels).any(axis=0))]
        return []

    def _width(self, space: str) -> int:
        return self.nodes[space].channels

    def plan(self, keep: Masks) -> dict[str, np.ndarray]:
        """{node: which output channels the slim model keeps}: the needed ones of each space.

        A derived space (concat, flatten) keeps what its inputs keep; a space never drops to
        zero channels (one zero channel stays, so every layer remains valid).
        """
        need = self.needed(self.alive(keep))
        kept: dict[str, np.ndarray] = {}
        for node in self.nodes.values():
            space = self.space(node.name)
            if space in kept:
                continue
            derived = [
                self.nodes[n] for n in self.members[space] if self.nodes[n].role in ("concat", "flatten")
            ]
            if derived and space not in self.fixed:
                kept[space] = self._derived(derived[0], kept)
            else:
                kept[space] = need[space] if need[space].any() else _first_only(need[space])
        return {name: kept[self.space(name)] for name in self.nodes}

    def _derived(self, node: Node, kept: dict[str, np.ndarray]) -> np.ndarray:
        sources = [kept[self.space(s)] for s in node.inbound]
        if node.role == "concat":
            return np.concatenate(sources)
        return np.tile(sources[0], node.channels // len(sources[0]))


def _nodes_of(layer, inbound: tuple[str, ...], call: dict) -> list[Node]:
    """A layer's or op's node; one opaque node per output if it has several (split, unstack)."""
    outputs = layer.output if isinstance(layer.output, list | tuple) else [layer.output]
    if len(outputs) == 1:
        return [_op_node(layer, inbound, call) if is_op(layer) else _node(layer, inbound)]
    why = f"it has {len(outputs)} outputs"
    return [
        Node(f"{layer.name}:{i}" if i else layer.name, layer, inbound, "opaque", why, output=i)
        for i in range(len(outputs))
    ]


def _node(layer, inbound: tuple[str, ...]) -> Node:
    kind = kind_of(layer)
    why = _why_opaque(layer, kind)
    role = "opaque" if why else kind.role
    return Node(layer.name, layer, inbound, role, why)


def _op_node(op, inbound: tuple[str, ...], call: dict) -> Node:
    """A Keras op's node: its role from ``registry.OPS`` and how it is called (tensors, constants)."""
    kind, why = op_kind(op), ""
    role = kind.role if kind else "opaque"
    tensors, constants = _call_leaves(call)
    if kind is None:
        why = f"the Keras op {type(op).__name__} is not in workbench.model.registry.OPS"
    elif any(not _is_scalar(c) for c in constants):
        why = "it combines the channels with a constant array"
    elif len({int(t["shape"][-1]) for t in tensors}) > 1:
        why = "its inputs broadcast over channels"
    elif role in ("merge", "multiply") and len(tensors) == 1:
        role = "channelwise"  # x + 3.0, x * (1/6): one tensor, scalar constants
    elif role == "scale":
        role = "channelwise" if len(tensors) == 1 and _is_tensor(call["args"][0]) else ""
        why = "" if role else "it divides by, or raises to the power of, a tensor"
    return Node(op.name, op, inbound, "opaque" if why else role, why, call=call)


def _call_leaves(call: dict) -> tuple[list[dict], list]:
    """(tensors' serialized configs, constants) among a serialized call's arguments, in order."""
    tensors, constants = [], []

    def visit(tree):
        if _is_tensor(tree):
            tensors.append(tree["config"])
        elif isinstance(tree, list | tuple):
            for value in tree:
                visit(value)
        elif isinstance(tree, dict) and "class_name" not in tree:
            for value in tree.values():
                visit(value)
        else:  # a scalar, None, or a serialized object (an array, a dtype)
            constants.append(tree)

    visit([call.get("args", []), call.get("kwargs", {})])
    return tensors, constants


def _is_tensor(tree) -> bool:
    return isinstance(tree, dict) and tree.get("class_name") == "__keras_tensor__"


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _op_on_zeros(node: Node) -> np.ndarray:
    """The op's output when every tensor it reads is zero (each shaped 1 x ... x 1 x channels)."""

    def fill(tree):
        if _is_tensor(tree):
            shape = tree["config"]["shape"]
            return np.zeros([1] * (len(shape) - 1) + [int(shape[-1])], np.float32)
        if isinstance(tree, list | tuple):
            return [fill(value) for value in tree]
        if isinstance(tree, dict) and "class_name" not in tree:
            return {key: fill(value) for key, value in tree.items()}
        return tree

    return np.asarray(node.layer(*fill(node.call.get("args", [])), **fill(node.call.get("kwargs", {}))))


def _why_opaque(layer, kind) -> str:
    """Why slim can't follow ``layer``'s channels ("" if it can)."""
    if kind is None:
        return f"{type(layer).__name__} is not in workbench.model.registry.KINDS"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "it is channels-first"
    if getattr(layer, "groups", 1) != 1:
        return "it is a grouped convolution"
    if kind.role == "depthwise" and layer.depth_multiplier != 1:
        return "its depth multiplier is not 1"
    if isinstance(layer, keras.layers.BatchNormalization) and layer.axis not in (
        -1,
        len(layer.input.shape) - 1,
    ):
        return f"it normalises axis {layer.axis}, not the channels"
    if _activation_name(layer) in _CHANNEL_MIXING and kind.role != "producer":
        return "softmax mixes channels"
    if kind.role in ("merge", "multiply") and len({int(t.shape[-1]) for t in _inputs(layer)}) > 1:
        return "its inputs broadcast over channels"
    if kind.role == "concat" and layer.axis not in (-1, len(layer.output.shape) - 1):
        return f"it concatenates axis {layer.axis}, not the channels"
    if isinstance(layer, keras.layers.Reshape) and layer.input.shape[-1] != layer.output.shape[-1]:
        return "it moves channels to other axes"
    return ""


def _inputs(layer) -> list:
    return layer.input if isinstance(layer.input, list | tuple) else [layer.input]


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation)) if activation is not None else ""


def _pins(node: Node) -> str:
    """Why a followable layer still fixes its space (can't be resized), or ""."""
    layer = node.layer
    if layer is None:
        return ""
    if node.role == "producer" and _activation_name(layer) in _CHANNEL_MIXING:
        return "its softmax mixes channels"
    if isinstance(layer, keras.layers.Normalization):
        return "Normalization holds per-channel statistics in its config"
    if isinstance(layer, keras.layers.Rescaling) and np.ndim(layer.scale) + np.ndim(layer.offset) > 0:
        return "its scale or offset is per-channel"
    return ""


def _maps_zero_to_zero(node: Node) -> bool:
    layer = node.layer
    if node.call and node.role != "opaque":  # a Keras op: call it
        try:
            return bool(np.all(_op_on_zeros(node) == 0))
        except Exception as error:  # noqa: BLE001 - unknown: assume it revives zeros, which keeps slim exact
            log.info("could not call op %r on zeros (%s); its channels count as alive", node.name, error)
            return False
    if isinstance(layer, keras.layers.Rescaling):
        return bool(np.all(np.asarray(layer.offset) == 0))
    if isinstance(layer, keras.layers.Normalization):
        return False
    if node.role in ("producer", "depthwise"):
        function = layer.activation
    elif node.role == "channelwise" and isinstance(
        layer, keras.layers.Activation | keras.layers.ReLU | keras.layers.LeakyReLU | keras.layers.ELU
    ):
        function = layer
    else:
        return True
    return bool(np.all(np.asarray(function(np.zeros((1, 4), np.float32))) == 0))


def _alive(node: Node, inputs: list[np.ndarray], units: np.ndarray | None) -> np.ndarray:
    """Which output channels of ``node`` are zero-free, given its inputs', if it maps zero to zero."""
    if node.role in ("input", "opaque"):
        return np.ones(node.channels, bool)
    if node.role == "producer":
        return units.copy()
    if node.role == "depthwise":
        return units & inputs[0]
    if node.role == "merge":
        return np.any(inputs, axis=0)
    if node.role == "multiply":
        return np.all(inputs, axis=0)
    if node.role == "concat":
        return np.concatenate(inputs)
    if node.role == "flatten":
        return np.tile(inputs[0], node.channels // len(inputs[0]))
    return inputs[0].copy()


def _first_only(kept: np.ndarray) -> np.ndarray:
    out = np.zeros_like(kept)
    out[:1] = True
    return out


def _history(tree) -> list[tuple[str, int]]:
    """(layer name, tensor index) of every tensor in a serialized call's arguments, in order."""
    if isinstance(tree, dict):
        config = tree.get("config")
        if isinstance(config, dict) and "keras_history" in config:
            name, _, index = config["keras_history"]
            return [(name, index)]
        return [ref for value in tree.values() for ref in _history(value)]
    if isinstance(tree, list | tuple):
        return [ref for value in tree for ref in _history(value)]
    return []


def _as_list(entries) -> list:
    return entries if entries and isinstance(entries[0], list) else [entries]


# --- the masked reference -----------------------------------------------------------------------


def reference_factors(graph: Graph, keep: Masks) -> dict[tuple[str, str], np.ndarray]:
    """0/1 factors that turn a kernel-masked model into the exact reference of a structured mask.

    {(layer, weight attribute): factor} for the bias of every producer/depthwise layer and the
    γ/β of every BatchNorm (β and the moving mean of one without γ, ``scale=False`` as in the
    Inception families: there a zero input leaves -mean/σ): zero on dead channels (pruned units, or
    channel-wise layers after a dead channel), so a dead channel is exactly zero everywhere, as
    slim removes it.
    """
    alive = graph.alive(keep)
    units = graph.unit_alive(keep)
    factors = {}
    for node in graph.nodes.values():
        layer = node.layer
        if node.name in units and getattr(layer, "bias", None) is not None:
            dead = units[node.name] & (alive[node.inbound[0]] if node.role == "depthwise" else True)
            factors[(node.name, "bias")] = dead.astype(np.float32)
        elif isinstance(layer, keras.layers.BatchNormalization) and node.role == "channelwise":
            for attr in ("gamma", "beta") if layer.scale else ("beta", "moving_mean"):
                if getattr(layer, attr, None) is not None:
                    factors[(node.name, attr)] = alive[node.inbound[0]].astype(np.float32)
    return factors


def reference_variables(graph: Graph, model: keras.Model) -> dict[tuple[str, str], keras.Variable]:
    """The variables ``reference_factors`` may scale, in ``model`` (same architecture as the graph's)."""
    everything = {info.name: np.ones(info.shape, bool) for info in graph.prunable}
    by_name = {layer.name: layer for layer in flat_layers(model)}
    return {key: getattr(by_name[key[0]], key[1]) for key in reference_factors(graph, everything)}


# --- cost -----------------------------------------------------------------------------------------


def flops(model: keras.Model, keep: Masks | None = None, graph: Graph | None = None) -> dict[str, int]:
    """Forward FLOPs (2 per multiply-add) of the conv, depthwise and dense layers, per image.

    Returns:
        ``dense`` (every weight), ``masked`` (non-zero kernel weights only: ideal sparse kernels)
        and ``filter_pruned`` (the slim model of ``keep``: kept input channels x kept units,
        following the channel graph through adds, concatenations and nested models).
    """
    return kernel_costs(model, keep, graph)[0]


def kernel_costs(
    model: keras.Model, keep: Masks | None = None, graph: Graph | None = None
) -> tuple[dict[str, int], dict[str, int]]:
    """(FLOPs, kernel weights) of ``keep`` from one channel plan, each counted as ``flops`` explains."""
    graph = graph or Graph.of(model)
    keep = keep or {i.name: np.ones(i.shape, bool) for i in prunable_layers(model)}
    plan = graph.plan(keep)
    operations, weights = ({"dense": 0, "masked": 0, "filter_pruned": 0} for _ in range(2))
    for node in graph.nodes.values():
        if node.role in ("producer", "depthwise") or (node.role == "opaque" and node.name in keep):
            counts = _layer_counts(node, graph, plan, keep.get(node.name))
            for key, count in zip(("dense", "masked", "filter_pruned"), counts, strict=True):
                operations[key] += 2 * _positions(node.layer) * count  # 2 FLOPs per multiply-add
                weights[key] += count
    return operations, weights


def _layer_counts(node: Node, graph: Graph, plan, mask) -> tuple[int, int, int]:
    """(dense, masked, slim) kernel weights of one layer with a kernel."""
    sizes = _kernel_sizes(node, graph, plan)
    dense = sum(full for full, _ in sizes.values())
    pruned = 0 if mask is None else int((~np.asarray(mask, bool)).sum())
    slim = dense if node.role == "opaque" else sum(kept for _, kept in sizes.values())
    return dense, dense - pruned, slim


def _kernel_sizes(node: Node, graph: Graph, plan) -> dict[str, tuple[int, int]]:
    """{kernel attribute: (full size, size in the slim model)} of a conv/depthwise/dense layer."""
    layer = node.layer
    c_in, c_out = graph.nodes[node.inbound[0]].channels, node.channels
    k_in, k_out = int(plan[node.inbound[0]].sum()), int(plan[node.name].sum())
    if node.role == "depthwise":
        size = int(np.prod(layer.kernel.shape))
        return {"kernel": (size, size // c_out * k_out)}
    if hasattr(layer, "pointwise_kernel"):
        depthwise, pointwise = (
            int(np.prod(w.shape)) for w in (layer.depthwise_kernel, layer.pointwise_kernel)
        )
        return {
            "depthwise_kernel": (depthwise, depthwise // c_in * k_in),
            "pointwise_kernel": (pointwise, pointwise // (c_in * c_out) * k_in * k_out),
        }
    size = int(np.prod(layer.kernel.shape))
    if node.role == "opaque":
        return {"kernel": (size, size)}
    return {"kernel": (size, size // (c_in * c_out) * k_in * k_out)}


def _positions(layer) -> int:
    """Spatial positions a kernel is applied at (1 for Dense on vectors)."""
    shape = layer.output.shape
    return int(np.prod(shape[1:-1])) if len(shape) > 2 else 1


def planned_parameters(graph: Graph, keep: Masks) -> int:
    """Parameters of the slim model of ``keep``, predicted from the channel plan."""
    plan, total = graph.plan(keep), 0
    for node in graph.nodes.values():
        for weight in node.weights:
            total += _planned_size(node, graph, plan, weight)
    return total


def _planned_size(node: Node, graph: Graph, plan, weight) -> int:
    size = int(np.prod(weight.shape))
    if node.role == "opaque" or len(weight.shape) == 0:
        return size
    if node.role in ("producer", "depthwise"):
        for attr, (_, kept) in _kernel_sizes(node, graph, plan).items():
            if weight is getattr(node.layer, attr):
                return kept
    out_full, out_kept = node.channels, int(plan[node.name].sum())
    return size // out_full * out_kept if weight.shape[-1] == out_full else size
