"""Datasets in one shape: train/val/test images float32 in [0, 1], labels, provenance.

Images are (N, H, W, C) for 2-D data and (N, D, H, W, C) for volumes, always channels last.
Labels are int64 (N,) class indices, or (N, L) 0/1 flags for multi-label data.
Sources: MedMNIST ``.npz`` files (2-D, 3-D, multi-label) here, and folders of NIfTI volumes in
``workbench.data.nifti``. Every loader builds its Dataset through the checks below.
NumPy only; nothing imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.core.errors import WorkbenchError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MAX_CHANNELS = 4  # a last axis this short holds channels (grey, RGB, RGBA); longer is spatial


@dataclass(frozen=True)
class Split:
    """One split: images float32 in [0, 1], int64 labels, and sources (N,).

    ``images`` is (N, H, W, C) or (N, D, H, W, C). ``labels`` is (N,) class indices, or (N, L)
    0/1 flags for multi-label data. ``sources[i]`` says where image i came from: the volume
    (patient) id for NIfTI data, ``"<file>:<split>:<index>"`` for MedMNIST.
    """

    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        numeric = np.issubdtype(images.dtype, np.number) or images.dtype == bool
        if numeric and images.dtype != np.float32:  # a hand-built split's float64 would double every pass
            object.__setattr__(self, "images", images.astype(np.float32))
        labels = np.asarray(self.labels)
        if labels.dtype.kind in "fb" and np.array_equal(labels, np.round(labels)):  # 0./1. or True/False
            object.__setattr__(self, "labels", labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> Split:
        """Return the images, labels and sources at ``indices``, in that order."""
        return Split(self.images[indices], self.labels[indices], self.sources[indices])


@dataclass(frozen=True)
class Dataset:
    """Train/val/test splits of a classification task, with its class (or label) names.

    For multi-label data ``class_names`` names the L labels, so ``num_classes`` is the number of
    output units either way.
    """

    name: str
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.class_names, str) or not all(isinstance(n, str) for n in self.class_names):
            raise WorkbenchError(
                f"{self.name}: class_names must be a tuple of names, one per class or label, "
                f"got {self.class_names!r}"
            )
        check_splits(self.splits(), where=self.name)
        check_pixels(self.splits(), where=self.name)
        check_labels_fit(self.splits(), self.class_names, where=self.name)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def task(self) -> str:
        """``"multilabel"`` for (N, L) labels, else ``"binary"`` for 2 classes, else ``"multiclass"``."""
        if self.train.labels.ndim == 2:
            return "multilabel"
        return "binary" if self.num_classes == 2 else "multiclass"

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(H, W, C) for 2-D images, (D, H, W, C) for volumes."""
        return tuple(self.train.images.shape[1:])

    @property
    def is_volumetric(self) -> bool:
        return len(self.image_shape) == 4

    def splits(self) -> dict[str, Split]:
        return {name: getattr(self, name) for name in SPLITS}

    def fingerprint(self) -> str:
        """Return a short hash of all images and labels: the cache key of anything trained on it."""
        digest = hashlib.sha256(self.name.encode())
        for split in self.splits().values():
            digest.update(np.ascontiguousarray(split.images).tobytes())
            digest.update(np.ascontiguousarray(split.labels).tobytes())
        return digest.hexdigest()[:16]

    def summary(self) -> str:
        """Return a few lines: task, image shape, and the size and class balance of each split."""
        kind = "volumes" if self.is_volumetric else "images"
        shape = "x".join(str(n) for n in self.image_shape)
        what = f"{self.num_classes} labels" if self.task == "multilabel" else f"{self.num_classes} classes"
        lines = [f"{self.name}: {self.task}, {what}, {kind} {shape}"]
        for split_name, split in self.splits().items():
            groups = len(np.unique(split.sources))
            lines.append(
                f"  {split_name:5s} {len(split):6d} {kind} from {groups} sources: {self._balance(split)}"
            )
        return "\n".join(lines)

    def _balance(self, split: Split) -> str:
        """Images per class, or positives per label for multi-label data."""
        if self.task == "multilabel":
            counts = split.labels.sum(axis=0)
        else:
            counts = np.bincount(split.labels, minlength=self.num_classes)
        return ", ".join(
            f"{name} {n} ({n / max(len(split), 1):.0%})"
            for name, n in zip(self.class_names, counts, strict=True)
        )


# --- checks shared by every loader ------------------------------------------------------------


def make_split(images: np.ndarray, labels: np.ndarray, sources: np.ndarray, where: str) -> Split:
    """Check one split's arrays and return them as a Split in canonical shapes and dtypes.

    Grey images (N, H, W) get a channel axis; so do volumes (N, D, H, W), told apart from
    (N, H, W, C) by the length of the last axis (at most ``MAX_CHANNELS`` means channels).

    Raises:
        ValueError: naming ``where`` if lengths differ, shapes are wrong or channel-first, labels
            are not class indices or 0/1 flags, or pixels are not finite or outside [0, 1].
    """
    images = channels_last(np.asarray(images), where)
    labels = _canonical_labels(np.asarray(labels), where)
    sources = np.asarray(sources).reshape(-1)
    if not (len(images) == len(labels) == len(sources)):
        raise WorkbenchError(
            f"{where}: images and labels differ in length ({len(images)} images, {len(labels)} labels)"
        )
    if len(images) == 0:
        raise WorkbenchError(f"{where}: the split is empty")
    if not (np.issubdtype(images.dtype, np.number) or images.dtype == bool):
        raise WorkbenchError(f"{where}: images must be numbers, got dtype {images.dtype}")
    images = images.astype(np.float32)
    if not np.isfinite(images).all():
        bad = int((~np.isfinite(images)).sum())
        raise WorkbenchError(f"{where}: {bad} pixels are NaN or inf; expected finite intensities")
    if images.min() < 0.0 or images.max() > 1.0:
        raise WorkbenchError(
            f"{where}: images must be scaled to [0, 1], got [{images.min()}, {images.max()}] "
            "(uint8 images are scaled by 1/255 automatically; scale other types yourself)"
        )
    return Split(images, labels, sources.astype(str))


def channels_last(images: np.ndarray, where: str) -> np.ndarray:
    """Return images as (N, H, W, C) or (N, D, H, W, C), adding a channel axis to grey data.

    Raises:
        ValueError: for channel-first arrays and for shapes that are neither images nor volumes.
    """
    expected = "(N, H, W), (N, H, W, C), (N, D, H, W) or (N, D, H, W, C) with C <= 4, channels last"
    if images.ndim in (4, 5) and images.shape[-1] > MAX_CHANNELS and images.shape[1] <= MAX_CHANNELS:
        raise WorkbenchError(
            f"{where}: images of shape {images.shape} look channel-first (C={images.shape[1]}); "
            f"expected {expected}. Convert with np.moveaxis(images, 1, -1)"
        )
    if images.ndim == 3 or (images.ndim == 4 and images.shape[-1] > MAX_CHANNELS):
        return images[..., np.newaxis]  # grey images, or grey volumes such as 3-D MedMNIST
    if images.ndim in (4, 5) and images.shape[-1] <= MAX_CHANNELS:
        return images
    raise WorkbenchError(f"{where}: images have shape {images.shape}; expected {expected}")


def _canonical_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """(N,) or (N, 1) class indices -> (N,); (N, L>1) 0/1 flags stay (N, L) (multi-label)."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim not in (1, 2):
        raise WorkbenchError(f"{where}: labels must have shape (N,), (N, 1) or (N, L), got {labels.shape}")
    integral = _is_integral(labels)
    if labels.ndim == 2:
        if labels.size and not (integral and np.isin(labels, (0, 1)).all()):
            found = np.unique(labels)[:6].tolist()
            raise WorkbenchError(
                f"{where}: multi-label labels {labels.shape} must be 0/1 flags, found values {found}"
            )
        return labels.astype(np.int64)
    if not integral or (labels.size and labels.min() < 0):
        raise WorkbenchError(
            f"{where}: labels must be non-negative integers (class indices), got dtype {labels.dtype}"
            + (f" with minimum {labels.min()}" if labels.size and integral else "")
        )
    return labels.astype(np.int64)


def _is_integral(labels: np.ndarray) -> bool:
    """Integer or boolean labels, or floats that are all whole numbers (0.0/1.0 as saved by many tools)."""
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:
        return True
    if not np.issubdtype(labels.dtype, np.floating):
        return False
    return bool(np.isfinite(labels).all() and (labels == np.round(labels)).all())


def check_seed(seed: int) -> None:
    """Refuse a seed NumPy's generators would reject deep inside (negative, float, bool)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise WorkbenchError(f"seed must be a non-negative integer, got {seed!r}")


def check_dataset(dataset, argument: str = "dataset") -> None:
    """Refuse anything but a Dataset (a path or a name is loaded by ``workbench.load_dataset``)."""
    if not isinstance(dataset, Dataset):
        kind = type(dataset).__name__
        raise WorkbenchError(f"{argument} must be a Dataset (workbench.load_dataset), not {kind}")


def evaluation_splits(data, test=None) -> tuple:
    """The (validation, test) splits to evaluate on: a Dataset's own, or a Split and ``test``.

    Every evaluating function takes the Dataset, as ``fine_tune`` does; the split form stays for
    callers that choose other splits (``budget`` ranks fine-tuned candidates on val alone).
    """
    if isinstance(data, Dataset):
        if test is not None:
            raise WorkbenchError(
                "test must not be given with a Dataset (its val and test splits are used); "
                "to choose the splits pass data.val, test"
            )
        return data.val, data.test
    if test is None:
        kind = type(data).__name__
        raise WorkbenchError(
            f"data must be a Dataset (workbench.load_dataset), or a validation Split with test=, not {kind}"
        )
    return data, test


def images_and_labels(images, labels=None) -> tuple:
    """The arrays of a Split (``images=data.val``), or the two arrays given."""
    if isinstance(images, Split):
        if labels is not None:
            raise WorkbenchError("labels must not be given with a Split (its own labels are used)")
        return images.images, images.labels
    if labels is None:
        kind = type(images).__name__
        raise WorkbenchError(f"images must be a Split (e.g. data.val), or an array with labels=, not {kind}")
    return images, labels


def check_splits(splits: dict[str, Split], where: str) -> None:
    """Refuse splits whose images or labels differ in shape: one model cannot read them all.

    Raises:
        ValueError: naming ``where`` and every split's shape.
    """
    for name, split in splits.items():
        sizes = {"images": len(split.images), "labels": len(split.labels), "sources": len(split.sources)}
        if len(set(sizes.values())) > 1:
            raise WorkbenchError(f"{where}: {name} holds {sizes}; expected one label and source per image")
        if split.images.ndim not in (4, 5):
            raise WorkbenchError(
                f"{where}: {name} images must be (N, H, W, C) or (N, D, H, W, C) with a channel axis, "
                f"got shape {split.images.shape} (add one: images[..., None])"
            )
        if split.labels.ndim not in (1, 2):
            raise WorkbenchError(
                f"{where}: {name} labels must be class indices of shape (N,) or 0/1 flags per label of "
                f"shape (N, L), got shape {split.labels.shape}"
            )
        if not np.issubdtype(split.labels.dtype, np.integer):
            raise WorkbenchError(
                f"{where}: {name} labels must be whole class indices (or 0/1 flags per label), got "
                f"{split.labels.dtype} values such as {np.unique(split.labels)[:4].tolist()}"
            )
    for attribute, what in (("images", "image shape"), ("labels", "label width")):
        shapes = {name: getattr(split, attribute).shape[1:] for name, split in splits.items()}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
            raise WorkbenchError(f"{where}: splits differ in {what} ({listed}); expected one for all splits")


def check_pixels(splits: dict[str, Split], where: str) -> None:
    """Refuse images that are not finite numbers in [0, 1]: a NaN reaches the metrics as an error
    that names no image, and 0-255 images put every layer's activations off by 255x.

    Raises:
        ValueError: naming ``where``, the split and the range found.
    """
    for name, split in splits.items():
        images = split.images
        if not np.issubdtype(images.dtype, np.number):
            raise WorkbenchError(
                f"{where}: {name} images must be numbers in [0, 1], got dtype {images.dtype}"
            )
        if images.size == 0:
            continue
        low, high = float(images.min()), float(images.max())  # NaN if any image holds a NaN
        if not (np.isfinite(low) and np.isfinite(high)):
            raise WorkbenchError(f"{where}: {name} images hold NaN or inf values; expected numbers in [0, 1]")
        if low < 0 or high > 1:
            raise WorkbenchError(
                f"{where}: {name} images must be scaled to [0, 1] (as the loaders give them), "
                f"got values {low:g}..{high:g}"
            )


def check_labels_fit(splits: dict[str, Split], class_names: tuple[str, ...], where: str) -> None:
    """Refuse labels that do not fit ``class_names``: an index past the end, or the wrong width.

    Raises:
        ValueError: naming ``where``, the labels found and the classes declared.
    """
    labels = [split.labels for split in splits.values()]
    if labels[0].ndim == 2:
        if labels[0].shape[1] != len(class_names):
            hint = (
                "; labels of shape (N, 1) are one label's 0/1 flags: for class indices pass shape (N,) "
                "(labels.reshape(-1))"
                if labels[0].shape[1] == 1
                else ""
            )
            raise WorkbenchError(
                f"{where}: class_names must name each of the {labels[0].shape[1]} labels, "
                f"got {len(class_names)} names {list(class_names)}{hint}"
            )
        return
    largest = max(int(lab.max()) for lab in labels)
    if largest >= len(class_names):
        raise WorkbenchError(
            f"{where}: class_names must have {largest + 1} names (labels go up to {largest}), "
            f"got {len(class_names)}: {list(class_names)}"
        )


def class_names_for(
    splits: dict[str, Split], names: tuple[str, ...] | list[str] | None, where: str
) -> tuple[str, ...]:
    """Return the given names (checked) or, without them, ``class i`` / ``label i`` names.

    Without names, single-label classes are inferred as 0..max and every one of them must occur:
    labels {2, 3} would otherwise make a 4-class task with two empty classes.

    Raises:
        ValueError: for names that are not strings, duplicates, or labels that leave classes empty.
    """
    labels = [split.labels for split in splits.values()]
    if isinstance(names, str):
        raise WorkbenchError(f"class_names must be a list of names, got the single string {names!r}")
    if names is not None:
        names = tuple(names)
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise WorkbenchError(f"class_names must be distinct non-empty strings, got {list(names)}")
        check_labels_fit(splits, names, where)
        if labels[0].ndim == 1 and len(names) < 2:
            raise WorkbenchError(f"class_names must name at least 2 classes, got {list(names)}")
        return names
    if labels[0].ndim == 2:
        return tuple(f"label {i}" for i in range(labels[0].shape[1]))
    present = np.unique(np.concatenate(labels))
    num_classes = int(present.max()) + 1
    empty = sorted(set(range(num_classes)) - set(present.tolist()))
    if empty or num_classes < 2:
        raise WorkbenchError(
            f"{where}: labels are {present.tolist()}, which leaves classes {empty} without any image; "
            f"expected labels 0..K-1 with K >= 2, each used. Relabel them, or pass class_names naming "
            "every class (then a class may be absent)"
        )
    return tuple(f"class {i}" for i in range(num_classes))


# --- a calibration sample ---------------------------------------------------------------------


def stratified_sample(split: Split, n: int, seed: int = 0) -> Split:
    """Draw ``n`` images with the class balance of ``split``, reproducibly from ``seed``.

    Each class (multi-label: each combination of labels) gets its share of ``n``, rounded by
    largest remainder with seeded tie-breaks; images inside a class are drawn at random. The
    sample keeps the split's order. ``n >= len(split)`` returns the whole split.

    Example:
        >>> calibration = stratified_sample(data.train, 16, seed=0)
        >>> len(calibration.labels), sorted(set(calibration.labels.tolist())) == [0, 1]
        (16, True)

    Raises:
        ValueError: if ``n`` is not a positive integer.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise WorkbenchError(f"n must be a positive integer (images to draw), got {n!r}")
    check_seed(seed)
    if n >= len(split):
        return split
    rng = np.random.default_rng(seed)
    strata = _strata(split.labels)
    groups = [np.flatnonzero(strata == key) for key in np.unique(strata)]
    takes = _largest_remainder(np.array([len(g) for g in groups]), int(n), rng)
    picked = [rng.choice(group, size=take, replace=False) for group, take in zip(groups, takes, strict=True)]
    return split.subset(np.sort(np.concatenate(picked)))


def _strata(labels: np.ndarray) -> np.ndarray:
    """One key per image: its class, or its combination of labels for multi-label data."""
    if labels.ndim == 1:
        return labels
    return np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)


def _largest_remainder(counts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``n`` in proportion to ``counts``: floors, then one more for the largest remainders."""
    # Written here rather than sklearn's StratifiedShuffleSplit: that refuses classes with one
    # member and n smaller than the number of classes, both common in calibration samples.
    quota = counts * n / counts.sum()
    takes = np.floor(quota).astype(int)
    order = np.lexsort((rng.random(len(counts)), -(quota - takes)))
    takes[order[: n - takes.sum()]] += 1
    return takes


# --- MedMNIST .npz ----------------------------------------------------------------------------


def load_npz(path: str | Path, class_names: tuple[str, ...] | list[str] | None = None) -> Dataset:
    """Load a MedMNIST-format ``.npz`` (keys ``train_images``, ``train_labels``, ``val_*``, ``test_*``).

    2-D images (N, H, W[, C]) and 3-D volumes (N, D, H, W) such as OrganMNIST3D are read, channels
    last; uint8 pixels are scaled to [0, 1]. Labels (N,) or (N, 1) are class indices; (N, L) 0/1
    flags make a multi-label dataset.

    Args:
        class_names: names of the classes (multi-label: of the labels), checked against the labels.
            Without them, labels must be 0..K-1 with every class used.

    Example (not run here: it reads the shared X-ray file)::

        ds = load_npz("../shared/data/pneumoniamnist.npz")

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a readable ``.npz``, lacks a key, or holds arrays that
            cannot be read correctly (the message says what was found and what was expected).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MedMNIST file not found: {path}")
    arrays = _read_npz(path)
    expected = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    missing = [key for key in expected if key not in arrays]
    if missing:
        raise WorkbenchError(
            f"{path}: missing keys {missing}; a MedMNIST file has {expected}, found {sorted(arrays)}"
        )
    splits = {}
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
        sources = np.array([f"{path.name}:{split}:{i}" for i in range(len(images))])
        splits[split] = make_split(images, labels, sources, where=f"{path} [{split}]")
    check_splits(splits, where=str(path))
    return Dataset(path.stem, **splits, class_names=class_names_for(splits, class_names, str(path)))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise WorkbenchError(f"{path}: not a readable .npz file (corrupt or truncated?): {err}") from err


# --- splitting by group ----------------------------------------------------------------------


def split_groups(
    groups: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> dict[str, np.ndarray]:
    """Assign whole groups (volumes, patients) to train/val/test; return a boolean mask per split.

    Groups are shuffled with ``seed`` and dealt out by ``fractions``, each split getting at least one.
    """
    unique = np.unique(groups)
    if len(unique) < 3:
        raise WorkbenchError(
            f"need at least 3 volumes to split by volume into train/val/test, got {len(unique)}"
        )
    order = np.random.default_rng(seed).permutation(unique)
    n_val = max(1, round(fractions[1] * len(unique)))
    n_test = max(1, round(fractions[2] * len(unique)))
    n_train = len(unique) - n_val - n_test
    if n_train < 1:
        raise WorkbenchError(f"fractions {fractions} leave no training volume out of {len(unique)}")
    owners = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    return {split: np.isin(groups, members) for split, members in owners.items()}
