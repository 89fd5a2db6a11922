"""Which layers can lose what: prune one layer at a time over a sparsity grid, record the AUC drop.

    scores (Scorer) -> one row's keep-mask (masks.select) -> fast evaluation (curves.Evaluator)
    -> validation AUC with its interval (ValidationAuc) -> one cell of the layer x sparsity table

A *row* is what gets pruned together. Unstructured: one prunable layer. Structured: one channel
space, i.e. a layer, or a coupled group of layers whose channels meet in an add (``slim``'s
``coupled_groups``); the output layer is never a structured row (its units are the classes).

Every cell is independent and is written to disk as soon as it is finished (atomically), in a
folder keyed by the weights, the validation data, the calibration data, the granularity and the
guard; the file name holds the criterion, row and sparsity. So a killed run resumes with only the
missing cells, and reopening a finished table only reads files. Cells can also run on a Dask
cluster (``dask_address``), one task per row, with the same cache.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.analysis.curves import Evaluator
from workbench.core import stats
from workbench.core.cache import (
    DIFFERENCE,
    FRACTION,
    NON_NEGATIVE,
    cache_file,
    cache_key,
    check_fields,
    read_cached,
    user_stacklevel,
)
from workbench.core.errors import WorkbenchError
from workbench.core.fs import write_atomically
from workbench.core.masks import Masks, check_sparsity, normalise_per_layer, select
from workbench.core.paths import cache_dir
from workbench.core.progress import Progress, check_progress, reporter
from workbench.data.dataset import Dataset, Split, stratified_sample
from workbench.model.builders import check_built, check_model_fits
from workbench.model.registry import LayerInfo
from workbench.prune.scores import Scorer, check_criterion, check_granularity

log = logging.getLogger(__name__)

# Fine steps near 1: at a budget of a few percent of the weights, big layers must go past 98%
# (small_resnet at 5% params: global ranking prunes its largest convolution to 99.99%), and a grid
# that stops at 0.98 makes the allocation take the rest from small, fragile layers.
DEFAULT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
BASELINE = "random"  # the criterion every real one must beat


@dataclass(frozen=True)
class Row:
    """What is pruned together in one row of the table: a layer, or a coupled group of layers."""

    name: str
    layers: tuple[str, ...]


def sensitivity_rows(subject: Subject, granularity: str) -> list[Row]:
    """The table's rows: every prunable layer (unstructured), or every channel space but the output's."""
    infos = subject.scorer.infos
    if check_granularity(granularity) == "unstructured":
        return [Row(i.name, (i.name,)) for i in infos]
    from workbench.prune.slim import coupled_groups

    groups = {name: group for group in coupled_groups(subject.model) for name in group}
    rows, seen = [], set()
    for info in infos[:-1]:
        group = groups.get(info.name, (info.name,))
        if group[0] not in seen:
            seen.add(group[0])
            rows.append(Row("+".join(group), tuple(group)))
    return rows


def row_keep(scores: dict, row: Row, sparsity: float, infos: list[LayerInfo], min_keep: int = 1) -> Masks:
    """Keep-masks (kernel-shaped) of ``row``'s layers pruned to ``sparsity`` by their scores.

    A coupled group is ranked on the sum of its members' per-layer-normalised unit scores, so a
    shared channel is removed from every member at once. ``min_keep`` is the collapse guard.
    """
    check_sparsity(sparsity)
    coupled = len(row.layers) > 1  # structured, one channel space: units (C,) of a conv, (C, 1) depthwise
    members = {name: scores[name] for name in row.layers}
    if coupled:
        members = {name: np.ravel(unit) for name, unit in normalise_per_layer(members).items()}
    joint = sum(members.values())
    keep = select({row.name: joint}, sparsity=sparsity, scope="layerwise", min_keep=min_keep).keep[row.name]
    info = {i.name: i for i in infos}

    def kernel_shaped(name: str) -> np.ndarray:
        units = keep.reshape(info[name].units_shape) if coupled else keep
        return np.broadcast_to(units, info[name].shape).copy()

    return {name: kernel_shaped(name) for name in row.layers}


def dense_keep(infos: list[LayerInfo]) -> Masks:
    """All-True keep-masks: the dense model."""
    return {i.name: np.ones(i.shape, bool) for i in infos}


# --- what is analysed -------------------------------------------------------------------------


@dataclass
class Subject:
    """The model under analysis, its calibration scorer and its validation evaluator."""

    model: object
    val: Split
    scorer: Scorer
    evaluator: Evaluator

    @classmethod
    def from_explorer(cls, explorer) -> Subject:
        """Reuse an ``Explorer``'s cached scorer and evaluator."""
        return cls(explorer.model, explorer.dataset.val, explorer.scorer, explorer.evaluator)

    @classmethod
    def build(
        cls, model, dataset: Dataset, *, calibration_size: int = 256, seed: int = 0, test: bool = True
    ) -> Subject:
        """Score on a seeded, class-stratified sample of training images, as ``Explorer`` does."""
        check_built(model)
        check_model_fits(model, dataset, "model")  # before the Scorer, which would blame its labels
        calibration = stratified_sample(dataset.train, calibration_size, seed)
        scorer = Scorer(model, calibration.images, calibration.labels, seed=seed)
        test_split = dataset.test if test else _first(dataset.val)
        return cls(model, dataset.val, scorer, Evaluator(model, dataset.val, test_split))

    def key(self, granularity: str, min_keep: int) -> str:
        """The table's cache key (``cache.cache_key``): architecture and weights, validation and
        calibration data, head, granularity, guard, seed."""
        data = (self.val.images, self.val.labels, self.scorer.calibration_key)
        settings = (repr(self.evaluator.head), granularity, min_keep, self.scorer.seed)
        return cache_key("sensitivity", weights=self.scorer.fingerprint(), data=data, settings=settings)

    def folder(self, root: str | Path, granularity: str, min_keep: int) -> Path:
        """The folder under ``root`` that holds this subject's table of ``granularity`` and guard."""
        return cache_file(root, "sensitivity", self.key(granularity, min_keep))

    @cached_property
    def metric(self) -> ValidationAuc:
        """The validation AUC the table ranks by."""
        evaluator = self.evaluator
        classes = evaluator.dense_val.shape[1]
        return ValidationAuc.of(evaluator.val.labels, classes, evaluator.positive, evaluator.head.multilabel)


@dataclass(frozen=True)
class ValidationAuc:
    """The validation AUC a table ranks by, from a model's probabilities (images x columns).

    Binary: the positive class's AUC. Multi-class: the one-vs-rest macro AUC over every class;
    multi-label: the mean AUC over the labels that hold both classes in validation (another label
    has no AUC there). Intervals are DeLong's, of the mean for several columns
    (``stats.macro_auc_ci``, ``stats.compare_macro_auc``).
    """

    columns: tuple[int, ...]  # the probability columns scored
    truth: np.ndarray  # (images, len(columns)) booleans
    left_out: tuple[int, ...] = ()  # multi-label: labels with one class in validation (no AUC there)

    @classmethod
    def of(cls, labels, classes: int, positive: int, multilabel: bool) -> ValidationAuc:
        """For validation ``labels`` of a model with ``classes`` output columns (``stats.auc_columns``).

        Raises:
            ValueError: when the labels cannot give the AUC (a class missing, no label with both).
        """
        columns, truth, missing = stats.auc_columns(labels, classes, positive, multilabel)
        if multilabel and not columns:
            raise WorkbenchError(
                "sensitivity needs a label with both classes in the validation labels; none of the "
                f"{len(missing)} labels has positives and negatives there"
            )
        if multilabel and missing:
            warnings.warn(
                f"labels {missing} hold one class in validation and have no AUC there: the table ranks "
                "by the mean AUC of the others",
                stacklevel=user_stacklevel(),
            )
        elif classes == 2 and missing:
            raise WorkbenchError(
                "sensitivity needs both classes in the validation labels; they hold only class "
                f"{1 - missing[0]} (an AUC on validation needs both): give the validation split images "
                "of both"
            )
        elif missing:
            raise WorkbenchError(
                f"sensitivity ranks a multi-class model by its one-vs-rest macro AUC on validation, which "
                f"needs every class there; the validation labels miss class(es) {missing}"
            )
        return cls(columns, truth, tuple(missing) if multilabel else ())

    def point(self, probs: np.ndarray) -> float:
        every = np.arange(len(self.truth))
        return float(stats.macro_auc_of(probs[:, self.columns], self.truth, every)[0])

    def interval(self, probs: np.ndarray) -> tuple[float, float, float]:
        """(AUC, low, high)."""
        return stats.macro_auc_ci(probs[:, self.columns], self.truth)

    def drop(self, dense: np.ndarray, probs: np.ndarray) -> tuple[float, float, float]:
        """(dense AUC − AUC, low, high), the interval paired on the same images."""
        paired = stats.compare_macro_auc(self.truth, dense[:, self.columns], probs[:, self.columns])
        return 0.0 - paired["difference"], 0.0 - paired["ci_high"], 0.0 - paired["ci_low"]  # no -0.0


def _first(split: Split) -> Split:
    return Split(split.images[:1], split.labels[:1], split.sources[:1])


# --- one cell ---------------------------------------------------------------------------------


def validation_auc(subject: Subject, keep: Masks, structured: bool) -> float:
    """The validation AUC the table ranks by (``ValidationAuc``) with ``keep`` applied."""
    probs, _ = subject.evaluator.probabilities(keep, structured)
    return subject.metric.point(probs)


def cell_metrics(subject: Subject, keep: Masks, structured: bool) -> dict:
    """Validation AUC with its interval, the drop from dense with its paired interval, and the
    output distortion (``output_distortion``)."""
    probs, _ = subject.evaluator.probabilities(keep, structured)
    auc, low, high = subject.metric.interval(probs)
    drop, drop_low, drop_high = subject.metric.drop(subject.evaluator.dense_val, probs)
    return dict(
        auc=auc,
        low=low,
        high=high,
        drop=drop,
        drop_low=drop_low,
        drop_high=drop_high,
        distortion=output_distortion(subject.evaluator.dense_val, probs, subject.evaluator.head.multilabel),
    )


def output_distortion(dense: np.ndarray, pruned: np.ndarray, multilabel: bool = False) -> float:
    """Mean squared change of the logits from ``dense`` to ``pruned`` probabilities (images x columns).

    Logits are log-probabilities centred per image (softmax logits up to their free constant); for
    a multi-label model each label's own logit, log(p / (1 - p)) (its outputs are not one
    distribution). Probabilities are clipped at 1e-7 first (a two-class logit then stays within
    about ±8). Unlike an AUC drop this does not saturate once a layer alone breaks the model, and
    the distortions of layers pruned together add up nearly (the additivity behind Xu et al.'s
    layer-adaptive pruning, ICCV 2023), so a sum over rows still ranks joint masks at tight budgets.
    """

    def logits(probs: np.ndarray) -> np.ndarray:
        if multilabel:
            p = np.clip(probs, 1e-7, 1 - 1e-7)
            return np.log(p) - np.log1p(-p)
        log_probs = np.log(np.clip(probs, 1e-7, 1.0))
        return log_probs - log_probs.mean(axis=1, keepdims=True)

    return float(np.mean((logits(pruned) - logits(dense)) ** 2))


def _row_cells(subject: Subject, criterion: str, granularity: str, row: Row, grid, min_keep: int):
    """Yield one cell dict per sparsity of ``grid``: ``row`` pruned, every other layer dense."""
    infos = subject.scorer.infos
    scores = subject.scorer.scores(criterion, granularity)
    for sparsity in grid:
        keep = {**dense_keep(infos), **row_keep(scores, row, sparsity, infos, min_keep)}
        metrics = cell_metrics(subject, keep, granularity == "structured")
        kept = sum(int(keep[name].sum()) for name in row.layers)
        total = sum(keep[name].size for name in row.layers)
        yield dict(
            criterion=criterion, row=row.name, target=float(sparsity), sparsity=1 - kept / total, **metrics
        )


def _remote_row(model, val, images, labels, seed, criterion, granularity, row, grid, min_keep) -> list[dict]:
    """One row's cells on a Dask worker: rebuild scorer and evaluator there, return the cells."""
    scorer = Scorer(model, images, labels, seed=seed)
    subject = Subject(model, val, scorer, Evaluator(model, val, _first(val)))
    return list(_row_cells(subject, criterion, granularity, row, grid, min_keep))


# --- the table --------------------------------------------------------------------------------


@dataclass
class Sensitivity:
    """The layer x sparsity table of one model, criterion and granularity, plus the random baseline.

    ``cells`` has one row per (criterion, row, target): the achieved ``sparsity`` of that row,
    the validation ``auc`` (``ValidationAuc``: binary, macro over classes or labels) and its interval
    ``low``..``high``, ``drop`` = dense AUC - AUC with its paired interval ``drop_low``..``drop_high``
    (same images, so much narrower), and
    the ``distortion`` of the outputs (``output_distortion``).
    """

    cells: pd.DataFrame
    dense: dict
    criterion: str
    granularity: str
    grid: tuple[float, ...]
    rows: list[Row]
    min_keep: int = 1
    computed: int = 0  # cells computed in this call (the rest came from the cache)
    folder: Path | None = field(default=None, repr=False)
    left_out: tuple[int, ...] = ()  # labels the validation AUC leaves out (``ValidationAuc.left_out``)

    def matrix(self, criterion: str | None = None, value: str = "drop") -> pd.DataFrame:
        """Rows x target sparsities of ``value`` (``drop``, ``auc``, ``drop_low``...) for a criterion."""
        part = self.cells[self.cells["criterion"] == (criterion or self.criterion)]
        table = part.pivot(index="row", columns="target", values=value)
        return table.reindex([r.name for r in self.rows])

    def with_baseline_row(self, value: str = "drop") -> pd.DataFrame:
        """The criterion's matrix with one more row: the random criterion, averaged over rows."""
        if BASELINE not in set(self.cells["criterion"]):
            raise WorkbenchError(
                "this table was computed without the random baseline: call sensitivity(..., baseline=True)"
            )
        table = self.matrix(self.criterion, value)
        table.loc[f"{BASELINE} (mean of rows)"] = self.matrix(BASELINE, value).mean(axis=0)
        return table


def check_grid(grid) -> tuple[float, ...]:
    """Return the grid sorted and deduplicated, or raise ValueError unless it is non-empty and in [0, 1)."""
    if isinstance(grid, str):  # papermill's -p passes a list as text
        raise WorkbenchError(
            f"grid must be a list of sparsities in [0, 1), got the text {grid!r} "
            "(with papermill, pass a list with -y, e.g. -y 'grid: [0.5, 0.9]')"
        )
    try:
        values = tuple(sorted({float(s) for s in grid}))
    except (TypeError, ValueError):
        raise WorkbenchError(f"grid must be a list of sparsities in [0, 1), got {grid!r}") from None
    if not values or not all(0.0 <= s < 1.0 for s in values):
        raise WorkbenchError(f"grid must hold one or more sparsities in [0, 1), got {list(grid)!r}")
    return values


def sensitivity(
    subject: Subject,
    criterion: str = "taylor",
    granularity: str = "unstructured",
    grid=DEFAULT_GRID,
    *,
    baseline: bool = True,
    min_keep: int = 1,
    cache: str | Path | None = None,
    dask_address: str | None = None,
    progress: Progress | bool = True,
) -> Sensitivity:
    """Compute (or reopen) the sensitivity table: every row pruned alone at every grid sparsity.

    Args:
        subject: the model, its scorer and evaluator (``Subject.build`` or ``Subject.from_explorer``).
        criterion: the scores that decide which weights/units of a row go first.
        granularity: ``"unstructured"`` (weights) or ``"structured"`` (filters/units, coupled groups).
        grid: target sparsities in [0, 1).
        baseline: also compute the ``random`` criterion's rows.
        cache: the cache root; default ``<data>/cache/sensitivity``.
        dask_address: compute missing rows on this Dask scheduler instead of locally.
        progress: True for a bar, False for none, or a ``core.progress.Progress``: called with
            (cells done, cells) first with the cells already on disk, then after each cell is
            written; raising ``Cancelled`` stops the table there (the cells written stay).

    Example (not run here: a table prunes every layer at every sparsity)::

        table = sensitivity(Subject.from_explorer(explorer), "taylor", "structured")
        plots.sensitivity_heatmap(table.with_baseline_row())

    Raises:
        ValueError: for an unknown criterion or granularity, a grid value outside [0, 1), an empty
            grid, a ``subject`` that is not a Subject, or ``min_keep`` not an integer >= 1.
    """
    if not isinstance(subject, Subject):
        raise WorkbenchError(
            "subject must be a Subject: Subject.build(model, dataset) or Subject.from_explorer(explorer), "
            f"got {type(subject).__name__}"
        )
    check_criterion(criterion)
    check_granularity(granularity)
    grid = check_grid(grid)
    check_guard(min_keep)
    check_progress(progress)
    folder = subject.folder(cache or cache_dir() / "sensitivity", granularity, min_keep)
    folder.mkdir(parents=True, exist_ok=True)
    rows = sensitivity_rows(subject, granularity)
    criteria = [criterion] + ([BASELINE] if baseline and criterion != BASELINE else [])
    dense = _dense(subject, folder, granularity)
    _warn_if_at_chance(dense, len(subject.val))
    paths = [(c, row, s, _cell_path(folder, c, row.name, s)) for c in criteria for row in rows for s in grid]
    cells = {path: _read_cell(path, c, row.name, s) for c, row, s, path in paths}  # None: to compute
    todo: dict[tuple, list[float]] = {}
    for c, row, s, path in paths:
        if cells[path] is None:
            todo.setdefault((c, row), []).append(s)
    total, missing = len(paths), sum(len(m) for m in todo.values())
    if progress is not True:  # the gradient pass the cells need, made now without its own bar
        for needed in {c for c, _ in todo}:
            subject.scorer.scores(needed, granularity, progress=lambda *_: None)
    with reporter(progress, total, "sensitivity", "cell") as report:
        done = total - missing
        report(done, total)
        for cell in _compute(subject, todo, granularity, min_keep, dask_address):
            path = _cell_path(folder, cell["criterion"], cell["row"], cell["target"])
            write_atomically(path, json.dumps(cell))  # before reporting: a cancelled table resumes here
            cells[path] = cell
            done += 1
            report(done, total)
    log.info("sensitivity: %d of %d cells computed, the rest read from %s", missing, total, folder)
    cells = pd.DataFrame([cells[path] for *_, path in paths])
    left_out = subject.metric.left_out
    return Sensitivity(cells, dense, criterion, granularity, grid, rows, min_keep, missing, folder, left_out)


def _compute(subject: Subject, todo: dict, granularity: str, min_keep: int, dask_address: str | None):
    """Yield finished cells: locally one by one, or row by row as Dask tasks complete."""
    if not dask_address:
        for (criterion, row), grid in todo.items():
            yield from _row_cells(subject, criterion, granularity, row, grid, min_keep)
        return
    from distributed import Client, as_completed

    scorer = subject.scorer
    with Client(dask_address, timeout="20s") as client:
        shared = client.scatter([subject.model, subject.val, scorer.images, scorer.labels], broadcast=True)
        futures = [
            client.submit(_remote_row, *shared, scorer.seed, c, granularity, row, grid, min_keep, pure=False)
            for (c, row), grid in todo.items()
        ]
        for future in as_completed(futures):
            yield from future.result()


def check_guard(min_keep) -> None:
    """Refuse a collapse guard below one unit: every layer keeps at least ``min_keep`` (ValueError)."""
    if not isinstance(min_keep, int) or isinstance(min_keep, bool) or min_keep < 1:
        raise WorkbenchError(
            f"min_keep must be an integer >= 1 (every layer keeps its guard), got {min_keep!r}"
        )


# What a cell and dense.json hold: (low, high) of each number; a file holding anything else is damaged
_DENSE_FIELDS = {"auc": FRACTION, "low": FRACTION, "high": FRACTION}
_CELL_FIELDS = {
    **_DENSE_FIELDS,
    "target": FRACTION,
    "sparsity": FRACTION,
    "drop": DIFFERENCE,
    "drop_low": DIFFERENCE,
    "drop_high": DIFFERENCE,
    "distortion": NON_NEGATIVE,
}


def _read_cell(path: Path, criterion: str, row: str, target: float) -> dict | None:
    """The cell cached at ``path``; None if it is not there yet, or damaged (``cache.read_cached``)."""

    def check(cell) -> None:
        check_fields(cell, _CELL_FIELDS)
        held = (cell.get("criterion"), cell.get("row"), round(cell["target"], 6))
        if held != (criterion, row, round(target, 6)):  # the file name keeps 6 decimals
            raise WorkbenchError(
                f"it holds {cell.get('criterion')!r}, {cell.get('row')!r} at {cell['target']!r}"
            )

    return read_cached(path, _read_json, check, "sensitivity cache file")


def _read_json(path: Path):
    return json.loads(path.read_text())


def _dense(subject: Subject, folder: Path, granularity: str) -> dict:
    path = folder / "dense.json"
    cached = read_cached(
        path, _read_json, lambda dense: check_fields(dense, _DENSE_FIELDS), "sensitivity cache file"
    )
    if cached is not None:
        return cached
    probs, _ = subject.evaluator.probabilities(dense_keep(subject.scorer.infos), granularity == "structured")
    auc, low, high = subject.metric.interval(probs)
    dense = dict(auc=auc, low=low, high=high)
    write_atomically(path, json.dumps(dense))
    return dense


def _warn_if_at_chance(dense: dict, images: int) -> None:
    """Drops measured from a model no better than chance say nothing: any pruning is 'within tolerance'."""
    if dense["low"] <= 0.5 <= dense["high"]:
        warnings.warn(
            f"the dense model's validation AUC is {dense['auc']:.3f} "
            f"[{dense['low']:.3f}, {dense['high']:.3f}] on {images} validation images, not "
            "distinguishable from chance, so drops measured against it say little: is the model "
            "trained (after a short training, workbench.model.train.recalibrate_batchnorm often fixes its "
            "BatchNorm statistics), and is the validation split large enough?",
            stacklevel=user_stacklevel(),
        )


def _cell_path(folder: Path, criterion: str, row: str, target: float) -> Path:
    return folder / f"{criterion}--{row}--{target:.6f}.json"
