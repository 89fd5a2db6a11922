"""Folders of NIfTI volumes as a Dataset: 2-D slices or whole volumes, split by volume.

A folder holds ``<volume>.nii`` or ``<volume>.nii.gz`` files and a ``labels.csv`` with either a
label per volume or a label per slice. No volume (patient) is ever in two splits. The offline
phantom (``workbench.data.phantom``) is such a folder. NumPy, SciPy and nibabel; no TensorFlow.
"""

from __future__ import annotations

import csv
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.data.dataset import Dataset, check_seed, class_names_for, make_split, split_groups

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
MODES = ("slice", "volume")
DEFAULT_SIZES = {"slice": (32, 32), "volume": (16, 32, 32)}


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

    Example (not run here: it reads the generated phantom volumes)::

        ds = load_nifti_folder("data/phantom", mode="volume", size=(16, 32, 32))

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
        raise WorkbenchError(f"axis must be 0, 1 or 2, got {axis}")
    _check_fractions(fractions)
    _check_percentiles(percentiles)
    check_seed(seed)
    volumes = find_volumes(folder)
    labels_csv = Path(labels_csv) if labels_csv else folder / "labels.csv"
    table = read_labels_csv(labels_csv, known_volumes=set(volumes))
    _warn_unlisted(set(volumes) - set(table.volumes), labels_csv)
    read = _read_volumes if mode == "volume" else _read_slices
    images, labels, sources = read(volumes, table, labels_csv, axis, size, frame, percentiles)
    return _split_by_group(folder.name, images, labels, sources, fractions, seed, class_names)


def _check_mode_and_size(mode: str, size: tuple[int, ...] | None) -> tuple[int, ...]:
    if mode not in MODES:
        raise WorkbenchError(f"mode must be one of {MODES}, got {mode!r}")
    size = DEFAULT_SIZES[mode] if size is None else tuple(size)
    dims = len(DEFAULT_SIZES[mode])
    if len(size) != dims or not all(isinstance(s, int | np.integer) and s > 0 for s in size):
        raise WorkbenchError(f"size must be {dims} positive integers in {mode} mode, got {size!r}")
    return size


def find_volumes(folder: Path) -> dict[str, Path]:
    """Map volume id -> NIfTI file in ``folder``; refuse an id saved both as .nii and .nii.gz."""
    volumes: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.name.endswith(NIFTI_SUFFIXES):
            continue
        volume_id = _volume_id(path)
        if volume_id in volumes:
            raise WorkbenchError(
                f"{folder}: volume {volume_id!r} is saved twice, as {volumes[volume_id].name} and "
                f"{path.name}; expected one file per volume. Remove or rename one of them"
            )
        volumes[volume_id] = path
    if not volumes:
        raise WorkbenchError(
            f"{folder}: no .nii or .nii.gz files found; a dataset folder holds NIfTI volumes and a "
            "labels.csv (2-D images such as PNGs go in a MedMNIST-style .npz: see README, 'Your own .npz')"
        )
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
                raise WorkbenchError(f"{labels_csv}: {volume_id} has {len(slices)} slices, no slice {index}")
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
            raise WorkbenchError(
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
            reader = csv.DictReader(handle, skipinitialspace=True)  # "volume, label" as written by hand
            rows, header = list(reader), reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as err:
        raise WorkbenchError(f"{path}: not a readable CSV text file: {err}") from err
    columns = set(header)
    if not {"volume", "label"} <= columns:
        got = f"the first line {','.join(header)!r}" if header else "an empty file"
        raise WorkbenchError(f"{path}: expected a header volume,label or volume,slice,label, got {got}")
    if not rows:
        raise WorkbenchError(
            f"{path}: has the header {','.join(header)} but no rows; expected one line per volume "
            f"(or slice) below it, such as {_example_row(known_volumes, columns)!r}"
        )
    unknown = sorted({row["volume"] for row in rows} - known_volumes)
    if unknown:
        example = next(iter(sorted(known_volumes)), "scan01")
        raise WorkbenchError(
            f"{path}: names volumes with no NIfTI file in the folder: {unknown[:5]}; expected file names "
            f"without .nii/.nii.gz, such as {example!r}"
        )
    table = LabelTable(by_volume={}, by_slice={})
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        label = _parse_int(row["label"], path, "label")
        if "slice" in columns:
            key, store = _parse_int(row["slice"], path, "slice"), table.by_slice.setdefault(row["volume"], {})
        else:
            key, store = row["volume"], table.by_volume
        if key in store:
            what = f"slice {key} of {row['volume']}" if "slice" in columns else f"volume {key}"
            raise WorkbenchError(f"{path}: line {line} lists {what} a second time; expected each once")
        store[key] = label
    return table


def _example_row(known_volumes: set[str], columns: set[str]) -> str:
    volume = next(iter(sorted(known_volumes)), "scan01")
    return f"{volume},0,1" if "slice" in columns else f"{volume},1"


def _parse_int(text: str | None, path: Path, column: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise WorkbenchError(
            f"{path}: column {column} must hold non-negative integers, got {text!r}"
        ) from None
    if value < 0:
        raise WorkbenchError(f"{path}: column {column} must hold non-negative integers, got {value}")
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
        raise WorkbenchError(f"{path}: not a readable NIfTI file (corrupt or truncated?): {err}") from err
    if data.ndim == 4:
        if frame is None:
            raise WorkbenchError(
                f"{path}: 4D volume {data.shape}; pass frame=<index> to pick one frame (for a folder: "
                "workbench.data.nifti.load_nifti_folder(folder, frame=<index>))"
            )
        if not 0 <= frame < data.shape[3]:
            raise WorkbenchError(f"frame must be in [0, {data.shape[3]}), got {frame} for {path}")
        data = data[..., frame]
    elif frame is not None:
        raise WorkbenchError(f"{path}: frame={frame} given but the volume is {data.ndim}D, not 4D")
    if data.ndim != 3:
        raise WorkbenchError(f"{path}: expected a 3D volume, got {data.ndim}D with shape {data.shape}")
    if not np.isfinite(data).all():
        raise WorkbenchError(f"{path}: volume holds NaN or inf voxels; expected finite intensities")
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
    ok = isinstance(fractions, tuple | list) and len(fractions) == 3
    if (
        not ok
        or not all(isinstance(f, int | float) and f > 0 for f in fractions)
        or not np.isclose(sum(fractions), 1.0)
    ):
        raise WorkbenchError(f"fractions must be three positive numbers summing to 1, got {fractions!r}")


def _check_percentiles(percentiles: tuple[float, float]) -> None:
    ok = isinstance(percentiles, tuple | list) and len(percentiles) == 2
    if (
        not ok
        or not all(isinstance(p, int | float) for p in percentiles)
        or not 0 <= percentiles[0] < percentiles[1] <= 100
    ):
        raise WorkbenchError(
            f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles!r}"
        )


def _split_by_group(name, images, labels, sources, fractions, seed, class_names) -> Dataset:
    if len(np.unique(sources)) < 3:
        raise WorkbenchError(
            f"{name}: {len(np.unique(sources))} labelled volume(s); need at least 3 to split by volume "
            "into train/val/test"
        )
    masks = split_groups(sources, fractions, seed)
    splits = {
        split: make_split(images[m], labels[m], sources[m], where=f"{name} [{split}]")
        for split, m in masks.items()
    }
    return Dataset(name, **splits, class_names=class_names_for(splits, class_names, name))
