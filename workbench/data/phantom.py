"""Offline MRI-like brain phantoms: the workbench's default dataset, generated deterministically.

Each volume is an ellipsoidal head (bright scalp shell, dark gap, grey/white-matter texture, CSF
ventricles) under a smooth multiplicative bias field and Rician noise. About ``lesion_fraction``
of the volumes hold a few lesions, each brighter or darker than the tissue around it.
``generate_phantoms`` writes ``vol_NNN.nii.gz`` and a slice-level ``labels.csv`` that
``workbench.data.nifti.load_nifti_folder`` reads; ``ensure_phantoms`` does that once, atomically, under
``data/phantom``. NumPy, SciPy and nibabel only.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from workbench.core.errors import WorkbenchError
from workbench.core.fs import give_usual_mode, process_alive

log = logging.getLogger(__name__)

# Bump when the same seed and config would draw different volumes, so stored folders regenerate.
FORMAT_VERSION = 2
DEFAULT_N_VOLUMES = 120
MIN_SIDE = 8
_TMP_PREFIX = ".phantom.tmp-"  # a generation in progress: everything in it is ours
_OLD_PREFIX = ".phantom.old-"  # a folder swapped out, deleted only if nothing foreign is in it
_STALE_SECONDS = 3600  # generation takes seconds; an older temporary folder was abandoned

# Relative T1-like intensities. Scalp fat is brightest, as on T1, so the loader's 99th-percentile
# clipping leaves headroom above white matter and bright lesions are not flattened into it.
_SCALP, _GAP, _GREY, _WHITE, _CSF = 1.0, 0.1, 0.5, 0.72, 0.15


@dataclass(frozen=True)
class PhantomConfig:
    """Every knob of the phantom generator with its default; stored in ``phantom.json``.

    Attributes:
        shape: volume shape (x, y, z); slices are taken along z (axis 2).
        lesion_fraction: fraction of volumes that hold lesions, in [0, 1].
        lesions_per_volume: (min, max) number of lesions in a volume that has any. Several
            lesions at different heights make "lesion in this slice" a balanced task.
        lesion_radius: (min, max) lesion semi-axis in voxels, drawn log-uniformly so small
            lesions are common; each axis is then stretched by 0.75-1.25.
        lesion_contrast: (min, max) relative intensity change at the lesion's core, in [0, 1);
            a lesion is brighter or darker than its surroundings with equal odds.
        noise: Rician noise sigma relative to the brightest tissue.
        bias_field: log-amplitude of the smooth multiplicative bias field (0.3 is about ±35%).
        min_lesion_area: voxels of lesion a slice must cut to be labelled 1, so slices that
            only graze the lesion's edge stay 0.
        texture_sigma: in-plane smoothing (voxels) of the random field that shapes white matter.
    """

    shape: tuple[int, int, int] = (48, 48, 24)
    lesion_fraction: float = 0.5
    # Tuned so seed_cnn (12 epochs) reaches ~90% test accuracy and AUC ~0.95 on 32x32 slices,
    # against 73% for always answering "no lesion": learnable, yet heavy pruning visibly hurts.
    lesions_per_volume: tuple[int, int] = (3, 6)
    lesion_radius: tuple[float, float] = (3.0, 7.0)
    lesion_contrast: tuple[float, float] = (0.4, 0.9)
    noise: float = 0.03
    bias_field: float = 0.3
    min_lesion_area: int = 6
    texture_sigma: float = 2.0

    def __post_init__(self) -> None:
        _check_shape(self.shape)
        _check_number("lesion_fraction", self.lesion_fraction, 0.0, 1.0)
        _check_pair("lesions_per_volume", self.lesions_per_volume, 1, 20)
        _check_pair("lesion_radius", self.lesion_radius, 0.5, float(max(self.shape)))
        _check_pair("lesion_contrast", self.lesion_contrast, 0.0, 0.99)
        _check_number("noise", self.noise, 0.0, 1.0)
        _check_number("bias_field", self.bias_field, 0.0, 1.0)
        _check_number("min_lesion_area", self.min_lesion_area, 1, float(np.prod(self.shape[:2])))
        _check_number("texture_sigma", self.texture_sigma, 0.5, float(max(self.shape)))
        # JSON gives lists back; keep tuples so configs compare and hash equal.
        for name in ("shape", "lesions_per_volume", "lesion_radius", "lesion_contrast"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


def _check_shape(shape) -> None:
    ok = isinstance(shape, tuple | list) and len(shape) == 3
    if not ok or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in shape):
        raise WorkbenchError(f"shape must be three integers (x, y, z), got {shape!r}")
    if min(shape) < MIN_SIDE:
        raise WorkbenchError(f"shape must be at least {MIN_SIDE} voxels along every axis, got {tuple(shape)}")


def _check_number(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise WorkbenchError(f"{name} must be a number in [{low}, {high}], got {value!r}")


def _check_pair(name: str, pair, low: float, high: float) -> None:
    ok = isinstance(pair, tuple | list) and len(pair) == 2
    if not ok or not all(isinstance(v, int | float) and low <= v <= high for v in pair) or pair[0] > pair[1]:
        raise WorkbenchError(f"{name} must be (min, max) with {low} <= min <= max <= {high}, got {pair!r}")


# --- one volume -------------------------------------------------------------------------------


def make_volume(
    rng: np.random.Generator, config: PhantomConfig, with_lesion: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one phantom: a positive float32 volume (arbitrary units) and its boolean lesion mask.

    The random draws do not depend on ``with_lesion``: the same ``rng`` state gives the same head,
    bias field and noise with or without the lesion, so the lesion's effect can be isolated.
    Without a lesion the mask is all False.
    """
    grid = _grid(config.shape)
    anatomy, tissue = _anatomy(rng, grid, config)
    change, lesion = _lesions(rng, grid, tissue, config)
    bias = _bias_field(rng, grid, config.bias_field)
    noise = rng.standard_normal((2, *config.shape))
    image = anatomy * (1.0 + change) if with_lesion else anatomy
    volume = _rician(image * bias, noise, config.noise) * 1000.0
    mask = lesion if with_lesion else np.zeros(config.shape, dtype=bool)
    return volume.astype(np.float32), mask


def lesion_slice_labels(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Return 1 for each slice along axis 2 cutting at least ``min_area`` lesion voxels, else 0."""
    return (mask.sum(axis=(0, 1)) >= min_area).astype(np.int64)


def _grid(shape: tuple[int, int, int]) -> list[np.ndarray]:
    """Voxel-centre coordinates in (-1, 1) per axis, as broadcastable open grids."""
    axes = [(np.arange(n) + 0.5) / n * 2.0 - 1.0 for n in shape]
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def _ellipsoid_distance(grid: list[np.ndarray], centre, radii) -> np.ndarray:
    """Scaled distance from ``centre``: 1 on the ellipsoid's surface."""
    return np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)))


def _anatomy(rng, grid, config: PhantomConfig) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free head intensities and the mask of brain tissue a lesion may occupy."""
    centre = rng.uniform(-0.06, 0.06, 3)
    radii = np.array([0.88, 0.78, 0.85]) * rng.uniform(0.88, 1.04) * rng.uniform(0.95, 1.05, 3)
    head = _ellipsoid_distance(grid, centre, radii)
    brain_edge = rng.uniform(0.80, 0.85)
    brain = head <= brain_edge
    white = _white_matter(rng, head / brain_edge, brain, config.texture_sigma)
    ventricles = _ventricles(rng, grid, centre, radii)
    image = np.where(head <= 1.0, _SCALP, 0.0)
    image[head <= brain_edge + 0.08] = _GAP
    image[brain] = np.where(white[brain], _WHITE, _GREY)
    image[ventricles] = _CSF
    # Partial-volume blur: real tissue boundaries are never one voxel sharp.
    return ndimage.gaussian_filter(image, 0.6), brain & ~ventricles


def _white_matter(rng, depth: np.ndarray, brain: np.ndarray, sigma: float) -> np.ndarray:
    """Irregular white matter: a smooth random field, biased so the cortical rim stays grey."""
    # Half the smoothing along z: the head spans half as many slices as rows, so voxels are thicker.
    field = ndimage.gaussian_filter(rng.standard_normal(brain.shape), (sigma, sigma, sigma / 2))
    score = field / max(field.std(), 1e-12) - 2.5 * depth**2
    return score > np.quantile(score[brain], 0.55) if brain.any() else brain


def _ventricles(rng, grid, centre, radii) -> np.ndarray:
    """Two CSF ellipsoids either side of the midline, their size varying per volume."""
    size = rng.uniform(0.6, 1.4)
    spread = rng.uniform(0.10, 0.16)
    semi = np.array([0.26, 0.10, 0.22]) * size * radii
    # Axis 0 runs front to back and axis 1 left to right, as a slice is displayed.
    left, right = (centre + radii * np.array([-0.05, side * spread, 0.08]) for side in (-1, 1))
    return (_ellipsoid_distance(grid, left, semi) <= 1) | (_ellipsoid_distance(grid, right, semi) <= 1)


def _lesions(rng, grid, tissue: np.ndarray, config: PhantomConfig) -> tuple[np.ndarray, np.ndarray]:
    """Several lesions: the summed signed relative intensity change, and the union of their masks."""
    count = rng.integers(config.lesions_per_volume[0], config.lesions_per_volume[1] + 1)
    change, mask = np.zeros(config.shape), np.zeros(config.shape, dtype=bool)
    for _ in range(count):
        profile, contrast = _lesion(rng, grid, tissue, config)
        change += contrast * profile
        mask |= profile >= 0.5
    return np.clip(change, -0.95, 2.0), mask


def _lesion(rng, grid, tissue: np.ndarray, config: PhantomConfig) -> tuple[np.ndarray, float]:
    """A soft ellipsoidal lesion profile in [0, 1] (0.5 on its surface) and its signed contrast."""
    low, high = config.lesion_radius
    semi_axes = np.exp(rng.uniform(np.log(low), np.log(high))) * rng.uniform(0.75, 1.25, 3)
    contrast = rng.uniform(*config.lesion_contrast) * rng.choice([-1.0, 1.0])
    half = np.array(config.shape) / 2.0
    centre = (_lesion_centre(rng, tissue, semi_axes.max()) + 0.5) / half - 1.0
    distance = _ellipsoid_distance(grid, centre, semi_axes / half)
    return special.expit((1.0 - distance) / 0.15) * tissue, float(contrast)


def _lesion_centre(rng, tissue: np.ndarray, radius: float) -> np.ndarray:
    """A random tissue voxel with room for the lesion in-plane, on a uniformly chosen slice.

    Choosing the slice first spreads lesions over the whole brain's height; otherwise they would
    cluster in the middle slices and a classifier could score well from slice position alone.
    """
    depth = ndimage.distance_transform_edt(tissue, sampling=(1.0, 1.0, 1e6))  # in-plane only
    fits = depth >= min(radius, depth.max())
    z = rng.choice(np.flatnonzero(fits.any(axis=(0, 1))))
    candidates = np.argwhere(fits[:, :, z])
    return np.append(candidates[rng.integers(len(candidates))], z)


def _bias_field(rng, grid, strength: float) -> np.ndarray:
    """A smooth multiplicative field: exp of a random quadratic polynomial scaled to ±strength."""
    x, y, z = grid
    terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
    poly = sum(c * t for c, t in zip(rng.standard_normal(len(terms)), terms, strict=True))
    return np.exp(strength * poly / max(np.abs(poly).max(), 1e-12))


def _rician(image: np.ndarray, noise: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise per channel, as an MRI scanner sees it."""
    return np.sqrt((image + sigma * noise[0]) ** 2 + (sigma * noise[1]) ** 2)


# --- a folder of volumes ----------------------------------------------------------------------


def generate_phantoms(
    out_dir: str | Path,
    n_volumes: int = DEFAULT_N_VOLUMES,
    shape: tuple[int, int, int] = PhantomConfig.shape,
    seed: int = 0,
    lesion_fraction: float = PhantomConfig.lesion_fraction,
    **difficulty,
) -> Path:
    """Write ``n_volumes`` phantoms as ``vol_NNN.nii.gz`` plus ``phantom.json`` and ``labels.csv``.

    ``labels.csv`` (``volume,slice,label``) lists every slice along axis 2 and is written last.
    The same arguments give byte-identical files.

    Args:
        difficulty: other ``PhantomConfig`` fields, e.g. ``noise=0.1``, ``lesion_radius=(2, 4)``.

    Example (not run here: it writes volumes)::

        generate_phantoms("/tmp/phantom", n_volumes=6, shape=(32, 32, 16))

    Raises:
        ValueError: naming the argument if ``n_volumes < 3``, ``seed < 0``, the shape is not
            three integers >= 8, ``lesion_fraction`` is outside [0, 1], or a knob is out of range.
        TypeError: for a keyword that is not a ``PhantomConfig`` field.
    """
    n_volumes, seed, config = _resolve(
        n_volumes, seed, shape=shape, lesion_fraction=lesion_fraction, **difficulty
    )
    return _write_folder(Path(out_dir), n_volumes, seed, config)


def _resolve(
    n_volumes: int = DEFAULT_N_VOLUMES, seed: int = 0, **config_fields
) -> tuple[int, int, PhantomConfig]:
    if isinstance(n_volumes, bool) or not isinstance(n_volumes, int | np.integer) or n_volumes < 3:
        raise WorkbenchError(
            f"n_volumes must be an integer >= 3 (one volume per split at least), got {n_volumes!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise WorkbenchError(f"seed must be a non-negative integer, got {seed!r}")
    return int(n_volumes), int(seed), PhantomConfig(**config_fields)


def _manifest(n_volumes: int, seed: int, config: PhantomConfig) -> dict:
    """What ``phantom.json`` holds; equal manifests mean identical folders."""
    manifest = {
        "format": FORMAT_VERSION,
        "n_volumes": n_volumes,
        "seed": seed,
        "config": asdict(config),
    }
    return json.loads(json.dumps(manifest))  # tuples -> lists, as they read back from disk


def _volume_plan(seed: int, n_volumes: int, lesion_fraction: float) -> list[tuple[np.random.Generator, bool]]:
    """A generator per volume, and which volumes get a lesion (exactly the fraction)."""
    # Draw the lesion assignment from a spawned child, not default_rng(seed) itself: the loader
    # deals volumes into splits with default_rng(seed).permutation, and sharing that stream would
    # put every lesion volume in the training split.
    assign_rng, *volume_rngs = np.random.default_rng(seed).spawn(n_volumes + 1)
    has_lesion = np.zeros(n_volumes, dtype=bool)
    has_lesion[assign_rng.permutation(n_volumes)[: round(lesion_fraction * n_volumes)]] = True
    return list(zip(volume_rngs, has_lesion.tolist(), strict=True))


def _write_folder(folder: Path, n_volumes: int, seed: int, config: PhantomConfig) -> Path:
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(n_volumes - 1)))
    rows, digests = [], {}
    for index, (rng, with_lesion) in enumerate(_volume_plan(seed, n_volumes, config.lesion_fraction)):
        volume, mask = make_volume(rng, config, with_lesion)
        name = f"vol_{index:0{width}d}"
        digests[f"{name}.nii.gz"] = _write_nifti(folder / f"{name}.nii.gz", volume)
        labels = lesion_slice_labels(mask, config.min_lesion_area)
        rows.extend((name, z, int(label)) for z, label in enumerate(labels))
    labels_text = _labels_text(rows)
    digests["labels.csv"] = _sha256(labels_text.encode())
    # The digests let a later rebuild tell our files from files a user added or changed.
    manifest = {**_manifest(n_volumes, seed, config), "files": digests}
    (folder / "phantom.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _write_labels(folder / "labels.csv", labels_text)  # last: its presence marks the folder complete
    log.info("wrote %d phantom volumes to %s in %.1f s", n_volumes, folder, time.perf_counter() - started)
    return folder


def _write_nifti(path: Path, volume: np.ndarray) -> str:
    """Write ``volume`` as .nii.gz and return the file's sha256."""
    import nibabel as nib

    image = nib.Nifti1Image(volume, affine=np.eye(4))
    image.header.set_xyzt_units("mm")
    # nibabel's .nii.gz writer puts the time in the gzip header; mtime=0 keeps bytes reproducible.
    payload = gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)
    path.write_bytes(payload)
    return _sha256(payload)


def _labels_text(rows: list[tuple[str, int, int]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("volume", "slice", "label"))
    writer.writerows(rows)
    return buffer.getvalue()


def _write_labels(path: Path, text: str) -> None:
    path.write_bytes(text.encode())


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


# --- generate once, atomically, never over a user's files -------------------------------------


def ensure_phantoms(data_dir: str | Path = "data", **kwargs) -> Path:
    """Return ``{data_dir}/phantom``, generating it first if it is missing, incomplete or stale.

    Generation goes into a temporary sibling folder that is renamed into place, so an interrupted
    run never leaves a folder that looks complete. A stale or damaged folder is rebuilt beside the
    old one and swapped in only if the old one holds nothing foreign: every file in it must be one
    this module wrote (checked against the digests in ``phantom.json``). Otherwise nothing is
    touched and the error lists the files in the way.

    Args:
        kwargs: the arguments of ``generate_phantoms`` other than ``out_dir``.

    Example (not run here: it writes volumes)::

        folder = ensure_phantoms("data")

    Raises:
        FileExistsError: if ``{data_dir}/phantom`` is not a folder this module made, or it needs
            rebuilding but holds files this module did not write (both name the files).
        ValueError, TypeError: for bad arguments, as ``generate_phantoms``.
    """
    n_volumes, seed, config = _resolve(**kwargs)
    target = Path(data_dir) / "phantom"
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_temporaries(target.parent)
    wanted = _manifest(n_volumes, seed, config)
    if target.exists() or target.is_symlink():
        reason = _why_rebuild(target, wanted)
        if reason is None:
            return target
        _refuse_foreign(target, reason)
        log.warning("rebuilding the generated phantom folder %s: %s", target, reason)
    log.info("generating %d phantom volumes into %s", n_volumes, target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=target.parent))
    give_usual_mode(tmp)
    try:
        _write_folder(tmp, n_volumes, seed, config)
        _move_into_place(tmp, target, wanted)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _why_rebuild(folder: Path, wanted: dict) -> str | None:
    """Why ``folder`` (ours) must be rebuilt, or None if it is current; refuse folders not ours."""
    if folder.is_symlink() or not folder.is_dir():
        raise FileExistsError(
            f"{folder} exists but is not a folder ensure_phantoms made; it will not replace it. "
            "Move it away, or set WORKBENCH_DATA to keep the workbench's data elsewhere"
        )
    stored = _read_manifest(folder)
    if stored is _NO_MANIFEST:
        raise FileExistsError(
            f"{folder} exists but has no phantom.json, so ensure_phantoms did not make it and will "
            f"not overwrite it (it holds {_listing(sorted(p.name for p in folder.iterdir()))}). "
            "Move it away, or set WORKBENCH_DATA to keep the workbench's data elsewhere"
        )
    if stored is None:
        return "its phantom.json is damaged"
    if {k: v for k, v in stored.items() if k != "files"} != wanted:
        return "it was made with other settings"
    if not _is_complete(folder):
        return "labels.csv or a volume it lists is missing"
    return None


_NO_MANIFEST = object()


def _read_manifest(folder: Path):
    """The stored manifest; None if damaged; ``_NO_MANIFEST`` if there is none."""
    path = folder / "phantom.json"
    if not path.is_file():
        return _NO_MANIFEST
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def foreign_files(folder: Path) -> list[str]:
    """Names in a generated ``folder`` that ensure_phantoms did not write, or that were changed.

    With the digests of ``phantom.json`` a file is ours only if its bytes match; without them
    (a damaged or older manifest) only the generator's own names count as ours.
    """
    stored = _read_manifest(folder)
    digests = stored.get("files") if isinstance(stored, dict) else None
    foreign = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or not entry.is_file():
            foreign.append(entry.name)
        elif entry.name == "phantom.json":
            continue
        elif isinstance(digests, dict):
            if digests.get(entry.name) != _sha256(entry.read_bytes()):
                foreign.append(entry.name)
        elif not _GENERATED_NAME.fullmatch(entry.name):
            foreign.append(entry.name)
    return foreign


_GENERATED_NAME = re.compile(r"vol_\d{3,}\.nii\.gz|labels\.csv")


def _refuse_foreign(folder: Path, reason: str) -> None:
    foreign = foreign_files(folder)
    if foreign:
        raise FileExistsError(
            f"{folder} needs rebuilding ({reason}) but holds files ensure_phantoms did not write or "
            f"that were changed since: {_listing(foreign)}. Nothing was touched; move these files "
            "out of the folder (or the folder away) and try again"
        )


def _listing(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit]) or "nothing"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _is_complete(folder: Path) -> bool:
    """labels.csv is written last, so it and every volume it lists mean the folder is whole."""
    labels = folder / "labels.csv"
    if not labels.is_file():
        return False
    with labels.open(newline="") as handle:
        volumes = {row.get("volume") for row in csv.DictReader(handle)}
    return bool(volumes) and all((folder / f"{name}.nii.gz").is_file() for name in volumes)


def _move_into_place(tmp: Path, target: Path, wanted: dict) -> None:
    if target.exists():  # ours, stale, nothing foreign (checked above): set it aside, then swap
        old = target.with_name(f"{_OLD_PREFIX}{os.getpid()}-{time.time_ns()}")
        os.replace(target, old)
        os.replace(tmp, target)
        _discard_old(old)
        return
    try:
        os.replace(tmp, target)
    except OSError:
        # Another process may have installed the same folder meanwhile; that is as good as ours.
        if not (target.exists() and _why_rebuild(target, wanted) is None):
            raise


def _discard_old(old: Path) -> None:
    """Delete a swapped-out folder only if it still holds nothing foreign; else keep it, visibly."""
    if not old.is_dir():
        return  # another process discarded it first
    foreign = foreign_files(old)
    if not foreign:
        shutil.rmtree(old, ignore_errors=True)
        return
    kept = old.with_name(f"phantom.kept-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(old, kept)
    log.warning("files appeared in the old phantom folder while it was rebuilt; kept it as %s", kept)


def _remove_abandoned_temporaries(parent: Path) -> None:
    for path in parent.glob(f"{_TMP_PREFIX}*"):
        if path.is_dir() and _is_abandoned(path):
            log.info("removing an interrupted phantom generation: %s", path)
            shutil.rmtree(path, ignore_errors=True)
    for path in parent.glob(f"{_OLD_PREFIX}*"):  # a swap interrupted before the old folder went
        if path.is_dir() and _is_abandoned(path, _OLD_PREFIX):
            _discard_old(path)


def _is_abandoned(path: Path, prefix: str = _TMP_PREFIX) -> bool:
    """A temporary folder is abandoned when it is old or, on POSIX, its process has exited."""
    if time.time() - path.stat().st_mtime > _STALE_SECONDS:
        return True
    pid_text = path.name[len(prefix) :].split("-")[0]
    # os.kill(pid, 0) only probes on POSIX; on Windows it would send a signal, so rely on age there.
    return os.name == "posix" and pid_text.isdigit() and not process_alive(int(pid_text))
