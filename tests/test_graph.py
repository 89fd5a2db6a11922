"""The one channel graph: hand-counted FLOPs, coupling, the masked reference, and slimming by kind."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis.curves import Evaluator
from workbench.model.compat import keras
from workbench.model.graph import Graph, flops, planned_parameters
from workbench.model.registry import KINDS, prunable_layers
from workbench.prune.pruning import apply_masks
from workbench.prune.slim import couple_masks, slim_model, slim_report

layers = keras.layers
TOLERANCE = 1e-5


def _keep(model: keras.Model, pruned: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """A structured mask that prunes the listed units and keeps everything else."""
    keep = {}
    for info in prunable_layers(model):
        units = np.ones(int(np.prod(info.units_shape)), bool)
        units[pruned.get(info.name, [])] = False
        keep[info.name] = np.broadcast_to(units.reshape(info.units_shape), info.shape).copy()
    return keep


def _random_keep(model: keras.Model, seed: int, prune: float = 0.5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pruned = {  # unit 0 always stays: a layer with no unit left would make the output constant
        info.name: 1 + np.flatnonzero(rng.random(int(np.prod(info.units_shape)) - 1) < prune)
        for info in prunable_layers(model)[:-1]
    }
    return _keep(model, pruned)


def _randomise_batchnorm(model: keras.Model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _randomise_batchnorm(layer, seed)
        elif isinstance(layer, layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights(
                [rng.normal(1, 0.3, shape), rng.normal(0, 0.5, shape), rng.normal(0, 0.5, shape)]
                + [rng.uniform(0.5, 2.0, shape)]
            )


def _images(model: keras.Model, n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).random((n, *model.input_shape[1:])).astype(np.float32)


def _gap(a: keras.Model, b: keras.Model, images: np.ndarray) -> float:
    return float(np.abs(np.asarray(a(images)) - np.asarray(b(images))).max())


def residual_net() -> keras.Model:
    inputs = keras.Input((8, 8, 2))
    a = layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    x = layers.ReLU(name="relu")(layers.BatchNormalization(name="bn")(a))
    b = layers.Conv2D(4, 3, padding="same", name="b")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(layers.Add(name="add")([x, b]))
    return keras.Model(inputs, layers.Dense(2, activation="softmax", name="out")(x))


def concat_net() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    a = layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    b = layers.Conv2D(2, 1, activation="relu", name="b")(inputs)
    x = layers.Concatenate(name="cat")([a, b])
    x = layers.Conv2D(5, 1, activation="relu", name="c")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(2, activation="softmax", name="out")(x))


def se_net() -> keras.Model:
    """A squeeze-and-excitation block: the sigmoid gate multiplies the main path's channels."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="main")(inputs)
    x = layers.ReLU(name="relu")(layers.BatchNormalization(name="bn")(x))
    s = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    s = layers.Conv2D(2, 1, activation="relu", name="reduce")(s)
    s = layers.Conv2D(8, 1, activation="sigmoid", name="expand")(s)
    x = layers.Multiply(name="excite")([x, s])
    x = layers.Conv2D(4, 1, name="project")(x)
    x = layers.Flatten(name="flat")(layers.MaxPooling2D(4, name="pool")(x))
    return keras.Model(inputs, layers.Dense(2, activation="softmax", name="out")(x))


def mobile_net() -> keras.Model:
    """Depthwise and separable convs, ZeroPadding, Rescaling, Dropout, a channel-preserving Reshape."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Rescaling(1 / 2, name="scale")(inputs)
    x = layers.Conv2D(6, 1, name="expand")(x)
    x = layers.ReLU(6.0, name="relu6")(layers.BatchNormalization(name="bn1")(x))
    x = layers.ZeroPadding2D(name="pad")(x)
    x = layers.DepthwiseConv2D(3, name="dw")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.SeparableConv2D(5, 3, padding="same", activation="relu", name="sep")(x)
    x = layers.Dropout(0.5, name="drop")(layers.AveragePooling2D(2, name="avg")(x))
    x = layers.Reshape((16, 5), name="rows")(x)
    x = layers.GlobalMaxPooling1D(name="gmp")(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="out")(x))


def volume_net() -> keras.Model:
    inputs = keras.Input((6, 6, 6, 1))
    x = layers.Conv3D(4, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = layers.ReLU(name="r1")(layers.BatchNormalization(name="bn1")(x))
    x = layers.MaxPooling3D(name="pool")(x)
    x = layers.Conv3D(6, 3, padding="same", activation="relu", name="c2")(x)
    x = layers.GlobalAveragePooling3D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(2, activation="softmax", name="out")(x))


def nested_net() -> keras.Model:
    """A residual backbone used as one layer under a pooling + dense head, as users build them."""
    backbone = residual_net()
    backbone = keras.Model(backbone.input, backbone.get_layer("add").output, name="backbone")
    inputs = keras.Input((8, 8, 2))
    x = layers.GlobalAveragePooling2D(name="head_gap")(backbone(inputs))
    return keras.Model(inputs, layers.Dense(2, activation="softmax", name="head")(x))


def ops_net() -> keras.Model:
    """Layers written as Keras ops, as MobileNetV3 and ConvNeXt write them: a hard-swish
    (x * relu6(x + 3) / 6), a residual ``x + relu(y)``, and a sigmoid gate multiplied in."""
    ops = keras.ops
    inputs = keras.Input((8, 8, 3))
    x = layers.BatchNormalization(name="bn")(layers.Conv2D(6, 3, padding="same", name="a")(inputs))
    x = x * ops.relu6(x + 3.0) * (1.0 / 6.0)
    x = x + ops.relu(layers.Conv2D(6, 1, name="b")(x))
    squeezed = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    x = ops.multiply(x, ops.sigmoid(layers.Conv2D(6, 1, name="gate")(squeezed)))
    x = layers.Conv2D(4, 1, name="c")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(2, activation="softmax", name="out")(x))


def nested_sequential_net() -> keras.Model:
    """A keras.Sequential block used as one layer of a functional model, fed by a pruned conv."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(6, 3, padding="same", name="stem")(inputs)
    block = keras.Sequential(
        [
            layers.Conv2D(5, 3, padding="same", name="inner"),
            layers.BatchNormalization(name="inner_bn"),
            layers.ReLU(name="inner_relu"),
        ],
        name="block",
    )
    x = layers.GlobalAveragePooling2D(name="gap")(block(x))
    return keras.Model(inputs, layers.Dense(2, activation="softmax", name="out")(x))


BUILDERS = {
    "residual": residual_net,
    "concat": concat_net,
    "squeeze_excite": se_net,
    "depthwise_separable": mobile_net,
    "conv3d": volume_net,
    "nested": nested_net,
    "keras_ops": ops_net,
    "nested_sequential": nested_sequential_net,
}


# --- FLOPs against a hand count -----------------------------------------------------------------


def test_flops_OfAResidualModel_MatchAHandCount_AndFollowTheAdd():
    model = residual_net()
    # a: 8x8 positions x 3x3x2x4, b: 8x8 x 3x3x4x4, out: 4x2; two FLOPs per multiply-add
    assert flops(model)["dense"] == 2 * (64 * 72 + 64 * 144 + 8)
    coupled = flops(model, _keep(model, {"a": [0], "b": [0]}))
    # channel 0 of the add is gone from a, bn, b and the dense input: 3 of 4 channels stay
    assert coupled["filter_pruned"] == 2 * (64 * 9 * 2 * 3 + 64 * 9 * 3 * 3 + 3 * 2)
    uncoupled = flops(model, _keep(model, {"a": [0], "b": [1]}))
    assert uncoupled["filter_pruned"] == flops(model)["dense"], "b still adds into channel 0, a into 1"
    assert uncoupled["masked"] == 2 * (64 * 72 + 64 * 144 + 8) - 2 * 64 * (18 + 36)


def test_flops_OfAConcatModel_MatchAHandCount():
    model = concat_net()
    assert flops(model)["dense"] == 2 * (64 * 27 * 4 + 64 * 3 * 2 + 64 * 6 * 5 + 5 * 2)
    pruned = flops(model, _keep(model, {"a": [1], "b": [0], "c": [0, 1]}))
    assert pruned["filter_pruned"] == 2 * (64 * 27 * 3 + 64 * 3 * 1 + 64 * 4 * 3 + 3 * 2)


# --- the graph ------------------------------------------------------------------------------------


def test_Graph_OfANestedModel_OpensTheBackbone_AndCouplesAcrossItsAdd():
    graph = Graph(nested_net())
    assert {"a", "bn", "b", "add", "head_gap", "head"} <= set(graph.nodes)
    assert graph.nodes["a"].inbound == tuple(n for n in graph.nodes if graph.nodes[n].role == "input")
    assert graph.nodes["head_gap"].inbound == ("add",)
    assert graph.coupled_groups() == [("a", "b")]


def test_Graph_SqueezeExcite_CouplesTheGateWithTheMainPath():
    assert Graph(se_net()).coupled_groups() == [("main", "expand")]


def test_registry_Conv3D_IsPrunableByFilters():
    infos = {info.name: info for info in prunable_layers(volume_net())}
    assert infos["c1"].shape == (3, 3, 3, 1, 4) and infos["c1"].units_shape == (4,)
    assert KINDS[layers.Conv3D].role == "producer"


# --- one masked reference, one slim ---------------------------------------------------------------


@pytest.mark.parametrize("builder", sorted(BUILDERS))
@pytest.mark.parametrize("seed", [0, 1])
def test_slim_model_EqualsTheMaskedReference_AndCostsWhatTheGraphPredicts(builder, seed):
    keras.utils.set_random_seed(seed)
    model = BUILDERS[builder]()
    _randomise_batchnorm(model, seed)
    keep = couple_masks(model, _random_keep(model, seed))
    reference = apply_masks(model, keep, structured=True)
    slim = slim_model(model, keep)
    images = _images(model)
    assert np.asarray(reference(images)).std(axis=0).max() > 0, "a constant output would prove nothing"
    assert _gap(slim, reference, images) <= TOLERANCE
    assert slim.count_params() == planned_parameters(Graph(model), keep) <= model.count_params()
    assert flops(slim)["dense"] == flops(model, keep)["filter_pruned"]
    assert slim_report(model) == {}


def test_slim_model_SqueezeExcite_RemovesTheGateFiltersOfDeadChannels():
    model = se_net()
    _randomise_batchnorm(model)
    keep = _keep(model, {"main": [0, 3, 5]})  # the gate keeps all 8: channels die by the product
    slim = slim_model(model, keep)
    assert slim.get_layer("expand").kernel.shape[-1] == 5
    assert slim.get_layer("project").kernel.shape[-2] == 5
    assert _gap(slim, apply_masks(model, keep, structured=True), _images(model)) <= TOLERANCE


def test_slim_model_OpaqueLayer_IsReportedAndKeptWhole_AndStillEqual():
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, name="c1")(inputs)
    x = layers.LayerNormalization(name="ln")(x)
    x = layers.Conv2D(4, 1, name="c2")(x)
    model = keras.Model(inputs, layers.Dense(2, name="out")(layers.Flatten(name="flat")(x)))
    keep = _keep(model, {"c1": [1], "c2": [2]})
    assert "LayerNormalization" in slim_report(model)["ln"]
    slim = slim_model(model, keep)
    assert slim.get_layer("c1").kernel.shape[-1] == 4, "the LayerNorm reads every channel"
    assert slim.get_layer("c2").kernel.shape[-1] == 3
    assert _gap(slim, apply_masks(model, keep, structured=True), _images(model)) <= TOLERANCE


def test_Graph_KerasOps_AreFollowed_ScalarArithmeticChannelwise_TensorOpsMergeAndMultiply():
    graph = Graph(ops_net())
    roles = {n.layer.name: n.role for n in graph.nodes.values() if n.call}
    assert set(roles.values()) == {"channelwise", "merge", "multiply"}, roles
    assert graph.coupled_groups() == [("a", "b", "gate")], "the op add and op multiply couple them"


def test_slim_model_NestedSequential_IsResizedToTheChannelsFedToIt():
    model = nested_sequential_net()
    keep = _keep(model, {"stem": [0, 2], "inner": [1]})
    slim = slim_model(model, keep)
    assert slim.get_layer("block").get_layer("inner").kernel.shape[-2:] == (4, 4)
    assert _gap(slim, apply_masks(model, keep, structured=True), _images(model)) <= TOLERANCE


def test_slim_model_BatchNormWithoutScale_ZeroesTheMeanOfDeadChannels_AndStillEquals():
    """Inception's BatchNorm(scale=False): no γ to zero, so a dead channel left -mean/σ + β."""
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, use_bias=False, name="c1")(inputs)
    x = layers.ReLU(name="r1")(layers.BatchNormalization(scale=False, name="bn")(x))
    x = layers.Conv2D(3, 1, name="c2")(x)
    model = keras.Model(inputs, layers.Dense(2, name="out")(layers.Flatten(name="flat")(x)))
    bn = model.get_layer("bn")
    bn.moving_mean.assign([0.5, -1.0, 0.3, 0.8])
    bn.beta.assign([0.2, 0.4, -0.6, 0.1])
    keep = _keep(model, {"c1": [1, 3]})
    reference = apply_masks(model, keep, structured=True)
    dead = np.asarray(keras.Model(reference.input, reference.get_layer("bn").output)(_images(model)))
    assert not dead[..., [1, 3]].any(), "a dead channel is zero after the BatchNorm of the reference"
    slim = slim_model(model, keep)
    assert slim.get_layer("c1").kernel.shape[-1] == 2
    assert _gap(slim, reference, _images(model)) <= TOLERANCE


def _op_between_convs(op) -> keras.Model:
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, name="c1")(inputs)
    x = layers.Conv2D(4, 1, name="c2")(op(x))
    return keras.Model(inputs, layers.Dense(2, name="out")(layers.Flatten(name="flat")(x)))


def test_slim_model_KerasOpThatMapsZeroElsewhere_KeepsTheChannelsItFeeds():
    model = _op_between_convs(lambda x: x + 3.0)  # a dead channel of c1 reaches c2 as 3.0
    keep = _keep(model, {"c1": [1, 3], "c2": [0]})
    slim = slim_model(model, keep)
    assert slim.get_layer("c1").kernel.shape[-1] == 4
    assert slim.get_layer("c2").kernel.shape[-1] == 3
    assert _gap(slim, apply_masks(model, keep, structured=True), _images(model)) <= TOLERANCE


@pytest.mark.parametrize(
    "op, why",
    [
        (lambda x: keras.ops.softmax(x), "the Keras op Softmax is not in"),
        (lambda x: x * np.arange(1, 5, dtype="float32"), "constant array"),
        (lambda x: x / keras.ops.exp(x), "divides by, or raises to the power of, a tensor"),
        (lambda x: keras.ops.add(*keras.ops.split(x, 2, axis=-1)), "it has 2 outputs"),
    ],
    ids=["softmax", "per_channel_constant", "divide_by_tensor", "split"],
)
def test_slim_model_KerasOpItCannotFollow_IsNamedAndKeptWhole_AndStillEqual(op, why):
    model = _op_between_convs(op)
    keep = _keep(model, {"c1": [1], "c2": [2]})
    opaque = slim_report(model)
    assert len(opaque) == 1 and why in next(iter(opaque.values())), opaque
    slim = slim_model(model, keep)
    assert slim.get_layer("c1").kernel.shape[-1] == 4, "the op reads every channel"
    assert slim.get_layer("c2").kernel.shape[-1] == 3
    assert _gap(slim, apply_masks(model, keep, structured=True), _images(model)) <= TOLERANCE


def test_Evaluator_Structured_GivesTheProbabilitiesOfTheMaskedReference(tiny_dataset):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(tiny_dataset.image_shape)
    x = layers.Conv2D(4, 3, use_bias=False, name="c1")(inputs)
    x = layers.ReLU(name="r1")(layers.BatchNormalization(name="bn1")(x))
    x = layers.Conv2D(4, 3, name="c2")(layers.MaxPooling2D(name="pool")(x))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, layers.Dense(2, activation="softmax", name="out")(x))
    _randomise_batchnorm(model)
    keep = _keep(model, {"c1": [0, 2], "c2": [1]})
    evaluator = Evaluator(model, tiny_dataset.val, tiny_dataset.test)
    _, structured = evaluator.probabilities(keep, structured=True)
    reference = apply_masks(model, keep, structured=True).predict(tiny_dataset.test.images, verbose=0)
    np.testing.assert_allclose(structured, reference, atol=1e-5)
    _, dense = evaluator.probabilities(_keep(model, {}))
    np.testing.assert_allclose(dense, model.predict(tiny_dataset.test.images, verbose=0), atol=1e-5)


def test_graph_Of_IsBuiltOncePerModel_AndDoesNotKeepTheModelAlive():
    import gc
    import weakref

    model = residual_net()
    graph = Graph.of(model)
    assert Graph.of(model) is graph and Graph.of(residual_net()) is not graph
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None, "the cache holds graphs by their model weakly"
    assert graph.coupled_groups(), "a graph outlives its model and still answers"
