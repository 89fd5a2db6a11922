"""The run store: one folder per notebook run, sweeps over parameter grids, and loading them back.

A run is a notebook executed by papermill with one set of parameters. It lives in
``runs/<run-id>/`` with ``params.json``, ``run.json`` (status, timings, and for a failed run the
error and the cell that raised), the executed ``notebook.ipynb``, and what the notebook wrote
through its ``results_dir`` parameter: ``metrics.json`` and ``layers.csv``.

Results travel only through files: the sweep passes an absolute ``results_dir`` to the notebook
and the notebook calls ``write_results``. Nothing is scraped from printed output. A run is "ok"
only if the notebook wrote every file it declares (``declared_results``: metrics.json unless its
metadata says otherwise).

Safety: a run executes in ``runs/.partial-<run-id>-<pid>-*/`` and is renamed into place when it
ends, so a sweep killed at any moment leaves complete runs and partial folders that ``load``
ignores. Whoever executes a run holds its lock (``runs/.locks/<run-id>.lock``), so sweeps sharing
a run store execute each combination once. A completed run is never re-run, replaced or deleted;
a failed one is retried by the next sweep. Only partial folders the workbench made, whose owner
is gone, are removed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.core import fs
from workbench.core.errors import WorkbenchError
from workbench.core.fs import PARTIAL_PREFIX, give_usual_mode

if TYPE_CHECKING:  # pandas (and scipy, behind stats) are imported where used: every run's kernel
    import pandas as pd  # and CLI command imports this module, and most never need them

log = logging.getLogger(__name__)

RESULTS_PARAMETER = "results_dir"
KERNEL_START_ATTEMPTS = 3  # a kernel that dies before its first reply is started again
DEFAULT_RESULTS = ("metrics.json",)
LOCKS_FOLDER = ".locks"
OWNER_FILE = ".owner.json"


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


def write_results(
    directory: str | Path | None,
    metrics: dict,
    layers: pd.DataFrame | None = None,
    *,
    overwrite: bool = False,
) -> Path | None:
    """Write ``metrics.json`` (and ``layers.csv``) into ``directory``; returns the directory.

    This is what a notebook calls with its ``results_dir`` parameter. An empty ``directory`` (the
    parameter's default in an interactive session) writes nothing and returns None. Files this
    function wrote before are replaced (a notebook run again); files of those names that the
    workbench did not write are not, unless ``overwrite``.

    Raises:
        FileExistsError: naming a file of the user's in the way (nothing is written).
    """
    if not directory:
        log.info("no results_dir given: results not written")
        return None
    directory = Path(directory)
    names = ["metrics.json"] + (["layers.csv"] if layers is not None else [])
    with fs.claim(directory, names, overwrite):
        if layers is not None:
            fs.write_atomically(directory / "layers.csv", layers.to_csv(index=False))
        fs.write_json(directory / "metrics.json", json_safe(metrics))
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
    if path.suffix != ".ipynb":
        raise WorkbenchError(f"notebook must be a .ipynb file, got {path}")
    try:
        return dict(papermill.inspect_notebook(str(path)))
    except Exception as err:  # noqa: BLE001 - nbformat and papermill raise many kinds; name the file
        raise WorkbenchError(f"{path}: not a readable notebook ({type(err).__name__}: {err})") from err


def coerce(value, type_name: str | None):
    """Turn a command-line string into the type the notebook declares (float, int, bool, str, list);
    check a YAML value, already typed, against it.

    Raises:
        ValueError: for a value that is not of (or convertible to) the declared type.
    """
    if isinstance(value, str):
        return _from_text(value, type_name)
    wanted = {"float": (int, float), "int": int, "bool": bool, "str": str, "list": list, "dict": dict}.get(
        type_name
    )
    wrong_bool = isinstance(value, bool) and type_name in ("float", "int")
    if wanted is not None and (not isinstance(value, wanted) or wrong_bool):
        raise WorkbenchError(f"expected {type_name}, got {value!r} ({type(value).__name__})")
    return float(value) if type_name == "float" else value


def _from_text(value: str, type_name: str | None):
    if type_name == "float":
        return float(value)
    if type_name == "int":
        return int(value)
    if type_name == "bool":
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise WorkbenchError(f"expected true/false for a bool parameter, got {value!r}")
        return value.lower() in ("true", "1", "yes")
    if type_name in ("list", "dict"):
        import yaml

        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise WorkbenchError(f"{value!r} is not a YAML {type_name} ({_one_line_yaml(error)})") from None
        if not isinstance(parsed, list if type_name == "list" else dict):
            raise WorkbenchError(f"expected a {type_name}, got {value!r} (in YAML, e.g. '[0.5, 0.9]')")
        return parsed
    return value


def _one_line_yaml(error) -> str:
    return " ".join(str(getattr(error, "problem", None) or error).split())


def expand_grid(notebook: str | Path, grid: dict[str, list], seeds: list[int] | None = None) -> list[dict]:
    """Every combination of the grid's values (times seeds), checked against the notebook's parameters.

    Raises:
        FileNotFoundError: if the notebook doesn't exist.
        ValueError: for a file that is not a notebook, a parameter the notebook doesn't declare,
            an empty value list, or a value that can't be converted to the declared type.
    """
    declared = notebook_parameters(notebook)
    grid = dict(grid)
    if seeds:
        grid["seed"] = list(seeds)
    unknown = sorted(set(grid) - set(declared))
    if unknown:
        raise WorkbenchError(
            f"parameters {unknown} are not declared by {Path(notebook).name}; it declares {sorted(declared)}"
        )
    if RESULTS_PARAMETER not in declared:
        raise WorkbenchError(
            f"{Path(notebook).name} has no {RESULTS_PARAMETER!r} parameter, "
            "so a sweep can't collect its results"
        )
    if RESULTS_PARAMETER in grid:
        raise WorkbenchError(
            f"{RESULTS_PARAMETER!r} is set by the sweep for each run (its run folder); it cannot be swept"
        )
    values = {}
    for name, options in grid.items():
        if not isinstance(options, list) or not options:
            raise WorkbenchError(f"parameter {name!r} needs a non-empty list of values, got {options!r}")
        try:
            coerced = [coerce(v, declared[name]["inferred_type_name"]) for v in options]
            values[name] = [v for i, v in enumerate(coerced) if v not in coerced[:i]]  # once each
        except ValueError as err:
            raise WorkbenchError(f"parameter {name!r}: {err}") from None
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
        raise WorkbenchError(f"{path}: not valid YAML: {err}") from None
    shape = "a mapping with 'parameters: {name: [values, ...]}' and optionally 'seeds: [0, 1]'"
    if not isinstance(content, dict) or not isinstance(content.get("parameters"), dict):
        raise WorkbenchError(f"{path}: expected {shape}")
    extra = sorted(set(content) - {"parameters", "seeds"})
    if extra:
        raise WorkbenchError(f"{path}: unknown keys {extra}; expected {shape}")
    grid = {k: v if isinstance(v, list) else [v] for k, v in content["parameters"].items()}
    seeds = content.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and all(isinstance(s, int) for s in seeds)):
        raise WorkbenchError(f"{path}: seeds must be a list of integers, got {seeds!r}")
    return grid, seeds


def run_id(notebook: str | Path, params: dict) -> str:
    """A stable id: the notebook's name and a hash of its parameters."""
    digest = hashlib.sha1(json.dumps(json_safe(params), sort_keys=True).encode()).hexdigest()[:10]
    return f"{Path(notebook).stem}-{digest}"


def notebook_version(notebook: str | Path) -> str:
    """A hash of the notebook's code cells: what its results depend on (its text cells do not count)."""
    import nbformat

    cells = nbformat.read(str(notebook), as_version=4).cells
    code = "\0".join(cell.source for cell in cells if cell.cell_type == "code")
    return hashlib.sha1(code.encode()).hexdigest()[:10]


def check_one_notebook_version(notebook: str | Path, runs_dir: str | Path) -> None:
    """Refuse to sweep ``notebook`` into a store holding its complete runs from other code.

    Those runs would be skipped as complete and reported beside the new ones, as if the edited
    notebook had made them. Runs made before versions were recorded are not checked.

    Raises:
        ValueError: naming the folder, how many runs differ and what to do.
    """
    version, stem = notebook_version(notebook), Path(notebook).stem
    other = []
    for folder in sorted(Path(runs_dir).glob(f"{stem}-*")):
        info = _json_dict(folder / "run.json")
        if info.get("status") == "ok" and info.get("notebook_version") not in (None, version):
            other.append(folder.name)
    if other:
        raise WorkbenchError(
            f"{runs_dir} holds {len(other)} run(s) of {stem} made by another version of the notebook "
            f"(its code cells have changed since), e.g. {other[0]}: they would be skipped as complete "
            "and reported as if the notebook had made them. Sweep into a new --runs folder, or move "
            "those runs out of this one."
        )


def _json_dict(path: Path) -> dict:
    """The JSON object in ``path``, or {} if there is none that can be read (missing, damaged)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# --- one notebook into a file of the user's ---------------------------------------------------


def run_notebook(
    notebook: str | Path,
    out: str | Path,
    parameters: dict | None = None,
    *,
    prepare_only: bool = False,
    overwrite: bool = False,
    allow: str = "overwrite=True",
) -> Path:
    """Write ``notebook`` with ``parameters`` set into ``out``, executed (papermill) or, with
    ``prepare_only``, ready to open; returns ``out``.

    Unlike ``papermill``, it does not replace a file the workbench did not write (``fs.claim``).
    Values given as text are converted to the types the notebook declares. The kernel runs in the
    current folder, as papermill's does.

    Raises:
        FileNotFoundError: if the notebook does not exist.
        ValueError: for a parameter the notebook does not declare or a value of the wrong type.
        FileExistsError: if ``out`` is a file the workbench did not write (nothing is written).
        papermill.PapermillExecutionError: a cell failed (``out`` shows where).
    """
    import papermill

    out = Path(out)
    if out.suffix != ".ipynb":
        raise WorkbenchError(f"out must be a .ipynb file, got {str(out)!r}")
    values = checked_parameters(notebook, parameters or {})
    with fs.claim(out.parent, [out.name], overwrite, allow=allow):
        if not prepare_only:
            _use_this_environments_kernel()
        with fs.naming(out):  # papermill's writes into a full disk name no file
            papermill.execute_notebook(
                str(notebook), str(out), parameters=values, prepare_only=prepare_only, progress_bar=False
            )
    return out


def checked_parameters(notebook: str | Path, parameters: dict) -> dict:
    """``parameters`` converted to the types ``notebook`` declares (see ``coerce``).

    Raises:
        FileNotFoundError: if the notebook doesn't exist.
        ValueError: for a parameter the notebook does not declare, or a value of the wrong type.
    """
    declared = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise WorkbenchError(
            f"parameters {unknown} are not declared by {Path(notebook).name}; it declares {sorted(declared)}"
        )
    values = {}
    for name, value in parameters.items():
        try:
            values[name] = coerce(value, declared[name]["inferred_type_name"])
        except ValueError as err:
            raise WorkbenchError(f"parameter {name!r} of {Path(notebook).name}: {err}") from None
    return values


# --- executing one run ------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What happened to one run of a sweep."""

    run_id: str
    params: dict
    status: str  # "ok", "failed", "skipped" (already complete) or "busy" (another sweep is running it)
    seconds: float = 0.0
    error: dict = field(default_factory=dict)


def describe_error(error: dict) -> str:
    """One line for a failed run: the exception and the executed notebook's cell that raised it."""
    cell = error.get("cell_index")
    where = f" (cell {cell})" if cell is not None else ""
    return f"{error.get('ename')}: {error.get('evalue')}{where}"


def declared_results(notebook: str | Path) -> tuple[str, ...]:
    """The files a notebook promises to write into ``results_dir``: its metadata, else metrics.json.

    A notebook declares them in its metadata as ``{"workbench": {"results": ["metrics.json", ...]}}``.

    Raises:
        ValueError: if the declaration is not a list of plain file names.
    """
    import nbformat

    metadata = nbformat.read(str(notebook), as_version=4).metadata.get("workbench", {})
    names = metadata.get("results", list(DEFAULT_RESULTS))
    if not (isinstance(names, list) and names and all(_is_plain_name(n) for n in names)):
        raise WorkbenchError(
            f"{notebook}: metadata workbench.results must be a non-empty list of file names, got {names!r}"
        )
    return tuple(names)


def _is_plain_name(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


def is_complete(run_dir: Path) -> bool:
    """A run is complete when its run.json says it succeeded and every result it declared is there."""
    info = _json_dict(Path(run_dir) / "run.json")
    if info.get("status") != "ok":
        return False
    results = info.get("results", list(DEFAULT_RESULTS))
    return all(_is_plain_name(name) and (Path(run_dir) / name).is_file() for name in results)


def lock_path(runs_dir: Path, identity: str) -> Path:
    """The lock file that whoever executes run ``identity`` holds, across sweeps and processes."""
    return Path(runs_dir) / LOCKS_FOLDER / f"{identity}.lock"


def execute_run(
    notebook: str,
    params: dict,
    runs_dir: str,
    kernel_name: str = "python3",
    results: tuple[str, ...] = DEFAULT_RESULTS,
) -> RunOutcome:
    """Execute one run in a partial folder and rename it into ``runs_dir/<run-id>`` when it ends.

    The run is claimed with a lock first, so concurrent sweeps over one run store execute each
    combination once; a run another sweep holds is reported "busy". Safe to call from another
    process or a Dask worker: it touches only its own folders.
    """
    runs_dir = Path(runs_dir).resolve()  # the kernel runs in the notebook's folder
    identity = run_id(notebook, params)
    with fs.try_lock(lock_path(runs_dir, identity)) as claimed:
        if not claimed:
            return RunOutcome(identity, params, "busy")
        if is_complete(runs_dir / identity):
            return RunOutcome(identity, params, "skipped")
        if _is_foreign(runs_dir / identity):
            return RunOutcome(identity, params, "failed", error=_in_the_way(runs_dir / identity))
        with _removed_on_error(_make_partial(runs_dir, identity), identity) as partial:
            fs.write_json(partial / "params.json", json_safe(params))
            version = notebook_version(notebook)  # before it runs: the code it runs
            started = time.time()
            error = _execute(notebook, params, partial, kernel_name) or _missing_results(partial, results)
            info = {
                "run_id": identity,
                "notebook": str(notebook),
                "notebook_version": version,
                "status": "failed" if error else "ok",
                "started": started,
                "ended": time.time(),
                "error": error,
                "results": list(results),
                "metrics_version": _metrics_version(),
            }
            fs.write_json(partial / "run.json", json_safe(info))
            status = _publish(partial, runs_dir / identity, info["status"])
    return RunOutcome(identity, params, status, info["ended"] - started, error)


def _metrics_version() -> int:
    from workbench.core.stats import METRICS_VERSION

    return METRICS_VERSION


def _make_partial(runs_dir: Path, identity: str) -> Path:
    """A fresh partial folder, marked with its owner so that only the workbench ever cleans it."""
    partial = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{identity}-{os.getpid()}-", dir=runs_dir))
    with _removed_on_error(partial, identity):
        give_usual_mode(partial)
        fs.write_json(partial / OWNER_FILE, {**fs.owner(), "run_id": identity})
    return partial


@contextlib.contextmanager
def _removed_on_error(partial: Path, identity: str) -> Iterator[Path]:
    """Yield ``partial``; remove it if the block raises (a full disk, Ctrl-C), rather than leave it
    for the next sweep, and say in an OSError which run was lost."""
    try:
        yield partial
    except BaseException as err:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(err, OSError) and err.errno is not None and err.filename is not None:
            why = f"{err.strerror} (run {identity} not saved; its partial folder was removed)"
            raise OSError(err.errno, why, err.filename) from err
        raise


# The kernel's own log is not the notebook's output: jupyter_client interrupts every kernel as it shuts it
# down, and a kernel caught in a message handler then logs "ERROR | KeyboardInterrupt caught in kernel" to
# the sweep's terminal after a run that went well. Likewise the event loop's log: a SIGTERM to the sweep
# closes a kernel's sockets under it, and zmq logs "Socket operation on non-socket" with a traceback
# through tornado's logger. Errors in cells still reach the run (run.json).
QUIET_KERNEL = [
    "--log-level=CRITICAL",
    "--IPKernelApp.exec_lines=__import__('logging').getLogger('tornado').setLevel(50)",  # no user name
]


def _execute(notebook: str, params: dict, partial: Path, kernel_name: str) -> dict:
    """Run the notebook with ``results_dir`` set to ``partial``; returns the error, or {} on success."""
    import papermill

    try:
        _use_this_environments_kernel()
        for attempt in range(KERNEL_START_ATTEMPTS):
            try:
                papermill.execute_notebook(
                    notebook,
                    str(partial / "notebook.ipynb"),
                    parameters={**params, RESULTS_PARAMETER: str(partial)},
                    kernel_name=kernel_name,
                    cwd=str(Path(notebook).resolve().parent),
                    progress_bar=False,
                    extra_arguments=QUIET_KERNEL,
                )
                break
            except RuntimeError as err:
                # Kernels started at once can pick the same free TCP port (jupyter_client's race);
                # the loser dies before its first reply, having run nothing: start it again.
                if "kernel_info" not in str(err) or attempt == KERNEL_START_ATTEMPTS - 1:
                    raise
                log.warning("kernel for %s died while starting (%s); starting it again", notebook, err)
                time.sleep(1 + attempt)
    except papermill.PapermillExecutionError as err:
        return {
            "ename": err.ename,
            "evalue": err.evalue,
            "cell_index": err.cell_index,
            "cell_source": err.source,
        }
    except Exception as err:  # noqa: BLE001 - a kernel that won't start must not end the sweep
        return {"ename": type(err).__name__, "evalue": str(err), "cell_index": None, "cell_source": ""}
    return {}


def _missing_results(partial: Path, results: tuple[str, ...]) -> dict:
    """An error record if the notebook ended without writing a result it declared, else {}."""
    missing = [name for name in results if not (partial / name).is_file()]
    if not missing:
        return {}
    return {
        "ename": "MissingResults",
        "evalue": f"the notebook ended without writing {', '.join(missing)} into its {RESULTS_PARAMETER}",
        "cell_index": None,
        "cell_source": "",
    }


def _publish(partial: Path, final: Path, status: str) -> str:
    """Rename a finished run into place; returns its status, or "skipped" if it was a duplicate.

    A complete run already in place is kept and the duplicate discarded; an earlier failure is
    replaced; a folder that is not a run at all is never touched (this run then fails).
    """
    if is_complete(final):
        log.warning("%s was completed by another sweep meanwhile; discarding this duplicate", final)
        shutil.rmtree(partial)
        return "skipped"
    if _is_foreign(final):  # appeared while the run executed
        log.error("%s exists and is not a run; the finished run stays in %s", final, partial)
        (partial / OWNER_FILE).unlink()  # no longer the workbench's to clean up
        return "failed"
    if final.exists():  # an earlier failed attempt: set it aside, swap, then delete it
        old = _make_partial(final.parent, final.name)
        os.replace(final, old / "old")
        os.replace(partial, final)
        shutil.rmtree(old)
    else:
        os.rename(partial, final)
    (final / OWNER_FILE).unlink(missing_ok=True)
    return status


def _is_foreign(final: Path) -> bool:
    """Whether something that is not a run sits where a run's folder goes (never touched)."""
    return final.exists() and not (final / "run.json").is_file()


def _in_the_way(final: Path) -> dict:
    return {
        "ename": "FileExistsError",
        "evalue": f"{final} exists and is not a run; move it away to run this combination",
        "cell_index": None,
        "cell_source": "",
    }


def _use_this_environments_kernel() -> None:
    """Point the 'python3' kernel at this interpreter, whatever kernels the user has registered.

    The folder is named by the process id, which the system gives again once a process has ended:
    a spec left by an earlier process (of another environment, since deleted) is rewritten.
    """
    folder = Path(tempfile.gettempdir()) / f"workbench-kernels-{os.getpid()}"
    spec = folder / "kernels" / "python3" / "kernel.json"
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    text = json.dumps({"argv": argv, "display_name": "workbench", "language": "python"})
    if not spec.is_file() or spec.read_text() != text:
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(text)
    paths = os.environ.get("JUPYTER_PATH", "").split(os.pathsep)
    if str(folder) not in paths:
        os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder), *filter(None, paths)])


# --- sweeps -----------------------------------------------------------------------------------


def remove_partials(runs_dir: Path) -> list[Path]:
    """Delete the partial folders of killed runs; returns those removed.

    Only folders the workbench made (they carry its owner file) are candidates, and only when
    nobody holds their run's lock and their owner process is gone: a folder of a live sweep, or
    one the user named ``.partial-something``, is left alone.
    """
    removed = []
    for path in Path(runs_dir).glob(f"{PARTIAL_PREFIX}*"):
        record = _owner_record(path)
        if record is None:
            continue
        with fs.try_lock(lock_path(runs_dir, record["run_id"])) as free:
            if free and fs.owner_gone(record):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _owner_record(path: Path) -> dict | None:
    record = _json_dict(path / OWNER_FILE)
    return record if _is_plain_name(record.get("run_id")) else None


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

    ``runs_dir`` may be relative: it is resolved here, so results land in it whatever folder the
    notebook's kernel runs in. Runs that another sweep is executing come back as "busy".

    Raises:
        ValueError: if ``workers`` < 1, the notebook's result declaration is malformed, or
            ``runs_dir`` holds complete runs of an earlier version of the notebook.
        OSError: if runs can't be created in ``runs_dir`` (before any run starts).

    Example (not run here: it executes notebooks)::

        notebook = "notebooks/01_explore_threshold.ipynb"
        runs = expand_grid(notebook, {"epsilon": [1e-4, 1e-3]}, seeds=[0, 1])
        sweep(notebook, runs, workers=2)
    """
    from tqdm.auto import tqdm

    if workers < 1:
        raise WorkbenchError(f"workers must be >= 1, got {workers}")
    runs_dir = Path(runs_dir).resolve()
    _check_writable(runs_dir)
    remove_partials(runs_dir)
    notebook = str(Path(notebook).resolve())
    check_one_notebook_version(notebook, runs_dir)
    results = declared_results(notebook)
    todo = [p for p in runs if not is_complete(runs_dir / run_id(notebook, p))]
    outcomes = [RunOutcome(run_id(notebook, p), p, "skipped") for p in runs if p not in todo]
    with tqdm(total=len(runs), initial=len(outcomes), desc="runs", unit="run", disable=not progress) as bar:
        for outcome in _execute_all(notebook, todo, str(runs_dir), results, workers, dask_address):
            outcomes.append(outcome)
            bar.update()
            bar.set_postfix(failed=sum(o.status == "failed" for o in outcomes))
    return outcomes


def _check_writable(runs_dir: Path) -> None:
    """Fail before the first run, naming the folder, if runs can't be created in ``runs_dir``."""
    (runs_dir / LOCKS_FOLDER).mkdir(parents=True, exist_ok=True)
    os.rmdir(tempfile.mkdtemp(prefix=".writable-", dir=runs_dir))


def _execute_all(notebook: str, todo: list[dict], runs_dir: str, results, workers: int, dask_address):
    run = functools.partial(execute_run, results=results)
    if dask_address:
        from distributed import Client, as_completed

        with Client(dask_address, timeout="20s") as client:
            futures = [client.submit(run, notebook, p, runs_dir, pure=False) for p in todo]
            for future in as_completed(futures):
                yield future.result()
    elif workers == 1:
        for params in todo:
            yield run(notebook, params, runs_dir)
    else:
        import multiprocessing

        # a Pool, not a ProcessPoolExecutor: leaving the block (an interruption too) terminates its
        # workers, where the executor's went on running the queued notebooks after a SIGTERM
        with multiprocessing.Pool(workers, initializer=_leave_signals_to_the_sweep) as pool:
            yield from pool.imap_unordered(functools.partial(_run_params, run, notebook, runs_dir), todo)


def _leave_signals_to_the_sweep() -> None:
    """In a pool worker: Ctrl-C is the sweep's to handle, and the SIGTERM by which the pool ends its
    workers must end them quietly (a forked worker inherited the CLI's handler, which printed a
    KeyboardInterrupt traceback at the end of every --workers sweep)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_params(run, notebook: str, runs_dir: str, params: dict) -> RunOutcome:
    return run(notebook, params, runs_dir)


# --- loading ----------------------------------------------------------------------------------


@dataclass
class BadRun:
    """A run folder that could not be read, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def scan(runs_dir: str | Path = "runs") -> tuple[pd.DataFrame, list[BadRun]]:
    """Read every finished run (ok or failed), and list the run folders that could not be read.

    Returns:
        The runs as one DataFrame (run_id, status, seconds, params, ``metrics.``-prefixed metrics,
        and ``error`` for failures), and the unreadable runs, each with its path and the reason.
        Partial folders, hidden folders and folders that are not runs (no run.json or params.json)
        are left out of both.

    Raises:
        FileNotFoundError: if ``runs_dir`` is not a folder.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        what = "is not a folder" if runs_dir.exists() else "not found"
        raise FileNotFoundError(f"runs folder {what}: {runs_dir}")
    rows, bad = [], []
    for folder in sorted(runs_dir.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if not ((folder / "run.json").exists() or (folder / "params.json").exists()):
            continue  # not a run: a report folder or the user's own
        try:
            rows.append(_read_run(folder))
        except _Unreadable as err:
            bad.append(BadRun(folder, str(err)))
    import pandas as pd

    return pd.DataFrame(rows), bad


def load(runs_dir: str | Path = "runs") -> pd.DataFrame:
    """All finished runs as one DataFrame (see ``scan``); unreadable runs are logged and left out.

    Parameter columns keep their names; metric columns are prefixed ``metrics.`` (nested metrics
    are flattened with dots).
    """
    frame, bad = scan(runs_dir)
    for run in bad:
        log.warning("skipping run %s", run)
    return frame


class _Unreadable(Exception):
    """A run folder whose files are missing or damaged."""


def _read_run(folder: Path) -> dict:
    info = _read_json_object(folder / "run.json")
    if info.get("status") not in ("ok", "failed"):
        raise _Unreadable(f"run.json: status is {info.get('status')!r}, expected 'ok' or 'failed'")
    row = {"run_id": folder.name, "status": info["status"], "seconds": _duration(info)}
    row["metrics_version"] = info.get("metrics_version", 1)  # runs written before the field: version 1
    row.update(_read_json_object(folder / "params.json"))
    metrics_path = folder / "metrics.json"
    if info["status"] == "ok" or metrics_path.exists():
        row.update(_flatten(_read_json_object(metrics_path), "metrics."))
    if info.get("error"):
        row["error"] = describe_error(info["error"])
    return row


def _read_json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise _Unreadable(f"{path.name} is missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _Unreadable(f"{path.name}: {err}") from None
    except ValueError as err:
        raise _Unreadable(f"{path.name} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise _Unreadable(f"{path.name} holds a {type(value).__name__}, expected a JSON object")
    return value


def _duration(info: dict) -> float:
    try:
        return float(info["ended"]) - float(info["started"])
    except (KeyError, TypeError, ValueError):
        return math.nan


def _flatten(values: dict, prefix: str) -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            flat[f"{prefix}{key}"] = value
    return flat
