"""File-system safety: atomic writes, claims that die with their process, and the owner probe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from workbench import fs


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
        "import sys, time\nfrom workbench import fs\n"
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
    from workbench.phantom import ensure_phantoms

    old = os.umask(0o022)
    try:
        fs.write_atomically(tmp_path / "a.json", "{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        folder = ensure_phantoms(tmp_path, n_volumes=3, shape=(16, 16, 8))
        assert folder.stat().st_mode & 0o777 == 0o755
        assert all(path.stat().st_mode & 0o004 for path in folder.rglob("*")), "every file readable by others"
    finally:
        os.umask(old)
