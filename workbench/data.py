"""Datasets in one shape: train/val/test images (N, H, W, C) float32 in [0, 1], labels, provenance.

Sources: MedMNIST ``.npz`` files and folders of NIfTI volumes (the offline phantom is one).
Everything here is NumPy, SciPy and nibabel; nothing imports TensorFlow.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Split:
    """One split: images (N, H, W, C) float32 in [0, 1], int64 labels (N,), and sources (N,).

    ``sources[i]`` says where image i came from: the volume (patient) id for NIfTI data,
    ``"<file>:<split>:<index>"`` for MedMNIST.
    """

    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    """Train/val/test splits of a classification task, with its class names."""

    name: str
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

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
        """Return a few lines: sizes, class balance and image shape of each split."""
        h, w, c = self.image_shape
        lines = [f"{self.name}: {self.num_classes} classes, images {h}x{w}x{c}"]
        for split_name, split in self.splits().items():
            counts = np.bincount(split.labels, minlength=self.num_classes)
            balance = ", ".join(
                f"{cls} {n} ({n / max(len(split), 1):.0%})"
                for cls, n in zip(self.class_names, counts, strict=True)
            )
            groups = len(np.unique(split.sources))
            lines.append(f"  {split_name:5s} {len(split):6d} images from {groups} sources: {balance}")
        return "\n".join(lines)


def make_split(images: np.ndarray, labels: np.ndarray, sources: np.ndarray, where: str) -> Split:
    """Check one split's arrays and return them as a Split in canonical dtypes.

    Raises:
        ValueError: naming ``where`` if lengths differ, shapes are wrong, or pixels are not finite.
    """
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    sources = np.asarray(sources).reshape(-1)
    if images.ndim == 3:  # (N, H, W) grey images get a channel axis
        images = images[..., np.newaxis]
    if images.ndim != 4:
        raise ValueError(f"{where}: images must have shape (N, H, W) or (N, H, W, C), got {images.shape}")
    if not (len(images) == len(labels) == len(sources)):
        raise ValueError(
            f"{where}: images and labels differ in length ({len(images)} images, {len(labels)} labels)"
        )
    if len(images) == 0:
        raise ValueError(f"{where}: the split is empty")
    images = images.astype(np.float32)
    if not np.isfinite(images).all():
        bad = int((~np.isfinite(images)).sum())
        raise ValueError(f"{where}: {bad} pixels are NaN or inf; expected finite intensities")
    if images.min() < 0.0 or images.max() > 1.0:
        raise ValueError(f"{where}: images must be scaled to [0, 1], got [{images.min()}, {images.max()}]")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"{where}: labels must be non-negative integers, got dtype {labels.dtype}")
    return Split(images, labels.astype(np.int64), sources.astype(str))


# --- MedMNIST .npz ----------------------------------------------------------------------------


def load_npz(path: str | Path, class_names: tuple[str, ...] | None = None) -> Dataset:
    """Load a MedMNIST-format ``.npz`` (keys ``train_images``, ``train_labels``, ``val_*``, ``test_*``).

    uint8 images are scaled to [0, 1]. Multi-label files (labels of width > 1) are not supported.

    Example:
        >>> ds = load_npz("../shared/data/pneumoniamnist.npz")   # doctest: +SKIP

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a readable ``.npz``, lacks a key, or holds bad arrays.
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
        if labels.ndim == 2 and labels.shape[1] > 1:
            raise ValueError(
                f"{path}: {split}_labels is multi-label {labels.shape}; expected one label per image"
            )
        images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
        sources = np.array([f"{path.name}:{split}:{i}" for i in range(len(images))])
        splits[split] = make_split(images, labels, sources, where=f"{path} [{split}]")
    num_classes = int(max(s.labels.max() for s in splits.values())) + 1
    return Dataset(path.stem, **splits, class_names=_class_names(class_names, num_classes))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npz file (corrupt or truncated?): {err}") from err


def _class_names(names: tuple[str, ...] | None, num_classes: int) -> tuple[str, ...]:
    if names is None:
        return tuple(f"class {i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise ValueError(
            f"class_names must have {num_classes} names (labels 0..{num_classes - 1}), got {names}"
        )
    return tuple(names)


# --- NIfTI volumes ----------------------------------------------------------------------------


def load_nifti_folder(
    folder: str | Path,
    labels_csv: str | Path | None = None,
    *,
    axis: int = 2,
    size: tuple[int, int] = (32, 32),
    frame: int | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """Load NIfTI volumes from ``folder`` as 2D slices, split by volume so no patient is in two splits.

    The labels CSV (default ``folder/labels.csv``) has a header and either volume-level rows
    ``volume,label`` (every slice gets the volume's label) or slice-level rows
    ``volume,slice,label`` (only the listed slices are used). ``volume`` is the file name
    without ``.nii``/``.nii.gz``.

    Args:
        axis: the volume axis to slice along (0, 1 or 2).
        size: (height, width) every slice is resized to.
        frame: for 4D volumes, which frame (last axis) to use; required for 4D, refused for 3D.
        percentiles: each volume's intensities are clipped to these percentiles and scaled to [0, 1].
        fractions: train/val/test fractions of the volumes.

    Raises:
        FileNotFoundError: if the folder or CSV is missing.
        ValueError: for an empty folder, unknown volumes in the CSV, unreadable or non-3D volumes,
            or arguments out of range.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"NIfTI folder not found: {folder}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    _check_fractions(fractions)
    volumes = {_volume_id(p): p for p in sorted(folder.iterdir()) if p.name.endswith(NIFTI_SUFFIXES)}
    if not volumes:
        raise ValueError(f"{folder}: no .nii or .nii.gz files found")
    labels_csv = Path(labels_csv) if labels_csv else folder / "labels.csv"
    slice_labels = read_labels_csv(labels_csv, known_volumes=set(volumes))
    images, labels, sources = [], [], []
    for volume_id, wanted in slice_labels.items():
        slices = volume_slices(volumes[volume_id], axis=axis, size=size, frame=frame, percentiles=percentiles)
        picks = range(len(slices)) if wanted is None else sorted(wanted)
        for index in picks:
            if index >= len(slices):
                raise ValueError(f"{labels_csv}: {volume_id} has {len(slices)} slices, no slice {index}")
            images.append(slices[index])
            labels.append(wanted[index] if wanted is not None else slice_labels.volume_label[volume_id])
            sources.append(volume_id)
    return _split_by_group(
        folder.name, np.stack(images), np.array(labels), np.array(sources), fractions, seed, class_names
    )


class _SliceLabels(dict):
    """volume id -> {slice: label} (slice-level) or None (volume-level; see ``volume_label``)."""

    volume_label: dict[str, int]


def read_labels_csv(path: Path, known_volumes: set[str]) -> _SliceLabels:
    """Read a volume- or slice-level labels CSV and check that every volume it names exists."""
    if not path.is_file():
        raise FileNotFoundError(
            f"labels CSV not found: {path} (expected columns volume,label or volume,slice,label)"
        )
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0]) if rows else set()
    if not rows or not {"volume", "label"} <= columns:
        raise ValueError(
            f"{path}: expected a header volume,label or volume,slice,label, got {sorted(columns)}"
        )
    unknown = sorted({row["volume"] for row in rows} - known_volumes)
    if unknown:
        raise ValueError(f"{path}: names volumes with no NIfTI file in the folder: {unknown[:5]}")
    result = _SliceLabels()
    result.volume_label = {}
    for row in rows:
        label = _parse_int(row["label"], path, "label")
        if "slice" in columns:
            result.setdefault(row["volume"], {})[_parse_int(row["slice"], path, "slice")] = label
        else:
            result[row["volume"]] = None
            result.volume_label[row["volume"]] = label
    return result


def _parse_int(text: str, path: Path, column: str) -> int:
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
    names = _class_names(class_names, int(labels.max()) + 1)
    splits = {
        split: make_split(images[m], labels[m], sources[m], where=f"{name} [{split}]")
        for split, m in masks.items()
    }
    return Dataset(name, **splits, class_names=names)
