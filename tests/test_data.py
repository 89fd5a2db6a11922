"""Loading MedMNIST files and NIfTI folders (workbench.data), splitting by volume,
stratified samples, and the errors users see."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_multilabel_npz, write_nifti, write_nifti_folder, write_npz, write_volume_npz

from workbench.data.dataset import load_npz, make_split, split_groups, stratified_sample
from workbench.data.nifti import load_nifti_folder, normalise_intensity, volume_slices


def test_load_npz_ReturnsScaledImagesLabelsAndSources(tmp_path):
    ds = load_npz(write_npz(tmp_path / "toy.npz", sizes=(10, 4, 6)))
    assert ds.train.images.shape == (10, 24, 24, 1)
    assert ds.train.images.dtype == np.float32
    assert 0.0 <= ds.train.images.min() and ds.train.images.max() <= 1.0
    assert ds.test.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert ds.val.sources[3] == "toy.npz:val:3"
    assert ds.class_names == ("class 0", "class 1")


def test_summary_ReportsSizesBalanceAndShape(tmp_path):
    text = load_npz(write_npz(tmp_path / "toy.npz", sizes=(10, 4, 6)), class_names=("a", "b")).summary()
    assert "images 24x24x1" in text
    assert "train     10 images" in text
    assert "a 5 (50%)" in text


def test_load_npz_MissingFile_RaisesFileNotFoundNamingPath(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_npz(tmp_path / "nope.npz")


def test_load_npz_TruncatedFile_RaisesValueError(tmp_path):
    path = write_npz(tmp_path / "toy.npz")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_npz(path)


def test_load_npz_WrongKeys_RaisesValueErrorListingMissingKeys(tmp_path):
    path = write_npz(tmp_path / "toy.npz", val_labels=None)
    with pytest.raises(ValueError, match=r"missing keys \['val_labels'\]"):
        load_npz(path)


def test_load_npz_LengthMismatch_RaisesValueError(tmp_path):
    path = write_npz(tmp_path / "toy.npz", test_labels=np.zeros((3, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"test.*12 images, 3 labels"):
        load_npz(path)


def test_load_npz_NanPixels_RaisesValueError(tmp_path):
    images = np.full((12, 24, 24), 0.5, dtype=np.float32)
    images[2, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        load_npz(write_npz(tmp_path / "toy.npz", val_images=images))


def test_load_npz_WrongNumberOfClassNames_RaisesValueError(tmp_path):
    with pytest.raises(ValueError, match="class_names must have 2 names"):
        load_npz(write_npz(tmp_path / "toy.npz"), class_names=("only one",))


def test_load_nifti_folder_SplitsByVolume_NoPatientInTwoSplits(tmp_path):
    ds = load_nifti_folder(write_nifti_folder(tmp_path / "vols", n_volumes=10), size=(16, 16))
    owners = {}
    for split_name, split in ds.splits().items():
        for source in np.unique(split.sources):
            assert owners.setdefault(source, split_name) == split_name, f"{source} is in two splits"
    assert len(owners) == 10
    # every slice of a volume travels together: 8 slices per volume in whichever split holds it
    for split in ds.splits().values():
        _, counts = np.unique(split.sources, return_counts=True)
        assert set(counts) == {8}


def test_load_nifti_folder_VolumeLevelLabels_GiveEverySliceTheVolumeLabel(tmp_path):
    ds = load_nifti_folder(write_nifti_folder(tmp_path / "vols", n_volumes=6), size=(16, 16))
    for split in ds.splits().values():
        for source, label in zip(split.sources, split.labels, strict=True):
            assert label == int(source[-2:]) % 2
    assert ds.image_shape == (16, 16, 1)


def test_load_nifti_folder_SliceLevelLabels_UseListedSlices(tmp_path):
    folder = write_nifti_folder(tmp_path / "vols", n_volumes=4, slice_level=True)
    ds = load_nifti_folder(folder, size=(16, 16), fractions=(0.5, 0.25, 0.25))
    labels = np.concatenate([s.labels for s in ds.splits().values()])
    assert len(labels) == 4 * 8 and labels.sum() == 4 * 4


def test_load_nifti_folder_EmptyFolder_RaisesValueError_PointingImagesToNpz(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no .nii or .nii.gz files.*PNGs go in a MedMNIST-style .npz"):
        load_nifti_folder(tmp_path / "empty")


def test_load_nifti_folder_CsvWithSpacesAfterCommas_IsRead(tmp_path):
    folder = write_nifti_folder(tmp_path / "vols", n_volumes=4)
    plain = load_nifti_folder(folder, size=(16, 16), fractions=(0.5, 0.25, 0.25))
    csv = folder / "labels.csv"
    csv.write_text(csv.read_text().replace(",", ", "))  # "volume, label", as typed by hand
    spaced = load_nifti_folder(folder, size=(16, 16), fractions=(0.5, 0.25, 0.25))
    assert np.array_equal(spaced.train.labels, plain.train.labels) and len(spaced.train) == len(plain.train)


def test_load_nifti_folder_CsvNamesMissingVolume_RaisesValueError(tmp_path):
    folder = write_nifti_folder(tmp_path / "vols", n_volumes=3)
    with (folder / "labels.csv").open("a") as csv:
        csv.write("ghost07,1\n")
    with pytest.raises(ValueError, match=r"no NIfTI file.*ghost07"):
        load_nifti_folder(folder)


def test_load_nifti_folder_MissingCsv_RaisesFileNotFound(tmp_path):
    folder = write_nifti_folder(tmp_path / "vols", n_volumes=3)
    (folder / "labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="labels CSV not found"):
        load_nifti_folder(folder)


def test_load_nifti_folder_BadAxis_RaisesValueError(tmp_path):
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        load_nifti_folder(write_nifti_folder(tmp_path / "vols"), axis=3)


def test_volume_slices_TwoDimensionalNifti_RaisesValueError(tmp_path):
    path = write_nifti(tmp_path / "flat.nii.gz", np.ones((20, 20)))
    with pytest.raises(ValueError, match="expected a 3D volume, got 2D"):
        volume_slices(path)


def test_volume_slices_FourDimensionalNifti_NeedsExplicitFrame(tmp_path):
    volume = np.stack([np.full((10, 10, 4), float(t)) for t in range(3)], axis=-1)
    volume[0, 0, 0, :] = 100.0  # give each frame an intensity range
    path = write_nifti(tmp_path / "fmri.nii.gz", volume)
    with pytest.raises(ValueError, match=r"pass frame=<index> .*load_nifti_folder\(folder, frame=<index>\)"):
        volume_slices(path)
    assert volume_slices(path, frame=2, size=(10, 10)).shape == (4, 10, 10, 1)
    with pytest.raises(ValueError, match=r"frame must be in \[0, 3\)"):
        volume_slices(path, frame=3)


def test_volume_slices_TruncatedGzip_RaisesValueError(tmp_path):
    path = write_nifti(tmp_path / "cut.nii.gz", np.random.default_rng(0).random((20, 20, 5)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        volume_slices(path)


def test_volume_slices_NanVoxel_RaisesValueError(tmp_path):
    volume = np.ones((8, 8, 4))
    volume[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        volume_slices(write_nifti(tmp_path / "hot.nii.gz", volume))


def test_volume_slices_ResizesAlongChosenAxis(tmp_path):
    path = write_nifti(tmp_path / "v.nii", np.random.default_rng(1).random((30, 20, 10)))
    assert volume_slices(path, axis=0, size=(12, 8)).shape == (30, 12, 8, 1)
    assert volume_slices(path, axis=2, size=(16, 16)).shape == (10, 16, 16, 1)


def test_normalise_intensity_ClipsHotVoxelsToPercentiles():
    volume = np.concatenate([np.linspace(0, 100, 999), [1e6]])
    scaled = normalise_intensity(volume, (0.0, 99.0))
    assert scaled.max() == 1.0 and scaled.min() == 0.0
    assert np.isclose(scaled[500], 500 / 999 * 100 / np.percentile(volume, 99), atol=1e-3)


def test_split_groups_EveryGroupInExactlyOneSplit():
    groups = np.repeat([f"p{i}" for i in range(9)], 5)
    masks = split_groups(groups, (0.6, 0.2, 0.2), seed=3)
    assert (masks["train"].astype(int) + masks["val"] + masks["test"] == 1).all()
    assert all(m.any() for m in masks.values())


def test_split_groups_TooFewGroups_RaisesValueError():
    with pytest.raises(ValueError, match="at least 3 volumes"):
        split_groups(np.array(["a", "a", "b"]), (0.6, 0.2, 0.2), seed=0)


# --- volumes, multi-label, task ----------------------------------------------------------------


def test_load_npz_ThreeDimensionalMedmnist_LoadsAsVolumesWithAChannel(tmp_path):
    ds = load_npz(write_volume_npz(tmp_path / "organmnist3d.npz", sizes=(6, 4, 4), shape=(10, 12, 14)))
    assert ds.train.images.shape == (6, 10, 12, 14, 1)
    assert ds.image_shape == (10, 12, 14, 1) and ds.is_volumetric
    raw = np.load(tmp_path / "organmnist3d.npz")["train_images"]
    np.testing.assert_allclose(ds.train.images[..., 0], raw / 255.0, rtol=1e-6)


def test_summary_Volumes_ReportsVolumeShape(tmp_path):
    text = load_npz(write_volume_npz(tmp_path / "v.npz", sizes=(6, 4, 4))).summary()
    assert "volumes 8x12x12x1" in text
    assert "train      6 volumes from 6 sources: class 0 3 (50%), class 1 3 (50%)" in text


def test_load_npz_RgbChannelsLast_StaysTwoDimensional(tmp_path):
    images = np.zeros((12, 24, 24, 3), dtype=np.uint8)
    ds = load_npz(write_npz(tmp_path / "rgb.npz", sizes=(40, 12, 12), val_images=images,
                            train_images=np.zeros((40, 24, 24, 3), np.uint8),
                            test_images=images))  # fmt: skip
    assert ds.image_shape == (24, 24, 3) and not ds.is_volumetric


def test_load_npz_MultiLabel_KeepsFlagsAndNamesLabels(tmp_path):
    path = write_multilabel_npz(tmp_path / "multi.npz", n_labels=3)
    ds = load_npz(path, class_names=["a", "b", "c"])
    assert ds.task == "multilabel" and ds.num_classes == 3
    np.testing.assert_array_equal(ds.val.labels, np.load(path)["val_labels"])
    assert ds.train.labels.dtype == np.int64
    assert "multilabel, 3 labels" in ds.summary()
    positives = int(ds.train.labels[:, 1].sum())
    assert f"b {positives} ({positives / 40:.0%})" in ds.summary()
    assert load_npz(path).class_names == ("label 0", "label 1", "label 2")


@pytest.mark.parametrize(("n_classes", "task"), [(2, "binary"), (3, "multiclass")])
def test_task_FollowsNumberOfClasses(tmp_path, n_classes, task):
    labels = np.arange(12) % n_classes
    path = write_npz(tmp_path / "t.npz", train_labels=np.arange(40) % n_classes, val_labels=labels,
                     test_labels=labels)  # fmt: skip
    assert load_npz(path).task == task


def test_load_npz_ClassNamesForAbsentClass_Accepted(tmp_path):
    ds = load_npz(write_npz(tmp_path / "t.npz"), class_names=("plain", "square", "never seen"))
    assert ds.num_classes == 3 and ds.task == "multiclass"


# --- NIfTI volume mode -------------------------------------------------------------------------


def test_load_nifti_folder_VolumeMode_OneImagePerVolumeResized(tmp_path):
    folder = write_nifti_folder(tmp_path / "vols", n_volumes=6, shape=(20, 18, 8))
    ds = load_nifti_folder(folder, mode="volume", size=(4, 10, 12))
    assert ds.image_shape == (4, 10, 12, 1)
    assert sum(len(s) for s in ds.splits().values()) == 6
    for split in ds.splits().values():
        assert len(np.unique(split.sources)) == len(split)  # one volume, one image
        for source, label in zip(split.sources, split.labels, strict=True):
            assert label == int(source[-2:]) % 2


def test_load_nifti_folder_VolumeMode_DepthAlongAxisMatchesZoom(tmp_path):
    from scipy.ndimage import zoom

    volume = np.random.default_rng(0).random((12, 10, 6)) * 100
    folder = write_nifti_folder(tmp_path / "vols", n_volumes=3, shape=(12, 10, 6))
    write_nifti(folder / "patient00.nii.gz", volume)
    ds = load_nifti_folder(folder, mode="volume", axis=0, size=(6, 5, 3))
    image = next(
        s.images[list(s.sources).index("patient00")] for s in ds.splits().values() if "patient00" in s.sources
    )
    expected = zoom(normalise_intensity(volume.astype(np.float32)), (0.5, 0.5, 0.5), order=1,
                    grid_mode=True, mode="nearest")  # fmt: skip
    np.testing.assert_allclose(image[..., 0], np.clip(expected, 0, 1), atol=1e-6)


def test_load_nifti_folder_VolumeMode_SliceLabelsMergeToAnyPositive(tmp_path):
    folder = write_nifti_folder(tmp_path / "vols", n_volumes=4, slice_level=True)
    rows = (folder / "labels.csv").read_text().splitlines()
    # patient00 loses its positive slices: it becomes a negative volume
    rows = [rows[0]] + [r if not r.startswith("patient00") else r[:-1] + "0" for r in rows[1:]]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    ds = load_nifti_folder(folder, mode="volume", size=(4, 8, 8), fractions=(0.5, 0.25, 0.25))
    got = {
        s: lab for split in ds.splits().values() for s, lab in zip(split.sources, split.labels, strict=True)
    }
    assert got == {"patient00": 0, "patient01": 1, "patient02": 1, "patient03": 1}


def test_load_nifti_folder_UnlistedVolume_WarnsNamingIt(tmp_path):
    folder = write_nifti_folder(tmp_path / "vols", n_volumes=4)
    write_nifti(folder / "forgotten.nii.gz", np.random.default_rng(0).random((20, 20, 8)))
    with pytest.warns(UserWarning, match=r"does not list 1 volume.*forgotten"):
        ds = load_nifti_folder(folder, size=(16, 16), fractions=(0.5, 0.25, 0.25))
    assert "forgotten" not in np.concatenate([s.sources for s in ds.splits().values()])


# --- stratified_sample -------------------------------------------------------------------------


def _split(labels):
    labels = np.asarray(labels)
    return make_split(np.zeros((len(labels), 2, 2)), labels, np.arange(len(labels)), where="test")


@pytest.mark.parametrize("n", [1, 7, 50, 99])
def test_stratified_sample_ClassCountsWithinOneOfProportional(n):
    labels = np.sort(np.random.default_rng(0).choice(3, size=200, p=[0.6, 0.3, 0.1]))  # sorted by class
    sample = stratified_sample(_split(labels), n, seed=1)
    assert len(sample) == n
    expected = np.bincount(labels, minlength=3) * n / len(labels)
    assert np.all(np.abs(np.bincount(sample.labels, minlength=3) - expected) < 1)


def test_stratified_sample_SortedFile_GetsBothClassesUnlikeFirstN():
    labels = np.repeat([0, 1], [300, 100])
    sample = stratified_sample(_split(labels), 40, seed=0)
    assert np.bincount(sample.labels).tolist() == [30, 10]
    assert set(labels[:40]) == {0}  # what taking the first 40 gave


def test_stratified_sample_SameSeedSameSample_OtherSeedOther():
    split = _split(np.arange(300) % 2)
    first, again = stratified_sample(split, 20, seed=3), stratified_sample(split, 20, seed=3)
    other = stratified_sample(split, 20, seed=4)
    np.testing.assert_array_equal(first.sources, again.sources)
    assert not np.array_equal(first.sources, other.sources)
    assert len(set(first.sources)) == 20  # no image twice
    assert list(first.sources) == sorted(first.sources, key=int)  # keeps the split's order


def test_stratified_sample_MultiLabel_PrevalencePerLabelKept():
    rng = np.random.default_rng(0)
    labels = (rng.random((1000, 4)) < [0.5, 0.2, 0.05, 0.7]).astype(int)
    sample = stratified_sample(_split(labels), 200, seed=0)
    assert sample.labels.shape == (200, 4)
    np.testing.assert_allclose(sample.labels.mean(0), labels.mean(0), atol=0.02)


def test_stratified_sample_MoreThanSplit_ReturnsWholeSplit():
    split = _split([0, 1, 0])
    assert stratified_sample(split, 10) is split


def test_stratified_sample_BadN_RaisesNamingIt():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        stratified_sample(_split([0, 1]), 0)


def test_load_npz_WholeNumberFloatLabels_ReadAsClassIndices(tmp_path):
    as_float = {
        f"{k}_labels": (np.arange(n) % 2).astype(np.float32)
        for k, n in (("train", 40), ("val", 12), ("test", 12))
    }
    ds = load_npz(write_npz(tmp_path / "f.npz", **as_float))
    assert ds.train.labels.dtype == np.int64 and ds.task == "binary"
    np.testing.assert_array_equal(ds.val.labels, np.arange(12) % 2)
