"""keras.applications backbones nested under a head, as users build them: score -> mask -> slim -> export.

32x32 inputs and ``weights=None`` keep it fast; BatchNorm statistics are randomised so a pruned
channel that is not pinned would show (a fresh BN is nearly the identity).

Every family is checked as a user builds it (``keras.applications.DenseNet121`` and so on: every
layer can be slimmed). The whole path, gradients, slimming and the LiteRT export, runs on each
family's own builder with fewer repeated blocks: the same layer kinds and the same couplings
(chained concatenations, conv and identity shortcuts, squeeze-excite and skip adds), at a fraction
of the cost. Converting EfficientNetB0's 16 blocks to LiteRT took 64 s of its 110 s.
"""

from __future__ import annotations

import numpy as np
import pytest
from keras.src.applications import densenet, efficientnet, resnet

from workbench.model.compat import keras
from workbench.model.graph import Graph, flops, planned_parameters
from workbench.prune.export import TFLiteModel, save_keras, to_tflite
from workbench.prune.pruning import PruneSpec, apply_masks, make_masks
from workbench.prune.scores import Scorer
from workbench.prune.slim import couple_masks, slim_model, slim_report

SHAPE = (32, 32, 3)
TOLERANCE = 1e-4
AS_USERS_BUILD_THEM = ["MobileNetV2", "DenseNet121", "ResNet50", "EfficientNetB0"]


def _short_resnet(**options) -> keras.Model:
    def stacks(x):  # ResNet50's four stacks at a quarter of its widths, one conv-shortcut block
        x = resnet.stack_residual_blocks_v1(x, 16, 1, stride1=1, name="conv2")  # each, and an
        x = resnet.stack_residual_blocks_v1(x, 32, 1, name="conv3")  # identity block last
        x = resnet.stack_residual_blocks_v1(x, 64, 1, name="conv4")
        return resnet.stack_residual_blocks_v1(x, 128, 2, name="conv5")

    return resnet.ResNet(stacks, preact=False, use_bias=True, name="resnet_short", **options)


# The same families with fewer repeated blocks or narrower layers (keras.applications' own
# builders, which its DenseNet121, ResNet50 and EfficientNetB0 call with more repeats).
SHORT = {
    "MobileNetV2": lambda **options: keras.applications.MobileNetV2(alpha=0.35, **options),
    "DenseNet": lambda **options: densenet.DenseNet([1, 1, 1, 2], name="densenet_short", **options),
    "ResNet": _short_resnet,
    # stem, a squeeze-excite block without expansion, then an expanding one and its skip-add twin
    "EfficientNet": lambda **options: efficientnet.EfficientNet(
        1.0, 1.0, 224, blocks_args=efficientnet.DEFAULT_BLOCKS_ARGS[:2], name="efficientnet_short", **options
    ),
}


def nested(backbone: str, seed: int = 0) -> keras.Model:
    """``backbone`` (weights=None; a keras.applications name or a ``SHORT`` family) as one layer
    under GlobalAveragePooling + Dense(2, softmax)."""
    keras.utils.set_random_seed(seed)
    build = SHORT.get(backbone) or getattr(keras.applications, backbone)
    base = build(include_top=False, weights=None, input_shape=SHAPE)
    inputs = keras.Input(SHAPE)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(base(inputs))
    head = keras.layers.Dense(2, activation="softmax", name="head_out", kernel_initializer="he_normal")
    model = keras.Model(inputs, head(x), name=f"{backbone}_nested")
    _randomise_batchnorm(base, seed)
    return model


def _randomise_batchnorm(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape if layer.gamma is not None else layer.beta.shape
            values = {"gamma": rng.normal(1, 0.2, shape), "beta": rng.normal(0, 0.3, shape)}
            values |= {
                "moving_mean": rng.normal(0, 0.3, shape),
                "moving_variance": rng.uniform(0.5, 2, shape),
            }
            for name, value in values.items():
                if getattr(layer, name, None) is not None:
                    getattr(layer, name).assign(value)


@pytest.mark.parametrize("backbone", AS_USERS_BUILD_THEM)
def test_backbone_AsUsersBuildIt_EveryLayerCanBeSlimmed(backbone):
    model = nested(backbone)
    assert slim_report(model) == {}, "every layer of the backbone can be slimmed"
    assert Graph(model).prunable, "the graph sees the nested backbone's layers"


@pytest.mark.parametrize("backbone", list(SHORT))
def test_backbone_ScoreMaskSlimExport_EqualsTheMaskedReference_AndShrinksAsPredicted(backbone, tmp_path):
    model = nested(backbone)
    rng = np.random.default_rng(0)
    images = rng.random((8, *SHAPE)).astype(np.float32)
    scorer = Scorer(model, images, np.arange(8) % 2)
    spec = PruneSpec(criterion="taylor", granularity="structured", sparsity=0.5, scope="layerwise")
    keep = couple_masks(model, make_masks(scorer, spec).keep)
    graph = Graph(model)
    assert slim_report(model) == {}, "every layer of the backbone can be slimmed"

    reference = apply_masks(model, keep, structured=True)
    slim = slim_model(model, keep)
    expected = np.asarray(reference(images))
    assert np.abs(expected - np.asarray(slim(images))).max() <= TOLERANCE

    assert slim.count_params() == planned_parameters(graph, keep) < model.count_params()
    cost = flops(model, keep, graph)
    assert flops(slim)["dense"] == cost["filter_pruned"] < cost["dense"]

    loaded = keras.models.load_model(save_keras(slim, tmp_path / "slim.keras"), compile=False)
    np.testing.assert_allclose(np.asarray(loaded(images)), expected, atol=TOLERANCE)
    lite = TFLiteModel(to_tflite(slim), batch_size=len(images), num_threads=1)
    np.testing.assert_allclose(lite(images), expected, atol=TOLERANCE)
