"""Bad input to the public API: every case raises a clear error that names the argument.

Each row is (id, call, exception, pattern). Besides the message, the test checks where the error
was raised: inside the workbench, never deep inside NumPy, Keras or TensorFlow.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_head_model

from workbench.analysis.curves import Evaluator, evaluate_model, log_grid
from workbench.core.masks import check_masks, select
from workbench.core.metrics import Predictions, compare_to_dense, validated_metrics
from workbench.explore.session import Explorer
from workbench.model.builders import build_model, load_user_model
from workbench.model.heads import detect_head
from workbench.model.registry import get_kernels, prunable_layers
from workbench.model.train import Recipe, baseline
from workbench.prune.pruning import (
    PruneSpec,
    apply_masks,
    fine_tune,
    make_masks,
    masks_from_scores,
    polynomial_sparsity,
)
from workbench.prune.scores import Scorer

WORKBENCH = str(Path(__file__).resolve().parent.parent / "workbench")


@pytest.fixture(scope="module")
def model():
    return tiny_head_model(2, "softmax")


def _keep(model, **changes):
    keep = {name: np.ones(kernel.shape, bool) for name, kernel in get_kernels(model).items()}
    keep.update(changes)
    return {name: mask for name, mask in keep.items() if mask is not None}


def _images(data, scale=1.0, n=8):
    return data.val.images[:n] * scale


def _write(tmp_path, name, payload):
    (tmp_path / name).write_bytes(payload)
    return tmp_path / name


CASES = [
    # PruneSpec: validated once, on construction
    ("spec criterion", lambda m, d, t: PruneSpec(criterion="grad"), ValueError, "criterion must be one of"),
    ("spec criterion None", lambda m, d, t: PruneSpec(criterion=None), ValueError, "criterion"),
    ("spec criterion list", lambda m, d, t: PruneSpec(criterion=["snip"]), ValueError, "criterion"),
    ("spec granularity", lambda m, d, t: PruneSpec(granularity="filters"), ValueError, "granularity"),
    ("spec scope", lambda m, d, t: PruneSpec(scope="local"), ValueError, "scope must be one of"),
    ("spec epsilon < 0", lambda m, d, t: PruneSpec(epsilon=-1.0), ValueError, r"epsilon.*-1\.0"),
    ("spec epsilon nan", lambda m, d, t: PruneSpec(epsilon=float("nan")), ValueError, "epsilon"),
    ("spec epsilon inf", lambda m, d, t: PruneSpec(epsilon=float("inf")), ValueError, "epsilon"),
    ("spec epsilon str", lambda m, d, t: PruneSpec(epsilon="1e-3"), ValueError, "epsilon must be a number"),
    ("spec sparsity 1", lambda m, d, t: PruneSpec(sparsity=1.0), ValueError, r"sparsity.*\[0, 1\)"),
    ("spec sparsity < 0", lambda m, d, t: PruneSpec(sparsity=-0.1), ValueError, "sparsity"),
    ("spec sparsity nan", lambda m, d, t: PruneSpec(sparsity=float("nan")), ValueError, "sparsity"),
    ("spec both", lambda m, d, t: PruneSpec(epsilon=0.1, sparsity=0.5), ValueError, "at most one of epsilon"),
    ("spec normalize 'no'", lambda m, d, t: PruneSpec(normalize="no"), ValueError, "normalize must be True"),
    ("spec normalize 1", lambda m, d, t: PruneSpec(normalize=1), ValueError, "normalize"),
    ("spec min_keep < 0", lambda m, d, t: PruneSpec(min_keep=-1), ValueError, "min_keep"),
    ("spec min_keep float", lambda m, d, t: PruneSpec(min_keep=1.5), ValueError, "min_keep"),
    ("spec min_keep bool", lambda m, d, t: PruneSpec(min_keep=True), ValueError, "min_keep"),
    # masks: boolean, of the kernel's shape, for exactly the model's prunable layers
    (
        "mask of 0.5",
        lambda m, d, t: apply_masks(m, _keep(m, fc=np.full((648, 16), 0.5))),
        ValueError,
        "'fc' must be a boolean array",
    ),
    (
        "mask of NaN",
        lambda m, d, t: apply_masks(m, _keep(m, fc=np.full((648, 16), np.nan))),
        ValueError,
        "'fc' must be a boolean",
    ),
    (
        "mask of 0/1 ints",
        lambda m, d, t: apply_masks(m, _keep(m, fc=np.ones((648, 16), int))),
        ValueError,
        "'fc' must be a boolean",
    ),
    (
        "mask list",
        lambda m, d, t: apply_masks(m, _keep(m, fc=[[True]])),
        ValueError,
        "'fc' must be a boolean",
    ),
    (
        "mask unknown layer",
        lambda m, d, t: apply_masks(m, _keep(m, fc2=np.ones((3, 3), bool))),
        ValueError,
        r"unknown layers \['fc2'\]",
    ),
    (
        "mask missing layer",
        lambda m, d, t: apply_masks(m, _keep(m, fc=None)),
        ValueError,
        r"missing layers \['fc'\]",
    ),
    (
        "mask wrong shape",
        lambda m, d, t: apply_masks(m, _keep(m, fc=np.ones((16, 648), bool))),
        ValueError,
        "'fc' must have the kernel's shape",
    ),
    (
        "masks not a dict",
        lambda m, d, t: apply_masks(m, [np.ones(3, bool)]),
        ValueError,
        "masks must be a dict",
    ),
    (
        "check_masks scalar",
        lambda m, d, t: check_masks({"a": True}, {"a": (2,)}),
        ValueError,
        "'a' must be a boolean",
    ),
    # thresholds
    (
        "select both",
        lambda m, d, t: select({"a": np.ones(3)}, epsilon=0.1, sparsity=0.5),
        ValueError,
        "exactly one of epsilon",
    ),
    (
        "select min_keep str",
        lambda m, d, t: select({"a": np.ones(3)}, epsilon=0.1, min_keep="1"),
        ValueError,
        "min_keep",
    ),
    ("select NaN scores", lambda m, d, t: select({"a": np.array([np.nan])}, epsilon=0.1), ValueError, "NaN"),
    ("select no layers", lambda m, d, t: select({}, epsilon=0.1), ValueError, "scores must hold"),
    (
        "spec with no threshold",
        lambda m, d, t: masks_from_scores({"a": np.ones(3)}, PruneSpec(), prunable_layers(m)),
        ValueError,
        "epsilon= or sparsity=",
    ),
    (
        "ramp end before begin",
        lambda m, d, t: polynomial_sparsity(0, initial=0, final=0.5, begin_step=5, end_step=5),
        ValueError,
        "end_step",
    ),
    # Recipe
    (
        "recipe learning_rate inf",
        lambda m, d, t: Recipe(learning_rate=float("inf")),
        ValueError,
        "learning_rate",
    ),
    (
        "recipe learning_rate nan",
        lambda m, d, t: Recipe(learning_rate=float("nan")),
        ValueError,
        "learning_rate",
    ),
    ("recipe learning_rate < 0", lambda m, d, t: Recipe(learning_rate=-1e-3), ValueError, "learning_rate"),
    ("recipe learning_rate str", lambda m, d, t: Recipe(learning_rate="fast"), ValueError, "learning_rate"),
    ("recipe epochs 0", lambda m, d, t: Recipe(epochs=0), ValueError, "epochs"),
    ("recipe epochs float", lambda m, d, t: Recipe(epochs=3.0), ValueError, "epochs"),
    ("recipe batch_size str", lambda m, d, t: Recipe(batch_size="64"), ValueError, "batch_size"),
    ("recipe seed < 0", lambda m, d, t: Recipe(seed=-1), ValueError, "seed"),
    # Scorer: calibration data as the loaders give it
    (
        "scorer 0-255 images",
        lambda m, d, t: Scorer(m, _images(d, 255), d.val.labels[:8]),
        ValueError,
        r"images must be scaled to \[0, 1\]",
    ),
    (
        "scorer negative images",
        lambda m, d, t: Scorer(m, _images(d) - 0.5, d.val.labels[:8]),
        ValueError,
        r"\[0, 1\]",
    ),
    (
        "scorer NaN images",
        lambda m, d, t: Scorer(m, _images(d) * np.nan, d.val.labels[:8]),
        ValueError,
        "images must be finite",
    ),
    (
        "scorer wrong shape",
        lambda m, d, t: Scorer(m, _images(d)[..., 0], d.val.labels[:8]),
        ValueError,
        "shape",
    ),
    (
        "scorer no images",
        lambda m, d, t: Scorer(m, _images(d, n=0), d.val.labels[:0]),
        ValueError,
        "non-empty",
    ),
    (
        "scorer length mismatch",
        lambda m, d, t: Scorer(m, _images(d), d.val.labels[:5]),
        ValueError,
        "equal length",
    ),
    (
        "scorer label 2",
        lambda m, d, t: Scorer(m, _images(d), d.val.labels[:8] + 2),
        ValueError,
        r"labels must be in \[0, 2\)",
    ),
    ("scorer label -1", lambda m, d, t: Scorer(m, _images(d), d.val.labels[:8] - 1), ValueError, "labels"),
    (
        "scorer batch_size 0",
        lambda m, d, t: Scorer(m, _images(d), d.val.labels[:8], batch_size=0),
        ValueError,
        "batch_size",
    ),
    (
        "scorer head",
        lambda m, d, t: Scorer(m, _images(d), d.val.labels[:8], head="probs"),
        ValueError,
        "head must be",
    ),
    (
        "scorer criterion",
        lambda m, d, t: Scorer(m, _images(d), d.val.labels[:8]).scores("l1"),
        ValueError,
        "criterion",
    ),
    (
        "scorer granularity",
        lambda m, d, t: Scorer(m, _images(d), d.val.labels[:8]).scores("snip", "channel"),
        ValueError,
        "granularity",
    ),
    # heads and models
    (
        "head of one linear unit",
        lambda m, d, t: detect_head(tiny_head_model(1, None)),
        ValueError,
        "pass head=",
    ),
    ("head of relu", lambda m, d, t: detect_head(tiny_head_model(2, "relu")), ValueError, "pass head="),
    ("model name", lambda m, d, t: build_model("resnet", d), ValueError, "model must be one of"),
    (
        "model file missing",
        lambda m, d, t: load_user_model(t / "none.keras", d),
        FileNotFoundError,
        "none.keras",
    ),
    ("model file suffix", lambda m, d, t: load_user_model(_write(t, "m.h5", b"x"), d), ValueError, "m.h5"),
    (
        "model file broken",
        lambda m, d, t: load_user_model(_write(t, "m.keras", b"PK"), d),
        ValueError,
        r"m.keras: not a .keras file \(a .keras model is a zip archive\)",
    ),
    (
        "scorer label 0.5",
        lambda m, d, t: Scorer(m, _images(d), d.val.labels[:8] * 0.5),
        ValueError,
        r"must be class indices \(whole numbers >= 0\), got \[0.5\]",
    ),
    (
        "model of 3 classes on binary data",
        lambda m, d, t: load_user_model(_saved(t, tiny_head_model(3)), d),
        ValueError,
        "does not fit",
    ),
    (
        "multi-label model on binary data",
        lambda m, d, t: load_user_model(_saved(t, tiny_head_model(2, "sigmoid")), d),
        ValueError,
        "multilabel",
    ),
    # evaluation: splits whose images the model takes, labels its head fits, a class of it as positive
    (
        "evaluate_model images of another size",
        lambda m, d, t: evaluate_model(m, _cropped(d.val), _cropped(d.test)),
        ValueError,
        r"val images must have shape \(N, 24, 24, 1\)",
    ),
    (
        "Evaluator images of another size",
        lambda m, d, t: Evaluator(m, d.val, _cropped(d.test)),
        ValueError,
        "test images must have shape",
    ),
    (
        "evaluate_model positive 2",
        lambda m, d, t: evaluate_model(m, d.val, d.test, positive=2),
        ValueError,
        r"positive must be a class index in \[0, 2\), got 2",
    ),
    (  # checked when given, not when an interval is first drawn (a dense reference, say)
        "evaluate_model level 95",
        lambda m, d, t: evaluate_model(m, d.val, d.test, level=95),
        ValueError,
        r"level must be in \(0, 1\), got 95",
    ),
    ("Evaluator margin < 0", lambda m, d, t: Evaluator(m, d.val, d.test, margin=-0.02), ValueError, "margin"),
    (  # a margin of 1.5 called a model with AUC 0.32 against 0.71 "non-inferior"
        "Explorer margin 1.5",
        lambda m, d, t: Explorer(m, d, margin=1.5),
        ValueError,
        r"margin must be an AUC loss one accepts, in \[0, 1\), got 1.5",
    ),
    ("Explorer margin str", lambda m, d, t: Explorer(m, d, margin="0.02"), ValueError, "margin must be"),
    (
        "Explorer estimate_images 2.5",
        lambda m, d, t: Explorer(m, d, estimate_images=2.5),
        ValueError,
        "estimate_images must be a whole number of images >= 2, got 2.5",
    ),
    (
        "estimate size 0",
        lambda m, d, t: Explorer(m, d, calibration_size=16).estimate(PruneSpec(sparsity=0.5), size=0),
        ValueError,
        "size must be a whole number of images >= 2, got 0",
    ),
    ("log_grid points 1", lambda m, d, t: log_grid(1e-3, 1.0, points=1), ValueError, "points must be"),
    (
        "evaluate_model a Dataset and test",
        lambda m, d, t: evaluate_model(m, d, d.test),
        ValueError,
        r"test must not be given with a Dataset .* pass data.val, test",
    ),
    (
        "evaluate_model a Split without test",
        lambda m, d, t: evaluate_model(m, d.val),
        ValueError,
        "data must be a Dataset .*, or a validation Split with test=, not Split",
    ),
    (
        "evaluate_model val a tuple",
        lambda m, d, t: evaluate_model(m, (d.val.images, d.val.labels), d.test),
        ValueError,
        "val must be a Split",
    ),
    (
        "validated_metrics of logits",
        lambda m, d, t: validated_metrics(*_probs_and_labels(scale=5.0), *_probs_and_labels(scale=5.0)),
        ValueError,
        r"val probabilities must be finite and in \[0, 1\]",
    ),
    (
        "compare_to_dense labels 1..3",
        lambda m, d, t: compare_to_dense(*[Predictions(*_pairs(), *[np.array([1, 2, 3, 1])] * 2, "x")] * 2),
        ValueError,
        r"val labels must be class indices in \[0, 3\), got 1\.\.3",
    ),
    (
        "validated_metrics labels of another length",
        lambda m, d, t: validated_metrics(*_probs_and_labels(), _probs_and_labels()[0], np.array([0, 1])),
        ValueError,
        "test labels must be 4 class indices",
    ),
    (
        "evaluate_model model None",
        lambda m, d, t: evaluate_model(None, d.val, d.test),
        ValueError,
        "Keras model",
    ),
    (
        "Scorer a Split and labels",
        lambda m, d, t: Scorer(m, d.val, d.val.labels),
        ValueError,
        r"labels must not be given with a Split",
    ),
    (
        "Scorer images without labels",
        lambda m, d, t: Scorer(m, _images(d)),
        ValueError,
        r"images must be a Split \(e.g. data.val\), or an array with labels=, not ndarray",
    ),
    (
        "Scorer of a path",
        lambda m, d, t: Scorer("m.keras", _images(d), d.val.labels[:8]),
        ValueError,
        "Keras model",
    ),
    (
        "make_masks spec a dict",
        lambda m, d, t: make_masks(Scorer(m, _images(d), d.val.labels[:8]), {"sparsity": 0.5}),
        ValueError,
        "spec must be a PruneSpec",
    ),
    (
        "fine_tune data a path",
        lambda m, d, t: fine_tune(m, _keep(m), "data.npz"),
        ValueError,
        "dataset must be a Dataset",
    ),
    (
        "fine_tune a 3-class model on binary data",
        lambda m, d, t: _fine_tune_other_head(d),
        ValueError,
        r"fine_tune's model: a softmax head over 3 unit\(s\)",
    ),
    (
        "evaluate_model dense with 3 classes",
        lambda m, d, t: evaluate_model(m, d.val, d.test, dense=tiny_head_model(3, "softmax")),
        ValueError,
        r"dense model's val probabilities \(\d+, 3\) and the pruned model's \(\d+, 2\) must have the same",
    ),
    (
        "compare_to_dense 3 vs 2 columns",
        lambda m, d, t: compare_to_dense(
            Predictions(*_pairs(), *[np.array([0, 1, 0, 1])] * 2, "x"),
            Predictions(*_probs_and_labels()[:1] * 2, *[np.array([0, 1, 0, 1])] * 2, "x"),
        ),
        ValueError,
        "must have the same shape",
    ),
    (
        "train_user_model 'yes'",
        lambda m, d, t: baseline(d, "seed_cnn", train_user_model="yes"),
        ValueError,
        "train_user_model",
    ),
]


def _probs_and_labels(scale: float = 1.0):
    return np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]) * scale, np.array([0, 1, 0, 1])


def _fine_tune_other_head(data):
    other = tiny_head_model(3, "softmax")
    return fine_tune(other, _keep(other), data, progress=False)


def _pairs():
    probs = np.full((4, 3), 1 / 3)
    return probs, probs


def _cropped(split):
    from workbench.data.dataset import Split

    return Split(split.images[:, :20, :20], split.labels, split.sources)


def _saved(tmp_path, model):
    path = tmp_path / "user.keras"
    model.save(path)
    return path


@pytest.mark.parametrize(("case", "call", "error", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_RaisesAClearErrorNamingTheArgument(
    case, call, error, pattern, model, tiny_dataset, tmp_path
):
    with pytest.raises(error, match=pattern) as raised:
        call(model, tiny_dataset, tmp_path)
    raised_in = traceback.extract_tb(raised.value.__traceback__)[-1].filename
    assert raised_in.startswith(WORKBENCH), (
        f"{case}: raised from {raised_in}, not by the workbench's own check"
    )


def test_bad_input_table_CoversEveryCaseOnce():
    assert len({c[0] for c in CASES}) == len(CASES) >= 60
