"""Saliency maps point at what drives the prediction, for Sequential and functional models."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis.saliency import grad_cam, input_gradients, last_conv_layer
from workbench.model.builders import small_resnet
from workbench.model.compat import keras


def _patch_detector():
    """A fixed linear model whose class-1 score depends only on pixels [2:5, 2:5]."""
    weights = np.zeros((8 * 8, 2), np.float32)
    patch = np.zeros((8, 8), bool)
    patch[2:5, 2:5] = True
    weights[patch.ravel(), 1] = 1.0
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")]
    )
    model.layers[-1].set_weights([weights, np.zeros(2, np.float32)])
    return model, patch


def test_input_gradients_LightUpOnlyThePixelsThatMatter():
    model, patch = _patch_detector()
    saliency = input_gradients(model, np.full((8, 8, 1), 0.1, np.float32), class_index=1)
    assert saliency.shape == (8, 8) and saliency.max() == 1.0
    assert np.all(saliency[~patch] == 0) and np.all(saliency[patch] > 0)


def test_grad_cam_WorksForSequentialAndFunctionalModels(trained_tiny):
    model, data = trained_tiny
    cam = grad_cam(model, data.test.images[1], class_index=1)
    assert cam.shape == (24, 24) and 0.0 <= cam.min() and cam.max() <= 1.0
    resnet = small_resnet((16, 16, 1), 2)
    cam = grad_cam(resnet, np.random.default_rng(0).random((16, 16, 1), np.float32), class_index=0)
    assert cam.shape == (16, 16)
    assert last_conv_layer(resnet) == "block2_b_conv"


def test_grad_cam_NoConvLayer_RaisesValueError():
    model, _ = _patch_detector()
    with pytest.raises(ValueError, match="no Conv2D layer"):
        grad_cam(model, np.zeros((8, 8, 1), np.float32), 1)


def test_saliency_OfAOneSigmoidModel_ReadsItsUnitAsClassOne():
    """p(class 1) of a one-sigmoid head is its unit; class 0 is 1 − p, the same map."""
    from workbench.model.heads import predict_probabilities

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten()])
    model.add(keras.layers.Dense(1, activation="sigmoid"))
    image = np.random.default_rng(0).random((8, 8, 1)).astype(np.float32)
    one, zero = input_gradients(model, image, 1), input_gradients(model, image, 0)
    np.testing.assert_allclose(one, zero, atol=1e-6)
    assert one.max() == pytest.approx(1.0)
    assert grad_cam(model, image, 1).shape == (8, 8)
    probs = predict_probabilities(model, image[None])
    assert probs.shape == (1, 2) and probs[0, 1] == pytest.approx(float(model(image[None])[0, 0]))
