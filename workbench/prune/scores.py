"""Importance scores for every prunable weight: gradient (the ε rule), SNIP, Taylor, magnitude,
random, and two filter criteria, FPGM and HRank.

One pass over the calibration data accumulates, per kernel weight, the batch-mean of |g| and of
g², and per structured unit the batch-mean of (Σ g·w)². Every criterion is a cheap function of
those and the weights, and a ``Scorer`` caches them, so moving ε never recomputes gradients.
Given a ``cache_dir`` it also keeps them on disk, keyed by every weight of the model, the
calibration images and labels, the head and the batch size, so a reopened notebook skips the pass.
HRank's evidence, the feature maps' ranks (``workbench.prune.activations``), is kept the same way.

FPGM and HRank score whole units only: a filter's distance to the others, or its map's rank, says
nothing about one of its weights. Asked for unstructured scores they are refused
(``check_pairing``) rather than spread over the weights, which would prune whole filters under
the name of unstructured pruning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy.spatial.distance import pdist, squareform

from workbench.core.cache import (
    NON_NEGATIVE,
    cache_file,
    cache_key,
    check_array,
    check_number,
    fingerprint,
    read_cached,
)
from workbench.core.errors import WorkbenchError, check_choice
from workbench.core.fs import atomic_path
from workbench.core.masks import Scores, unit_scores
from workbench.core.progress import Progress, reporter, ticking
from workbench.data.dataset import images_and_labels
from workbench.model.builders import check_built, check_images
from workbench.model.compat import NUMERICS, keras, tf
from workbench.model.heads import Head, as_head
from workbench.model.registry import (
    LayerInfo,
    get_kernels,
    kernel_variables,
    prunable_layers,
    unpruned_weighted_layers,
)
from workbench.prune.activations import feature_map_ranks, read_ranks, write_ranks

log = logging.getLogger(__name__)


GRANULARITIES = ("unstructured", "structured")


def check_criterion(criterion: str) -> str:
    """Return ``criterion``, or raise ValueError unless it names a row of ``CRITERIA``."""
    return check_choice(criterion, "criterion", tuple(CRITERIA))


def check_granularity(granularity: str) -> str:
    """Return ``granularity``, or raise ValueError unless it is one of ``GRANULARITIES``."""
    return check_choice(granularity, "granularity", GRANULARITIES)


def check_pairing(criterion: str, granularity: str) -> None:
    """Raise WorkbenchError when ``criterion`` has no scores at ``granularity`` (FPGM and HRank
    score whole filters: they are structured only)."""
    allowed = CRITERIA[check_criterion(criterion)].granularities
    if check_granularity(granularity) not in allowed:
        raise WorkbenchError(
            f"criterion {criterion!r} scores whole filters and units, so granularity must be "
            f"{' or '.join(map(repr, allowed))}, got granularity={granularity!r}"
        )


@dataclass(frozen=True)
class GradientStats:
    """Batch means over the calibration data, per prunable layer.

    abs_grad: mean |∂L/∂w| per weight.  sq_grad: mean (∂L/∂w)² per weight.
    unit_taylor: mean (Σ_unit g·w)² per structured unit (Molchanov et al.'s filter Taylor score).
    """

    abs_grad: Scores
    sq_grad: Scores
    unit_taylor: Scores
    batches: int


def check_calibration(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, head: Head | str | None = None
) -> Head:
    """Raise ValueError unless images/labels fit the model's input and head; return the head.

    Images must be finite and scaled to [0, 1], as the loaders give them: gradients of 0-255
    images are orders of magnitude off, so any ε would prune everything.
    """
    check_built(model)
    head = as_head(model, head)
    images = check_images(model, images, "calibration images")
    if len(images) == 0 or len(images) != len(np.asarray(labels)):
        raise WorkbenchError(
            "calibration images and labels must be non-empty and of equal length, "
            f"got {len(images)} and {len(np.asarray(labels))}"
        )
    head.check_labels(labels, "calibration labels")
    _warn_if_one_class(np.asarray(labels), head)
    return head


def _warn_if_one_class(labels: np.ndarray, head: Head) -> None:
    """Scores from one class's images rank weights by what that class alone needs."""
    if head.multilabel or len(labels) < 2 or len(np.unique(labels)) > 1:
        return
    warnings.warn(
        f"the calibration labels hold only class {labels.reshape(-1)[0]}, so the scores are the gradients "
        "of that class's loss alone; calibrate on images of every class (data.stratified_sample)",
        stacklevel=4,
    )


def gradient_stats(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 64,
    head: Head | str | None = None,
    progress: Progress | bool | None = None,
) -> GradientStats:
    """Accumulate gradient statistics of the model's own loss over calibration batches (inference-mode BN).

    The loss is the head's (see ``workbench.model.heads``): a logits model is scored by cross-entropy
    from logits, exactly as the same weights with a softmax appended.

    ``progress`` (``core.progress.Progress``), if given, is called with (steps done, steps): the
    trace of the gradient graph, then each batch (the first also optimises the graph); a step that
    takes long is reported again every half second; raising ``Cancelled`` stops the pass. Without
    it (or True) a tqdm bar appears once the pass has taken 1 s; False shows none.

    Raises:
        ValueError: for calibration data of the wrong shape or scale, or gradients that are NaN or inf.
    """
    head = check_calibration(model, images, labels, head)
    infos = prunable_layers(model)
    variables = list(kernel_variables(model).values())
    loss_fn = head.loss()
    targets = np.asarray(head.targets(labels))

    def batch_gradients(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=False))
        return tape.gradient(loss, variables)

    # one trace for any batch size (the last batch is smaller), reported as a step of its own
    signature = [tf.TensorSpec((None, *images.shape[1:]), tf.float32)]
    signature.append(tf.TensorSpec((None, *targets.shape[1:]), tf.as_dtype(targets.dtype)))
    batch_gradients = tf.function(batch_gradients, input_signature=signature)
    kernels = get_kernels(model)
    sums = {key: {i.name: 0.0 for i in infos} for key in ("abs", "sq", "unit")}
    starts = range(0, len(images), batch_size)
    steps = 1 + len(starts)
    with reporter(progress, steps, "gradients", "step") as report:
        report(0, steps)
        with ticking(report, 0, steps):
            batch_gradients.get_concrete_function()
        report(1, steps)
        for done, start in enumerate(starts, 2):
            x = tf.constant(images[start : start + batch_size], tf.float32)
            y = tf.constant(targets[start : start + batch_size])
            with ticking(report, done - 1, steps):  # the first call also optimises the graph
                # to NumPy inside: on a GPU the call returns before the work is done
                gradients = [np.asarray(grad) for grad in batch_gradients(x, y)]
            for info, grad in zip(infos, gradients, strict=True):
                _accumulate(sums, info, grad, kernels[info.name])
            report(done, steps)
    n = len(starts)
    stats = GradientStats(
        *({k: v / n for k, v in sums[key].items()} for key in ("abs", "sq", "unit")), batches=n
    )
    _check_finite(stats)
    return stats


def _accumulate(sums: dict, info: LayerInfo, grad: np.ndarray, kernel: np.ndarray) -> None:
    sums["abs"][info.name] = sums["abs"][info.name] + np.abs(grad)
    sums["sq"][info.name] = sums["sq"][info.name] + grad**2
    per_unit = (grad * kernel).reshape(-1, int(np.prod(info.units_shape))).sum(axis=0)
    sums["unit"][info.name] = sums["unit"][info.name] + (per_unit**2).reshape(info.units_shape)


def _check_finite(stats: GradientStats) -> None:
    for name, values in stats.abs_grad.items():
        if not np.isfinite(values).all() or not np.isfinite(stats.sq_grad[name]).all():
            raise WorkbenchError(
                f"gradients of layer {name!r} are NaN or inf on the calibration data; "
                "check the model's weights and loss are finite"
            )


# --- the criteria -----------------------------------------------------------------------------

WeightFn = Callable[[Scores, object, int], Scores]  # (kernels, evidence, seed) -> scores
UnitFn = Callable[[Scores, object, list[LayerInfo], int], Scores]  # (kernels, evidence, infos, seed)


@dataclass(frozen=True)
class Criterion:
    """One scoring rule: the evidence it needs, its per-weight and per-unit scores, its label.

    ``needs`` names the pass over the calibration images its scores use: "gradients"
    (``GradientStats``), "activations" (HRank's feature-map ranks) or None (weights alone); the
    functions get that evidence. ``weight_fn`` None: a filter criterion, structured only.
    ``unit_fn`` None means a unit (filter, neuron) scores the mean of its weights' scores.
    ``threshold_label`` names the quantity ε is compared with (for the dashboard).
    """

    needs: str | None
    weight_fn: WeightFn | None
    unit_fn: UnitFn | None
    threshold_label: str

    @property
    def needs_gradients(self) -> bool:
        """Whether scoring runs the gradient pass."""
        return self.needs == "gradients"

    @property
    def granularities(self) -> tuple[str, ...]:
        """The granularities it scores: both, or "structured" alone for a filter criterion."""
        return GRANULARITIES if self.weight_fn is not None else ("structured",)


def _random(kernels: Scores, stats, seed: int) -> Scores:
    return {n: np.random.default_rng([seed, i]).random(w.shape) for i, (n, w) in enumerate(kernels.items())}


def fpgm_scores(kernels: Scores, infos: list[LayerInfo]) -> Scores:
    """FPGM (He et al. 2019): each unit's summed Euclidean distance to the other units of its layer.

    A filter near the geometric median of its layer's filters is the one the others can stand in
    for; the sum of distances is the paper's own approximation of that nearness, so the lowest
    sums are pruned first. A unit is its incoming weights (a Dense neuron's kernel column, a
    depthwise channel's spatial kernel). Distances grow with a layer's size: compare layers with
    ``scope="layerwise"`` or ``normalize=True``.
    """
    scores = {}
    for info in infos:
        units = kernels[info.name].reshape(-1, int(np.prod(info.units_shape))).T.astype(np.float64)
        scores[info.name] = squareform(pdist(units)).sum(axis=1).reshape(info.units_shape)
    return scores


CRITERIA: dict[str, Criterion] = {
    "gradient": Criterion("gradients", lambda k, s, _: dict(s.abs_grad), None, "|g|"),
    "snip": Criterion(
        "gradients", lambda k, s, _: {n: np.abs(w) * s.abs_grad[n] for n, w in k.items()}, None, "|g·w|"
    ),
    "taylor": Criterion(
        "gradients",
        lambda k, s, _: {n: w**2 * s.sq_grad[n] for n, w in k.items()},
        lambda k, s, infos, _: dict(s.unit_taylor),  # Molchanov's filter score: (Σ g·w)² per unit
        "(g·w)²",
    ),
    "magnitude": Criterion(None, lambda k, s, _: {n: np.abs(w) for n, w in k.items()}, None, "|w|"),
    "random": Criterion(None, _random, None, "random score"),
    "fpgm": Criterion(
        None, None, lambda k, s, infos, _: fpgm_scores(k, infos), "Σ distance to other filters"
    ),
    "hrank": Criterion("activations", None, lambda k, ranks, infos, _: dict(ranks), "mean feature-map rank"),
}


def weight_scores(criterion: str, kernels: Scores, evidence: object, seed: int = 0) -> Scores:
    """Score every kernel weight by ``criterion``; ``evidence`` is what its ``needs`` names."""
    check_pairing(criterion, "unstructured")
    return CRITERIA[criterion].weight_fn(kernels, evidence, seed)


def structured_scores(
    criterion: str, kernels: Scores, evidence: object, infos: list[LayerInfo], seed: int = 0
) -> Scores:
    """Score every structured unit: the criterion's own unit score, or the mean of its weights' scores."""
    unit_fn = CRITERIA[check_criterion(criterion)].unit_fn
    if unit_fn is not None:
        return unit_fn(kernels, evidence, infos, seed)
    return unit_scores(
        weight_scores(criterion, kernels, evidence, seed), {i.name: i.units_shape for i in infos}
    )


class Scorer:
    """Scores of one model on one calibration set, computed once and cached.

    The cache key includes a fingerprint of the current weights, so scoring a model after it has
    been fine-tuned recomputes, while moving ε (or switching criterion back) does not.

    Example:
        >>> scorer = Scorer(model, data.val)  # or (model, images, labels)
        >>> len(scorer.scores("snip")) == len(scorer.infos)  # one array per prunable layer
        True
    """

    def __init__(
        self,
        model: keras.Model,
        images,
        labels: np.ndarray | None = None,
        *,
        seed: int = 0,
        batch_size: int = 64,
        head: Head | str | None = None,
        cache_dir: str | Path | None = None,
        frozen: bool = False,
    ):
        """Check the calibration data and read the model's head (``head=`` overrides it).

        ``images`` is a Split (``data.val``, ``stratified_sample(data.train, 256)``), or an array
        of images with their ``labels``.

        ``cache_dir``, if given, keeps the gradient statistics on disk (``gradients-<key>.npz``),
        keyed by every weight, the calibration images and labels, the head and ``batch_size``.
        Scores follow the model's current weights (hashed on every call), unless ``frozen``
        promises that the weights no longer change: then they are hashed once (an explorer's
        snapshot, where hashing a large model on every slider move would cost more than the move).

        Raises:
            ValueError: for images of the wrong shape or outside [0, 1], labels that don't fit
                the head, a head that can't be identified, or a bad ``batch_size``.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise WorkbenchError(f"batch_size must be a positive integer, got {batch_size!r}")
        images, labels = images_and_labels(images, labels)
        self.head = check_calibration(model, images, labels, head)
        self.model, self.images, self.labels = model, np.asarray(images, np.float32), np.asarray(labels)
        self.seed, self.batch_size = seed, batch_size
        self.infos = prunable_layers(model)
        _warn_unpruned_once(model)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._stats: dict[str, GradientStats] = {}
        self._ranks: dict[str, Scores] = {}
        self._scores: dict[tuple[str, str, str], Scores] = {}
        self._frozen, self._fingerprint = frozen, None

    def fingerprint(self) -> str:
        """A hash of the model's architecture, every weight (BatchNorm statistics too) and the
        kernels that compute with them (``compat.NUMERICS``): it keys every cache of computed
        numbers. The weights are hashed once only when ``frozen``."""
        if self._fingerprint is None:
            digest = hashlib.sha1(NUMERICS.encode())
            digest.update(self._architecture.encode())  # read once, when a cache first asks
            for variable in self.model.weights:  # not their paths: Keras numbers a process's models
                value = np.ascontiguousarray(variable)
                digest.update(repr(value.shape).encode())
                digest.update(value.tobytes())
            if not self._frozen:
                return digest.hexdigest()
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    @cached_property
    def calibration_key(self) -> str:
        """A hash of the calibration images and labels (hashed once: they never change)."""
        return fingerprint(self.images, self.labels)

    @cached_property
    def _architecture(self) -> str:
        return architecture(self.model)  # a model's layers and wiring never change

    def stats(self, progress: Progress | bool | None = None) -> GradientStats:
        """The gradient statistics of the current weights: from memory, the disk cache, or one pass.

        ``progress`` is handed to ``gradient_stats`` when a pass is needed.
        """
        key = self.fingerprint()
        if key not in self._stats:
            path = self._stats_path()
            stats = read_stats(path, self.infos) if path is not None else None
            if stats is None:
                log.info("accumulating gradients over %d calibration images", len(self.images))
                stats = gradient_stats(
                    self.model, self.images, self.labels, self.batch_size, self.head, progress
                )
                if path is not None:
                    write_stats(path, stats)
            self._stats[key] = stats
        return self._stats[key]

    def _stats_path(self) -> Path | None:
        """Where the disk cache keeps this model's statistics (every weight counts, BN statistics too)."""
        if self.cache_dir is None:
            return None
        settings = (self.head, self.batch_size)
        key = cache_key("gradients", weights=self.fingerprint(), data=self.calibration_key, settings=settings)
        return cache_file(self.cache_dir, "gradients", key)

    def scores(
        self, criterion: str, granularity: str = "unstructured", progress: Progress | bool | None = None
    ) -> Scores:
        """Return {layer: scores} per weight (unstructured) or per unit (structured), cached.

        ``progress`` is called as the gradient pass goes, if this criterion needs one not yet made.
        """
        check_pairing(criterion, granularity)
        key = (self.fingerprint(), criterion, granularity)
        if key not in self._scores:
            passes = {"gradients": self.stats, "activations": self.ranks}
            needs = CRITERIA[criterion].needs
            evidence = passes[needs](progress) if needs is not None else None
            kernels = get_kernels(self.model)
            if granularity == "structured":
                self._scores[key] = structured_scores(criterion, kernels, evidence, self.infos, self.seed)
            else:
                self._scores[key] = weight_scores(criterion, kernels, evidence, self.seed)
        return self._scores[key]

    def ranks(self, progress: Progress | bool | None = None) -> Scores:
        """HRank's evidence for the current weights: each unit's mean feature-map rank over the
        calibration images (``activations.feature_map_ranks``), from memory, the disk cache or a pass.

        ``progress`` is handed to the pass when one is needed.
        """
        key = self.fingerprint()
        if key not in self._ranks:
            path = None
            if self.cache_dir is not None:
                disk_key = cache_key("activations", weights=key, data=self.calibration_key)
                path = cache_file(self.cache_dir, "activations", disk_key)
            ranks = read_ranks(path, self.infos) if path is not None else None
            if ranks is None:
                log.info("ranking feature maps over %d calibration images", len(self.images))
                ranks = feature_map_ranks(self.model, self.images, self.infos, self.batch_size, progress)
                if path is not None:
                    write_ranks(path, ranks)
            self._ranks[key] = ranks
        return self._ranks[key]


_WARNED: weakref.WeakSet = weakref.WeakSet()  # models warned about: a Gradual fine-tune scores ~8 times


def _warn_unpruned_once(model: keras.Model) -> None:
    if model not in _WARNED and (unpruned := unpruned_weighted_layers(model)):
        log.warning("weights left unpruned (layer kinds the workbench has no rule for): %s", unpruned)
    _WARNED.add(model)


# --- the statistics on disk -------------------------------------------------------------------

_STATS_FIELDS = ("abs_grad", "sq_grad", "unit_taylor")


def architecture(model: keras.Model) -> str:
    """The model's layers, settings and wiring as text, without the names Keras numbers per
    process ("conv2d_3"): the same network built in another process reads the same, one with
    another activation or pooling does not."""
    names = {layer.name for layer in _layers(model)}
    try:
        config = model.get_config()
    except NotImplementedError:  # a subclassed model without get_config: its layers' kinds, in order
        config = [type(layer).__name__ for layer in _layers(model)]
    ordinals: dict[str, str] = {}

    def anonymous(node, key=None):
        if isinstance(node, dict):
            return {k: anonymous(value, k) for k, value in node.items()}
        if isinstance(node, list | tuple):
            return [anonymous(value) for value in node]
        if isinstance(node, str) and (key == "name" or node in names or node in ordinals):
            return ordinals.setdefault(node, f"#{len(ordinals)}")  # a Sequential's input layer is unlisted
        return node

    return json.dumps(anonymous(config), sort_keys=True, default=lambda value: type(value).__name__)


def _layers(model) -> list:
    """The model and every layer in it, nested models' layers too."""
    found = [model]
    for layer in getattr(model, "layers", []):
        found += _layers(layer)
    return found


def write_stats(path: str | Path, stats: GradientStats) -> Path:
    """Write ``stats`` to ``path`` as an .npz, atomically (layer order kept); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(stats.abs_grad)
    arrays = {
        f"{field}_{i}": getattr(stats, field)[name] for field in _STATS_FIELDS for i, name in enumerate(names)
    }
    with atomic_path(path) as temporary:
        np.savez(temporary, names=np.array(names), batches=stats.batches, **arrays)
    return path


def read_stats(path: str | Path, infos: list[LayerInfo]) -> GradientStats | None:
    """The statistics cached at ``path`` if they fit ``infos``' layers and shapes, else None
    (a damaged file, or one for other layers, is warned about and ignored: ``cache.read_cached``)."""
    stats = read_cached(
        path, _load_stats, lambda found: _check_stats(found, infos), "cached gradient statistics"
    )
    if stats is not None:
        log.info("gradient statistics read from %s", path)
    return stats


def _load_stats(path: Path) -> GradientStats:
    with np.load(path, allow_pickle=False) as found:
        names = [str(name) for name in found["names"]]
        fields = {
            field: {name: found[f"{field}_{i}"] for i, name in enumerate(names)} for field in _STATS_FIELDS
        }
        return GradientStats(**fields, batches=found["batches"].item())


def _check_stats(stats: GradientStats, infos: list[LayerInfo]) -> None:
    """Refuse statistics for other layers or shapes, or holding negative or non-finite values."""
    names = list(stats.abs_grad)
    if names != [info.name for info in infos]:
        raise WorkbenchError(f"they are for other layers ({len(names)} layers, {names[:3]}...)")
    check_number(stats.batches, "batches", (1, math.inf))
    for info in infos:
        for field in ("abs_grad", "sq_grad"):
            check_array(
                getattr(stats, field)[info.name], f"{field} of {info.name}", tuple(info.shape), NON_NEGATIVE
            )
        check_array(
            stats.unit_taylor[info.name], f"unit_taylor of {info.name}", tuple(info.units_shape), NON_NEGATIVE
        )
