"""Shared builders for tests: tiny datasets, npz files and NIfTI folders made in tmp_path."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Test files whose tests share this conftest's session runs of the notebooks (run_notebook): under
# pytest-xdist they go to one worker, so each notebook run and its baseline are made once.
SHARED_NOTEBOOK_RUNS = {"test_notebooks.py", "test_explore_notebook.py"}

try:
    import xdist  # noqa: F401 - run.sh test runs the suite on two workers with it
except ImportError:  # the hook below is unknown to pytest without it
    xdist = None

if xdist is not None:

    def pytest_xdist_make_scheduler(config, log):
        """``--dist loadfile``, with the files sharing notebook runs as one unit: each unit runs
        whole on one worker, so module and shared session fixtures are made once. (xdist_group
        marks cannot do it here: ``--dist loadgroup`` renames items through ``_nodeid``, which
        pytest 9 no longer reads.)"""
        from xdist.scheduler import LoadScopeScheduling

        if config.getvalue("dist") != "loadfile":
            return None

        class ByFile(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                file = nodeid.split("::", 1)[0]
                return "shared notebook runs" if Path(file).name in SHARED_NOTEBOOK_RUNS else file

        return ByFile(config, log)


def square_images(n: int, size: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (n, size, size) uint8 noise images; label 1 ones carry a bright square (learnable)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 120, size=(n, size, size)).astype(np.uint8)
    for image, label in zip(images, labels, strict=True):
        if label:
            row, col = rng.integers(2, size - 8, size=2)
            image[row : row + 6, col : col + 6] = 230
    return images, labels


def write_npz(path: Path, sizes=(40, 12, 12), image_size: int = 24, **overrides) -> Path:
    """Write a MedMNIST-format .npz with the given split sizes; ``overrides`` replace arrays by key."""
    arrays = {}
    for split, n, seed in zip(("train", "val", "test"), sizes, range(3), strict=True):
        images, labels = square_images(n, image_size, seed)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(-1, 1)
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def write_nifti(path: Path, volume: np.ndarray) -> Path:
    import nibabel as nib

    image = nib.Nifti1Image(volume.astype(np.float32), affine=np.eye(4))
    payload = image.to_bytes()
    path.write_bytes(gzip.compress(payload) if path.name.endswith(".gz") else payload)
    return path


def write_nifti_folder(
    folder: Path, n_volumes: int = 6, shape=(20, 20, 8), slice_level: bool = False
) -> Path:
    """Write ``n_volumes`` random volumes and a labels.csv (volume- or slice-level)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["volume,slice,label" if slice_level else "volume,label"]
    for index in range(n_volumes):
        volume_id = f"patient{index:02d}"
        write_nifti(folder / f"{volume_id}.nii.gz", rng.gamma(2.0, 50.0, size=shape))
        if slice_level:
            rows += [f"{volume_id},{s},{int(s >= shape[2] // 2)}" for s in range(shape[2])]
        else:
            rows.append(f"{volume_id},{index % 2}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small learnable two-class Dataset with 24x24 grey images (immutable, shared)."""
    from workbench.data.dataset import load_npz

    return load_npz(write_npz(tmp_path_factory.mktemp("tiny") / "tiny.npz"), class_names=("plain", "square"))


def tiny_cnn(input_shape=(24, 24, 1), classes=2, seed=0):
    """A fast Conv-Pool-Conv-Flatten-Dense-Dense model for engine tests (a softmax head)."""
    return tiny_head_model(classes, "softmax", input_shape, seed)


def tiny_head_model(
    units: int = 2, activation: str | None = "softmax", input_shape=(24, 24, 1), seed: int = 0
):
    """tiny_cnn with any head: ``units`` outputs with ``activation`` (None = linear logits)."""
    from workbench.model.compat import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(4, 3, activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool"),
            layers.Conv2D(8, 3, activation="relu", name="conv2"),
            layers.Flatten(name="flat"),
            layers.Dense(16, activation="relu", name="fc"),
            layers.Dense(units, activation=activation, name="out"),
        ]
    )


def multilabel_dataset(labels: int = 3, sizes=(48, 24, 24), size: int = 24, seed: int = 0):
    """A learnable L-label Dataset: label j is on when quadrant j of the image holds a bright square."""
    from workbench.data.dataset import Dataset, Split

    rng = np.random.default_rng(seed)
    splits = []
    for n in sizes:
        images = rng.uniform(0.0, 0.4, size=(n, size, size, 1)).astype(np.float32)
        truth = rng.integers(0, 2, size=(n, labels))
        half = size // 2
        for image, row in zip(images, truth, strict=True):
            for j in np.flatnonzero(row):
                top, left = (j // 2) * half + 2, (j % 2) * half + 2
                image[top : top + 6, left : left + 6] = 0.95
        splits.append(Split(images, truth.astype(np.int64), np.array([f"ml:{i}" for i in range(n)])))
    return Dataset("multilabel", *splits, class_names=tuple(f"finding{j}" for j in range(labels)))


@pytest.fixture(scope="session")
def _trained_tiny_once(tiny_dataset):
    from workbench.model.train import Recipe, compile_model, fit

    model = compile_model(tiny_cnn())
    fit(model, tiny_dataset, Recipe(epochs=3, batch_size=8), progress=False)
    return model


@pytest.fixture
def trained_tiny(_trained_tiny_once, tiny_dataset):
    """(a fresh copy of tiny_cnn trained 3 epochs on tiny_dataset, the dataset)."""
    from workbench.prune.pruning import copy_model

    return copy_model(_trained_tiny_once), tiny_dataset


def assert_sparsity_pinned(model, keep):
    """Every pruned kernel entry of ``model`` is exactly zero."""
    from workbench.model.registry import get_kernels

    for name, kernel in get_kernels(model).items():
        assert np.all(kernel[~keep[name]] == 0.0), f"{name}: a pruned weight is non-zero"


def write_tiny_notebook(path: Path) -> Path:
    """A fast, TensorFlow-free parameterized notebook for sweep tests: it can sleep and fail on demand."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    parameters = "\n".join(
        [
            "x: float = 1.0          # a number",
            'mode: str = "a"        # a word',
            "fail: bool = False     # raise in the second cell",
            "sleep: float = 0.0     # seconds to wait before writing results",
            "seed: int = 0          # a seed",
            'results_dir: str = ""  # where results go',
        ]
    )
    notebook.cells = [
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import time\nstarted = time.time()\ntime.sleep(sleep)\n"
            "if fail:\n    raise RuntimeError(f'asked to fail at x={x}')"
        ),
        nbformat.v4.new_code_cell(
            "from workbench.runs.store import write_results\n"
            "write_results(results_dir, {'accuracy': 0.5 + x / 10 + seed / 100, 'auc': 0.9,"
            " 'sparsity': x / 10, 'started': started, 'ended': time.time()})"
        ),
    ]
    nbformat.write(notebook, path)
    return path


def cube_volumes(n: int, shape=(8, 12, 12), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (n, D, H, W) uint8 noise volumes; label 1 ones carry a bright cube (learnable)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    volumes = rng.integers(0, 120, size=(n, *shape)).astype(np.uint8)
    for volume, label in zip(volumes, labels, strict=True):
        if label:
            corner = [rng.integers(0, side - 4) for side in shape]
            volume[tuple(slice(c, c + 4) for c in corner)] = 230
    return volumes, labels


def write_volume_npz(path: Path, sizes=(24, 8, 8), shape=(8, 12, 12)) -> Path:
    """Write a 3-D MedMNIST-format .npz: images (N, D, H, W) uint8, labels (N, 1)."""
    arrays = {}
    for split, n, seed in zip(("train", "val", "test"), sizes, range(3), strict=True):
        volumes, labels = cube_volumes(n, shape, seed)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = volumes, labels.reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def write_multilabel_npz(path: Path, sizes=(40, 12, 12), n_labels: int = 3, image_size: int = 24) -> Path:
    """Write a multi-label .npz: labels (N, n_labels) 0/1; label j is 'a square in quadrant-ish j'."""
    arrays = {}
    for split, n, seed in zip(("train", "val", "test"), sizes, range(3), strict=True):
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 120, size=(n, image_size, image_size)).astype(np.uint8)
        labels = rng.integers(0, 2, size=(n, n_labels))
        step = image_size // n_labels
        for image, flags in zip(images, labels, strict=True):
            for j in np.flatnonzero(flags):
                image[j * step : j * step + 4, j * step : j * step + 4] = 230
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.astype(np.uint8)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="session")
def tiny_volume_dataset(tmp_path_factory):
    """A small learnable two-class Dataset of (8, 12, 12, 1) volumes (immutable, shared)."""
    from workbench.data.dataset import load_npz

    return load_npz(
        write_volume_npz(tmp_path_factory.mktemp("vol") / "cubes.npz"), class_names=("plain", "cube")
    )


@pytest.fixture(scope="session")
def tiny_multilabel_dataset(tmp_path_factory):
    """A small multi-label Dataset: 24x24 grey images, labels (N, 3) 0/1 named a, b, c."""
    from workbench.data.dataset import load_npz

    path = write_multilabel_npz(tmp_path_factory.mktemp("multi") / "multi.npz")
    return load_npz(path, class_names=("a", "b", "c"))


def tiny_resnet(input_shape=(24, 24, 1), classes=2, seed=0):
    """small_resnet at widths (4, 8): two coupled channel groups, BatchNorm, a shortcut conv."""
    from workbench.model.builders import small_resnet
    from workbench.model.compat import keras

    keras.utils.set_random_seed(seed)
    return small_resnet(input_shape, classes, widths=(4, 8))


def three_class_dataset(data):
    """``data`` (binary) relabelled into 3 classes: half of each class-1 split's odd rows become class 2."""
    from workbench.data.dataset import Dataset, Split

    def relabelled(split):
        labels = split.labels + (split.labels == 1) * (np.arange(len(split)) % 2)
        return Split(split.images, labels, split.sources)

    return Dataset("three", *map(relabelled, (data.train, data.val, data.test)), ("a", "b", "c"))


CUSTOM_LAYER_SOURCE = '''
import keras


@keras.saving.register_keras_serializable(package="user_layers")
class ChannelAttention(keras.layers.Layer):
    """Scale each channel by a learned weight (a user's own layer)."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale
'''


def custom_layer_model_file(folder: Path, module: str = "user_layers") -> tuple[Path, Path]:
    """Write ``<module>.py`` defining a registered ChannelAttention layer and a 24x24 binary model
    using it, then make Keras forget the class, as a fresh kernel would; returns (model, module) paths."""
    import sys

    from workbench.model.builders import import_user_modules
    from workbench.model.compat import keras

    source = folder / f"{module}.py"
    source.write_text(CUSTOM_LAYER_SOURCE)
    (imported,) = import_user_modules([source])
    inputs = keras.Input((24, 24, 1))
    x = imported.ChannelAttention()(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
    x = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))
    path = folder / "attention.keras"
    keras.Model(inputs, x).save(path)
    keras.saving.get_custom_objects().pop(f"{module}>ChannelAttention", None)
    sys.modules.pop(module, None)
    return path, source


def faint_square_dataset(sizes=(300, 100, 200), contrast: float = 0.2, size: int = 24, seed: int = 0):
    """A two-class Dataset a tiny CNN learns only partly (AUC ~0.85): label 1 images carry a square
    ``contrast`` brighter than noise in [0, 0.5], so estimates of its AUC have room to err both ways."""
    from workbench.data.dataset import Dataset, Split

    splits = []
    for offset, n in enumerate(sizes):
        rng = np.random.default_rng(seed * 10 + offset)
        labels = np.arange(n) % 2
        images = rng.uniform(0.0, 0.5, size=(n, size, size, 1)).astype(np.float32)
        for image, label in zip(images, labels, strict=True):
            if label:
                row, col = rng.integers(2, size - 8, size=2)
                image[row : row + 6, col : col + 6] += contrast
        splits.append(Split(images, labels, np.array([f"faint{seed}:{offset}:{i}" for i in range(n)])))
    return Dataset("faint", *splits, class_names=("plain", "square"))


def write_finished_run(runs_dir: Path, name: str, params: dict, metrics, status: str = "ok", **info) -> Path:
    """Write a finished run folder as a sweep leaves it; ``metrics`` may be a dict or raw text."""
    import json

    folder = runs_dir / name
    folder.mkdir(parents=True)
    record = {
        "run_id": name,
        "status": status,
        "started": 0.0,
        "ended": 1.0,
        "error": {},
        "results": [],
        **info,
    }
    (folder / "run.json").write_text(json.dumps(record))
    (folder / "params.json").write_text(json.dumps(params))
    (folder / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return folder


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only: ``read_only(folder)``. Mode 0o555, and since mode bits do not stop
    root (CI), the workbench's write test (``paths.is_writable``) also meets EROFS below it."""
    import errno

    from workbench.core import paths

    frozen: list[Path] = []
    real_try = getattr(paths, "_try_write", None)

    def try_write(folder):
        if any(Path(folder).resolve().is_relative_to(f) for f in frozen):
            raise OSError(errno.EROFS, "Read-only file system", str(folder))
        real_try(folder)

    monkeypatch.setattr(paths, "_try_write", try_write, raising=False)  # False: also runs on code without it

    def freeze(folder: Path) -> Path:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)
        frozen.append(folder.resolve())
        return folder

    yield freeze
    for folder in frozen:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)


@pytest.fixture
def data_and_user_folders(tmp_path, monkeypatch):
    """WORKBENCH_DATA at tmp_path/shared and the user's folder (XDG_CACHE_HOME) at tmp_path/user;
    returns (shared data folder, the user's workbench folder)."""
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "shared"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    (tmp_path / "shared").mkdir()
    return tmp_path / "shared", tmp_path / "user" / "workbench"


# --- notebooks: each distinct run executed once per session ----------------------------------------

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

SMALL_NOTEBOOK_PARAMETERS = {
    "01_explore_threshold.ipynb": {"epochs": 1, "grid_points": 6},
    "02_compare_criteria.ipynb": {
        "epochs": 1,
        "sparsities": [0.0, 0.5, 0.9],
        "finetune_sparsities": [0.9],
        "finetune_epochs": 1,
    },
    "03_finetune_and_schedules.ipynb": {
        "epochs": 1,
        "finetune_epochs": 1,
        "filter_sparsities": [0.9],  # one fraction, one-shot beside iterative+distill: both recoveries run
        "recovery": "iterative+distill",
    },
    "04_nifti_volumes.ipynb": {"epochs": 1, "finetune_epochs": 1},
    "teacher/source/pruning_lesson/05_teaching_gradient_pruning.ipynb": {"epochs": 1, "early_epochs": 1},
    "06_sensitivity_and_budgets.ipynb": {
        "epochs": 1,
        "grid": [0.5, 0.9],
        "flops_budget": 0.5,
        "params_budget": 0.2,
        "tolerance": 0.05,
        "finetune_epochs": 1,
    },
    "teacher/source/pruning_worksheet/07_lab_worksheet.ipynb": {"epochs": 1},
}

# What each notebook's one shared run on its default data adds to its small parameters. Notebook 01's
# prunes at ε = 0 with a user's own class names, so the one run answers the headless, results, class
# names and dense-model tests.
SHARED_RUN = {"01_explore_threshold.ipynb": {"epsilon": 0.0, "class_names": ["calm", "storm"]}}

# Results leave a notebook through files whose path is a parameter: each run's go to its own folder.
RESULT_PARAMETERS = {"results_dir": "results", "results_path": "results/results.json"}


class NotebookRun:
    """One papermill execution: the executed notebook, its results folder and the error that stopped it."""

    def __init__(self, folder: Path, notebook, error: Exception | None):
        self.folder, self.notebook, self.error = folder, notebook, error

    @property
    def results(self) -> Path:
        """The folder given as ``results_dir`` (or holding ``results_path``)."""
        return self.folder / "results"

    @property
    def metrics(self) -> dict:
        """The run's metrics.json (a failed run raises its error instead)."""
        import json

        if self.error is not None:
            raise self.error
        return json.loads((self.results / "metrics.json").read_text())

    def outputs(self, mime: str) -> list:
        """Every output of the executed notebook holding ``mime`` data."""
        cells = [c for c in self.notebook.cells if c.cell_type == "code"]
        return [o for c in cells for o in c.outputs if mime in o.get("data", {})]

    def printed(self) -> str:
        """All text the executed notebook printed."""
        return "".join(o.get("text", "") for c in self.notebook.cells for o in c.get("outputs", []))


def execute_notebook(path: Path, folder: Path, data: Path, parameters: dict) -> NotebookRun:
    """Run ``path`` under papermill with WORKBENCH_DATA at ``data`` (the kernel inherits it) and the
    notebook's result parameters pointing into ``folder``; a failing run comes back with its error."""
    import nbformat
    import papermill

    declared = papermill.inspect_notebook(str(path))
    results = {key: str(folder / value) for key, value in RESULT_PARAMETERS.items() if key in declared}
    out, error = folder / path.name, None
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_DATA", str(data))
        try:
            papermill.execute_notebook(
                str(path),
                str(out),
                parameters={**results, **parameters},
                cwd=str(NOTEBOOKS),
                kernel_name="python3",
                progress_bar=False,
            )
        except papermill.PapermillExecutionError as failed:
            error = failed
    return NotebookRun(folder, nbformat.read(out, as_version=4), error)


@pytest.fixture(scope="session")
def notebook_data(tmp_path_factory):
    """The WORKBENCH_DATA folder of every notebook the tests execute: the phantom is made and each
    1-epoch baseline trained once, then read from its cache by the other notebooks."""
    return tmp_path_factory.mktemp("workbench-data")


@pytest.fixture(scope="session")
def run_notebook(notebook_data, tmp_path_factory):
    """``run_notebook(name, **parameters)``: the NotebookRun of notebooks/``name`` with its small
    parameters and these, executed the first time it is asked for and shared after that (every test
    reading a run only reads it)."""
    import json

    done: dict[str, NotebookRun] = {}

    def run(name: str, **parameters) -> NotebookRun:
        key = json.dumps([name, parameters], sort_keys=True, default=str)
        if key not in done:
            folder = tmp_path_factory.mktemp(Path(name).stem[:2] + "-run")
            small = {**SMALL_NOTEBOOK_PARAMETERS[name], **parameters}
            done[key] = execute_notebook(NOTEBOOKS / name, folder, notebook_data, small)
        return done[key]

    return run
