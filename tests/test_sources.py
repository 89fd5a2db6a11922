"""load_dataset: names, paths, modes and class names resolve to the right Dataset."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import write_nifti_folder, write_npz

from workbench.data import sources
from workbench.data.phantom import generate_phantoms
from workbench.data.sources import load_dataset


@pytest.fixture
def tiny_phantoms(tmp_path, monkeypatch):
    """Make load_dataset('phantom…') read 12 small phantoms instead of generating 120."""
    folder = generate_phantoms(tmp_path / "phantom", n_volumes=12, shape=(16, 16, 8), seed=2)
    monkeypatch.setattr(sources, "ensure_phantoms", lambda data_dir: folder)
    return folder


def test_loadDataset_phantom3d_wholeVolumesLabelledByAnyLesionSlice(tiny_phantoms):
    ds = load_dataset("phantom3d")
    assert ds.name == "phantom3d" and ds.task == "binary"
    assert ds.image_shape == (*sources.PHANTOM_VOLUME_SIZE, 1)
    assert ds.class_names == ("no lesion", "lesion")
    with (tiny_phantoms / "labels.csv").open() as handle:
        expected = {}
        for row in csv.DictReader(handle):
            expected[row["volume"]] = max(expected.get(row["volume"], 0), int(row["label"]))
    got = {
        s: lab for split in ds.splits().values() for s, lab in zip(split.sources, split.labels, strict=True)
    }
    assert got == expected and len(got) == 12
    assert "volumes 16x32x32x1" in ds.summary()


def test_loadDataset_phantom_slicesUnchanged(tiny_phantoms):
    ds = load_dataset("phantom")
    assert ds.name == "phantom" and ds.image_shape == (32, 32, 1)
    assert sum(len(s) for s in ds.splits().values()) == 12 * 8
    assert load_dataset("phantom", mode="volume").name == "phantom3d"


def test_loadDataset_folderVolumeMode_givesVolumes(tmp_path):
    ds = load_dataset(write_nifti_folder(tmp_path / "vols", n_volumes=6), mode="volume")
    assert ds.image_shape == (16, 32, 32, 1) and len(ds.train) + len(ds.val) + len(ds.test) == 6


def test_loadDataset_classNames_replaceDefaultsAndAreChecked(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "mine.npz")
    assert load_dataset(path, class_names=["healthy", "sick"]).class_names == ("healthy", "sick")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    write_npz(tmp_path / "pneumoniamnist.npz")
    assert load_dataset("pneumoniamnist").class_names == ("normal", "pneumonia")
    assert load_dataset("pneumoniamnist", class_names=("no", "yes")).class_names == ("no", "yes")
    with pytest.raises(ValueError, match="class_names must have 2 names"):
        load_dataset(path, class_names=["healthy"])


def test_loadDataset_npzVolumes_needNoMode(tmp_path):
    from conftest import write_volume_npz

    ds = load_dataset(write_volume_npz(tmp_path / "v.npz"))
    assert ds.is_volumetric and np.isclose(ds.train.images.max(), 230 / 255)


def test_loadDataset_FolderThatDoesNotExist_SaysNoSuchFolder(tmp_path):
    from workbench.data.sources import load_dataset

    with pytest.raises(ValueError, match=r"no file or folder .*my_scans exists"):
        load_dataset(tmp_path / "my_scans")


# --- a shared, read-only data folder ----------------------------------------------------------


@pytest.mark.parametrize("shared_has_phantom", [True, False])
def test_loadPhantom_ReadOnlyDataFolder_ReadsItsPhantomElseMakesOneInTheUserFolder(
    data_and_user_folders, read_only, monkeypatch, tmp_path, shared_has_phantom
):
    shared, user = data_and_user_folders
    folder = generate_phantoms(tmp_path / "made" / "phantom", n_volumes=12, shape=(16, 16, 8), seed=2)
    if shared_has_phantom:
        (shared / "phantom").mkdir()
    read_only(shared)
    asked = []
    monkeypatch.setattr(sources, "ensure_phantoms", lambda data_dir: asked.append(data_dir) or folder)
    assert load_dataset("phantom").name == "phantom"
    assert asked == [shared if shared_has_phantom else user]


def test_loadDataset_MedmnistName_ReadOnlyDataFolder_DownloadsIntoAndReadsFromTheUserFolder(
    data_and_user_folders, read_only, monkeypatch
):
    shared, user = data_and_user_folders
    read_only(shared)

    def download(name, folder):  # as medmnist.download: makes the folder, returns the file
        Path(folder).mkdir(parents=True, exist_ok=True)
        return write_npz(Path(folder) / f"{name}.npz")

    monkeypatch.setattr(sources, "download", download)
    assert load_dataset("pneumoniamnist", allow_download=True).class_names == ("normal", "pneumonia")
    assert (user / "pneumoniamnist.npz").is_file()
    monkeypatch.setattr(sources, "download", lambda *a: pytest.fail("downloaded a file the user folder has"))
    assert len(load_dataset("pneumoniamnist").train) == 40


@pytest.mark.parametrize("command", ["download", "prepare"])
def test_cli_ReadOnlyDataFolder_WritesIntoTheUserFolder(
    data_and_user_folders, read_only, monkeypatch, command
):
    """`bash run.sh lab` runs `prepare` first: on a class's read-only data folder it must not fail."""
    from workbench.__main__ import main
    from workbench.data import medmnist, phantom

    shared, user = data_and_user_folders
    read_only(shared)
    written = []
    monkeypatch.setattr(medmnist, "download", lambda name, folder: written.append(Path(folder)) or folder)
    monkeypatch.setattr(phantom, "ensure_phantoms", lambda root: written.append(Path(root)) or root)
    assert main([command, "pneumoniamnist"] if command == "download" else [command]) == 0
    assert written == [user]
