"""Notebook sweeps: the run store, resume, failure isolation, SIGKILL, parallel and Dask execution."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import write_tiny_notebook

from workbench.__main__ import main
from workbench.report import summarize, write_report
from workbench.runs import expand_grid, load, read_grid_file, run_id, sweep


@pytest.fixture
def notebook(tmp_path):
    return write_tiny_notebook(tmp_path / "tiny.ipynb")


def _cli(notebook, runs_dir, *arguments: str) -> list[str]:
    """Arguments of ``python -m workbench sweep`` for ``notebook`` into ``runs_dir``."""
    return ["sweep", str(notebook), *arguments, "--runs", str(runs_dir)]


def _complete_runs(runs_dir):
    return sorted(p.name for p in runs_dir.iterdir() if (p / "run.json").is_file())


def test_sweep_RunsEveryCombination_AndStoresParamsMetricsLayersAndNotebook(notebook, tmp_path):
    runs = expand_grid(notebook, {"x": ["1", "2"], "mode": ["a", "b"]}, seeds=[0, 1])
    assert len(runs) == 8 and runs[0] == {"x": 1.0, "mode": "a", "seed": 0}
    outcomes = sweep(notebook, runs, tmp_path / "runs", progress=False)
    assert [o.status for o in outcomes] == ["ok"] * 8
    folder = tmp_path / "runs" / run_id(notebook.resolve(), runs[0])
    assert json.loads((folder / "params.json").read_text()) == runs[0]
    assert json.loads((folder / "metrics.json").read_text())["accuracy"] == pytest.approx(0.6)
    assert (folder / "notebook.ipynb").is_file()
    frame = load(tmp_path / "runs")
    assert len(frame) == 8 and set(frame["status"]) == {"ok"}
    assert {"x", "mode", "seed", "metrics.accuracy"} <= set(frame.columns)


def test_sweep_AgainSkipsCompletedRuns_WithoutTouchingThem(notebook, tmp_path):
    runs = expand_grid(notebook, {"x": [1.0, 2.0]})
    sweep(notebook, runs, tmp_path / "runs", progress=False)
    stamps = {name: (tmp_path / "runs" / name / "run.json").stat().st_mtime_ns for name in _complete_runs(tmp_path / "runs")}
    again = sweep(notebook, runs, tmp_path / "runs", progress=False)
    assert [o.status for o in again] == ["skipped", "skipped"]
    assert len(stamps) == 2
    assert {n: (tmp_path / "runs" / n / "run.json").stat().st_mtime_ns for n in _complete_runs(tmp_path / "runs")} == stamps


def test_failing_run_IsRecordedWithItsCell_OthersContinue_AndCliExitsNonZero(notebook, tmp_path, capsys):
    code = main(_cli(notebook, str(tmp_path / "runs"), "-p", "x", "1", "2", "-p", "fail", "false", "true"))
    assert code == 1
    printed = capsys.readouterr().out
    assert "2 ran" in printed and "2 failed" in printed and "asked to fail" in printed
    frame = load(tmp_path / "runs")
    failed = frame[frame["status"] == "failed"]
    assert len(failed) == 2 and len(frame[frame["status"] == "ok"]) == 2
    # cell 2 of the executed notebook: papermill inserts its injected-parameters cell after the parameters
    assert failed["error"].str.contains(r"RuntimeError: asked to fail at x=.* \(cell 2\)").all()
    info = json.loads((tmp_path / "runs" / failed["run_id"].iloc[0] / "run.json").read_text())
    assert info["error"]["cell_index"] == 2 and "raise RuntimeError" in info["error"]["cell_source"]


def test_failed_run_IsRetriedNextTime_CompletedOneIsNot(notebook, tmp_path):
    sweep(notebook, expand_grid(notebook, {"fail": [True]}), tmp_path / "runs", progress=False)
    rerun = sweep(notebook, expand_grid(notebook, {"fail": [True]}), tmp_path / "runs", progress=False)
    assert [o.status for o in rerun] == ["failed"]  # retried, not skipped
    assert len(_complete_runs(tmp_path / "runs")) == 1  # replaced, not duplicated


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


def _overlapping(frame) -> bool:
    spans = sorted(zip(frame["metrics.started"], frame["metrics.ended"], strict=True))
    return any(later_start < end for (_, end), (later_start, _) in zip(spans, spans[1:], strict=False))


def test_workers_RunNotebooksAtOnce(notebook, tmp_path):
    runs = expand_grid(notebook, {"x": [1.0, 2.0, 3.0, 4.0], "sleep": [2.0]})
    outcomes = sweep(notebook, runs, tmp_path / "runs", workers=2, progress=False)
    assert [o.status for o in outcomes] == ["ok"] * 4
    assert _overlapping(load(tmp_path / "runs"))


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


def test_report_GivesMeanAndStdOverSeeds_AndWritesPngAndHtml(notebook, tmp_path):
    runs = expand_grid(notebook, {"x": [1.0, 2.0], "mode": ["a", "b"]}, seeds=[0, 2])
    sweep(notebook, runs, tmp_path / "runs", progress=False)
    summary = summarize(load(tmp_path / "runs"))
    row = summary[(summary["x"] == 1.0) & (summary["mode"] == "a")].iloc[0]
    assert row["accuracy mean"] == pytest.approx(0.61) and row["accuracy std"] == pytest.approx(
        0.01414, abs=1e-4
    )
    assert row["accuracy count"] == 2
    page = write_report(tmp_path / "runs", x="x", group="mode").page
    assert (page.parent / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "0.610 ± 0.014" in page.read_text()
    assert (page.parent / "summary.csv").is_file()
