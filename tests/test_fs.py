"""File-system safety: atomic writes, claims that die with their process, and the owner probe."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_cnn, write_finished_run, write_tiny_notebook

from workbench.core import fs


def test_atomic_path_BlockThatRaises_LeavesTheOldFileAndNoTemporary(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), fs.atomic_path(target) as temporary:
        assert temporary.suffix == ".keras" and temporary.parent == tmp_path
        temporary.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_write_atomically_ReplacesTheFileWhole(tmp_path):
    fs.write_atomically(tmp_path / "a.json", "x" * 10)
    fs.write_atomically(tmp_path / "a.json", b"short")
    assert (tmp_path / "a.json").read_bytes() == b"short" and len(list(tmp_path.iterdir())) == 1


def test_process_alive_DeadChild_IsGone_ThisProcessIsAlive():
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    assert not fs.process_alive(int(child.stdout))
    assert fs.process_alive(os.getpid())
    assert fs.owner_gone({"host": fs.owner()["host"], "pid": int(child.stdout)})
    assert not fs.owner_gone({"host": "another-machine", "pid": int(child.stdout)})  # can't tell: keep


def test_try_lock_HeldByAnotherProcess_IsRefused_UntilThatProcessIsKilled(tmp_path):
    lock = tmp_path / "locks" / "run.lock"
    holder = (
        "import sys, time\nfrom workbench.core import fs\n"
        f"with fs.try_lock({str(lock)!r}) as got:\n    print(got, flush=True)\n    time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "True"
    with fs.try_lock(lock) as got:
        assert got is False
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(0.1)
    with fs.try_lock(lock) as got:
        assert got is True


def test_written_files_AndFolders_TakeTheUsualMode_SoAClassCanShareThem(tmp_path):
    """mkstemp/mkdtemp make 0600/0700: the shared data folder of TEACHING.md was unreadable by students."""
    from workbench.data.phantom import ensure_phantoms

    old = os.umask(0o022)
    try:
        fs.write_atomically(tmp_path / "a.json", "{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        folder = ensure_phantoms(tmp_path, n_volumes=3, shape=(16, 16, 8))
        assert folder.stat().st_mode & 0o777 == 0o755
        assert all(path.stat().st_mode & 0o004 for path in folder.rglob("*")), "every file readable by others"
    finally:
        os.umask(old)


# --- claims: nothing the user made is replaced --------------------------------------------------


def test_claim_AFileTheUserMade_IsRefused_NamingItAndHowToAllow_AndNothingIsWritten(tmp_path):
    (tmp_path / "b.txt").write_text("the user's")
    refused = pytest.raises(FileExistsError, match=r"b\.txt exists and was not written by the workbench")
    with refused as caught, fs.claim(tmp_path, ["a.txt", "b.txt"]) as out:
        fs.write_atomically(out / "a.txt", "ours")
    assert "overwrite=True replaces it" in str(caught.value) and str(tmp_path / "b.txt") in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]  # checked first: a.txt not written


def test_claim_AFileTheWorkbenchWrote_IsReplaced_UntilTheUserChangesIt(tmp_path):
    for text in ("first", "second"):
        with fs.claim(tmp_path, ["a.txt"]) as out:
            fs.write_atomically(out / "a.txt", text)
    assert (tmp_path / "a.txt").read_text() == "second"
    (tmp_path / "a.txt").write_text("the user edited it")
    with pytest.raises(FileExistsError, match="or was changed since"):
        with fs.claim(tmp_path, ["a.txt"]):
            pass
    with fs.claim(tmp_path, ["a.txt"], overwrite=True, allow="--overwrite") as out:
        fs.write_atomically(out / "a.txt", "third")
    assert (tmp_path / "a.txt").read_text() == "third"


def test_claim_ABlockThatFailsHalfway_RecordsWhatItWrote(tmp_path):
    with pytest.raises(RuntimeError), fs.claim(tmp_path, ["a.txt", "b.txt"]) as out:
        fs.write_atomically(out / "a.txt", "ours")
        raise RuntimeError("the second write failed")
    with fs.claim(tmp_path, ["a.txt", "b.txt"]) as out:  # a re-run is not refused its own a.txt
        fs.write_atomically(out / "a.txt", "ours again")


def test_claim_CommandLineCaller_NamesItsFlag(tmp_path):
    (tmp_path / "a.txt").write_text("the user's")
    with pytest.raises(FileExistsError, match="; --overwrite replaces it"):
        fs.check_claim(tmp_path, ["a.txt"], allow="--overwrite")


# --- errors name the file ------------------------------------------------------------------------


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write into a full disk: no file named


@pytest.mark.parametrize(
    "write",
    [
        lambda path: fs.write_atomically(path, "x"),
        lambda path: fs.write_json(path, {"a": 1}),
    ],
    ids=["write_atomically", "write_json"],
)
def test_fs_writers_FullDisk_NameTheFile_AndLeaveNoTemporary(write, tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_bytes", _full_disk)
    with pytest.raises(OSError, match="No space left on device") as caught:
        write(tmp_path / "a.json")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "a.json")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_MissingFolder_NamesTheFile_NotItsTemporary(tmp_path):
    target = tmp_path / "no-such-folder" / "a.json"
    with pytest.raises(FileNotFoundError) as caught, fs.atomic_path(target):
        pass
    assert caught.value.filename == str(target)


# --- every writer whose destination the user chooses -----------------------------------------------


def _results(folder):
    from workbench.runs.store import write_results

    return write_results(folder, {"accuracy": 0.5}, pd.DataFrame({"layer": ["a"]}))


def _report(folder):
    from workbench.runs.report import write_report

    runs_dir = folder.parent / "runs"
    if not runs_dir.exists():
        write_finished_run(runs_dir, "a", {"epsilon": 1e-4}, {"accuracy": 0.8, "auc": 0.9})
    return write_report(runs_dir, folder)


def _save_keras(folder):
    from workbench.prune.export import save_keras

    return save_keras(tiny_cnn(), folder / "model.keras")


def _export_all(folder):
    from workbench.prune.export import export_all

    return export_all(tiny_cnn(), folder, "model", calibration=np.zeros((4, 24, 24, 1)))


def _course(folder):
    from workbench.course.grading import Course, start_course

    return start_course(Course(folder), "pruning_lesson")


def _prepared_notebook(folder):
    from workbench.runs.store import run_notebook

    notebook = write_tiny_notebook(folder.parent / "tiny.ipynb")
    return run_notebook(notebook, folder / "mine.ipynb", {"x": "2.5"}, prepare_only=True)


# (id, writer(folder), the file a user may already have there)
WRITERS = [
    ("write_results metrics", _results, "metrics.json"),
    ("write_results layers", _results, "layers.csv"),
    ("write_report", _report, "report.html"),
    ("save_keras", _save_keras, "model.keras"),
    ("export_all", _export_all, "model.int8.tflite"),
    ("start_course", _course, "nbgrader_config.py"),
    ("run_notebook", _prepared_notebook, "mine.ipynb"),
]


@pytest.mark.parametrize("write, name", [w[1:] for w in WRITERS], ids=[w[0] for w in WRITERS])
def test_writers_AFileTheUserMade_IsRefusedByName_AndNothingIsWritten(write, name, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / name).write_text("the user's own")
    with pytest.raises(FileExistsError) as caught:
        write(folder)
    assert str(folder / name) in str(caught.value) and "overwrite=True replaces it" in str(caught.value)
    assert [p.name for p in folder.iterdir()] == [name] and (folder / name).read_text() == "the user's own"


@pytest.mark.parametrize("write, name", [w[1:] for w in WRITERS], ids=[w[0] for w in WRITERS])
def test_writers_RunAgain_ReplaceWhatTheyWrote(write, name, tmp_path):
    if write is _export_all:
        pytest.skip("export_all's re-run is tested in test_export.py (two conversions are slow)")
    write(tmp_path / "out")
    (tmp_path / "out" / name).touch()  # not a change: its content is what the workbench wrote
    write(tmp_path / "out")  # not refused
    assert (tmp_path / "out" / name).is_file()


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# (id, writer(folder), the file it names when the disk is full)
FULL_DISK = [
    ("write_results", _results, "layers.csv"),
    ("write_report", _report, "summary.csv"),
    ("save_keras", _save_keras, "model.keras"),
    ("start_course", _course, "source/pruning_lesson/05_teaching_gradient_pruning.ipynb"),
    ("run_notebook", _prepared_notebook, "mine.ipynb"),
]


@pytest.mark.parametrize("write, name", [w[1:] for w in FULL_DISK], ids=[w[0] for w in FULL_DISK])
def test_writers_FullDisk_NameTheFile(write, name, tmp_path, monkeypatch):
    """A sweep into a full disk stopped with "[Errno 28] No space left on device", naming no file."""
    import papermill.iorw

    from workbench.model.compat import keras

    folder = tmp_path / "out"
    if write is _report:
        _report(tmp_path / "first")  # the runs folder, before the disk fills
    writes = ((Path, "write_bytes"), (keras.Model, "save"), (papermill.iorw.LocalHandler, "write"))
    for owner, method in writes:
        monkeypatch.setattr(owner, method, _no_space)
    with pytest.raises(OSError, match="No space left on device") as caught:
        write(folder)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(folder / name)
    assert not [p for p in folder.rglob("*") if p.name.startswith(".partial-")]
