"""Baseline classifiers, sized from the data, and loading a user's own ``.keras`` model.

Every model ends in a softmax over ``num_classes`` (two units for binary tasks), so scores,
metrics and pruning treat binary and multi-class models alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from workbench.compat import keras
from workbench.data import Dataset

layers = keras.layers


def seed_cnn(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Build the classic small CNN of pruning tutorials.

    Conv2D(32)-MaxPool-Conv2D(64)-MaxPool-Conv2D(64)-Flatten-Dense(64)-Dense(classes).
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(32, 3, activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(64, 3, activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Conv2D(64, 3, activation="relu", name="conv3"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name="dense1"),
            layers.Dense(num_classes, activation="softmax", name="logits"),
        ],
        name="seed_cnn",
    )


def small_resnet(input_shape: tuple[int, int, int], num_classes: int, widths=(16, 32)) -> keras.Model:
    """Build a small ResNet: a stem, one residual block per width, global pooling, a softmax head.

    Each block is conv-BN-ReLU-conv-BN plus a shortcut (identity, or a strided 1x1 conv-BN when
    the width changes). The add couples the channels of the shortcut and the block's last conv,
    which structured pruning has to respect.
    """
    inputs = keras.Input(input_shape)
    x = _conv_bn(inputs, widths[0], 3, name="stem")
    x = layers.ReLU(name="stem_relu")(x)
    for index, width in enumerate(widths):
        stride = 1 if index == 0 else 2
        x = _residual_block(x, width, stride, name=f"block{index + 1}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name="small_resnet")


def _conv_bn(x, filters: int, kernel: int, name: str, strides: int = 1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(
        x
    )
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def _residual_block(x, width: int, stride: int, name: str):
    shortcut = x
    if stride != 1 or x.shape[-1] != width:
        shortcut = _conv_bn(x, width, 1, name=f"{name}_proj", strides=stride)
    y = layers.ReLU(name=f"{name}_relu1")(_conv_bn(x, width, 3, name=f"{name}_a", strides=stride))
    y = _conv_bn(y, width, 3, name=f"{name}_b")
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


BUILDERS: dict[str, Callable[[tuple[int, int, int], int], keras.Model]] = {
    "seed_cnn": seed_cnn,
    "small_resnet": small_resnet,
}


def build_model(name: str, dataset: Dataset) -> keras.Model:
    """Build the named baseline model sized for ``dataset``'s images and classes."""
    if name not in BUILDERS:
        raise ValueError(f"model must be one of {sorted(BUILDERS)} or a path to a .keras file, got {name!r}")
    return BUILDERS[name](dataset.image_shape, dataset.num_classes)


def load_user_model(path: str | Path, dataset: Dataset) -> keras.Model:
    """Load a user's ``.keras`` model and check that it fits ``dataset``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not a loadable ``.keras`` file, or its input shape or number of
            outputs doesn't match the data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix != ".keras":
        raise ValueError(f"model must be a Keras 3 .keras file, got {path.name}")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:  # Keras raises many kinds for broken archives
        raise ValueError(f"{path}: could not load the model: {err}") from err
    check_model_fits(model, dataset, where=str(path))
    return model


def check_model_fits(model: keras.Model, dataset: Dataset, where: str = "model") -> None:
    """Raise ValueError unless ``model`` takes ``dataset``'s images and outputs one score per class."""
    expected_input = tuple(dataset.image_shape)
    got_input = tuple(model.input_shape[1:])
    fits = len(got_input) == 3 and all(g in (None, e) for g, e in zip(got_input, expected_input, strict=True))
    if not fits:
        raise ValueError(
            f"{where}: input shape {got_input} does not match the data's images {expected_input} (H, W, C)"
        )
    outputs = model.output_shape[-1]
    if outputs != dataset.num_classes:
        raise ValueError(
            f"{where}: outputs {outputs} scores but {dataset.name} has {dataset.num_classes} classes "
            f"{list(dataset.class_names)}; expected a softmax with one unit per class"
        )
