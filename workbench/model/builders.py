"""Baseline classifiers, sized from the data, and loading a user's own ``.keras`` model.

The builders end in a softmax over ``num_classes`` (two units for binary tasks), or in one
sigmoid unit per label for multi-label data; ``seed_cnn3d`` is ``seed_cnn`` for volumes. A user's model
may end in any head ``workbench.model.heads`` identifies: softmax, logits, one sigmoid unit (binary) or
L sigmoid units (multi-label).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from workbench.core.errors import DataMismatch, WorkbenchError
from workbench.data.dataset import Dataset
from workbench.model.compat import Functional, keras
from workbench.model.heads import Head, as_head, detect_head, saved_compile_config

layers = keras.layers


def seed_cnn(input_shape: tuple[int, int, int], num_classes: int, output: str = "softmax") -> keras.Model:
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
            layers.Dense(num_classes, activation=output, name="logits"),
        ],
        name="seed_cnn",
    )


def seed_cnn3d(
    input_shape: tuple[int, int, int, int], num_classes: int, output: str = "softmax"
) -> keras.Model:
    """Build ``seed_cnn``'s 3-D sibling for CT/MRI volumes (D, H, W, C).

    Conv3D(16)-MaxPool-Conv3D(32)-MaxPool-Flatten-Dense(32)-Dense(classes): small enough to train
    on a CPU at 16x32x32, and its Conv3D filters prune like Conv2D ones.
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv3D(16, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling3D(name="pool1"),
            layers.Conv3D(32, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling3D(name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(32, activation="relu", name="dense1"),
            layers.Dense(num_classes, activation=output, name="logits"),
        ],
        name="seed_cnn3d",
    )


def small_resnet(
    input_shape: tuple[int, int, int], num_classes: int, widths=(16, 32), output: str = "softmax"
) -> keras.Model:
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
    outputs = layers.Dense(num_classes, activation=output, name="logits")(x)
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


BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "seed_cnn": seed_cnn,
    "small_resnet": small_resnet,
    "seed_cnn3d": seed_cnn3d,
}
VOLUME_BUILDERS = ("seed_cnn3d",)


def build_model(name: str, dataset: Dataset) -> keras.Model:
    """Build the named baseline model sized for ``dataset``'s images and classes."""
    if name not in BUILDERS:
        raise WorkbenchError(
            f"model must be one of {sorted(BUILDERS)} or a path to a .keras file, got {name!r}"
        )
    if (name in VOLUME_BUILDERS) != dataset.is_volumetric:
        wanted = "volumes (N, D, H, W, C)" if name in VOLUME_BUILDERS else "2-D images (N, H, W, C)"
        hint = "seed_cnn3d" if dataset.is_volumetric else "seed_cnn or small_resnet"
        raise WorkbenchError(
            f"model {name!r} takes {wanted}, but the data has images of shape {dataset.image_shape}; "
            f"use {hint}"
        )
    output = "sigmoid" if dataset.task == "multilabel" else "softmax"
    return BUILDERS[name](dataset.image_shape, dataset.num_classes, output=output)


def load_user_model(
    path: str | Path,
    dataset: Dataset,
    head: str | None = None,
    *,
    custom_objects: dict | None = None,
    safe_mode: bool = True,
) -> keras.Model:
    """Load a user's ``.keras`` model, read its head, and check that it fits ``dataset``.

    The weights are exactly the file's. The model is compiled with its head's loss and no
    optimizer (see ``workbench.model.heads``), so later code reads the same head; nothing is trained.
    The workbench needs a Sequential or functional model (its layer graph is read for pruning)
    with one image input and one output.

    Args:
        head: overrides the head detection (one of ``workbench.model.heads.HEADS``).
        custom_objects: ``{name: class}`` of custom layers the file uses (or import the module
            that registers them first: ``import_user_modules``).
        safe_mode: False lets Keras run the Python code a ``Lambda`` layer holds; only for a
            file you trust.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not a loadable ``.keras`` file (the message says what it needs:
            a custom class, ``safe_mode=False``, a conversion), not a Sequential or functional
            model, its head can't be identified, or its input shape, task or number of outputs
            doesn't match the data.
    """
    path = Path(path)
    _check_model_path(path)
    if not isinstance(safe_mode, bool):
        raise WorkbenchError(f"safe_mode must be True or False, got {safe_mode!r}")
    model = _load_keras_file(path, custom_objects, safe_mode)
    check_built(model, where=str(path))
    try:
        found = detect_head(model, head, compile_config=saved_compile_config(path))
    except ValueError as err:
        raise WorkbenchError(f"{path}: {err}") from err
    check_model_fits(model, dataset, where=str(path), head=found)
    # Record the head's loss for later detection; no optimizer, so training still compiles its own.
    model.compile(optimizer=None, loss=found.loss())
    return model


def _check_model_path(path: Path) -> None:
    """Refuse what is not a ``.keras`` file, saying how to get one."""
    save_as = f"model.save('{path.stem}.keras')"
    if path.is_dir():
        raise WorkbenchError(
            f"model must be a Keras 3 .keras file, got the folder {path} (a TensorFlow SavedModel?); "
            f"load it where it was made and save it with {save_as}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix in (".h5", ".hdf5"):
        raise WorkbenchError(
            f"model must be a Keras 3 .keras file, got {path.name}, a legacy HDF5 file (Keras 2); convert it "
            f"once: keras.models.load_model('{path}').save('{path.with_suffix('.keras')}')"
        )
    if path.suffix != ".keras":
        raise WorkbenchError(f"model must be a Keras 3 .keras file, got {path.name}")


def _load_keras_file(path: Path, custom_objects: dict | None, safe_mode: bool) -> keras.Model:
    try:
        return keras.models.load_model(
            path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode
        )
    except Exception as err:  # Keras raises many kinds for broken archives
        if not zipfile.is_zipfile(path):  # Keras then says "File not found" of a file that is there
            raise WorkbenchError(f"{path}: not a .keras file (a .keras model is a zip archive)") from None
        raise WorkbenchError(f"{path}: {_why_not_loaded(path, err)}") from err


def _why_not_loaded(path: Path, err: Exception) -> str:
    """What a failed ``load_model`` needs from the user, in one line."""
    text = str(err)
    unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    if unknown:
        name = unknown.group(1)
        return (
            f"the model uses {name!r}, a custom class Keras does not know here; import the module that "
            f"defines and registers it (@keras.saving.register_keras_serializable) first, or pass "
            f"custom_objects={{{name!r}: {name}}} (notebooks: list the module in model_modules)"
        )
    if "safe_mode" in text:
        return (
            "the model has a Lambda layer holding Python code, which Keras runs only with safe_mode=False; "
            "pass safe_mode=False if you trust the file (load_user_model, baseline; notebooks: the "
            "safe_mode parameter)"
        )
    saved_by = _saved_keras_version(path)
    if saved_by and saved_by.split(".")[0] != keras.__version__.split(".")[0]:
        return f"could not load the model saved by Keras {saved_by} with Keras {keras.__version__}: {text}"
    return f"could not load the model: {text}"


def _saved_keras_version(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return str(json.loads(archive.read("metadata.json")).get("keras_version"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def import_user_modules(modules: list[str | Path] | tuple = ()) -> list[ModuleType]:
    """Import the Python modules (names, or paths to ``.py`` files) that define a model's custom layers.

    Importing runs their ``@keras.saving.register_keras_serializable`` decorators, so a ``.keras``
    file that uses the classes loads. A ``.py`` file is imported under its stem.

    Returns:
        The imported modules.

    Raises:
        FileNotFoundError: for a ``.py`` path that does not exist.
        ValueError: for a module that cannot be imported or fails while importing, naming it.
    """
    if isinstance(modules, str | Path):
        modules = [modules]
    return [_import_one(module) for module in modules]


def _import_one(module: str | Path) -> ModuleType:
    if not isinstance(module, str | Path):
        raise WorkbenchError(f"model_modules must hold module names or .py paths, got {module!r}")
    path = Path(module)
    if path.suffix == ".py" and not path.is_file():
        raise FileNotFoundError(f"model_modules: no such .py file: {path.resolve()}")
    try:
        return _import_file(path) if path.suffix == ".py" else importlib.import_module(str(module))
    except (ImportError, SyntaxError) as err:
        raise WorkbenchError(
            f"model_modules: could not import {str(module)!r} ({err}); expected a module name importable "
            "here or a path to a .py file"
        ) from err
    except Exception as err:  # the module's own code failed
        raise WorkbenchError(
            f"model_modules: importing {str(module)!r} failed: {type(err).__name__}: {err}"
        ) from err


def _import_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # Keras looks classes up by their module's name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[path.stem]
        raise
    return module


def dataset_task(dataset: Dataset) -> str:
    """'binary', 'multiclass' or 'multilabel': ``dataset.task`` if it has one, else read from its labels."""
    task = getattr(dataset, "task", None)
    if task is not None:
        return task
    if np.asarray(dataset.train.labels).ndim == 2 and np.asarray(dataset.train.labels).shape[1] > 1:
        return "multilabel"
    return "binary" if dataset.num_classes == 2 else "multiclass"


def _takes(input_shape: tuple, image_shape: tuple) -> bool:
    """Whether a model input of ``input_shape`` (None = any size) takes images of ``image_shape``."""
    return len(input_shape) == len(image_shape) and all(
        want in (None, got) for want, got in zip(input_shape, image_shape, strict=True)
    )


def check_built(model, where: str = "model") -> None:
    """Raise ValueError unless ``model`` is a built Sequential or functional model with one image input."""
    if not isinstance(model, keras.Model):
        raise WorkbenchError(f"model must be a Keras model (keras.Model), got {type(model).__name__}")
    if not isinstance(model, keras.Sequential | Functional):
        raise WorkbenchError(
            f"{where}: a subclassed model ({type(model).__name__}, layers wired in Python by its call) "
            "cannot be pruned: the workbench reads the layer graph of a Sequential or functional model "
            "(keras.Model(inputs, outputs)); build the same layers that way"
        )
    if not model.built or not getattr(model, "inputs", None):  # an unbuilt Sequential raises on .inputs
        raise WorkbenchError(
            f"model must be built with a known input shape (start it with keras.Input); {model.name!r} is not"
        )
    if len(model.inputs) > 1:
        raise WorkbenchError(
            f"{where}: {model.name!r} has {len(model.inputs)} inputs; the workbench prunes models with one "
            "image input (wrap the others, e.g. fixed clinical covariates, inside the model)"
        )


def batch_shape(shape: tuple) -> str:
    """'(N, 64, 64, 1)': a batch of arrays of ``shape``, as messages show it."""
    return "(" + ", ".join(["N", *(str(n) for n in shape)]) + ")"


def check_images(model: keras.Model, images, what: str = "images") -> np.ndarray:
    """``images`` as an array, or ValueError unless they fit the model's input and are finite, in [0, 1]."""
    images = np.asarray(images)
    expected = tuple(model.input_shape[1:])
    if images.ndim == 0 or not _takes(expected, images.shape[1:]):
        raise WorkbenchError(f"{what} must have shape {batch_shape(expected)}, got {images.shape}")
    if not np.issubdtype(images.dtype, np.number) or not np.isfinite(images).all():
        raise WorkbenchError(f"{what} must be finite numbers, got dtype {images.dtype} or NaN/inf")
    if images.size and (images.min() < 0 or images.max() > 1):
        raise WorkbenchError(
            f"{what} must be scaled to [0, 1] (as the loaders give them), "
            f"got values {images.min():g}..{images.max():g}"
        )
    return images


def check_model_fits(
    model: keras.Model, dataset: Dataset, where: str = "model", head: Head | str | None = None
) -> Head:
    """Raise ValueError unless ``model`` takes ``dataset``'s images and its head fits the task.

    Returns the model's head.
    A binary task fits a 2-way softmax/logits head or one sigmoid unit; a C-class task a C-way
    softmax/logits head; an L-label task L sigmoid units.
    """
    expected_input = tuple(dataset.image_shape)
    got_input = tuple(model.input_shape[1:])
    if not _takes(got_input, expected_input):
        raise DataMismatch(
            f"{where}: input shape {got_input} does not match the data's images {expected_input} (H, W, C)"
        )
    try:
        head = as_head(model, head)
    except ValueError as err:
        raise DataMismatch(f"{where}: {err}") from err
    task = dataset_task(dataset)
    if head.task != task or head.classes != dataset.num_classes:
        raise DataMismatch(
            f"{where}: a {head.kind} head over {head.units} unit(s) ({head.task}, {head.classes} classes) "
            f"does not fit {dataset.name}, a {task} task with {dataset.num_classes} classes "
            f"{list(dataset.class_names)}; expected {_expected_heads(task, dataset.num_classes)}"
        )
    return head


def _expected_heads(task: str, classes: int) -> str:
    if task == "multilabel":
        return f"{classes} sigmoid units (one per label)"
    if task == "binary":
        return "one sigmoid unit, or 2 softmax/logit units"
    return f"{classes} softmax/logit units (one per class)"
