"""Results written by notebooks read back as plain JSON and CSV."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import write_finished_run

from workbench.__main__ import main
from workbench.core.paths import PROJECT_ROOT
from workbench.runs.report import summarize, write_report
from workbench.runs.store import json_safe, load, scan, write_results


def test_write_results_RoundTripsNumpyValues(tmp_path):
    metrics = {
        "accuracy": np.float32(0.5),
        "confusion": np.array([[1, 2], [3, 4]]),
        "auc": float("nan"),
        "n": np.int64(3),
    }
    write_results(tmp_path / "run", metrics, pd.DataFrame({"layer": ["a"], "sparsity": [0.5]}))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {
        "accuracy": 0.5,
        "confusion": [[1, 2], [3, 4]],
        "auc": None,
        "n": 3,
    }
    assert (tmp_path / "run" / "layers.csv").read_text().splitlines() == ["layer,sparsity", "a,0.5"]
    hidden = [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]
    assert hidden == [".workbench-files.json"]  # no temporary left, only the record of what was written


def test_write_results_EmptyDirectory_WritesNothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert write_results("", {"accuracy": 0.5}) is None
    assert list(tmp_path.iterdir()) == []


def test_json_safe_HandlesNestedContainers():
    assert json_safe({"a": (np.float64(1.5), [np.inf])}) == {"a": [1.5, [None]]}


# --- reading runs back and reporting them: hand-written run folders -------------------------------


def _write_run(runs_dir, name, params, metrics, status="ok", metrics_version=None):
    """A finished run folder as a sweep leaves it; ``metrics`` may be a dict or raw text."""
    info = {} if metrics_version is None else {"metrics_version": metrics_version}
    return write_finished_run(runs_dir, name, params, metrics, status, **info)


def test_scan_TruncatedMetrics_IsReportedByPathAndSkipped(tmp_path):
    _write_run(tmp_path, "a", {"epsilon": 1e-4, "seed": 0}, {"accuracy": 0.8})
    bad = _write_run(tmp_path, "b", {"epsilon": 1e-4, "seed": 1}, '{"accuracy": 0.')
    _write_run(tmp_path, "c", {"epsilon": 1e-4, "seed": 2}, {"accuracy": 0.6})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "run.json").write_text('["not", "a", "run"]')
    frame, skipped = scan(tmp_path)
    assert sorted(frame["run_id"]) == ["a", "c"]
    assert [(s.path, s.reason.split(" ")[0]) for s in skipped] == [
        (bad, "metrics.json"),
        (tmp_path / "d", "run.json"),
    ]
    assert "not valid JSON" in skipped[0].reason
    assert summarize(frame)["accuracy mean"].tolist() == [pytest.approx(0.7)]


def test_cli_report_WithABadRun_NamesItAndSummarisesTheRest(tmp_path, capsys):
    _write_run(tmp_path, "a", {"epsilon": 1e-4, "seed": 0}, {"accuracy": 0.8, "auc": 0.9})
    bad = _write_run(tmp_path, "b", {"epsilon": 1e-4, "seed": 1}, '{"accuracy": 0.')
    assert main(["report", "--runs", str(tmp_path)]) == 0
    printed = capsys.readouterr()
    assert f"skipped {bad}: metrics.json is not valid JSON" in printed.err

    # as a user runs it (outside pytest, whose log capture would hide a second line from the log)
    shell = subprocess.run(
        [sys.executable, "-m", "workbench", "report", "--runs", str(tmp_path), "--out", str(tmp_path / "2")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stderr.count(str(bad)) == 1, shell.stderr  # said once, not again by a log line
    assert "0.800" in printed.out and (tmp_path / "report" / "report.html").is_file()
    assert str(bad) in (tmp_path / "report" / "report.html").read_text()


def test_report_OnlyFailedRuns_SaysHowManyFailed_AndTheFirstError(tmp_path):
    folder = _write_run(tmp_path, "a", {"epsilon": 1e-4, "seed": 0}, {}, status="failed")
    info = json.loads((folder / "run.json").read_text())
    info["error"] = {"ename": "ValueError", "evalue": "epochs must be >= 1, got 0"}
    (folder / "run.json").write_text(json.dumps(info))
    _write_run(tmp_path, "b", {"epsilon": 1e-3, "seed": 0}, {}, status="failed")
    with pytest.raises(ValueError, match=r"no successful runs .*; 2 failed, first a: ValueError: epochs"):
        write_report(tmp_path)


def test_report_ACountIsShownAsACount(tmp_path):
    _write_run(tmp_path, "a", {"epsilon": 1e-4, "seed": 0}, {"changed": 12, "auc": 1.0})
    _write_run(tmp_path, "b", {"epsilon": 1e-3, "seed": 0}, {"changed": 3, "auc": 0.9})
    _write_run(tmp_path, "c", {"epsilon": 1e-3, "seed": 1}, {"changed": 4, "auc": 0.8})
    table = write_report(tmp_path).table.set_index("epsilon")
    assert table.loc[1e-4, "changed"] == "12" and table.loc[1e-3, "changed"] == "3.5 ± 0.7"
    assert table.loc[1e-4, "auc"] == "1.000"  # a float that happens to be whole keeps its decimals


def test_report_RunsThatDidNotSweepAParameter_AreNamedAsTheNotebooksDefault(tmp_path):
    """README's YAML grid sweeps no criterion: its runs showed criterion NaN and fell out of the plots."""
    _write_run(tmp_path, "a", {"epsilon": 1e-4, "criterion": "snip", "seed": 0}, {"auc": 0.9})
    _write_run(tmp_path, "b", {"epsilon": 1e-4, "seed": 0}, {"auc": 0.8})
    _write_run(tmp_path, "c", {"epsilon": 1e-3, "seed": 0}, {"auc": 0.7})
    table = write_report(tmp_path).table
    assert sorted(table["criterion"]) == ["(notebook default)", "(notebook default)", "snip"]
    assert not table.isna().any().any()


def test_summarize_NonNumericValueInOneRun_KeepsTheColumnForTheOthers(tmp_path):
    for seed, auc in enumerate([0.9, "n/a", 0.8]):
        _write_run(tmp_path, f"r{seed}", {"epsilon": 1e-4, "seed": seed}, {"accuracy": 0.5, "auc": auc})
    row = summarize(load(tmp_path)).iloc[0]
    assert row["auc mean"] == pytest.approx(np.mean([0.9, 0.8])) and row["auc count"] == 2
    assert row["accuracy count"] == 3 and row["runs"] == 3


def test_report_UndefinedMetric_IsShownAsUndefined_BooleansAreCounted(tmp_path):
    _write_run(tmp_path, "a", {"epsilon": 1e-4}, {"auc": None, "single_class": True, "accuracy": 1.0})
    table = write_report(tmp_path).table
    assert table["auc"].tolist() == ["undefined"] and table["single_class"].tolist() == ["True 1/1"]


def test_summarize_ListParameter_GroupsByItsValue(tmp_path):
    for seed in range(2):
        _write_run(
            tmp_path, f"r{seed}", {"sparsities": [0.5, 0.9], "seed": seed}, {"accuracy": 0.5 + seed / 10}
        )
    summary = summarize(load(tmp_path))
    assert summary["sparsities"].tolist() == ["[0.5, 0.9]"] and summary["runs"].tolist() == [2]


def test_summarize_MetricThatDiffersFromItsParameter_IsKeptBesideIt(tmp_path):
    _write_run(
        tmp_path, "a", {"epsilon": -1.0, "criterion": "gradient"}, {"epsilon": 1e-10, "criterion": "gradient"}
    )
    summary = summarize(load(tmp_path))
    assert summary["epsilon (result) mean"].tolist() == [1e-10]  # a changed ε is visible, not hidden
    assert "criterion (result) tally" not in summary  # an unchanged echo is left out


def test_report_Out_RefusesToOverwriteAFileItDidNotWrite(tmp_path, capsys):
    runs_dir, out = tmp_path / "runs", tmp_path / "mine"
    _write_run(runs_dir, "a", {"epsilon": 1e-4}, {"accuracy": 0.8, "auc": 0.9})
    out.mkdir()
    (out / "summary.csv").write_text("the user's table")
    assert main(["report", "--runs", str(runs_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out / "summary.csv") in err and "not written by the workbench" in err
    assert "--overwrite replaces it" in err
    assert (out / "summary.csv").read_text() == "the user's table"
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv"]
    (out / "report.html").write_text("<html><body>my page</body></html>")  # not a report's page
    assert main(["report", "--runs", str(runs_dir), "--out", str(out)]) == 2
    assert (out / "summary.csv").read_text() == "the user's table"
    report = write_report(runs_dir, tmp_path / "fresh")
    again = write_report(runs_dir, tmp_path / "fresh")  # a report may rewrite its own files
    assert report.page == again.page and report.page.is_file()
    (report.page.parent / ".workbench-files.json").unlink()  # as a report before manifests left it
    write_report(runs_dir, tmp_path / "fresh")
    assert main(["report", "--runs", str(runs_dir), "--out", str(out), "--overwrite"]) == 0
    assert (out / "summary.csv").read_text() != "the user's table"


def test_report_OutWrittenByAnOlderReport_IsStillReplaced(tmp_path):
    """Reports kept their own list, .workbench-report.json, before fs.claim kept one for every writer."""
    runs_dir, out = tmp_path / "runs", tmp_path / "old"
    _write_run(runs_dir, "a", {"epsilon": 1e-4}, {"accuracy": 0.8, "auc": 0.9})
    out.mkdir()
    (out / "summary.csv").write_text("an older report's table")
    (out / ".workbench-report.json").write_text(json.dumps({"files": ["summary.csv"]}))
    write_report(runs_dir, out)
    assert (out / "summary.csv").read_text().startswith("epsilon")
    (out / "summary.csv").write_text("the user's edit")  # now the workbench's record says what it wrote
    with pytest.raises(FileExistsError, match="summary.csv exists and was not written by the workbench"):
        write_report(runs_dir, out)


def test_report_ShowsIntervalsPValuesAndVerdictCountsPerGroup(tmp_path, capsys):
    clinical = [
        (0.941, 0.920, 0.960, -0.003, -0.010, 0.004, 0.41, "non-inferior", 0.62, 0.90, 0.85, 0.95),
        (0.931, 0.910, 0.950, -0.013, -0.030, 0.004, 0.12, "inconclusive", 0.20, 0.88, 0.83, 0.93),
        (0.951, 0.930, 0.970, 0.001, -0.006, 0.008, 0.77, "non-inferior", 1.00, 0.92, 0.87, 0.97),
    ]
    keys = "auc auc_low auc_high auc_difference auc_difference_low auc_difference_high auc_difference_p"
    keys = keys.split() + [
        "noninferiority",
        "mcnemar_p",
        "sensitivity",
        "sensitivity_low",
        "sensitivity_high",
    ]
    for seed, values in enumerate(clinical):
        metrics = dict(zip(keys, values, strict=True)) | {"dense_auc": 0.944, "margin": 0.02}
        _write_run(tmp_path, f"s{seed}", {"epsilon": 1e-4, "seed": seed}, metrics)
    _write_run(tmp_path, "other", {"epsilon": 1e-3, "seed": 0}, dict(zip(keys, clinical[0], strict=True)))
    table = write_report(tmp_path).table.set_index("epsilon")
    columns = np.array(clinical, dtype=object).T
    mean, std = np.mean(columns[0].astype(float)), np.std(columns[0].astype(float), ddof=1)
    low, high = np.mean(columns[1].astype(float)), np.mean(columns[2].astype(float))
    assert table.loc[1e-4, "auc [CI]"] == f"{mean:.3f} ± {std:.3f} [{low:.3f}, {high:.3f}]"
    assert table.loc[1e-3, "auc [CI]"] == "0.941 [0.920, 0.960]"
    assert table.loc[1e-3, "auc_difference [CI] p"] == "-0.003 [-0.010, 0.004] p=0.41"
    assert table.loc[1e-4, "noninferiority"] == "non-inferior 2/3, inconclusive 1/3"
    assert table.loc[1e-3, "noninferiority"] == "non-inferior 1/1"
    assert table.loc[1e-3, "sensitivity [CI]"] == "0.900 [0.850, 0.950]"
    assert table.loc[1e-4, "margin"] == "0.020 ± 0.000" and table.loc[1e-3, "margin"] == "undefined"
    assert table.loc[1e-4, "runs"] == 3
    assert not {"auc_low", "auc_high", "auc_difference_p", "sensitivity_low"} & set(table.columns)
    assert main(["report", "--runs", str(tmp_path)]) == 0
    assert "non-inferior 2/3, inconclusive 1/3" in capsys.readouterr().out


def test_report_RunsFromAnOlderMetricsVersion_AreFlaggedNotMixedSilently(tmp_path, caplog):
    _write_run(tmp_path, "old", {"epsilon": 1e-4, "seed": 0}, {"accuracy": 0.5})  # before the field: 1
    _write_run(tmp_path, "new", {"epsilon": 1e-4, "seed": 1}, {"accuracy": 0.9}, metrics_version=2)
    report = write_report(tmp_path, tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    assert "mix metric versions [1, 2]" in page and "mix metric versions" in caplog.text
    assert "from version 2, binary accuracy" in page and "from version 3" not in page  # what changed between
    assert "metrics_version" not in report.table.columns  # bookkeeping, not a swept parameter


def test_report_RunsOfOneMetricsVersion_HaveNoWarning(tmp_path):
    for seed in (0, 1):
        params = {"epsilon": 1e-4, "seed": seed}
        _write_run(tmp_path, f"r{seed}", params, {"accuracy": 0.9}, metrics_version=2)
    write_report(tmp_path, tmp_path / "report")
    assert "mix metric versions" not in (tmp_path / "report" / "report.html").read_text()


def test_with_plus_minus_APValue_KeepsItsSize():
    import pandas as pd

    from workbench.runs.report import with_plus_minus

    summary = pd.DataFrame(
        {
            "epsilon": [1e-4],
            "mcnemar_p mean": [0.00031],
            "mcnemar_p std": [0.0002],
            "mcnemar_p count": [3],
            "runs": [3],
        }
    )
    assert with_plus_minus(summary).loc[0, "mcnemar_p"] == "mean 0.00031"


README = PROJECT_ROOT / "README.md"


def _readme_notebook_commands() -> list[str]:
    """README's `python -m workbench notebook` commands, as written (continued lines joined)."""
    found = re.findall(r"\.venv/bin/python -m workbench notebook (?:[^`\n\\]|\\\n)*", README.read_text())
    return [" ".join(command.replace("\\\n", " ").split()) for command in found]


def _out_of(command: str) -> str:
    """The file a `python -m workbench notebook NOTEBOOK OUT ...` command writes."""
    words, positional = shlex.split(command)[4:], []
    while words:
        word = words.pop(0)
        if word == "-p":
            del words[:2]  # NAME VALUE
        elif not word.startswith("-"):
            positional.append(word)
    return positional[1]


@pytest.fixture
def checkout_copy(tmp_path):
    """A folder to run README's commands in: the project's notebooks and environment, nothing else."""
    for name in ("notebooks", ".venv"):
        (tmp_path / name).symlink_to(PROJECT_ROOT / name)
    return tmp_path


def test_readme_NotebookCommands_RefuseToReplaceAFileOfTheUsers(checkout_copy):
    """README's papermill commands replaced an existing my_explorer.ipynb without a word."""
    commands = _readme_notebook_commands()
    assert len(commands) == 3 and not re.search(r"bin/papermill (?!--help-notebook)", README.read_text())
    for command in commands:
        out = checkout_copy / _out_of(command)
        out.write_text("the user's own notebook")
        done = subprocess.run(["bash", "-c", command], cwd=checkout_copy, capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert f"{_out_of(command)} exists and was not written by the workbench" in done.stderr
        assert "--overwrite replaces it" in done.stderr and out.read_text() == "the user's own notebook"
        out.unlink()


def test_readme_PrepareOnlyCommand_WritesTheCopy_AndRunsAgain(checkout_copy):
    (command,) = [c for c in _readme_notebook_commands() if "--prepare-only" in c]
    for _ in range(2):  # the second replaces what the first wrote
        done = subprocess.run(["bash", "-c", command], cwd=checkout_copy, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    notebook = nbformat.read(checkout_copy / _out_of(command), as_version=4)
    injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'dataset = "pneumoniamnist"' in injected[0].source
