"""The disk caches' one key recipe (``cache_key``: weights, data, settings, the kind's code version),
one file format per kind (``KINDS``), and one damaged-file rule: a cached file that is truncated, or
holds a value of the wrong type or out of range, is warned about by name and computed again, and the
value computed again is the one the first computation gave (#25 item 7)."""

from __future__ import annotations

import io
import json
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.analysis.sensitivity import Subject, sensitivity
from workbench.core import cache
from workbench.core.cache import cache_file, cache_key, check_fields, fingerprint, read_cached
from workbench.core.errors import WorkbenchError
from workbench.explore.session import Explorer
from workbench.prune.pruning import PruneSpec
from workbench.prune.scores import Scorer

SPEC = PruneSpec(criterion="magnitude", sparsity=0.5)


# --- damaging a file ---------------------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def set_json(key: str, value):
    def damage(path: Path) -> None:
        record = json.loads(path.read_text())
        path.write_text(json.dumps(record | {key: value}))  # json writes NaN as NaN: valid to json.loads

    return damage


def set_npz(key: str, value):
    def damage(path: Path) -> None:
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
        numeric = np.isscalar(value) and not isinstance(value, str)
        arrays[key] = np.full_like(arrays[key], value) if numeric else np.asarray(value)
        np.savez(path.with_suffix(""), **arrays)  # savez adds .npz back

    return damage


def set_point_json(key: str, value):
    """The scalar metrics of a cached point, kept as one JSON text inside its .npz."""

    def damage(path: Path) -> None:
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
        arrays["_json"] = np.array(json.dumps(json.loads(str(arrays["_json"])) | {key: value}))
        np.savez(path.with_suffix(""), **arrays)

    return damage


def set_csv(column: str, value):
    def damage(path: Path) -> None:
        table = pd.read_csv(path)
        table[column] = table[column].astype(object)
        table.loc[1, column] = value
        path.write_text(table.to_csv(index=False))

    return damage


def drop_last_rows(path: Path) -> None:
    """A curve cut short at a line boundary: still a valid CSV, two points fewer."""
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-2]))


# --- the one key recipe ------------------------------------------------------------------------

PARTS = dict(weights="w", data=np.zeros(4), settings=("snip", 24))


def test_cache_key_AnyPartOrTheKindsVersion_ChangesIt(monkeypatch):
    key = cache_key("curve", **PARTS)
    assert cache_key("curve", **PARTS) == key and len(key) == 24
    for name, other in [("weights", "w2"), ("data", np.ones(4)), ("settings", ("snip", 25))]:
        assert cache_key("curve", **PARTS | {name: other}) != key, name
    assert cache_key("point", **PARTS) != key  # another kind's value under the same parts
    monkeypatch.setitem(cache.KINDS, "curve", replace(cache.KINDS["curve"], version=99))
    assert cache_key("curve", **PARTS) != key


def test_cache_key_UnknownKind_IsRefusedNamingTheKinds():
    with pytest.raises(
        WorkbenchError, match=r"kind must be one of the disk caches \('gradients'.* got 'curves'"
    ):
        cache_key("curves", **PARTS)


def test_fingerprint_ArraysInsideTuplesAndDicts_HashEveryByte():
    """The repr of a large array elides its middle: a key of a tuple of arrays hashed the repr."""
    images = np.zeros((64, 64))
    changed = images.copy()
    changed[32, 32] = 1.0
    assert fingerprint((images, "x")) != fingerprint((changed, "x"))
    assert fingerprint({"a": images}) != fingerprint({"a": changed})
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint(("a", "b")) != fingerprint("a", "b") != fingerprint(("a",), ("b",))
    assert fingerprint(b"\x00" * 300) != fingerprint(b"\x00" * 299 + b"\x01")


def test_cache_file_IsNamedByKindAndKey_InTheKindsOneFormat():
    assert cache_file("c", "gradients", "k").name == "gradients-k.npz"
    assert cache_file("c", "baseline", "k", label="seed_cnn").name == "baseline-seed_cnn-k.keras"
    assert cache_file("c", "sensitivity", "k").name == "sensitivity-k"  # a folder of JSON cells
    assert {kind.suffix for kind in cache.KINDS.values()} <= {".npz", ".csv", ".keras", ""}


# --- the caches: compute once, find the file, reopen ------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One disk cache: ``compute(model, data, folder)`` gives its value (writing the file), ``glob``
    finds the file, ``same(a, b)`` compares two values; ``kind`` is its row of ``cache.KINDS``."""

    compute: object
    glob: str
    same: object
    kind: str


def _explorer(model, data, folder):
    return Explorer(model, data, calibration_size=32, grid_points=6, cache_dir=folder)


def _table(model, data, folder):
    options = dict(baseline=False, cache=folder, progress=False)
    return sensitivity(Subject.build(model, data), "taylor", "structured", (0.5,), **options)


def _same_metrics(a: dict, b: dict) -> bool:
    return a["auc"] == b["auc"] and np.array_equal(a["test_probs"], b["test_probs"])


KINDS = {
    "sensitivity cell": Kind(
        lambda m, d, f: _table(m, d, f).cells,
        "*/taylor--*.json",
        lambda a, b: a.equals(b),
        "sensitivity",
    ),
    "sensitivity dense.json": Kind(
        lambda m, d, f: _table(m, d, f).dense, "*/dense.json", dict.__eq__, "sensitivity"
    ),
    "dense pass": Kind(
        lambda m, d, f: _explorer(m, d, f).evaluator.dense_test,
        "dense-*.npz",
        np.array_equal,
        "dense",
    ),
    "point": Kind(
        lambda m, d, f: _explorer(m, d, f).point(SPEC).metrics, "point-*.npz", _same_metrics, "point"
    ),
    "curve": Kind(
        lambda m, d, f: _explorer(m, d, f).curve(SPEC),
        "curve-*.csv",
        lambda a, b: a.equals(b),
        "curve",
    ),
    "gradient statistics": Kind(
        lambda m, d, f: Scorer(m, d.val.images, d.val.labels, cache_dir=f).stats().abs_grad["fc"],
        "gradients-*.npz",
        np.array_equal,
        "gradients",
    ),
    "feature-map ranks": Kind(
        lambda m, d, f: Scorer(m, d.val.images, d.val.labels, cache_dir=f).ranks()["conv2"],
        "activations-*.npz",
        np.array_equal,
        "activations",
    ),
}

DAMAGES = [
    ("sensitivity cell", "truncated", truncate),
    ("sensitivity cell", "auc n/a", set_json("auc", "n/a")),
    ("sensitivity cell", "auc 1.7", set_json("auc", 1.7)),
    ("sensitivity cell", "auc NaN", set_json("auc", float("nan"))),
    ("sensitivity cell", "negative distortion", set_json("distortion", -1.0)),
    ("sensitivity cell", "another row's cell", set_json("row", "elsewhere")),
    ("sensitivity dense.json", "truncated", truncate),
    ("sensitivity dense.json", "auc n/a", set_json("auc", "n/a")),
    ("sensitivity dense.json", "high 1.7", set_json("high", 1.7)),
    ("dense pass", "truncated", truncate),
    ("dense pass", "probability 1.7", set_npz("test", 1.7)),
    ("dense pass", "probability NaN", set_npz("val", np.nan)),
    ("dense pass", "text seconds", set_npz("seconds", "n/a")),
    ("dense pass", "rows of other images", set_npz("test", np.full((3, 2), 0.5))),
    ("point", "truncated", truncate),
    ("point", "auc n/a", set_point_json("auc", "n/a")),
    ("point", "auc 1.7", set_point_json("auc", 1.7)),
    ("point", "auc NaN", set_point_json("auc", float("nan"))),
    ("point", "negative changed index", set_npz("changed", [-4])),
    ("curve", "truncated", truncate),
    ("curve", "two rows short", drop_last_rows),
    ("curve", "auc 1.7", set_csv("auc", 1.7)),
    ("curve", "auc as text", set_csv("auc", "high")),  # pandas reads "n/a" as NaN: undefined
    ("curve", "sparsity NaN", set_csv("sparsity", float("nan"))),
    ("curve", "negative count", set_csv("changed", -3)),
    ("gradient statistics", "truncated", truncate),
    ("gradient statistics", "NaN gradient", set_npz("abs_grad_0", np.nan)),
    ("gradient statistics", "negative gradient", set_npz("sq_grad_1", -1.0)),
    ("gradient statistics", "negative batches", set_npz("batches", -3)),
    ("feature-map ranks", "truncated", truncate),
    ("feature-map ranks", "negative rank", set_npz("ranks_1", -1.0)),
]


@pytest.mark.parametrize(
    ("kind", "damage"), [(k, d) for k, _, d in DAMAGES], ids=[f"{k}: {n}" for k, n, _ in DAMAGES]
)
def test_damaged_cache_file_IsWarnedAboutByName_AndComputedAgain(kind, damage, trained_tiny, tmp_path):
    model, data = trained_tiny
    case = KINDS[kind]
    first = case.compute(model, data, tmp_path)
    path = sorted(tmp_path.glob(case.glob))[0]  # a sensitivity table has a cell per row
    damage(path)
    with pytest.warns(UserWarning, match=re.escape(path.name)):
        again = case.compute(model, data, tmp_path)
    assert case.same(first, again), "the value computed again is the first computation's"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        case.compute(model, data, tmp_path)  # the file written again is trusted, without a word


@pytest.mark.parametrize("name", [name for name in KINDS if name != "sensitivity dense.json"])
def test_cache_KindsVersionBumped_ComputesAgain_UnderItsKindsName(name, trained_tiny, tmp_path, monkeypatch):
    """A code change to what a kind holds (its version in cache.KINDS) leaves older files unread."""
    model, data = trained_tiny
    case = KINDS[name]
    case.compute(model, data, tmp_path)
    before = set(tmp_path.glob(case.glob))
    monkeypatch.setitem(cache.KINDS, case.kind, replace(cache.KINDS[case.kind], version=99))
    case.compute(model, data, tmp_path)
    assert len(set(tmp_path.glob(case.glob)) - before) == len(before), "each file computed again"
    for path in tmp_path.iterdir():  # every file or folder a cache writes: <kind>-<key><suffix>
        kind, _, rest = path.name.partition("-")
        assert kind in cache.KINDS, path.name
        assert re.fullmatch(rf"[0-9a-f]{{24}}{re.escape(cache.KINDS[kind].suffix)}", rest), path.name


def test_point_cache_OtherCalibrationImages_ComputesThePointAgain(trained_tiny, tmp_path):
    """Masks follow the calibration images (gradient criteria score on them): a point computed on
    32 of them is not another calibration's point (the key held the seed, not the images)."""
    model, data = trained_tiny
    spec = PruneSpec(criterion="snip", sparsity=0.5)
    Explorer(model, data, calibration_size=32, grid_points=6, cache_dir=tmp_path).point(spec)
    other = Explorer(model, data, calibration_size=48, grid_points=6, cache_dir=tmp_path)
    assert other.known_point(spec) is None
    assert Explorer(model, data, calibration_size=32, grid_points=6, cache_dir=tmp_path).known_point(spec)


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"auc": true}', "auc must be a number, got True"),
        ('{"auc": Infinity}', r"auc must be a finite number in \[0, 1\], got inf"),
        ("{}", "auc is missing"),
    ],
)
def test_read_cached_ValueOfTheWrongKind_SaysWhatIsWrong_AndReturnsNone(text, fault, tmp_path):
    path = tmp_path / "cell.json"
    path.write_text(text)
    with pytest.warns(UserWarning, match=f"damaged cell {re.escape(str(path))} .*{fault}"):
        value = read_cached(
            path, lambda p: json.loads(p.read_text()), lambda v: check_fields(v, {"auc": (0, 1)}), "cell"
        )
    assert value is None
    assert read_cached(tmp_path / "absent.json", json.loads) is None  # not there yet: no warning


def test_point_cache_HoldsNoPickle(trained_tiny, tmp_path):
    """A pickle read from disk runs whatever code it holds; a point is .npz of arrays and JSON text."""
    _explorer(*trained_tiny, tmp_path).point(SPEC)
    (path,) = tmp_path.glob("point-*")
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as saved:
        assert "_json" in saved.files and "test_probs" in saved.files


# --- a shared, read-only data folder -------------------------------------------------------------


def test_read_cached_PathInTheUserFolder_ReadsTheSharedDataFolderFirst(data_and_user_folders):
    shared, user = data_and_user_folders
    (shared / "cache").mkdir()
    (shared / "cache" / "cell.json").write_text('{"auc": 0.9}')
    (user / "cache").mkdir(parents=True)
    (user / "cache" / "cell.json").write_text('{"auc": 0.1}')
    value = read_cached(user / "cache" / "cell.json", lambda p: json.loads(p.read_text()))
    assert value == {"auc": 0.9}  # the teacher's prepared file, though writes go to the user's folder


def test_read_cached_NothingShared_ReadsTheUserFolder(data_and_user_folders):
    _, user = data_and_user_folders
    (user / "cache").mkdir(parents=True)
    (user / "cache" / "cell.json").write_text('{"auc": 0.1}')
    assert read_cached(user / "cache" / "cell.json", lambda p: json.loads(p.read_text())) == {"auc": 0.1}
