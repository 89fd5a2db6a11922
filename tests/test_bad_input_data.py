"""Every input the loaders cannot read correctly is refused with a clear error, raised by the workbench.

Each case builds a bad file or folder in tmp_path and calls the loader as a user would. The error
must be a ValueError / FileNotFoundError / FileExistsError whose message names the file or the
argument, raised from workbench code: nothing escapes from deep inside NumPy, SciPy or nibabel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_multilabel_npz, write_nifti, write_nifti_folder, write_npz

import workbench
from workbench.data.dataset import load_npz, make_split, stratified_sample
from workbench.data.nifti import load_nifti_folder
from workbench.data.sources import load_dataset

WORKBENCH = Path(workbench.__file__).parent


def npz(**overrides):
    """A loader call on a toy .npz whose arrays ``overrides`` replace."""
    return lambda tmp: load_npz(write_npz(tmp / "toy.npz", **overrides))


def labels(values, n=40):
    return np.resize(np.asarray(values), n).reshape(-1, 1)


def csv_folder(rows: list[str], **kwargs):
    """A loader call on a NIfTI folder of 4 volumes whose labels.csv is ``rows``."""

    def call(tmp):
        folder = write_nifti_folder(tmp / "vols", n_volumes=4)
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")
        return load_nifti_folder(folder, **kwargs)

    return call


VOLUME_ROWS = ["volume,label", "patient00,0", "patient01,1", "patient02,0", "patient03,1"]


def shadowed_nii(tmp):
    folder = write_nifti_folder(tmp / "vols", n_volumes=4)
    write_nifti(folder / "patient01.nii", np.ones((20, 20, 8)))
    return load_nifti_folder(folder)


def user_phantom_folder(tmp, monkeypatch):
    (tmp / "phantom").mkdir()
    (tmp / "phantom" / "scan.nii.gz").write_bytes(b"mine")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp))
    return load_dataset("phantom")


CASES = {
    # --- .npz shapes -------------------------------------------------------------------------
    "channel-first RGB": (
        npz(train_images=np.zeros((40, 3, 24, 24), np.uint8)),
        ValueError,
        r"toy.npz.*channel-first",
    ),
    "channel-first volume": (
        npz(train_images=np.zeros((40, 1, 8, 24, 24), np.uint8)),
        ValueError,
        r"toy.npz.*channel-first",
    ),
    "flattened images": (
        npz(train_images=np.zeros((40, 576), np.uint8)),
        ValueError,
        r"toy.npz.*images have shape \(40, 576\)",
    ),
    "six-dimensional images": (
        npz(train_images=np.zeros((40, 2, 2, 2, 2, 1), np.uint8)),
        ValueError,
        r"toy.npz.*expected \(N, H, W\)",
    ),
    "splits of different sizes": (
        npz(val_images=np.zeros((12, 28, 28), np.uint8)),
        ValueError,
        r"toy.npz.*splits differ in image shape.*train \(24, 24, 1\).*val \(28, 28, 1\)",
    ),
    "2-D beside 3-D split": (
        npz(test_images=np.zeros((12, 8, 24, 24), np.uint8)),
        ValueError,
        r"toy.npz.*splits differ in image shape",
    ),
    "string images": (
        npz(train_images=np.full((40, 24, 24), "a")),
        ValueError,
        r"toy.npz.*images must be numbers",
    ),
    "uint16 images": (
        npz(train_images=np.full((40, 24, 24), 4095, np.uint16)),
        ValueError,
        r"toy.npz.*scaled to \[0, 1\]",
    ),
    "negative pixels": (
        npz(train_images=np.full((40, 24, 24), -0.5)),
        ValueError,
        r"toy.npz.*scaled to \[0, 1\]",
    ),
    "inf pixel": (npz(test_images=np.full((12, 24, 24), np.inf)), ValueError, r"toy.npz.*NaN or inf"),
    "empty split": (
        npz(val_images=np.zeros((0, 24, 24), np.uint8), val_labels=np.zeros((0, 1), np.uint8)),
        ValueError,
        r"toy.npz \[val\]: the split is empty",
    ),
    "length mismatch": (
        npz(train_labels=labels([0, 1], n=39)),
        ValueError,
        r"toy.npz \[train\].*40 images, 39 labels",
    ),
    # --- .npz labels -------------------------------------------------------------------------
    "binary labelled 2 and 3": (
        npz(train_labels=labels([2, 3]), val_labels=labels([2, 3], 12), test_labels=labels([2, 3], 12)),
        ValueError,
        r"toy.npz.*labels are \[2, 3\].*classes \[0, 1\]",
    ),
    "a class never used": (
        npz(train_labels=labels([0, 2]), val_labels=labels([0, 2], 12), test_labels=labels([0, 2], 12)),
        ValueError,
        r"toy.npz.*classes \[1\] without any image",
    ),
    "one class only": (
        npz(train_labels=labels([0]), val_labels=labels([0], 12), test_labels=labels([0], 12)),
        ValueError,
        r"toy.npz.*K >= 2",
    ),
    "float labels": (
        npz(train_labels=labels([0.0, 0.5])),
        ValueError,
        r"toy.npz \[train\].*labels must be non-negative integers",
    ),
    "negative labels": (npz(train_labels=labels([-1, 1])), ValueError, r"toy.npz \[train\].*minimum -1"),
    "labels of three axes": (
        npz(train_labels=np.zeros((40, 1, 1), int)),
        ValueError,
        r"toy.npz \[train\].*labels must have shape",
    ),
    "multi-label value 2": (
        npz(train_labels=np.resize([0, 1, 2], (40, 3))),
        ValueError,
        r"toy.npz \[train\].*0/1 flags, found values \[0, 1, 2\]",
    ),
    "label width differs": (
        npz(
            train_labels=np.zeros((40, 3), int),
            val_labels=np.zeros((12, 4), int),
            test_labels=np.zeros((12, 3), int),
        ),
        ValueError,
        r"toy.npz.*splits differ in label width",
    ),
    "multi-label beside single": (
        npz(train_labels=np.zeros((40, 3), int)),
        ValueError,
        r"toy.npz.*splits differ in label width",
    ),
    "too few class names": (
        lambda tmp: load_npz(write_npz(tmp / "toy.npz"), class_names=["only"]),
        ValueError,
        r"class_names must have 2 names",
    ),
    "a single class name": (
        npz(train_labels=labels([0]), val_labels=labels([0], 12), test_labels=labels([0], 12)),
        ValueError,
        r"K >= 2",
    ),
    "one declared class": (
        lambda tmp: load_npz(
            write_npz(
                tmp / "toy.npz",
                train_labels=labels([0]),
                val_labels=labels([0], 12),
                test_labels=labels([0], 12),
            ),
            class_names=["all"],
        ),
        ValueError,
        r"class_names must name at least 2 classes",
    ),
    "duplicate class names": (
        lambda tmp: load_npz(write_npz(tmp / "toy.npz"), class_names=["a", "a"]),
        ValueError,
        r"class_names must be distinct",
    ),
    "non-string class names": (
        lambda tmp: load_npz(write_npz(tmp / "toy.npz"), class_names=[0, 1]),
        ValueError,
        r"class_names must be distinct non-empty strings",
    ),
    "label names for multi-label": (
        lambda tmp: load_npz(write_multilabel_npz(tmp / "m.npz"), class_names=["a", "b"]),
        ValueError,
        r"m.npz.*class_names must name each of the 3 labels",
    ),
    # --- .npz files --------------------------------------------------------------------------
    "missing file": (lambda tmp: load_npz(tmp / "absent.npz"), FileNotFoundError, r"absent.npz"),
    "text file named .npz": (
        lambda tmp: (tmp / "t.npz").write_text("hello") and load_npz(tmp / "t.npz"),
        ValueError,
        r"t.npz.*not a readable .npz",
    ),
    "pickled object array": (
        npz(train_labels=np.array([None] * 40, dtype=object)),
        ValueError,
        r"toy.npz.*not a readable .npz",
    ),
    "missing key": (npz(test_images=None), ValueError, r"toy.npz.*missing keys \['test_images'\]"),
    # --- NIfTI folders -----------------------------------------------------------------------
    "volume listed twice": (
        csv_folder([*VOLUME_ROWS, "patient01,0"]),
        ValueError,
        r"labels.csv: line 6 lists volume patient01 a second time",
    ),
    "slice listed twice": (
        csv_folder(["volume,slice,label", "patient00,3,1", "patient00,3,0"]),
        ValueError,
        r"labels.csv: line 3 lists slice 3 of patient00 a second time",
    ),
    "v0.nii beside v0.nii.gz": (
        shadowed_nii,
        ValueError,
        r"vols: volume 'patient01' is saved twice, as patient01.nii and patient01.nii.gz",
    ),
    "unknown volume": (
        csv_folder([*VOLUME_ROWS, "ghost,1"]),
        ValueError,
        r"labels.csv.*no NIfTI file.*ghost",
    ),
    "label not a number": (
        csv_folder(["volume,label", "patient00,yes"]),
        ValueError,
        r"labels.csv: column label.*'yes'",
    ),
    "row without label": (
        csv_folder(["volume,label", "patient00"]),
        ValueError,
        r"labels.csv: column label.*None",
    ),
    "no header": (csv_folder(["patient00,0", "patient01,1"]), ValueError, r"labels.csv: expected a header"),
    "empty csv": (csv_folder([""]), ValueError, r"labels.csv: expected a header.*got an empty file"),
    "header without rows": (
        csv_folder(["volume,label"]),
        ValueError,
        r"labels.csv: has the header volume,label but no rows; .*such as 'patient00,1'",
    ),
    "slice header without rows, blank lines": (
        csv_folder(["volume,slice,label", "", ""]),
        ValueError,
        r"labels.csv: has the header volume,slice,label but no rows; .*such as 'patient00,0,1'",
    ),
    "binary csv": (
        lambda tmp: (
            (write_nifti_folder(tmp / "v", 3) / "labels.csv").write_bytes(b"\xff\xfe\x00bad")
            and load_nifti_folder(tmp / "v")
        ),
        ValueError,
        r"labels.csv: not a readable CSV",
    ),
    "slice out of range": (
        csv_folder(["volume,slice,label", "patient00,99,1"]),
        ValueError,
        r"labels.csv: patient00 has 8 slices, no slice 99",
    ),
    "labels 5 and 6": (
        csv_folder(["volume,label", "patient00,5", "patient01,6", "patient02,5", "patient03,6"]),
        ValueError,
        r"vols.*labels are \[5, 6\]",
    ),
    "unknown mode": (
        csv_folder(VOLUME_ROWS, mode="cube"),
        ValueError,
        r"mode must be one of \('slice', 'volume'\), got 'cube'",
    ),
    "slice size in volume mode": (
        csv_folder(VOLUME_ROWS, mode="volume", size=(16, 16)),
        ValueError,
        r"size must be 3 positive integers in volume mode",
    ),
    "zero size": (csv_folder(VOLUME_ROWS, size=(0, 16)), ValueError, r"size must be 2 positive integers"),
    "multi-class slices in volume mode": (
        csv_folder(["volume,slice,label", "patient00,0,2", "patient01,0,1", "patient02,0,0"], mode="volume"),
        ValueError,
        r"labels.csv: volume mode needs one label per volume",
    ),
    "bad axis": (csv_folder(VOLUME_ROWS, axis=3), ValueError, r"axis must be 0, 1 or 2, got 3"),
    "bad fractions": (
        csv_folder(VOLUME_ROWS, fractions=(0.5, 0.5, 0.5)),
        ValueError,
        r"fractions must be three positive numbers",
    ),
    "missing folder": (lambda tmp: load_nifti_folder(tmp / "nowhere"), FileNotFoundError, r"nowhere"),
    "truncated volume": (
        lambda tmp: (
            (write_nifti_folder(tmp / "v", 3) / "patient01.nii.gz").write_bytes(b"\x1f\x8b\x08")
            and load_nifti_folder(tmp / "v")
        ),
        ValueError,
        r"patient01.nii.gz: not a readable NIfTI",
    ),
    "csv names files, not ids": (
        csv_folder(["volume,label", "patient00.nii.gz,0"]),
        ValueError,
        r"labels.csv.*\['patient00.nii.gz'\].*without .nii/.nii.gz, such as 'patient00'",
    ),
    "two labelled volumes": (
        csv_folder(["volume,label", "patient00,0", "patient01,1"]),
        ValueError,
        r"vols: 2 labelled volume\(s\); need at least 3",
    ),
    "negative seed": (
        csv_folder(VOLUME_ROWS, seed=-1),
        ValueError,
        r"seed must be a non-negative integer, got -1",
    ),
    "percentiles beyond 100": (
        csv_folder(VOLUME_ROWS, percentiles=(1, 101)),
        ValueError,
        r"percentiles must be \(low, high\) with 0 <= low < high <= 100, got \(1, 101\)",
    ),
    "fractions as one number": (
        csv_folder(VOLUME_ROWS, fractions=0.6),
        ValueError,
        r"fractions must be three",
    ),
    # --- load_dataset and sampling -----------------------------------------------------------
    "a single NIfTI file": (
        lambda tmp: load_dataset(write_nifti(tmp / "scan.nii.gz", np.ones((8, 8, 8)))),
        ValueError,
        r"got the file .*scan.nii.gz; put NIfTI volumes in a folder",
    ),
    "spec a number": (
        lambda tmp: load_dataset(5),
        ValueError,
        r"spec must be a dataset name or a path \(str or Path\), got int",
    ),
    "class_names as one string": (
        lambda tmp: load_dataset(write_npz(tmp / "toy.npz"), class_names="ab"),
        ValueError,
        r"class_names must be a list of names, got the single string 'ab'",
    ),
    "sample with negative seed": (
        lambda tmp: stratified_sample(
            make_split(np.zeros((4, 2, 2)), [0, 1, 0, 1], np.arange(4), "s"), 2, seed=-3
        ),
        ValueError,
        r"seed must be a non-negative integer, got -3",
    ),
    "mode for a .npz": (
        lambda tmp: load_dataset(write_npz(tmp / "toy.npz"), mode="volume"),
        ValueError,
        r"mode applies to NIfTI folders.*toy.npz",
    ),
    "phantom3d as slices": (
        lambda tmp: load_dataset("phantom3d", mode="slice"),
        ValueError,
        r"mode='slice' contradicts 'phantom3d'",
    ),
    "unknown dataset name": (
        lambda tmp: load_dataset("pneumonia"),
        ValueError,
        r"dataset must be 'phantom'.*'pneumonia'",
    ),
    "sample of zero": (
        lambda tmp: stratified_sample(make_split(np.zeros((4, 2, 2)), [0, 1, 0, 1], np.arange(4), "s"), 0),
        ValueError,
        r"n must be a positive integer.*0",
    ),
}


@pytest.mark.filterwarnings("ignore:.*does not list")  # CSVs naming only some volumes
@pytest.mark.parametrize("case", list(CASES))
def test_loader_badInput_clearErrorRaisedByWorkbench(tmp_path, case):
    call, error, message = CASES[case]
    with pytest.raises(error, match=message) as info:
        call(tmp_path)
    raised_in = Path(info.traceback[-1].path)
    assert WORKBENCH in raised_in.parents, f"raised inside {raised_in}, not by the workbench"


def test_loadDataset_userFolderNamedPhantom_clearErrorKeepsIt(tmp_path, monkeypatch):
    with pytest.raises(FileExistsError, match=r"phantom exists but has no phantom.json.*scan.nii.gz") as info:
        user_phantom_folder(tmp_path, monkeypatch)
    assert WORKBENCH in Path(info.traceback[-1].path).parents
    assert (tmp_path / "phantom" / "scan.nii.gz").read_bytes() == b"mine"


@pytest.mark.parametrize(
    "pixel, message",
    [(np.nan, "val images hold NaN or inf"), (255.0, r"val images must be scaled to \[0, 1\].*0\.\.255")],
)
def test_dataset_built_by_hand_RefusesImagesOutsideZeroToOne_NamingTheSplit(tiny_dataset, pixel, message):
    from workbench.data.dataset import Dataset, Split

    train, val, test = tiny_dataset.train, tiny_dataset.val, tiny_dataset.test
    images = val.images.copy()
    images[0, 0, 0, 0] = pixel
    with pytest.raises(ValueError, match=message):
        Dataset("mine", train, Split(images, val.labels, val.sources), test, ("a", "b"))


def test_split_built_by_hand_FromFloat64OrUint8_HoldsFloat32(tiny_dataset):
    from workbench.data.dataset import Split

    val = tiny_dataset.val
    for images in (val.images.astype(np.float64), (val.images > 0.5).astype(np.uint8)):
        split = Split(images, val.labels, val.sources)
        assert split.images.dtype == np.float32
        np.testing.assert_array_equal(split.images, images.astype(np.float32))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(labels=slice(0, -2)), r"mine: val holds \{'images': \d+, 'labels': \d+, 'sources': \d+\}"),
        (dict(images="no channel"), r"val images must be \(N, H, W, C\).*images\[\.\.\., None\]"),
        (dict(labels="halves"), "val labels must be whole class indices"),
    ],
)
def test_dataset_built_by_hand_InconsistentSplits_AreNamed(tiny_dataset, change, message):
    from workbench.data.dataset import Dataset, Split

    train, val, test = tiny_dataset.train, tiny_dataset.val, tiny_dataset.test
    images, labels = val.images, val.labels
    if change.get("labels") == "halves":
        labels = labels * 0.5
    elif "labels" in change:
        labels = labels[change["labels"]]
    if change.get("images") == "no channel":
        images = images[..., 0]
    with pytest.raises(ValueError, match=message):
        Dataset("mine", train, Split(images, labels, val.sources), test, ("a", "b"))


@pytest.mark.parametrize(
    "shape, message",
    [
        ((-1, 2, 1), r"mine: train labels must be class indices of shape \(N,\) or .*\(\d+, 2, 1\)"),
        ((-1, 1), r"labels of shape \(N, 1\) are one label's 0/1 flags: for class indices pass shape \(N,\)"),
    ],
)
def test_dataset_built_by_hand_LabelsOfAnotherShape_SayWhichShapesAreRead(tiny_dataset, shape, message):
    """(N, 2, 1) labels passed as a binary task and failed deep inside; (N, 1) blamed the class names."""
    from workbench.data.dataset import Dataset, Split

    def reshaped(split):
        labels = np.stack([split.labels, 1 - split.labels], 1) if shape[1] == 2 else split.labels
        return Split(split.images, labels.reshape(shape), split.sources)

    with pytest.raises(ValueError, match=message):
        Dataset("mine", *map(reshaped, (tiny_dataset.train, tiny_dataset.val, tiny_dataset.test)), ("a", "b"))


def test_one_hot_labels_ForASingleLabelModel_SayHowToMakeClassIndices(trained_tiny):
    from workbench.prune.scores import Scorer

    model, data = trained_tiny
    one_hot = np.eye(2, dtype=np.int64)[data.val.labels]
    with pytest.raises(ValueError, match=r"read as multi-label flags: .*labels\.argmax\(1\)"):
        Scorer(model, data.val.images, one_hot)


def test_dataset_built_by_hand_ClassNamesAsOneString_IsRefused_FloatZeroOneLabels_AreIndices(tiny_dataset):
    from workbench.data.dataset import Dataset, Split

    train, val, test = tiny_dataset.train, tiny_dataset.val, tiny_dataset.test
    with pytest.raises(ValueError, match="class_names must be a tuple of names"):
        Dataset("mine", train, val, test, "ab")
    as_floats = Split(val.images, val.labels.astype(np.float64), val.sources)
    assert as_floats.labels.dtype == np.int64
    assert Dataset("mine", train, as_floats, test, ("a", "b")).task == "binary"
