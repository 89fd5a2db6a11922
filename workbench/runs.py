"""The run store: one folder per notebook run, sweeps over parameter grids, and loading them back.

A run is a notebook executed by papermill with one set of parameters. It lives in
``runs/<run-id>/`` with ``params.json``, ``run.json`` (status, timings, and for a failed run the
error and the cell that raised), the executed ``notebook.ipynb``, and what the notebook wrote
through its ``results_dir`` parameter: ``metrics.json`` and ``layers.csv``.

Results travel only through files: the sweep passes ``results_dir`` to the notebook and the
notebook calls ``write_results``. Nothing is scraped from printed output.

Safety: a run executes in ``runs/.partial-<run-id>-<pid>/`` and is renamed into place when it
ends, so a sweep killed at any moment leaves complete runs and partial folders that ``load``
ignores (and the next sweep removes). A completed run is never re-run or overwritten; a failed
one is retried by the next sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.paths import write_atomically

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
RESULTS_PARAMETER = "results_dir"


# --- results written by a notebook ------------------------------------------------------------


def json_safe(value):
    """Convert NumPy scalars/arrays and non-finite floats into plain JSON values (NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(directory: str | Path, metrics: dict, layers: pd.DataFrame | None = None) -> Path:
    """Write ``metrics.json`` (and ``layers.csv``) into ``directory``; returns the directory.

    This is what a notebook calls with its ``results_dir`` parameter.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if layers is not None:
        write_atomically(directory / "layers.csv", layers.to_csv(index=False))
    write_atomically(directory / "metrics.json", json.dumps(json_safe(metrics), indent=2, sort_keys=True))
    return directory


# --- grids ------------------------------------------------------------------------------------


def notebook_parameters(notebook: str | Path) -> dict[str, dict]:
    """The parameters a notebook's ``parameters`` cell declares: name -> {inferred_type_name, default, help}.

    Raises:
        FileNotFoundError: if the notebook doesn't exist.
    """
    import papermill

    path = Path(notebook)
    if not path.is_file():
        raise FileNotFoundError(f"notebook not found: {path}")
    return dict(papermill.inspect_notebook(str(path)))


def coerce(value, type_name: str | None):
    """Turn a command-line string into the type the notebook declares (float, int, bool, str, list)."""
    if not isinstance(value, str):
        return value
    if type_name == "float":
        return float(value)
    if type_name == "int":
        return int(value)
    if type_name == "bool":
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true/false for a bool parameter, got {value!r}")
        return value.lower() in ("true", "1", "yes")
    if type_name in ("list", "dict"):
        import yaml

        return yaml.safe_load(value)
    return value


def expand_grid(notebook: str | Path, grid: dict[str, list], seeds: list[int] | None = None) -> list[dict]:
    """Every combination of the grid's values (times seeds), checked against the notebook's parameters.

    Raises:
        FileNotFoundError: if the notebook doesn't exist.
        ValueError: for a parameter the notebook doesn't declare, an empty value list, or a value
            that can't be converted to the declared type.
    """
    declared = notebook_parameters(notebook)
    grid = dict(grid)
    if seeds:
        grid["seed"] = list(seeds)
    unknown = sorted(set(grid) - set(declared))
    if unknown:
        raise ValueError(
            f"parameters {unknown} are not declared by {Path(notebook).name}; it declares {sorted(declared)}"
        )
    if RESULTS_PARAMETER not in declared:
        raise ValueError(
            f"{Path(notebook).name} has no {RESULTS_PARAMETER!r} parameter, "
            "so a sweep can't collect its results"
        )
    values = {}
    for name, options in grid.items():
        if not isinstance(options, list) or not options:
            raise ValueError(f"parameter {name!r} needs a non-empty list of values, got {options!r}")
        try:
            values[name] = [coerce(v, declared[name]["inferred_type_name"]) for v in options]
        except ValueError as err:
            raise ValueError(f"parameter {name!r}: {err}") from None
    names = list(values)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values.values())]


def read_grid_file(path: str | Path) -> tuple[dict[str, list], list[int] | None]:
    """Read a YAML grid: ``parameters: {name: [values]}`` and optional ``seeds: [..]``.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if it is not valid YAML of that shape.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file not found: {path}")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    shape = "a mapping with 'parameters: {name: [values, ...]}' and optionally 'seeds: [0, 1]'"
    if not isinstance(content, dict) or not isinstance(content.get("parameters"), dict):
        raise ValueError(f"{path}: expected {shape}")
    extra = sorted(set(content) - {"parameters", "seeds"})
    if extra:
        raise ValueError(f"{path}: unknown keys {extra}; expected {shape}")
    grid = {k: v if isinstance(v, list) else [v] for k, v in content["parameters"].items()}
    seeds = content.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and all(isinstance(s, int) for s in seeds)):
        raise ValueError(f"{path}: seeds must be a list of integers, got {seeds!r}")
    return grid, seeds


def run_id(notebook: str | Path, params: dict) -> str:
    """A stable id: the notebook's name and a hash of its parameters."""
    digest = hashlib.sha1(json.dumps(json_safe(params), sort_keys=True).encode()).hexdigest()[:10]
    return f"{Path(notebook).stem}-{digest}"


# --- executing one run ------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What happened to one run of a sweep."""

    run_id: str
    params: dict
    status: str  # "ok", "failed" or "skipped"
    seconds: float = 0.0
    error: dict = field(default_factory=dict)


def describe_error(error: dict) -> str:
    """One line for a failed run: the exception and the executed notebook's cell that raised it."""
    return f"{error.get('ename')}: {error.get('evalue')} (cell {error.get('cell_index')})"


def is_complete(run_dir: Path) -> bool:
    """A run folder counts as complete only if its run.json says the run succeeded."""
    info = run_dir / "run.json"
    return info.is_file() and json.loads(info.read_text()).get("status") == "ok"


def execute_run(notebook: str, params: dict, runs_dir: str, kernel_name: str = "python3") -> RunOutcome:
    """Execute one run in a partial folder and rename it into ``runs_dir/<run-id>`` when it ends.

    Safe to call from another process or a Dask worker: it touches only its own folders.
    """
    import papermill

    identity = run_id(notebook, params)
    final = Path(runs_dir) / identity
    if is_complete(final):
        return RunOutcome(identity, params, "skipped")
    partial = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{identity}-{os.getpid()}-", dir=runs_dir))
    (partial / "params.json").write_text(json.dumps(json_safe(params), indent=2, sort_keys=True))
    started, error = time.time(), {}
    try:
        _use_this_environments_kernel()
        papermill.execute_notebook(
            notebook,
            str(partial / "notebook.ipynb"),
            parameters={**params, RESULTS_PARAMETER: str(partial)},
            kernel_name=kernel_name,
            cwd=str(Path(notebook).resolve().parent),
            progress_bar=False,
        )
    except papermill.PapermillExecutionError as err:
        error = {
            "ename": err.ename,
            "evalue": err.evalue,
            "cell_index": err.cell_index,
            "cell_source": err.source,
        }
    except Exception as err:  # noqa: BLE001 - a kernel that won't start must not end the sweep
        error = {"ename": type(err).__name__, "evalue": str(err), "cell_index": None, "cell_source": ""}
    status = "failed" if error else "ok"
    info = {
        "run_id": identity,
        "notebook": str(notebook),
        "status": status,
        "started": started,
        "ended": time.time(),
        "error": error,
    }
    _finish(partial, final, info)
    return RunOutcome(identity, params, status, info["ended"] - started, error)


def _finish(partial: Path, final: Path, info: dict) -> None:
    """Write the run record, then rename the run into place (replacing only an earlier failure)."""
    (partial / "run.json").write_text(json.dumps(json_safe(info), indent=2, sort_keys=True))
    if final.is_dir():  # an earlier failed attempt: complete runs are skipped before they get here
        shutil.rmtree(final)
    os.replace(partial, final)


def _use_this_environments_kernel() -> None:
    """Point the 'python3' kernel at this interpreter, whatever kernels the user has registered."""
    folder = Path(tempfile.gettempdir()) / f"workbench-kernels-{os.getpid()}"
    spec = folder / "kernels" / "python3" / "kernel.json"
    if not spec.is_file():
        spec.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        spec.write_text(json.dumps({"argv": argv, "display_name": "workbench", "language": "python"}))
    paths = os.environ.get("JUPYTER_PATH", "").split(os.pathsep)
    if str(folder) not in paths:
        os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder), *filter(None, paths)])


# --- sweeps -----------------------------------------------------------------------------------


def remove_partials(runs_dir: Path) -> None:
    """Delete partial folders left by killed runs whose process is gone."""
    for path in runs_dir.glob(f"{PARTIAL_PREFIX}*"):
        pid = path.name.rsplit("-", 2)[-2]
        if not (pid.isdigit() and _process_alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(
    notebook: str | Path,
    runs: list[dict],
    runs_dir: str | Path = "runs",
    *,
    workers: int = 1,
    dask_address: str | None = None,
    progress: bool = True,
) -> list[RunOutcome]:
    """Execute every run (skipping completed ones), locally with ``workers`` processes or on Dask.

    Example:
        >>> notebook = "notebooks/01_explore_threshold.ipynb"
        >>> runs = expand_grid(notebook, {"epsilon": [1e-4, 1e-3]}, seeds=[0, 1])  # doctest: +SKIP
        >>> sweep(notebook, runs, workers=2)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    remove_partials(runs_dir)
    notebook = str(Path(notebook).resolve())
    todo = [p for p in runs if not is_complete(runs_dir / run_id(notebook, p))]
    outcomes = [RunOutcome(run_id(notebook, p), p, "skipped") for p in runs if p not in todo]
    bar = tqdm(total=len(runs), initial=len(outcomes), desc="runs", unit="run", disable=not progress)
    for outcome in _execute_all(notebook, todo, str(runs_dir), workers, dask_address):
        outcomes.append(outcome)
        bar.update()
        bar.set_postfix(failed=sum(o.status == "failed" for o in outcomes))
    bar.close()
    return outcomes


def _execute_all(notebook: str, todo: list[dict], runs_dir: str, workers: int, dask_address: str | None):
    if dask_address:
        from distributed import Client, as_completed

        with Client(dask_address, timeout="20s") as client:
            futures = [client.submit(execute_run, notebook, p, runs_dir, pure=False) for p in todo]
            for future in as_completed(futures):
                yield future.result()
    elif workers == 1:
        for params in todo:
            yield execute_run(notebook, params, runs_dir)
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers) as pool:
            for future in as_completed([pool.submit(execute_run, notebook, p, runs_dir) for p in todo]):
                yield future.result()


# --- loading ----------------------------------------------------------------------------------


def load(runs_dir: str | Path = "runs") -> pd.DataFrame:
    """All finished runs (ok or failed) as one DataFrame: run_id, status, params and metrics.

    Parameter columns keep their names; metric columns are prefixed ``metrics.`` (nested metrics
    are flattened with dots). Partial folders of killed runs are ignored.
    """
    rows = []
    for folder in sorted(Path(runs_dir).glob("*")):
        if folder.name.startswith(".") or not (folder / "run.json").is_file():
            continue
        info = json.loads((folder / "run.json").read_text())
        row = {"run_id": folder.name, "status": info["status"], "seconds": info["ended"] - info["started"]}
        row.update(json.loads((folder / "params.json").read_text()))
        metrics_path = folder / "metrics.json"
        if metrics_path.is_file():
            row.update(_flatten(json.loads(metrics_path.read_text()), "metrics."))
        if info.get("error"):
            row["error"] = describe_error(info["error"])
        rows.append(row)
    return pd.DataFrame(rows)


def _flatten(values: dict, prefix: str) -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            flat[f"{prefix}{key}"] = value
    return flat
