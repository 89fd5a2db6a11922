"""Resolve what a user types ("phantom", "phantom3d", "pneumoniamnist", a path) into a loaded Dataset."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from workbench.core import paths
from workbench.core.errors import WorkbenchError
from workbench.core.paths import data_dir
from workbench.data.dataset import Dataset, load_npz
from workbench.data.medmnist import CLASS_NAMES, download
from workbench.data.nifti import MODES, load_nifti_folder
from workbench.data.phantom import ensure_phantoms

log = logging.getLogger(__name__)

DEFAULT_DATASET = "phantom"
PHANTOM_CLASSES = ("no lesion", "lesion")
PHANTOM_IMAGE_SIZE = (32, 32)
PHANTOM_VOLUME_SIZE = (16, 32, 32)  # (D, H, W): the phantom's 48x48x24 volumes, depth first
PHANTOM_MODES = {"phantom": "slice", "phantom3d": "volume"}


def load_dataset(
    spec: str | Path = DEFAULT_DATASET,
    *,
    allow_download: bool = False,
    seed: int = 0,
    class_names: tuple[str, ...] | list[str] | None = None,
    mode: str | None = None,
) -> Dataset:
    """Load a dataset by name or path.

    Args:
        spec: ``"phantom"`` (the offline default: 32x32 slices, "lesion in this slice", generated
            on first use), ``"phantom3d"`` (the same volumes whole, 16x32x32, "lesion in this
            volume"), a MedMNIST name such as ``"pneumoniamnist"`` (read from ``data/<name>.npz``),
            a path to a MedMNIST-format ``.npz`` (2-D, 3-D or multi-label), or a folder of NIfTI
            volumes with a ``labels.csv``.
        allow_download: fetch a missing MedMNIST file from its official URL.
        seed: how NIfTI volumes are dealt into train/val/test.
        class_names: names of the classes (multi-label: of the labels), checked against the labels;
            they replace the names a dataset comes with.
        mode: for NIfTI folders and the phantom, ``"slice"`` (2-D slices, the default) or
            ``"volume"`` (whole volumes). A ``.npz``'s own array shape decides instead.

    Example (not run here: it generates the phantom volumes)::

        ds = load_dataset("phantom3d"); print(ds.summary())

    Raises:
        FileNotFoundError: for a missing file with a suffix, such as a .npz.
        FileExistsError: if ``data/phantom`` holds files the generator did not make.
        ValueError: for an unknown name (or a folder that does not exist: the two look alike), a
            bad ``mode`` or data the loaders cannot read correctly.
    """
    if not isinstance(spec, str | Path):
        raise WorkbenchError(
            f"spec must be a dataset name or a path (str or Path), got {type(spec).__name__}"
        )
    spec_text = str(spec)
    if mode is not None and mode not in MODES:
        raise WorkbenchError(f"mode must be one of {MODES} or None, got {mode!r}")
    if spec_text in PHANTOM_MODES:
        return load_phantom(seed=seed, mode=_phantom_mode(spec_text, mode), class_names=class_names)
    path = Path(spec)
    is_folder = spec_text not in CLASS_NAMES and path.is_dir()
    if mode is not None and not is_folder:
        raise WorkbenchError(
            f"mode applies to NIfTI folders and the phantom, got mode={mode!r} for {spec_text!r}; "
            "a .npz's array shape says whether it holds images or volumes"
        )
    if spec_text in CLASS_NAMES:
        return _load_medmnist_by_name(spec_text, allow_download, class_names)
    if path.suffix == ".npz":
        return load_npz(path, class_names=class_names or _known_class_names(path))
    if is_folder:
        return load_nifti_folder(path, seed=seed, mode=mode or "slice", class_names=class_names)
    if path.is_file():
        raise WorkbenchError(
            f"dataset must be a .npz file or a folder of NIfTI volumes with a labels.csv, got the file "
            f"{path}; put NIfTI volumes in a folder with a labels.csv and pass the folder"
        )
    if not path.exists() and path.suffix in ("", ".gz", ".nii"):
        raise WorkbenchError(
            f"dataset must be 'phantom', 'phantom3d', a MedMNIST name {sorted(CLASS_NAMES)}, a .npz "
            f"path or a folder of NIfTI volumes; got {spec_text!r}: not one of these names, and no file "
            f"or folder {path.resolve()} exists"
        )
    raise FileNotFoundError(f"dataset not found: {path}")


def load_phantom(
    seed: int = 0, mode: str = "slice", class_names: tuple[str, ...] | list[str] | None = None
) -> Dataset:
    """Load the offline brain phantoms, generating the volumes if needed.

    ``mode="slice"`` gives 32x32 slices labelled "lesion in this slice" (dataset ``phantom``);
    ``mode="volume"`` gives whole 16x32x32 volumes labelled "lesion anywhere in this volume"
    (dataset ``phantom3d``, 120 volumes, small enough for tests).
    """
    # a shared data folder's phantom is read as it is; a missing one is generated where we may write
    root = phantom_root()
    folder = ensure_phantoms(root)
    size = PHANTOM_VOLUME_SIZE if mode == "volume" else PHANTOM_IMAGE_SIZE
    dataset = load_nifti_folder(
        folder, mode=mode, size=size, seed=seed, class_names=class_names or PHANTOM_CLASSES
    )
    return replace(dataset, name="phantom3d" if mode == "volume" else "phantom")


def phantom_root() -> Path:
    """The folder that holds (or will hold) ``phantom/``: the data folder's if it has one or can be
    written, else the user's folder (a read-only shared data folder is read, never written)."""
    return data_dir() if (data_dir() / "phantom").exists() else paths.writable("phantom").parent


def _phantom_mode(name: str, mode: str | None) -> str:
    """'phantom' takes either mode ('phantom' + volume = 'phantom3d'); 'phantom3d' is volumes only."""
    if name == "phantom":
        return mode or "slice"
    if mode is not None and mode != PHANTOM_MODES[name]:
        raise WorkbenchError(f"mode={mode!r} contradicts {name!r}, which is {PHANTOM_MODES[name]} data")
    return PHANTOM_MODES[name]


def _load_medmnist_by_name(name: str, allow_download: bool, class_names) -> Dataset:
    path = paths.find(f"{name}.npz")
    if path is None:
        if not allow_download:
            raise FileNotFoundError(
                f"{data_dir() / f'{name}.npz'} is missing; download it with "
                f"`python -m workbench download {name}` or pass allow_download=True"
            )
        path = download(name, paths.writable(f"{name}.npz").parent)
    return load_npz(path, class_names=class_names or CLASS_NAMES[name])


def _known_class_names(path: Path) -> tuple[str, ...] | None:
    """MedMNIST files keep their official names (pneumoniamnist.npz -> normal, pneumonia)."""
    return CLASS_NAMES.get(path.stem)
