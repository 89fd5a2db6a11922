"""Slimming follows every keras.applications family: the smallest member of each, under a head.

Each model is slimmed at half of every layer's filters (a random structured mask, coupled) and
compared with the masked reference of the same mask: equal within 1e-4, and fewer parameters.
Construction dominates the time, so each model is built once: the slim model is made first, then
the model itself becomes the masked reference in place (``zero_pruned_weights``), which
``apply_masks`` would otherwise copy (a third build).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from workbench.model.compat import keras
from workbench.model.graph import Graph, flops, planned_parameters
from workbench.model.registry import flat_layers, prunable_layers
from workbench.prune.pruning import PruneSpec, masks_from_scores, zero_pruned_weights
from workbench.prune.slim import couple_masks, slim_model, slim_report

TOLERANCE = 1e-4
# (family module in keras.applications, its smallest member, the smallest input side it takes)
FAMILIES = [
    ("convnext", "ConvNeXtTiny", 32),
    ("densenet", "DenseNet121", 32),
    ("efficientnet", "EfficientNetB0", 32),
    ("efficientnet_v2", "EfficientNetV2B0", 32),
    ("inception_resnet_v2", "InceptionResNetV2", 75),
    ("inception_v3", "InceptionV3", 75),
    ("mobilenet", "MobileNet", 32),
    ("mobilenet_v2", "MobileNetV2", 32),
    ("mobilenet_v3", "MobileNetV3Small", 32),
    ("nasnet", "NASNetMobile", 32),
    ("resnet", "ResNet50", 32),
    ("resnet_v2", "ResNet50V2", 32),
    ("vgg16", "VGG16", 32),
    ("vgg19", "VGG19", 32),
    ("xception", "Xception", 75),
]


def _families_in_keras() -> set[str]:
    """The module of every model constructor in keras.applications: one module per family."""
    constructors = (getattr(keras.applications, n) for n in dir(keras.applications) if n[:1].isupper())
    return {function.__module__.rsplit(".", 1)[-1] for function in constructors}


def test_FAMILIES_CoverEveryModelFamilyOfKerasApplications():
    assert {family for family, _, _ in FAMILIES} == _families_in_keras()
    for family, name, _ in FAMILIES:
        assert getattr(keras.applications, name).__module__.endswith("." + family)


def backbone_under_head(name: str, side: int) -> keras.Model:
    """``name`` without its top, pooled, as one layer under a 2-logit Dense head (as model_zoo builds)."""
    keras.utils.set_random_seed(0)
    backbone = getattr(keras.applications, name)(
        input_shape=(side, side, 3), weights=None, include_top=False, pooling="avg"
    )
    inputs = keras.Input((side, side, 3))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(backbone(inputs)))


def randomise_batchnorm(model: keras.Model, seed: int = 0) -> None:
    """Random BatchNorm γ, β and statistics: at init (β = 0, mean 0) a dead channel stays zero by
    luck, and outputs of some families fall to 1e-20, where any two models agree within 1e-4."""
    rng = np.random.default_rng(seed)
    for layer in flat_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            values = {"gamma": rng.uniform(0.5, 1.5, shape), "beta": rng.normal(0, 0.5, shape)}
            values |= {
                "moving_mean": rng.normal(0, 0.5, shape),
                "moving_variance": rng.uniform(0.5, 2, shape),
            }
            for attr, value in values.items():
                if getattr(layer, attr, None) is not None:  # scale=False: no γ, center=False: no β
                    getattr(layer, attr).assign(value)


def half_the_filters(model: keras.Model, seed: int = 0) -> dict[str, np.ndarray]:
    """A random structured mask at 50% of every layer's units, coupled so it can be slimmed."""
    infos = prunable_layers(model)
    rng = np.random.default_rng(seed)
    scores = {info.name: rng.random(info.units_shape) for info in infos}
    spec = PruneSpec(criterion="random", granularity="structured", sparsity=0.5, scope="layerwise")
    return couple_masks(model, masks_from_scores(scores, spec, infos).keep, quiet=True)


@pytest.mark.slow
@pytest.mark.parametrize("family, name, side", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_slim_model_EveryKerasApplicationsFamily_EqualsTheMaskedReference_AndIsSmaller(family, name, side):
    start = time.perf_counter()
    model = backbone_under_head(name, side)
    built = time.perf_counter() - start
    randomise_batchnorm(model)
    images = np.random.default_rng(0).uniform(0, 255, (2, side, side, 3)).astype(np.float32)
    dense_out, dense_params = np.asarray(model(images)), model.count_params()
    keep = half_the_filters(model)
    slim = slim_model(model, keep)
    planned, slim_flops = planned_parameters(Graph.of(model), keep), flops(model, keep)["filter_pruned"]
    zero_pruned_weights(model, keep, structured=True)  # the model is now the masked reference
    reference = np.asarray(model(images))
    gap, scale = float(np.abs(np.asarray(slim(images)) - reference).max()), float(np.abs(reference).max())
    print(  # the family table of the closing note (pytest -s)
        f"\n{family:20s} {name:18s} {side:3d} px  params {dense_params:>10,d} -> {slim.count_params():>10,d}"
        f"  max|diff| {gap:.1e} of outputs up to {scale:.1e}  {time.perf_counter() - start:5.1f} s"
        f" (build {built:.1f} s)  kept whole: {len(slim_report(model))}"
    )
    assert np.abs(reference - dense_out).max() > 1e-3 * scale, "the mask should change the model"
    # relative to the outputs, which range from 4e-4 (VGG) to 80 (NASNet) at random init
    assert gap <= TOLERANCE * scale
    assert slim.count_params() < dense_params
    assert slim.count_params() == planned, "the graph predicts the slim model's size"
    assert flops(slim)["dense"] == slim_flops, "and what it costs"
