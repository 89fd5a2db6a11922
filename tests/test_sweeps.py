"""Notebook sweeps: the run store, resume, failure isolation, SIGKILL, parallel and Dask execution."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from conftest import write_tiny_notebook

from workbench.__main__ import main, one_line
from workbench.core.stats import METRICS_VERSION
from workbench.runs import store as run_store
from workbench.runs.report import summarize, write_report
from workbench.runs.store import (
    declared_results,
    describe_error,
    expand_grid,
    load,
    read_grid_file,
    run_id,
    sweep,
)


@pytest.fixture
def notebook(tmp_path):
    return write_tiny_notebook(tmp_path / "tiny.ipynb")


def _cli(notebook, runs_dir, *arguments: str) -> list[str]:
    """Arguments of ``python -m workbench sweep`` for ``notebook`` into ``runs_dir``."""
    return ["sweep", str(notebook), *arguments, "--runs", str(runs_dir)]


def _complete_runs(runs_dir):
    return sorted(p.name for p in runs_dir.iterdir() if (p / "run.json").is_file())


def _stamps(runs_dir):
    """Each complete run's run.json modification time: changes if a run is rewritten."""
    return {name: (runs_dir / name / "run.json").stat().st_mtime_ns for name in _complete_runs(runs_dir)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sweep store that the tests reading a finished sweep share: x x mode x seeds {0, 2}, eight
    runs by two workers, each sleeping 1.5 s so that the workers' runs overlap."""
    folder = tmp_path_factory.mktemp("store")
    notebook = write_tiny_notebook(folder / "tiny.ipynb")
    runs = expand_grid(notebook, {"x": ["1", "2"], "mode": ["a", "b"], "sleep": [1.5]}, seeds=[0, 2])
    outcomes = sweep(notebook, runs, folder / "runs", workers=2, progress=False)
    return SimpleNamespace(notebook=notebook, runs=runs, outcomes=outcomes, folder=folder / "runs")


def test_sweep_RunsEveryCombination_AndStoresParamsMetricsLayersAndNotebook(store):
    notebook, runs = store.notebook, store.runs
    assert len(runs) == 8 and runs[0] == {"x": 1.0, "mode": "a", "sleep": 1.5, "seed": 0}
    assert [o.status for o in store.outcomes] == ["ok"] * 8
    folder = store.folder / run_id(notebook.resolve(), runs[0])
    assert json.loads((folder / "params.json").read_text()) == runs[0]
    assert json.loads((folder / "metrics.json").read_text())["accuracy"] == pytest.approx(0.6)
    assert (folder / "notebook.ipynb").is_file()
    frame = load(store.folder)
    assert len(frame) == 8 and set(frame["status"]) == {"ok"}
    assert {"x", "mode", "seed", "metrics.accuracy"} <= set(frame.columns)


def test_sweep_AgainSkipsCompletedRuns_WithoutTouchingThem(store):
    stamps = _stamps(store.folder)
    again = sweep(store.notebook, store.runs, store.folder, progress=False)
    assert [o.status for o in again] == ["skipped"] * 8
    assert len(stamps) == 8 and _stamps(store.folder) == stamps


def test_failing_run_IsRecordedWithItsCell_OthersContinue_AndCliExitsNonZero(notebook, tmp_path, capsys):
    code = main(_cli(notebook, str(tmp_path / "runs"), "-p", "x", "1", "-p", "fail", "false", "true"))
    assert code == 1
    printed = capsys.readouterr().out
    assert "1 ran" in printed and "1 failed" in printed and "asked to fail" in printed
    frame = load(tmp_path / "runs")
    failed = frame[frame["status"] == "failed"]
    assert len(failed) == 1 and len(frame[frame["status"] == "ok"]) == 1
    # cell 2 of the executed notebook: papermill inserts its injected-parameters cell after the parameters
    assert failed["error"].str.contains(r"RuntimeError: asked to fail at x=.* \(cell 2\)").all()
    info = json.loads((tmp_path / "runs" / failed["run_id"].iloc[0] / "run.json").read_text())
    assert info["error"]["cell_index"] == 2 and "raise RuntimeError" in info["error"]["cell_source"]
    assert info["metrics_version"] == METRICS_VERSION and set(frame["metrics_version"]) == {METRICS_VERSION}

    # the same sweep again: the failed run is retried (replaced, not duplicated), the completed one is not
    stamps = _stamps(tmp_path / "runs")
    grid = expand_grid(notebook, {"x": [1.0], "fail": [False, True]})
    rerun = sweep(notebook, grid, tmp_path / "runs", progress=False)
    assert [o.status for o in rerun] == ["skipped", "failed"]
    after = _stamps(tmp_path / "runs")
    assert after.keys() == stamps.keys()
    assert [after[name] == stamps[name] for name in failed["run_id"]] == [False]
    (completed,) = frame[frame["status"] == "ok"]["run_id"]
    assert after[completed] == stamps[completed]


def test_sweep_KilledWithSigkill_LosesNoCompletedRun_AndResumes(notebook, tmp_path):
    runs_dir = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "workbench",
        "sweep",
        str(notebook),
        "-p",
        "x",
        "1",
        "2",
        "3",
        "4",
        "-p",
        "sleep",
        "1.5",
        "--runs",
        str(runs_dir),
    ]
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(_complete_runs(runs_dir) if runs_dir.exists() else []) < 1:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the sweep and the kernel it is driving
    process.wait()
    survivors = _complete_runs(runs_dir)
    assert 1 <= len(survivors) < 4
    assert all(json.loads((runs_dir / name / "run.json").read_text())["status"] == "ok" for name in survivors)
    assert all((runs_dir / name / "metrics.json").is_file() for name in survivors)
    assert set(load(runs_dir)["run_id"]) == set(survivors)  # partial folders never count
    code = main(_cli(notebook, runs_dir, "-p", "x", "1", "2", "3", "4", "-p", "sleep", "1.5"))
    assert code == 0
    assert len(_complete_runs(runs_dir)) == 4
    assert not [p for p in runs_dir.iterdir() if p.name.startswith(".partial-")]


def test_sweep_WithWorkers_Sigterm_EndsItsWorkersToo_AndSaysHowToResume(notebook, tmp_path):
    """SIGTERM to a --workers 2 sweep left its pool's workers running the queued notebooks."""
    runs_dir = tmp_path / "runs"
    values = ["1", "2", "3", "4", "5", "6", "7", "8"]
    command = [sys.executable, "-m", "workbench", *_cli(notebook, runs_dir, "-p", "x", *values)]
    command += ["-p", "sleep", "1.5", "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(_complete_runs(runs_dir) if runs_dir.exists() else []) < 2:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "the same command resumes the rest" in err
    assert "Traceback" not in err
    done = len(_complete_runs(runs_dir))
    time.sleep(6)  # a worker left behind would finish more runs meanwhile
    assert len(_complete_runs(runs_dir)) == done < len(values)


def test_cli_sweep_WithWorkers_EndsWithoutATraceback(notebook, tmp_path):
    """The pool's workers inherited the CLI's SIGTERM handler: ending them printed a traceback."""
    command = [sys.executable, "-m", "workbench", *_cli(notebook, tmp_path / "runs", "-p", "x", "1", "2")]
    done = subprocess.run([*command, "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "2 ran" in done.stdout
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr


def test_cli_sweep_KernelsOwnLog_DoesNotReachTheTerminal(tmp_path):
    """jupyter_client interrupts a kernel as it shuts it down; one caught in a handler logged "ERROR |
    KeyboardInterrupt caught in kernel" into the output of a sweep that went well (CI, once in many)."""
    notebook = write_tiny_notebook(tmp_path / "tiny.ipynb")
    content = nbformat.read(notebook, as_version=4)
    content.cells.insert(
        1,
        nbformat.v4.new_code_cell(
            "from ipykernel.kernelapp import IPKernelApp\n"
            "IPKernelApp.instance().log.error('a line of the kernel log')\n"
            "from tornado.log import gen_log\n"  # where zmq logs a socket a SIGTERM closed under it
            "gen_log.error('a line of the event loop log')"
        ),
    )
    nbformat.write(content, notebook)
    command = [sys.executable, "-m", "workbench", *_cli(notebook, tmp_path / "runs", "-p", "x", "1")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "1 ran" in done.stdout
    assert "a line of the kernel log" not in done.stderr + done.stdout
    assert "a line of the event loop log" not in done.stderr + done.stdout


def test_sweep_AfterTheNotebooksCodeChanged_RefusesToMixOldRunsWithNew_AndTouchesNone(notebook, tmp_path):
    """An edited notebook swept into the same store: its old runs were skipped as complete and
    reported as the new notebook's results."""
    runs_dir = tmp_path / "runs"
    assert main(_cli(notebook, runs_dir, "-p", "x", "1")) == 0
    before = _stamps(runs_dir)
    content = nbformat.read(notebook, as_version=4)
    content.cells.append(nbformat.v4.new_markdown_cell("A note: text cells do not change results."))
    nbformat.write(content, notebook)
    assert main(_cli(notebook, runs_dir, "-p", "x", "1")) == 0  # text only: still the same code
    content.cells[2].source = content.cells[2].source.replace("0.5 + x / 10", "0.4 + x / 10")
    nbformat.write(content, notebook)
    with pytest.raises(ValueError, match=r"holds 1 run\(s\) of tiny made by another version.*new --runs"):
        sweep(notebook, expand_grid(notebook, {"x": ["3"]}), runs_dir, progress=False)
    assert _stamps(runs_dir) == before
    assert main(_cli(notebook, tmp_path / "new", "-p", "x", "1")) == 0


def test_grid_values_AreCheckedLikeCommandLineOnes_AndResultsDirIsNotSwept(notebook, tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("parameters:\n  x: [true]\n")
    assert main(_cli(notebook, tmp_path / "runs", "--grid", str(grid))) == 2
    assert "parameter 'x': expected float, got True" in capsys.readouterr().err
    grid.write_text("parameters:\n  seed: [2.5]\n")
    assert main(_cli(notebook, tmp_path / "runs", "--grid", str(grid))) == 2
    assert "parameter 'seed': expected int, got 2.5" in capsys.readouterr().err
    assert main(_cli(notebook, tmp_path / "runs", "-p", "results_dir", "/tmp/x")) == 2
    assert "'results_dir' is set by the sweep" in capsys.readouterr().err
    assert len(expand_grid(notebook, {"x": ["1", "1.0", 2]})) == 2  # a value given twice runs once


def _overlapping(frame) -> bool:
    spans = sorted(zip(frame["metrics.started"], frame["metrics.ended"], strict=True))
    return any(later_start < end for (_, end), (later_start, _) in zip(spans, spans[1:], strict=False))


def test_workers_RunNotebooksAtOnce(store):
    assert _overlapping(load(store.folder))


def test_dask_SubmitsRunsToALocalCluster(notebook, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        runs = expand_grid(notebook, {"x": [1.0, 2.0, 3.0], "sleep": [1.0]})
        code = main(
            _cli(
                notebook,
                str(tmp_path / "runs"),
                "-p",
                "x",
                "1",
                "2",
                "3",
                "-p",
                "sleep",
                "1",
                "--dask",
                cluster.scheduler_address,
            )
        )
    assert code == 0
    frame = load(tmp_path / "runs")
    assert len(frame) == len(runs) and set(frame["status"]) == {"ok"}
    assert _overlapping(frame)


def test_bad_input_FailsBeforeAnyRunStarts(notebook, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    assert main(_cli(notebook, runs_dir, "-p", "epsilon", "1")) == 2
    assert "parameters ['epsilon'] are not declared by tiny.ipynb" in capsys.readouterr().err
    assert main(_cli(str(tmp_path / "nope.ipynb"), runs_dir, "-p", "x", "1")) == 2
    assert "notebook not found" in capsys.readouterr().err
    (tmp_path / "empty.ipynb").write_text("")
    assert main(_cli(str(tmp_path / "empty.ipynb"), runs_dir, "-p", "x", "1")) == 2
    assert f"{tmp_path / 'empty.ipynb'}: not a readable notebook" in capsys.readouterr().err
    grid = tmp_path / "grid.yaml"
    grid.write_text("parameters: [x, 1]\n")
    assert main(_cli(notebook, runs_dir, "--grid", str(grid))) == 2
    assert "expected a mapping" in capsys.readouterr().err
    grid.write_text("parameters: {x: [1, 2}\n")
    assert main(_cli(notebook, runs_dir, "--grid", str(grid))) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(_cli(notebook, runs_dir, "-p", "fail", "maybe")) == 2
    assert "expected true/false" in capsys.readouterr().err
    assert not runs_dir.exists()


def test_grid_file_GivesParametersAndSeeds(notebook, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("parameters:\n  x: [1, 2]\n  mode: b\nseeds: [0, 1, 2]\n")
    values, seeds = read_grid_file(grid)
    assert values == {"x": [1, 2], "mode": ["b"]} and seeds == [0, 1, 2]
    assert len(expand_grid(notebook, values, seeds)) == 6


def test_report_GivesMeanAndStdOverSeeds_AndWritesPngAndHtml(store, tmp_path):
    summary = summarize(load(store.folder))
    row = summary[(summary["x"] == 1.0) & (summary["mode"] == "a")].iloc[0]
    assert row["accuracy mean"] == pytest.approx(0.61) and row["accuracy std"] == pytest.approx(
        0.01414, abs=1e-4
    )
    assert row["accuracy count"] == 2
    page = write_report(store.folder, x="x", group="mode").page
    assert (page.parent / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "0.610 ± 0.014" in page.read_text()
    assert (page.parent / "summary.csv").is_file()
    with pytest.raises(
        ValueError, match=r"group must be one of the swept parameters \['mode', 'sleep', 'x'\]"
    ):
        write_report(store.folder, tmp_path / "other", x="x", group="seed")
    assert not (tmp_path / "other").exists(), "nothing written before the error"


# --- the run store under stress: relative paths, missing results, concurrent sweeps, user folders -----

PROJECT = Path(__file__).resolve().parent.parent


def _without_results_cell(path):
    """The tiny notebook, minus the cell that writes its results."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells = notebook.cells[:-1]
    nbformat.write(notebook, path)
    return path


def _declaring(path, results):
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["workbench"] = {"results": results}
    nbformat.write(notebook, path)
    return path


def _with_tally(path):
    """The tiny notebook plus a ``tally`` parameter: each execution appends its x to that file."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[0].source += '\ntally: str = ""        # a file each execution appends its x to'
    notebook.cells.insert(
        -1, nbformat.v4.new_code_cell("with open(tally, 'a') as f:\n    f.write(f'{x}\\n')")
    )
    nbformat.write(notebook, path)
    return path


def _python(*arguments, cwd, **env):
    """Run ``python -m workbench ...`` in a subprocess, as a user would from ``cwd``."""
    environment = {**os.environ, "PYTHONPATH": str(PROJECT), **env}
    return subprocess.run(
        [sys.executable, "-m", "workbench", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_readme_sweep_FromProjectRootWithRelativeRunsFolder_GivesAReport(tmp_path, notebook_data):
    (tmp_path / "notebooks").mkdir()
    shutil.copy(PROJECT / "notebooks" / "01_explore_threshold.ipynb", tmp_path / "notebooks")
    data = {"WORKBENCH_DATA": str(notebook_data)}  # the notebook tests' phantom and cached baseline
    tiny = ["-p", "epochs", "1", "-p", "grid_points", "4", "-p", "calibration_size", "32"]
    readme = ["sweep", "notebooks/01_explore_threshold.ipynb", "-p", "epsilon", "1e-4", "--seeds", "0"]
    swept = _python(*readme, *tiny, cwd=tmp_path, **data)
    assert swept.returncode == 0, swept.stderr[-2000:]
    assert "1 ran" in swept.stdout
    (run,) = _complete_runs(tmp_path / "runs")
    metrics = json.loads((tmp_path / "runs" / run / "metrics.json").read_text())
    assert metrics["epsilon"] == pytest.approx(1e-4)
    assert not (tmp_path / "notebooks" / "runs").exists()  # where the relative results_dir used to land
    report = _python("report", cwd=tmp_path, **data)
    assert report.returncode == 0, report.stderr
    assert "report written to runs/report/report.html" in report.stdout
    assert (tmp_path / "runs" / "report" / "summary.csv").is_file()


def test_run_ThatWritesNoResults_IsAFailureNamingTheMissingFile(notebook, tmp_path):
    _without_results_cell(notebook)
    (outcome,) = sweep(notebook, expand_grid(notebook, {"x": [1.0]}), tmp_path / "runs", progress=False)
    assert outcome.status == "failed"
    assert "MissingResults" in describe_error(outcome.error) and "metrics.json" in describe_error(
        outcome.error
    )
    assert load(tmp_path / "runs")["status"].tolist() == ["failed"]
    again = sweep(notebook, expand_grid(notebook, {"x": [1.0]}), tmp_path / "runs", progress=False)
    assert [o.status for o in again] == ["failed"]  # retried, never taken for complete


def test_run_MissingADeclaredResult_FailsWithThatName(notebook, tmp_path):
    _declaring(notebook, ["metrics.json", "layers.csv"])
    assert declared_results(notebook) == ("metrics.json", "layers.csv")
    (outcome,) = sweep(notebook, expand_grid(notebook, {"x": [1.0]}), tmp_path / "runs", progress=False)
    assert outcome.status == "failed" and "layers.csv" in outcome.error["evalue"]
    assert "metrics.json" not in outcome.error["evalue"]


def test_declared_results_NotAListOfFileNames_IsRefused(notebook):
    _declaring(notebook, ["../escape.json"])
    with pytest.raises(ValueError, match="workbench.results must be a non-empty list of file names"):
        declared_results(notebook)


def test_two_concurrent_sweeps_RunEachCombinationOnce(notebook, tmp_path):
    _with_tally(notebook)
    tally = tmp_path / "tally.txt"
    grid = ["-p", "x", "1", "2", "3", "4", "-p", "sleep", "1", "-p", "tally", str(tally)]
    command = [sys.executable, "-m", "workbench", *_cli(notebook, tmp_path / "runs", *grid)]
    environment = {**os.environ, "PYTHONPATH": str(PROJECT)}
    sweeps = [subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    printed = [s.communicate(timeout=300)[0] for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0]
    assert sorted(tally.read_text().split()) == ["1.0", "2.0", "3.0", "4.0"]  # each executed once
    assert len(_complete_runs(tmp_path / "runs")) == 4
    ran = [int(text.split("done: ")[1].split(" ran")[0]) for text in printed]
    assert sum(ran) == 4, printed


def test_duplicate_FinishingAfterACompletedRun_IsDiscarded(notebook, tmp_path):
    runs_dir = (tmp_path / "runs").resolve()
    (first,) = sweep(notebook, expand_grid(notebook, {"x": [1.0]}), runs_dir, progress=False)
    stamps = _stamps(runs_dir)
    duplicate = runs_dir / ".partial-duplicate"
    duplicate.mkdir()
    (duplicate / "run.json").write_text('{"status": "ok"}')
    assert run_store._publish(duplicate, runs_dir / first.run_id, "ok") == "skipped"
    assert _stamps(runs_dir) == stamps and not duplicate.exists()


def test_sweep_CleansOnlyItsOwnPartialsOfDeadProcesses(notebook, tmp_path):
    runs_dir = tmp_path / "runs"
    users = runs_dir / ".partial-foo"
    users.mkdir(parents=True)
    (users / "notes.txt").write_text("mine")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(finished.stdout)
    for name, pid in (("dead", dead_pid), ("alive", os.getpid())):
        folder = runs_dir / f".partial-tiny-{name}-{pid}-x"
        folder.mkdir()
        owner = {"host": socket.gethostname(), "pid": pid, "run_id": f"tiny-{name}"}
        (folder / ".owner.json").write_text(json.dumps(owner))
    sweep(notebook, expand_grid(notebook, {"x": [1.0]}), runs_dir, progress=False)
    assert (users / "notes.txt").read_text() == "mine"
    assert not (runs_dir / f".partial-tiny-dead-{dead_pid}-x").exists()
    assert (runs_dir / f".partial-tiny-alive-{os.getpid()}-x").exists()


def test_sweep_NeverTouchesAFolderInTheWayOfARun(notebook, tmp_path):
    runs_dir = tmp_path / "runs"
    params = expand_grid(notebook, {"x": [1.0]})
    users = runs_dir / run_id(notebook.resolve(), params[0])
    users.mkdir(parents=True)
    (users / "notes.txt").write_text("mine")
    (outcome,) = sweep(notebook, params, runs_dir, progress=False)
    assert (
        outcome.status == "failed" and f"{users.resolve()} exists and is not a run" in outcome.error["evalue"]
    )
    assert [p.name for p in users.iterdir()] == ["notes.txt"]


# --- CLI errors: one line naming the path and the cause, exit code 2, traceback only with -v ------


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A read-only folder; as root (who may write anyway) creating anything inside it is refused."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_mkdir, real_open = os.mkdir, os.open

        def refuse(path):
            if str(path).startswith(str(folder) + os.sep):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: refuse(path) or real_mkdir(path, *a, **k))
        monkeypatch.setattr(os, "open", lambda path, *a, **k: refuse(path) or real_open(path, *a, **k))
    yield folder
    folder.chmod(0o755)


def test_cli_ReadOnlyRunsFolder_OneLineWithThePath_Exit2(notebook, read_only, capsys):
    assert main(_cli(notebook, read_only, "-p", "x", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(read_only) in err
    assert "Permission denied" in err and "Traceback" not in err
    assert main(["-v", *_cli(notebook, read_only, "-p", "x", "1")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_cli_UserFolderNamedPhantom_OneLineWithThePath_Exit2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    (tmp_path / "phantom").mkdir()
    (tmp_path / "phantom" / "my_scan.nii.gz").write_bytes(b"the user's")
    assert main(["prepare"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(tmp_path / "phantom") in err
    assert "Traceback" not in err
    assert (tmp_path / "phantom" / "my_scan.nii.gz").read_bytes() == b"the user's"


def test_one_line_UnexpectedError_IsNamedAndPointsToVerbose():
    assert (
        one_line(RuntimeError("boom\nsecond line"))
        == "RuntimeError: boom second line (run with -v for the traceback)"
    )
    assert one_line(PermissionError(13, "Permission denied", "/x/runs")) == "/x/runs: Permission denied"


def test_execute_KernelThatDiesWhileStarting_IsStartedAgain_ButANotebookErrorIsNot(tmp_path, monkeypatch):
    import papermill

    from workbench.runs import store as runs

    calls = []

    def flaky(notebook, output, **kwargs):
        calls.append(output)
        if len(calls) == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")

    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    monkeypatch.setattr(runs.time, "sleep", lambda seconds: None)
    assert runs._execute("nb.ipynb", {}, tmp_path, "python3") == {}
    assert len(calls) == 2

    def broken(notebook, output, **kwargs):
        calls.append(output)
        raise RuntimeError("something else")

    calls.clear()
    monkeypatch.setattr(papermill, "execute_notebook", broken)
    assert runs._execute("nb.ipynb", {}, tmp_path, "python3")["evalue"] == "something else"
    assert len(calls) == 1


def test_sweep_FullDisk_NamesTheFile_AndRemovesItsPartialFolder(notebook, tmp_path, monkeypatch, capsys):
    """It stopped with "error: [Errno 28] No space left on device", and the partial folder stayed."""
    runs_dir = tmp_path / "runs"
    real_write = Path.write_bytes

    def executed(notebook, params, partial, kernel_name):  # the notebook ran; no kernel needed here
        (partial / "metrics.json").write_text("{}")
        return {}

    def fills_the_disk(path, payload):
        if "run.json" in path.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(path, payload)

    monkeypatch.setattr(run_store, "_execute", executed)
    monkeypatch.setattr(Path, "write_bytes", fills_the_disk)
    assert main(_cli(notebook, runs_dir, "-p", "x", "1")) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err.startswith(f"error: {runs_dir.resolve()}/.partial-tiny-")
    assert "/run.json: No space left on device (run tiny-" in err and "its partial folder was removed" in err
    assert [p.name for p in runs_dir.iterdir()] == [".locks"]


def test_sweep_KernelSpecLeftByAnEarlierProcessWithThisPid_IsRewritten(monkeypatch, tmp_path):
    """Process ids come back: a fresh-clone CI run's sweep kernel started the deleted .venv of an earlier
    clone, whose process had had the same id (FileNotFoundError: '/tmp/ci1/.venv/bin/python')."""
    monkeypatch.setattr(run_store.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setenv("JUPYTER_PATH", "")
    spec = tmp_path / f"workbench-kernels-{os.getpid()}" / "kernels" / "python3" / "kernel.json"
    spec.parent.mkdir(parents=True)
    stale = ["/gone/.venv/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.write_text(json.dumps({"argv": stale, "display_name": "workbench", "language": "python"}))
    run_store._use_this_environments_kernel()
    assert json.loads(spec.read_text())["argv"][0] == sys.executable
    assert os.environ["JUPYTER_PATH"].split(os.pathsep)[0] == str(spec.parents[2])
