"""Where does a model look? Input-gradient saliency and Grad-CAM for one image at a time.

Used to ask of a pruned model: does it still look at the lesion?
"""

from __future__ import annotations

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.model.compat import keras, tf
from workbench.model.heads import as_head


def input_gradients(model: keras.Model, image: np.ndarray, class_index: int) -> np.ndarray:
    """|∂p(class)/∂pixel| for one (H, W, C) image, summed over channels, scaled to [0, 1].

    p comes from the model's head (``workbench.model.heads``): class 1 of a one-sigmoid model is its unit.
    """
    head = as_head(model)
    x = tf.constant(image[np.newaxis], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        probability = head.probabilities(model(x, training=False))[0, class_index]
    saliency = np.abs(tape.gradient(probability, x).numpy()[0]).sum(axis=-1)
    return _unit_scale(saliency)


def last_conv_layer(model: keras.Model) -> str:
    """Name of the last Conv2D layer, where Grad-CAM looks."""
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise WorkbenchError(f"model {model.name!r} has no Conv2D layer for Grad-CAM")
    return convs[-1]


def grad_cam(model: keras.Model, image: np.ndarray, class_index: int, layer: str | None = None) -> np.ndarray:
    """Grad-CAM heatmap (H, W) in [0, 1]: the conv layer's channels weighted by their mean gradient.

    Selvaraju et al. (2017). The map is upsampled bilinearly to the image size.
    """
    layer, head = layer or last_conv_layer(model), as_head(model)
    x = tf.constant(image[np.newaxis], tf.float32)
    with tf.GradientTape() as tape:
        activations, outputs = _activations_and_output(model, layer, x, tape)
        probability = head.probabilities(outputs)[0, class_index]
    grads = tape.gradient(probability, activations)[0].numpy()
    weights = grads.mean(axis=(0, 1))
    cam = np.maximum((activations[0].numpy() * weights).sum(axis=-1), 0.0)
    resized = tf.image.resize(cam[..., np.newaxis], image.shape[:2], method="bilinear").numpy()[..., 0]
    return _unit_scale(resized)


def _activations_and_output(model: keras.Model, layer: str, x, tape: tf.GradientTape):
    """Run ``model`` on ``x``, returning ``layer``'s activations (watched by ``tape``) and the output."""
    if isinstance(model, keras.Sequential):
        # Keras 3 probe models over a Sequential's layers don't carry gradients; walk the layers.
        activations, h = None, x
        for each in model.layers:
            h = each(h, training=False)
            if each.name == layer:
                tape.watch(h)
                activations = h
        return activations, h
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])
    return probe(x, training=False)


def _unit_scale(values: np.ndarray) -> np.ndarray:
    top = values.max()
    return values / top if top > 0 else np.zeros_like(values)
