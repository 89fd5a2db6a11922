"""Seeded training, and a cache of trained baselines keyed by (data, model, seed, recipe).

A baseline trained once is reused: ``baseline(dataset)`` trains on the first call and loads
from the cache afterwards (``data/cache``, or the user's cache folder when the data folder is
read-only: see ``workbench.core.paths``). Cache writes go to a temporary file
that is renamed into place, so a killed training leaves nothing a later run would load.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from workbench.core import cache, paths
from workbench.core.cache import check_number, read_cached
from workbench.core.errors import WorkbenchError
from workbench.core.fs import atomic_path, write_atomically
from workbench.core.progress import Progress, check_progress
from workbench.data.dataset import Dataset
from workbench.model.builders import build_model, check_model_fits, load_user_model
from workbench.model.compat import NUMERICS, keras, tf
from workbench.model.distill import Distillation, distiller, student_of
from workbench.model.heads import Head, as_head

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How a model is trained (a baseline's is part of its cache key).

    ``distillation`` (a ``Distillation``) also learns from a teacher's outputs: ``fit`` and
    ``fine_tune`` then need ``teacher=`` (the dense model). Baselines train from labels only.
    """

    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    distillation: Distillation | None = None

    def __post_init__(self):
        for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise WorkbenchError(f"{name} must be an integer >= {low}, got {value!r}")
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
            raise WorkbenchError(f"learning_rate must be a finite number > 0, got {rate!r}")
        if self.distillation is not None and not isinstance(self.distillation, Distillation):
            raise WorkbenchError(
                f"distillation must be a workbench.Distillation or None, got {self.distillation!r}"
            )

    def settings(self) -> dict:
        """The recipe as a plain dict for cache keys; without distillation exactly the fields it
        had before distillation existed, so recipes cached then keep their keys."""
        settings = asdict(self)
        if self.distillation is None:
            del settings["distillation"]
        return settings


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic (same seed, same weights)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def compile_model(
    model: keras.Model, learning_rate: float = 1e-3, head: Head | str | None = None
) -> keras.Model:
    """Compile with Adam and the loss of the model's head (``model.heads``); returns the model."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=as_head(model, head).loss(),
        metrics=["accuracy"],
    )
    return model


def fit(
    model: keras.Model,
    dataset: Dataset,
    recipe: Recipe = Recipe(),
    *,
    callbacks: list | None = None,
    progress: Progress | bool = True,
    head: Head | str | None = None,
    teacher: keras.Model | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` in place on ``dataset.train``, validating on ``dataset.val``.

    Args:
        progress: True for Keras's bar (epochs, batches and metrics), False for none, or a
            ``core.progress.Progress``: called with (batches done, batches in the whole fit) after
            every training batch; raising ``Cancelled`` stops training there.
        head: the model's head, if its detection needs overriding (see ``workbench.model.heads``).
        teacher: the model to distil from when ``recipe.distillation`` is set (required then,
            unused otherwise); it is not trained. Callbacks then see Keras's ``Distiller`` as
            ``self.model`` (its ``student`` is ``model``: ``model.distill.student_of``).

    Returns:
        The per-epoch history: loss, accuracy, val_loss, val_accuracy (distilling, the loss is the
        combined one, and student_loss and distillation_loss are added).

    Raises:
        WorkbenchError: a distilling recipe without a fitting teacher.
    """
    reporting = progress_callbacks(progress)
    seed_everything(recipe.seed)
    head = as_head(model, head)
    trainer, frozen = model, None
    if recipe.distillation is not None:
        frozen = getattr(teacher, "trainable", None)  # the Distiller freezes the caller's model
        trainer = distiller(model, teacher, recipe.distillation, head)
        trainer.compile(keras.optimizers.Adam(recipe.learning_rate), loss=head.loss(), metrics=["accuracy"])
    elif model.optimizer is None or not model.compiled:
        compile_model(model, recipe.learning_rate, head)
    try:
        history = trainer.fit(
            dataset.train.images,
            head.targets(dataset.train.labels),
            validation_data=(dataset.val.images, head.targets(dataset.val.labels)),
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            shuffle=True,
            verbose=0,
            callbacks=(callbacks or []) + reporting,
        )
    finally:
        if frozen is not None:
            teacher.trainable = frozen
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def recalibrate_batchnorm(model: keras.Model, images, batch_size: int = 64, rows=None) -> int:
    """Set every BatchNormalization's moving mean and variance to the statistics of ``images``
    (of ``images[rows]`` if given: a sample, copied a batch at a time).

    A briefly trained (or freshly pruned) network's moving statistics still hold their initial
    values or the unpruned network's, so inference differs from training (the remedy of
    "adaptive BN", Li et al., EagleEye 2020). Weights are not touched. Returns how many layers
    were recalibrated.
    """
    from workbench.model.registry import flat_layers

    norms = [layer for layer in flat_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    if not norms or len(rows) == 0:
        return 0
    momenta = [layer.momentum for layer in norms]
    try:
        for start in range(0, len(rows), batch_size):
            batch = images[rows[start : start + batch_size]]
            for layer in norms:  # a running average in which every image counts equally
                layer.momentum = start / (start + len(batch))
            model(batch, training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    return len(norms)


class ReportBatches(keras.callbacks.Callback):
    """Call ``report(batches done, batches in the whole fit)`` after every training batch: a progress
    bar, or a check that stops ``fit`` by raising (a cancelled fine-tune)."""

    def __init__(self, report):
        super().__init__()
        self.report, self.done, self.total = report, 0, 0

    def on_train_begin(self, logs=None):
        self.done = 0
        self.total = (self.params.get("epochs") or 1) * (self.params.get("steps") or 0)

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        self.report(self.done, self.total)


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """Recalibrate BatchNorm (``recalibrate_batchnorm``) on a sample of the training images before
    each validation inside ``fit`` and when training ends.

    A few epochs of fine-tuning move BatchNorm's moving statistics only part of the way (momentum
    0.99: ~100 steps), so a fine-tuned network was validated and used with stale ones (a
    MobileNetV2 at 64 px: val_accuracy 0.50 every epoch; recalibrated, test accuracy 0.86).
    ``batch_size`` is the training batch's, so recalibrating fits where training does.
    """

    SAMPLE = 1024  # images: enough for the statistics, a fraction of an epoch's cost

    def __init__(self, images, batch_size: int = 64, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.rows = np.sort(rng.choice(len(images), min(len(images), self.SAMPLE), replace=False))
        self.images, self.batch_size = images, batch_size
        self.fresh = False  # recalibrated since the last training step

    def on_train_batch_end(self, batch, logs=None):
        self.fresh = False

    def on_test_begin(self, logs=None):
        self._recalibrate()

    def on_train_end(self, logs=None):
        self._recalibrate()

    def _recalibrate(self) -> None:
        if not self.fresh:
            recalibrate_batchnorm(student_of(self.model), self.images, self.batch_size, self.rows)
            self.fresh = True


def progress_callbacks(progress: Progress | bool) -> list[keras.callbacks.Callback]:
    """The Keras callbacks that report ``progress`` (see ``fit``): a bar, none, or ``ReportBatches``."""
    check_progress(progress)
    if progress is None or isinstance(progress, bool):
        return [] if progress is False else [progress_bar()]
    return [ReportBatches(progress)]


def progress_bar() -> keras.callbacks.Callback:
    """Return a tqdm progress bar over epochs and batches that works in notebooks and terminals."""
    from tqdm.keras import TqdmCallback

    return TqdmCallback(verbose=0)


def baseline(
    dataset: Dataset,
    model: str | Path = "seed_cnn",
    recipe: Recipe = Recipe(),
    *,
    cache_dir: str | Path | None = None,
    progress: Progress | bool = True,
    train_user_model: bool = False,
    custom_objects: dict | None = None,
    safe_mode: bool = True,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Return a trained baseline for ``dataset``, training it only if the cache has none.

    A user's ``.keras`` model is returned exactly as given (weights untouched, empty history)
    unless ``train_user_model=True``, which trains it further from its weights by ``recipe``
    and caches the result (the file's bytes are part of the cache key).

    Args:
        model: a builder name from ``workbench.model.builders.BUILDERS`` or a path to a user's ``.keras``.
        recipe: epochs, batch size, learning rate and seed.
        train_user_model: train a user's model before exploring it (off: explore it as given).
        cache_dir: the one folder to read and write cached baselines (default: the data folder's
            ``cache`` for reading, ``workbench.core.paths.cache_dir()`` for writing; see there).
        custom_objects, safe_mode: for a user's model, as ``workbench.model.builders.load_user_model``.
        progress: while training, as ``fit``'s.

    Returns:
        (the model, its training history). A model trained here is returned even if caching it
        fails (a warning names the file).

    Example (not run here: it trains)::

        model, history = baseline(load_dataset("phantom"), "seed_cnn", Recipe(epochs=5))
    """
    if not isinstance(train_user_model, bool):
        raise WorkbenchError(f"train_user_model must be True or False, got {train_user_model!r}")
    if recipe.distillation is not None:
        raise WorkbenchError(
            "a baseline trains from its labels, got a recipe with distillation: distil while "
            "fine-tuning a pruned copy (fine_tune(..., teacher=dense_model))"
        )
    load_options = dict(custom_objects=custom_objects, safe_mode=safe_mode)
    if _is_model_file(model) and not train_user_model:
        log.info("exploring the user's model %s as given (no training)", model)
        return load_user_model(model, dataset, **load_options), {}
    key = cache_key(dataset, model, recipe)
    name = cache.cache_file("", "baseline", key, label=Path(str(model)).stem).name
    found = Path(cache_dir) / name if cache_dir else paths.find_cached(name)
    if found is not None and found.is_file():
        log.info("loading cached baseline %s", found)
        cached = keras.models.load_model(found, **load_options)
        check_model_fits(cached, dataset, where=str(found))
        return cached, _read_history(found)
    seed_everything(recipe.seed)
    if _is_model_file(model):
        net = load_user_model(model, dataset, **load_options)
    else:
        net = build_model(str(model), dataset)
    compile_model(net, recipe.learning_rate)
    history = fit(net, dataset, recipe, progress=progress)
    _save_or_warn(net, Path(cache_dir or paths.cache_dir()) / name, history)
    return net, history


def _save_or_warn(model: keras.Model, path: Path, history: dict) -> None:
    """Cache a freshly trained baseline; a failed write costs the cache entry, never the model."""
    try:
        save_atomically(model, path, history)
    except OSError as err:
        warnings.warn(
            f"could not cache the trained baseline as {path} ({err}); it is returned but not saved, "
            "so the next run trains it again",
            stacklevel=3,
        )


def cache_key(dataset: Dataset, model: str | Path, recipe: Recipe) -> str:
    """The cache key of a trained baseline (``cache.cache_key``): the starting weights (a builder's
    name or the file's bytes), the data, the recipe and the libraries that train it."""
    weights = Path(model).read_bytes() if _is_model_file(model) else str(model)
    settings = (recipe.settings(), f"keras {keras.__version__} tf {tf.__version__}", NUMERICS)
    return cache.cache_key("baseline", weights=weights, data=dataset.fingerprint(), settings=settings)


def save_atomically(model: keras.Model, path: Path, history: dict | None = None) -> Path:
    """Save ``model`` (and its history beside it) so that ``path`` either is complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if history is not None:
        write_atomically(path.with_suffix(".history.json"), json.dumps(history))
    with atomic_path(path) as temporary:
        model.save(temporary)
    return path


def _read_history(model_path: Path) -> dict[str, list[float]]:
    """The cached model's training history; {} when there is none or it is damaged (warned about)."""
    history = read_cached(
        model_path.with_suffix(".history.json"),
        lambda p: json.loads(p.read_text()),
        _check_history,
        "training history",
    )
    return history or {}


def _check_history(history) -> None:
    """Refuse anything but Keras's history: {metric: [finite number per epoch]}."""
    if not isinstance(history, dict):
        raise WorkbenchError(f"expected a JSON object of metric -> values, got {type(history).__name__}")
    for name, values in history.items():
        if not isinstance(values, list):
            raise WorkbenchError(f"{name} must be a list of numbers, got {values!r}")
        for value in values:
            check_number(value, name)


def _is_model_file(model: str | Path) -> bool:
    return str(model).endswith(".keras")
