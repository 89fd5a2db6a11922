"""keras.applications backbones nested under a head, as users build them: score -> mask -> slim -> export.

32x32 inputs and ``weights=None`` keep it fast; BatchNorm statistics are randomised so a pruned
channel that is not pinned would show (a fresh BN is nearly the identity).
"""

from __future__ import annotations

import numpy as np
import pytest

from workbench.model.compat import keras
from workbench.model.graph import Graph, flops, planned_parameters
from workbench.prune.export import TFLiteModel, save_keras, to_tflite
from workbench.prune.pruning import PruneSpec, apply_masks, make_masks
from workbench.prune.scores import Scorer
from workbench.prune.slim import couple_masks, slim_model, slim_report

SHAPE = (32, 32, 3)
TOLERANCE = 1e-4
BACKBONES = [
    "MobileNetV2",
    pytest.param("DenseNet121", marks=pytest.mark.slow),
    pytest.param("ResNet50", marks=pytest.mark.slow),
    pytest.param("EfficientNetB0", marks=pytest.mark.slow),
]


def nested(backbone: str, seed: int = 0) -> keras.Model:
    """``backbone`` (weights=None) as one layer under GlobalAveragePooling + Dense(2, softmax)."""
    keras.utils.set_random_seed(seed)
    base = getattr(keras.applications, backbone)(include_top=False, weights=None, input_shape=SHAPE)
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


@pytest.mark.parametrize("backbone", BACKBONES)
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
