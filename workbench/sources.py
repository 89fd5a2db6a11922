"""Resolve what a user types ("phantom", "pneumoniamnist", a path) into a loaded Dataset."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from workbench.data import Dataset, load_nifti_folder, load_npz
from workbench.medmnist import CLASS_NAMES, download
from workbench.paths import data_dir
from workbench.phantom import ensure_phantoms

log = logging.getLogger(__name__)

DEFAULT_DATASET = "phantom"
PHANTOM_CLASSES = ("no lesion", "lesion")
PHANTOM_IMAGE_SIZE = (32, 32)


def load_dataset(
    spec: str | Path = DEFAULT_DATASET, *, allow_download: bool = False, seed: int = 0
) -> Dataset:
    """Load a dataset by name or path.

    Args:
        spec: ``"phantom"`` (the offline default, generated on first use), a MedMNIST name such
            as ``"pneumoniamnist"`` (read from ``data/<name>.npz``), a path to a MedMNIST
            ``.npz``, or a folder of NIfTI volumes with a ``labels.csv``.
        allow_download: fetch a missing MedMNIST file from its official URL.
        seed: how NIfTI volumes are dealt into train/val/test.

    Example:
        >>> ds = load_dataset("phantom"); print(ds.summary())  # doctest: +SKIP
    """
    spec_text = str(spec)
    if spec_text == "phantom":
        return load_phantom(seed=seed)
    if spec_text in CLASS_NAMES:
        return _load_medmnist_by_name(spec_text, allow_download)
    path = Path(spec)
    if path.suffix == ".npz":
        return load_npz(path, class_names=_known_class_names(path))
    if path.is_dir():
        return load_nifti_folder(path, seed=seed)
    if not path.exists() and path.suffix in ("", ".gz", ".nii"):
        raise ValueError(
            f"dataset must be 'phantom', a MedMNIST name {sorted(CLASS_NAMES)}, a .npz path or a "
            f"folder of NIfTI volumes; got {spec_text!r}, which is none of these"
        )
    raise FileNotFoundError(f"dataset not found: {path}")


def load_phantom(seed: int = 0) -> Dataset:
    """Load the offline brain-phantom slices (lesion / no lesion), generating the volumes if needed."""
    folder = ensure_phantoms(data_dir())
    dataset = load_nifti_folder(folder, size=PHANTOM_IMAGE_SIZE, seed=seed, class_names=PHANTOM_CLASSES)
    return replace(dataset, name="phantom")


def _load_medmnist_by_name(name: str, allow_download: bool) -> Dataset:
    path = data_dir() / f"{name}.npz"
    if not path.is_file():
        if not allow_download:
            raise FileNotFoundError(
                f"{path} is missing; download it with `python -m workbench download {name}` "
                "or pass allow_download=True"
            )
        download(name, data_dir())
    return load_npz(path, class_names=CLASS_NAMES[name])


def _known_class_names(path: Path) -> tuple[str, ...] | None:
    """MedMNIST files keep their official names (pneumoniamnist.npz -> normal, pneumonia)."""
    return CLASS_NAMES.get(path.stem)
