"""Tests for workbench.data.phantom: determinism, loadability, lesion labels and the atomic cache."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from workbench.data import phantom
from workbench.data.nifti import load_nifti_folder, read_volume
from workbench.data.phantom import (
    PhantomConfig,
    ensure_phantoms,
    generate_phantoms,
    lesion_slice_labels,
    make_volume,
)

SMALL = {"n_volumes": 6, "shape": (32, 32, 16)}
TINY = {"n_volumes": 3, "shape": (16, 16, 8)}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def read_labels(folder: Path) -> dict[str, list[int]]:
    """volume -> labels of its slices in order, from labels.csv."""
    labels: dict[str, list[int]] = {}
    with (folder / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            assert int(row["slice"]) == len(labels.setdefault(row["volume"], []))
            labels[row["volume"]].append(int(row["label"]))
    return labels


def mtimes(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


# --- generate_phantoms ------------------------------------------------------------------------


def test_generate_sameSeed_byteIdenticalFiles(tmp_path):
    first = folder_bytes(generate_phantoms(tmp_path / "a", seed=3, **SMALL))
    second = folder_bytes(generate_phantoms(tmp_path / "b", seed=3, **SMALL))
    volumes = [f"vol_{i:03d}.nii.gz" for i in range(6)]
    assert sorted(first) == sorted(["labels.csv", "phantom.json", *volumes])
    assert first == second
    # gzip stores a timestamp at bytes 4-8; two runs in the same second would hide it.
    assert all(first[name][4:8] == bytes(4) for name in volumes)


def test_generate_differentSeed_differentBytes(tmp_path):
    first = folder_bytes(generate_phantoms(tmp_path / "a", seed=3, **SMALL))
    second = folder_bytes(generate_phantoms(tmp_path / "b", seed=4, **SMALL))
    volumes = [name for name in first if name.endswith(".nii.gz")]
    assert all(first[name] != second[name] for name in volumes)


def test_generate_volumes_positiveFloat32OfRequestedShape(tmp_path):
    folder = generate_phantoms(tmp_path / "p", **SMALL)
    volume = read_volume(folder / "vol_000.nii.gz")
    assert volume.shape == (32, 32, 16)
    assert volume.dtype == np.float32
    assert volume.min() >= 0 and volume.max() > 100  # MRI-like arbitrary units, not [0, 1]


def test_loadNiftiFolder_readsPhantoms_bothClassesInUnitRangeSplitByVolume(tmp_path):
    ds = load_nifti_folder(generate_phantoms(tmp_path / "p", **SMALL))
    labels = np.concatenate([split.labels for split in ds.splits().values()])
    assert set(np.unique(labels)) == {0, 1}
    assert sum(len(split) for split in ds.splits().values()) == 6 * 16  # every slice listed
    for split in ds.splits().values():
        assert split.images.shape[1:] == (32, 32, 1)
        assert split.images.min() >= 0.0 and split.images.max() <= 1.0
    sources = [set(split.sources) for split in ds.splits().values()]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])


def test_loadNiftiFolder_sameSeedForPhantomsAndSplit_lesionsReachEverySplit(tmp_path):
    # Regression: drawing the lesion assignment from the stream the loader splits with put
    # every lesion volume into the training split.
    ds = load_nifti_folder(generate_phantoms(tmp_path / "p", n_volumes=40, shape=(16, 16, 8)))
    assert all(split.labels.any() for split in ds.splits().values())


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_generate_lesionFraction_matchesFractionOfVolumesWithPositiveSlices(tmp_path, fraction):
    folder = generate_phantoms(tmp_path / "p", n_volumes=40, shape=(32, 32, 16), lesion_fraction=fraction)
    with_lesion = [any(labels) for labels in read_labels(folder).values()]
    assert len(with_lesion) == 40
    assert abs(np.mean(with_lesion) - fraction) <= 0.1


def test_generate_noLesionFraction_everySliceNegative(tmp_path):
    folder = generate_phantoms(tmp_path / "p", lesion_fraction=0.0, **SMALL)
    assert not any(any(labels) for labels in read_labels(folder).values())


def test_generate_labelsCsv_matchesLesionMasksOfTheStoredVolumes(tmp_path):
    folder = generate_phantoms(tmp_path / "p", seed=5, **SMALL)
    config = PhantomConfig(shape=SMALL["shape"])
    stored = read_labels(folder)
    for index, (rng, with_lesion) in enumerate(phantom._volume_plan(5, 6, config.lesion_fraction)):
        volume, mask = make_volume(rng, config, with_lesion)
        np.testing.assert_array_equal(read_volume(folder / f"vol_{index:03d}.nii.gz"), volume)
        expected = lesion_slice_labels(mask, config.min_lesion_area).tolist()
        assert stored[f"vol_{index:03d}"] == expected


# --- make_volume ------------------------------------------------------------------------------


def test_makeVolume_lesion_changesPositiveSlicesOnlyNearTheLesion():
    config = PhantomConfig(shape=(32, 32, 16), lesion_contrast=(0.2, 0.3))
    for seed in range(5):
        with_lesion, mask = make_volume(np.random.default_rng(seed), config, with_lesion=True)
        without, no_mask = make_volume(np.random.default_rng(seed), config, with_lesion=False)
        assert not no_mask.any()
        positive = np.flatnonzero(lesion_slice_labels(mask, config.min_lesion_area))
        assert len(positive) > 0
        relative = np.abs(with_lesion / without - 1.0)
        for z in positive:  # at the lesion the signal moves by about the contrast (0.2-0.3)
            assert np.median(relative[:, :, z][mask[:, :, z]]) > 0.1
        far = ~_dilate(mask, 4)
        assert np.median(relative[far]) < 1e-3  # outside it only the logistic tail remains


def test_makeVolume_smallMask_sliceLabelledNegative():
    mask = np.zeros((16, 16, 4), dtype=bool)
    mask[5:8, 5:8, 1] = True  # 9 voxels
    mask[5, 5, 2] = True  # one grazing voxel
    assert lesion_slice_labels(mask, min_area=6).tolist() == [0, 1, 0, 0]


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, iterations=steps)


# --- ensure_phantoms --------------------------------------------------------------------------


def test_ensurePhantoms_secondCall_doesNotRewrite(tmp_path):
    folder = ensure_phantoms(tmp_path, **TINY)
    assert folder == tmp_path / "phantom"
    before = mtimes(folder)
    time.sleep(0.01)
    assert ensure_phantoms(tmp_path, **TINY) == folder
    assert mtimes(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["phantom"]  # no temporary left behind


def test_ensurePhantoms_leftoverTemporary_removedAndFolderBuilt(tmp_path):
    leftover = tmp_path / ".phantom.tmp-999999999-abc"  # a generation whose process died
    leftover.mkdir()
    (leftover / "vol_000.nii.gz").write_bytes(b"half a volume")
    old = time.time() - 2 * 3600
    os.utime(leftover, (old, old))
    folder = ensure_phantoms(tmp_path, **TINY)
    assert not leftover.exists()
    assert len(read_labels(folder)) == 3


@pytest.mark.skipif(os.name != "posix", reason="dead processes are detected by pid only on POSIX")
def test_ensurePhantoms_freshTemporaryOfDeadProcess_removed(tmp_path):
    leftover = tmp_path / ".phantom.tmp-999999999-abc"
    leftover.mkdir()
    ensure_phantoms(tmp_path, **TINY)
    assert not leftover.exists()


def test_ensurePhantoms_freshTemporaryOfLiveProcess_kept(tmp_path):
    running = tmp_path / f".phantom.tmp-{os.getpid()}-abc"  # another generation, still at work
    running.mkdir()
    ensure_phantoms(tmp_path, **TINY)
    assert running.is_dir()


def test_ensurePhantoms_generationKilled_leavesNoFolderThatLooksComplete(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(phantom, "_write_labels", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_phantoms(tmp_path, **TINY)
    assert not (tmp_path / "phantom").exists()
    monkeypatch.undo()
    assert len(read_labels(ensure_phantoms(tmp_path, **TINY))) == 3


def test_ensurePhantoms_otherConfig_regeneratesOurFolder(tmp_path):
    folder = ensure_phantoms(tmp_path, seed=0, **TINY)
    first = folder_bytes(folder)
    ensure_phantoms(tmp_path, seed=1, **TINY)
    assert json.loads((folder / "phantom.json").read_text())["seed"] == 1
    assert folder_bytes(folder)["vol_000.nii.gz"] != first["vol_000.nii.gz"]


def test_ensurePhantoms_missingVolume_regenerates(tmp_path):
    folder = ensure_phantoms(tmp_path, **TINY)
    (folder / "vol_001.nii.gz").unlink()
    ensure_phantoms(tmp_path, **TINY)
    assert (folder / "vol_001.nii.gz").is_file()


def test_ensurePhantoms_userFolderWithoutManifest_raisesAndKeepsIt(tmp_path):
    user = tmp_path / "phantom"
    user.mkdir()
    (user / "my_scan.nii.gz").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"no phantom.json.*my_scan.nii.gz"):
        ensure_phantoms(tmp_path, **TINY)
    assert (user / "my_scan.nii.gz").read_bytes() == b"precious"


def test_ensurePhantoms_phantomIsAFile_raisesAndKeepsIt(tmp_path):
    (tmp_path / "phantom").write_text("my notes")
    with pytest.raises(FileExistsError, match="not a folder"):
        ensure_phantoms(tmp_path, **TINY)
    assert (tmp_path / "phantom").read_text() == "my notes"


def _break_by_settings(folder):
    return {"seed": 1}


def _break_by_missing_volume(folder):
    (folder / "vol_001.nii.gz").unlink()
    return {}


def _break_by_damaged_manifest(folder):
    (folder / "phantom.json").write_text("{ not json")
    return {}


@pytest.mark.parametrize("breaks", [_break_by_settings, _break_by_missing_volume, _break_by_damaged_manifest])
def test_ensurePhantoms_rebuildNeeded_userFileSurvivesAndErrorNamesIt(tmp_path, breaks):
    folder = ensure_phantoms(tmp_path, **TINY)
    (folder / "my_notes.txt").write_text("precious")
    overrides = breaks(folder)
    before = folder_bytes(folder)
    with pytest.raises(FileExistsError, match=r"needs rebuilding.*my_notes.txt"):
        ensure_phantoms(tmp_path, **{**TINY, **overrides})
    assert folder_bytes(folder) == before  # nothing touched, not even our own files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom"]


def test_ensurePhantoms_rebuildNeeded_userChangedVolume_isForeign(tmp_path):
    folder = ensure_phantoms(tmp_path, **TINY)
    (folder / "vol_002.nii.gz").write_bytes(b"my own scan under the generator's name")
    with pytest.raises(FileExistsError, match="vol_002.nii.gz"):
        ensure_phantoms(tmp_path, seed=1, **TINY)
    assert (folder / "vol_002.nii.gz").read_bytes() == b"my own scan under the generator's name"


def test_ensurePhantoms_rebuildNeeded_userSubfolder_isForeign(tmp_path):
    folder = ensure_phantoms(tmp_path, **TINY)
    (folder / "masks").mkdir()
    with pytest.raises(FileExistsError, match="masks"):
        ensure_phantoms(tmp_path, seed=1, **TINY)
    assert (folder / "masks").is_dir()


def test_ensurePhantoms_staleAndClean_swappedWithNothingLeftBehind(tmp_path):
    ensure_phantoms(tmp_path, seed=0, **TINY)
    folder = ensure_phantoms(tmp_path, seed=1, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom"]
    assert folder_bytes(folder) == folder_bytes(generate_phantoms(tmp_path / "ref" / "p", seed=1, **TINY))


def test_discardOld_fileAppearedDuringSwap_folderKeptNotDeleted(tmp_path):
    old = generate_phantoms(tmp_path / ".phantom.old-1-2", **TINY)
    (old / "late.txt").write_text("written during the rebuild")
    phantom._discard_old(old)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("phantom.kept-")]
    assert len(kept) == 1 and (kept[0] / "late.txt").read_text() == "written during the rebuild"


def test_foreignFiles_olderManifestWithoutDigests_judgesByName(tmp_path):
    folder = generate_phantoms(tmp_path / "p", **TINY)
    manifest = json.loads((folder / "phantom.json").read_text())
    del manifest["files"]
    (folder / "phantom.json").write_text(json.dumps(manifest))
    (folder / "extra.csv").write_text("x")
    assert phantom.foreign_files(folder) == ["extra.csv"]


# --- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_volumes": 2}, "n_volumes"),
        ({"n_volumes": 4.5}, "n_volumes"),
        ({"shape": (32, 32)}, "shape"),
        ({"shape": (32, 32, 4)}, "shape"),
        ({"shape": (32.0, 32, 16)}, "shape"),
        ({"lesion_fraction": 1.5}, "lesion_fraction"),
        ({"lesion_fraction": -0.1}, "lesion_fraction"),
        ({"seed": -1}, "seed"),
        ({"lesion_radius": (4, 2)}, "lesion_radius"),
        ({"lesion_contrast": (0.1, 1.5)}, "lesion_contrast"),
        ({"noise": -0.1}, "noise"),
    ],
)
def test_generate_badArgument_valueErrorNamesIt(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate_phantoms(tmp_path / "p", **{**SMALL, **kwargs})
    with pytest.raises(ValueError, match=name):
        ensure_phantoms(tmp_path, **{**SMALL, **kwargs})
    assert not any(tmp_path.iterdir())  # rejected before anything was written


def test_generate_unknownKnob_typeError(tmp_path):
    with pytest.raises(TypeError, match="nosie"):
        generate_phantoms(tmp_path / "p", nosie=0.1, **SMALL)
