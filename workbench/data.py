"""Datasets in one shape: train/val/test images float32 in [0, 1], labels, provenance.

Images are (N, H, W, C) for 2-D data and (N, D, H, W, C) for volumes, always channels last.
Labels are int64 (N,) class indices, or (N, L) 0/1 flags for multi-label data.
Sources: MedMNIST ``.npz`` files (2-D and 3-D) and folders of NIfTI volumes (the offline phantom
is one), read as 2-D slices or as whole volumes.
Everything here is NumPy, SciPy and nibabel; nothing imports TensorFlow.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
MAX_CHANNELS = 4  # a last axis this short holds channels (grey, RGB, RGBA); longer is spatial
MODES = ("slice", "volume")
DEFAULT_SIZES = {"slice": (32, 32), "volume": (16, 32, 32)}


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
        check_splits(self.splits(), where=self.name)
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
        raise ValueError(
            f"{where}: images and labels differ in length ({len(images)} images, {len(labels)} labels)"
        )
    if len(images) == 0:
        raise ValueError(f"{where}: the split is empty")
    if not (np.issubdtype(images.dtype, np.number) or images.dtype == bool):
        raise ValueError(f"{where}: images must be numbers, got dtype {images.dtype}")
    images = images.astype(np.float32)
    if not np.isfinite(images).all():
        bad = int((~np.isfinite(images)).sum())
        raise ValueError(f"{where}: {bad} pixels are NaN or inf; expected finite intensities")
    if images.min() < 0.0 or images.max() > 1.0:
        raise ValueError(f"{where}: images must be scaled to [0, 1], got [{images.min()}, {images.max()}]")
    return Split(images, labels, sources.astype(str))


def channels_last(images: np.ndarray, where: str) -> np.ndarray:
    """Return images as (N, H, W, C) or (N, D, H, W, C), adding a channel axis to grey data.

    Raises:
        ValueError: for channel-first arrays and for shapes that are neither images nor volumes.
    """
    expected = "(N, H, W), (N, H, W, C), (N, D, H, W) or (N, D, H, W, C) with C <= 4, channels last"
    if images.ndim in (4, 5) and images.shape[-1] > MAX_CHANNELS and images.shape[1] <= MAX_CHANNELS:
        raise ValueError(
            f"{where}: images of shape {images.shape} look channel-first (C={images.shape[1]}); "
            f"expected {expected}. Convert with np.moveaxis(images, 1, -1)"
        )
    if images.ndim == 3 or (images.ndim == 4 and images.shape[-1] > MAX_CHANNELS):
        return images[..., np.newaxis]  # grey images, or grey volumes such as 3-D MedMNIST
    if images.ndim in (4, 5) and images.shape[-1] <= MAX_CHANNELS:
        return images
    raise ValueError(f"{where}: images have shape {images.shape}; expected {expected}")


def _canonical_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """(N,) or (N, 1) class indices -> (N,); (N, L>1) 0/1 flags stay (N, L) (multi-label)."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim not in (1, 2):
        raise ValueError(f"{where}: labels must have shape (N,), (N, 1) or (N, L), got {labels.shape}")
    integral = np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool
    if labels.ndim == 2:
        if labels.size and not (integral and np.isin(labels, (0, 1)).all()):
            found = np.unique(labels)[:6].tolist()
            raise ValueError(
                f"{where}: multi-label labels {labels.shape} must be 0/1 flags, found values {found}"
            )
        return labels.astype(np.int64)
    if not integral or (labels.size and labels.min() < 0):
        raise ValueError(
            f"{where}: labels must be non-negative integers (class indices), got dtype {labels.dtype}"
            + (f" with minimum {labels.min()}" if labels.size and integral else "")
        )
    return labels.astype(np.int64)


def check_splits(splits: dict[str, Split], where: str) -> None:
    """Refuse splits whose images or labels differ in shape: one model cannot read them all.

    Raises:
        ValueError: naming ``where`` and every split's shape.
    """
    for attribute, what in (("images", "image shape"), ("labels", "label width")):
        shapes = {name: getattr(split, attribute).shape[1:] for name, split in splits.items()}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
            raise ValueError(f"{where}: splits differ in {what} ({listed}); expected one for all splits")


def check_labels_fit(splits: dict[str, Split], class_names: tuple[str, ...], where: str) -> None:
    """Refuse labels that do not fit ``class_names``: an index past the end, or the wrong width.

    Raises:
        ValueError: naming ``where``, the labels found and the classes declared.
    """
    labels = [split.labels for split in splits.values()]
    if labels[0].ndim == 2:
        if labels[0].shape[1] != len(class_names):
            raise ValueError(
                f"{where}: class_names must name each of the {labels[0].shape[1]} labels, "
                f"got {len(class_names)} names {list(class_names)}"
            )
        return
    largest = max(int(lab.max()) for lab in labels)
    if largest >= len(class_names):
        raise ValueError(
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
    if names is not None:
        names = tuple(names)
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"class_names must be distinct non-empty strings, got {list(names)}")
        check_labels_fit(splits, names, where)
        return names
    if labels[0].ndim == 2:
        return tuple(f"label {i}" for i in range(labels[0].shape[1]))
    present = np.unique(np.concatenate(labels))
    num_classes = int(present.max()) + 1
    empty = sorted(set(range(num_classes)) - set(present.tolist()))
    if empty or num_classes < 2:
        raise ValueError(
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
        >>> calibration = stratified_sample(data.train, 256, seed=0)  # doctest: +SKIP

    Raises:
        ValueError: if ``n`` is not a positive integer.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer (images to draw), got {n!r}")
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

    Example:
        >>> ds = load_npz("../shared/data/pneumoniamnist.npz")   # doctest: +SKIP

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
        raise ValueError(
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
        raise ValueError(f"{path}: not a readable .npz file (corrupt or truncated?): {err}") from err


# --- NIfTI volumes ----------------------------------------------------------------------------


def load_nifti_folder(
    folder: str | Path,
    labels_csv: str | Path | None = None,
    *,
    mode: str = "slice",
    axis: int = 2,
    size: tuple[int, ...] | None = None,
    frame: int | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    class_names: tuple[str, ...] | list[str] | None = None,
) -> Dataset:
    """Load NIfTI volumes from ``folder`` as 2-D slices or whole volumes, split by volume.

    No patient is in two splits. The labels CSV (default ``folder/labels.csv``) has a header and
    either volume-level rows ``volume,label`` (every slice gets the volume's label) or slice-level
    rows ``volume,slice,label`` (only the listed slices are used). ``volume`` is the file name
    without ``.nii``/``.nii.gz``. Volumes in the folder but not in the CSV are left out with a
    warning that names them.

    Args:
        mode: ``"slice"``: images are slices (N, H, W, 1) along ``axis``. ``"volume"``: images are
            whole volumes (N, D, H, W, 1), D along ``axis``, with volume-level labels; 0/1
            slice-level labels become 1 for a volume with any positive slice.
        axis: the volume axis to slice along (0, 1 or 2); in volume mode, the depth axis.
        size: (H, W) of every slice, or (D, H, W) of every volume; default ``DEFAULT_SIZES[mode]``.
        frame: for 4D volumes, which frame (last axis) to use; required for 4D, refused for 3D.
        percentiles: each volume's intensities are clipped to these percentiles and scaled to [0, 1].
        fractions: train/val/test fractions of the volumes.

    Example:
        >>> ds = load_nifti_folder("data/phantom", mode="volume", size=(16, 32, 32))  # doctest: +SKIP

    Raises:
        FileNotFoundError: if the folder or CSV is missing.
        ValueError: for an empty folder, a volume saved both as .nii and .nii.gz, unknown or
            duplicated rows in the CSV, unreadable or non-3D volumes, or arguments out of range.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"NIfTI folder not found: {folder}")
    size = _check_mode_and_size(mode, size)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    _check_fractions(fractions)
    volumes = find_volumes(folder)
    labels_csv = Path(labels_csv) if labels_csv else folder / "labels.csv"
    table = read_labels_csv(labels_csv, known_volumes=set(volumes))
    _warn_unlisted(set(volumes) - set(table.volumes), labels_csv)
    read = _read_volumes if mode == "volume" else _read_slices
    images, labels, sources = read(volumes, table, labels_csv, axis, size, frame, percentiles)
    return _split_by_group(folder.name, images, labels, sources, fractions, seed, class_names)


def _check_mode_and_size(mode: str, size: tuple[int, ...] | None) -> tuple[int, ...]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    size = DEFAULT_SIZES[mode] if size is None else tuple(size)
    dims = len(DEFAULT_SIZES[mode])
    if len(size) != dims or not all(isinstance(s, int | np.integer) and s > 0 for s in size):
        raise ValueError(f"size must be {dims} positive integers in {mode} mode, got {size!r}")
    return size


def find_volumes(folder: Path) -> dict[str, Path]:
    """Map volume id -> NIfTI file in ``folder``; refuse an id saved both as .nii and .nii.gz."""
    volumes: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.name.endswith(NIFTI_SUFFIXES):
            continue
        volume_id = _volume_id(path)
        if volume_id in volumes:
            raise ValueError(
                f"{folder}: volume {volume_id!r} is saved twice, as {volumes[volume_id].name} and "
                f"{path.name}; expected one file per volume. Remove or rename one of them"
            )
        volumes[volume_id] = path
    if not volumes:
        raise ValueError(f"{folder}: no .nii or .nii.gz files found")
    return volumes


def _warn_unlisted(unlisted: set[str], labels_csv: Path) -> None:
    if unlisted:
        names = sorted(unlisted)
        # warnings, not only the log: the user must fix their CSV or folder, and should see it.
        message = (
            f"{labels_csv} does not list {len(names)} volume(s) of the folder, which are left out: "
            f"{names[:10]}{' ...' if len(names) > 10 else ''}"
        )
        log.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def _read_slices(volumes, table, labels_csv, axis, size, frame, percentiles):
    images, labels, sources = [], [], []
    for volume_id in table.volumes:
        slices = volume_slices(volumes[volume_id], axis=axis, size=size, frame=frame, percentiles=percentiles)
        wanted = table.by_slice.get(volume_id)
        picks = range(len(slices)) if wanted is None else sorted(wanted)
        for index in picks:
            if index >= len(slices):
                raise ValueError(f"{labels_csv}: {volume_id} has {len(slices)} slices, no slice {index}")
            images.append(slices[index])
            labels.append(table.by_volume[volume_id] if wanted is None else wanted[index])
            sources.append(volume_id)
    return np.stack(images), np.array(labels), np.array(sources)


def _read_volumes(volumes, table, labels_csv, axis, size, frame, percentiles):
    labels = table.volume_labels(labels_csv)
    images = [
        resized_volume(volumes[volume_id], axis=axis, size=size, frame=frame, percentiles=percentiles)
        for volume_id in table.volumes
    ]
    return np.stack(images), np.array([labels[v] for v in table.volumes]), np.array(table.volumes)


@dataclass(frozen=True)
class LabelTable:
    """What a labels CSV says: a label per volume, or a label per listed slice of each volume."""

    by_volume: dict[str, int]
    by_slice: dict[str, dict[int, int]]

    @property
    def volumes(self) -> list[str]:
        """The volumes the CSV lists, in the order it first names them."""
        return list(self.by_volume or self.by_slice)

    def volume_labels(self, path: Path) -> dict[str, int]:
        """One label per volume; 0/1 slice labels give 1 to a volume with any positive slice."""
        if self.by_volume:
            return self.by_volume
        values = {label for slices in self.by_slice.values() for label in slices.values()}
        if not values <= {0, 1}:
            raise ValueError(
                f"{path}: volume mode needs one label per volume (columns volume,label); slice labels "
                f"can only be merged when they are 0/1, got {sorted(values)}"
            )
        return {volume: max(slices.values()) for volume, slices in self.by_slice.items()}


def read_labels_csv(path: Path, known_volumes: set[str]) -> LabelTable:
    """Read a volume- or slice-level labels CSV; every volume it names must exist, once.

    Raises:
        FileNotFoundError: if the CSV is missing.
        ValueError: for a bad header, a non-integer cell, an unknown volume, or a volume (or a
            volume's slice) listed twice, naming the CSV line.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"labels CSV not found: {path} (expected columns volume,label or volume,slice,label)"
        )
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: Excel's byte-order mark
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a readable CSV text file: {err}") from err
    columns = set(rows[0]) if rows else set()
    if not rows or not {"volume", "label"} <= columns:
        raise ValueError(
            f"{path}: expected a header volume,label or volume,slice,label, got {sorted(columns)}"
        )
    unknown = sorted({row["volume"] for row in rows} - known_volumes)
    if unknown:
        raise ValueError(f"{path}: names volumes with no NIfTI file in the folder: {unknown[:5]}")
    table = LabelTable(by_volume={}, by_slice={})
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        label = _parse_int(row["label"], path, "label")
        if "slice" in columns:
            key, store = _parse_int(row["slice"], path, "slice"), table.by_slice.setdefault(row["volume"], {})
        else:
            key, store = row["volume"], table.by_volume
        if key in store:
            what = f"slice {key} of {row['volume']}" if "slice" in columns else f"volume {key}"
            raise ValueError(f"{path}: line {line} lists {what} a second time; expected each once")
        store[key] = label
    return table


def _parse_int(text: str | None, path: Path, column: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: column {column} must hold non-negative integers, got {text!r}") from None
    if value < 0:
        raise ValueError(f"{path}: column {column} must hold non-negative integers, got {value}")
    return value


def read_volume(path: str | Path, frame: int | None = None) -> np.ndarray:
    """Read a NIfTI file as a finite float32 3D array; a 4D file needs an explicit ``frame``."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NIfTI file not found: {path}")
    try:
        data = np.asarray(nib.load(path).get_fdata(dtype=np.float32))
    except Exception as err:  # nibabel raises many kinds for corrupt/truncated files
        raise ValueError(f"{path}: not a readable NIfTI file (corrupt or truncated?): {err}") from err
    if data.ndim == 4:
        if frame is None:
            raise ValueError(f"{path}: 4D volume {data.shape}; pass frame=<index> to pick one frame")
        if not 0 <= frame < data.shape[3]:
            raise ValueError(f"frame must be in [0, {data.shape[3]}), got {frame} for {path}")
        data = data[..., frame]
    elif frame is not None:
        raise ValueError(f"{path}: frame={frame} given but the volume is {data.ndim}D, not 4D")
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got {data.ndim}D with shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: volume holds NaN or inf voxels; expected finite intensities")
    return data


def volume_slices(
    path: str | Path,
    *,
    axis: int = 2,
    size: tuple[int, int] = (32, 32),
    frame: int | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> np.ndarray:
    """Return a volume's slices along ``axis`` as (S, H, W, 1) float32 in [0, 1], resized to ``size``."""
    from scipy.ndimage import zoom

    volume = normalise_intensity(read_volume(path, frame), percentiles)
    slices = np.moveaxis(volume, axis, 0)
    factors = (1, size[0] / slices.shape[1], size[1] / slices.shape[2])
    resized = zoom(slices, factors, order=1, grid_mode=True, mode="nearest")
    return np.clip(resized, 0.0, 1.0)[..., np.newaxis].astype(np.float32)


def resized_volume(
    path: str | Path,
    *,
    axis: int = 2,
    size: tuple[int, int, int] = (16, 32, 32),
    frame: int | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> np.ndarray:
    """Return a whole volume as (D, H, W, 1) float32 in [0, 1], depth along ``axis``, resized to ``size``."""
    from scipy.ndimage import zoom

    volume = np.moveaxis(normalise_intensity(read_volume(path, frame), percentiles), axis, 0)
    factors = [target / have for target, have in zip(size, volume.shape, strict=True)]
    resized = zoom(volume, factors, order=1, grid_mode=True, mode="nearest")
    return np.clip(resized, 0.0, 1.0)[..., np.newaxis].astype(np.float32)


def normalise_intensity(volume: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Clip a volume to its intensity percentiles and scale to [0, 1] (robust to hot voxels)."""
    low, high = np.percentile(volume, percentiles)
    if high <= low:
        return np.zeros_like(volume, dtype=np.float32)
    return np.clip((volume - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _volume_id(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name[: -len(".nii")]


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or min(fractions) <= 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")


def split_groups(
    groups: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> dict[str, np.ndarray]:
    """Assign whole groups (volumes, patients) to train/val/test; return a boolean mask per split.

    Groups are shuffled with ``seed`` and dealt out by ``fractions``, each split getting at least one.
    """
    unique = np.unique(groups)
    if len(unique) < 3:
        raise ValueError(f"need at least 3 volumes to split by volume into train/val/test, got {len(unique)}")
    order = np.random.default_rng(seed).permutation(unique)
    n_val = max(1, round(fractions[1] * len(unique)))
    n_test = max(1, round(fractions[2] * len(unique)))
    n_train = len(unique) - n_val - n_test
    if n_train < 1:
        raise ValueError(f"fractions {fractions} leave no training volume out of {len(unique)}")
    owners = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    return {split: np.isin(groups, members) for split, members in owners.items()}


def _split_by_group(name, images, labels, sources, fractions, seed, class_names) -> Dataset:
    masks = split_groups(sources, fractions, seed)
    splits = {
        split: make_split(images[m], labels[m], sources[m], where=f"{name} [{split}]")
        for split, m in masks.items()
    }
    return Dataset(name, **splits, class_names=class_names_for(splits, class_names, name))
