"""Command line: ``python -m workbench {summary,download,prepare,notebook,sweep,report,class} ...``.

The whole parser is built here; the library modules behind the commands only return values.

python -m workbench summary                       # the offline phantom dataset
python -m workbench summary data/pneumoniamnist.npz ../shared/data/pneumoniamnist.npz
python -m workbench download breastmnist          # into data/, MD5-checked
python -m workbench prepare                       # generate the phantom volumes now
python -m workbench notebook NOTEBOOK OUT -p NAME VALUE [--prepare-only]   # papermill, never over your files
python -m workbench sweep NOTEBOOK -p NAME VALUE... [--seeds 0 1]
python -m workbench report                        # runs/report/report.html
python -m workbench class prepare                 # phantom data + the dashboard's baseline, once
python -m workbench class generate --course ~/course   # nbgrader course from the teacher's sources
python -m workbench class grades --course ~/course --lab pruning_lesson   # per-cell scores, copies
python -m workbench class serve ~/pruning_lesson  # JupyterLab on a student's released lab

An error is one line naming the file and the cause, with exit code 2; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.core.fs import OVERWRITE_HELP


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run one subcommand; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.run(args)
    except Exception as err:  # noqa: BLE001 - the CLI's boundary: every error becomes one line
        if args.verbose:
            traceback.print_exc()
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    """The error as one line: the file and the cause for OS errors, else the message.

    Errors the workbench raises on purpose (bad input, missing or foreign files) carry their own
    message; anything else is named by its type, with a hint that ``-v`` shows where it came from.
    """
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    elif isinstance(err, OSError | ValueError | ConnectionError | LookupError):
        text = str(err) or type(err).__name__
    else:
        text = f"{type(err).__name__}: {err} (run with -v for the traceback)"
    return " ".join(text.split())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workbench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the workbench does")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _data_commands(commands)
    _run_commands(commands)
    _class_commands(commands)
    return parser


def _data_commands(commands) -> None:
    summary = commands.add_parser("summary", help="print sizes, class balance and image shape of datasets")
    summary.add_argument(
        "datasets", nargs="*", default=["phantom"], help="'phantom', a MedMNIST name, .npz or folder"
    )
    summary.set_defaults(run=_summary)

    fetch = commands.add_parser("download", help="download a MedMNIST dataset into data/ (MD5-checked)")
    fetch.add_argument("name", help="e.g. pneumoniamnist, breastmnist, dermamnist")
    fetch.set_defaults(run=_download)

    prepare = commands.add_parser("prepare", help="generate the offline phantom dataset if it is missing")
    prepare.set_defaults(run=_prepare)


def _run_commands(commands) -> None:
    notebook = commands.add_parser(
        "notebook", help="write a notebook with parameters set, executed or --prepare-only (as papermill)"
    )
    notebook.add_argument("notebook", help="a notebook with a 'parameters' cell")
    notebook.add_argument("out", help="the .ipynb to write (a file the workbench did not write is kept)")
    notebook.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a parameter and its value, e.g. -p epsilon 1e-3 (repeatable)",
    )
    notebook.add_argument("--prepare-only", action="store_true", help="set the parameters, don't execute")
    notebook.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    notebook.set_defaults(run=_notebook)

    sweep = commands.add_parser("sweep", help="run a notebook once per combination of parameter values")
    sweep.add_argument("notebook", help="a notebook with a 'parameters' cell and a results_dir parameter")
    sweep.add_argument(
        "-p",
        "--param",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a parameter and its values, e.g. -p epsilon 1e-4 1e-3 (repeatable)",
    )
    sweep.add_argument("--grid", help="a YAML file: parameters: {name: [values]}, seeds: [..]")
    sweep.add_argument("--seeds", nargs="+", type=int, help="seeds to repeat every combination with")
    sweep.add_argument("--runs", default="runs", help="the run store folder (default: runs)")
    sweep.add_argument("--workers", type=int, default=1, help="notebooks run at once on this machine")
    sweep.add_argument(
        "--dask", metavar="ADDRESS", help="submit runs to a Dask cluster, e.g. tcp://host:8786"
    )
    sweep.set_defaults(run=_sweep)

    report = commands.add_parser("report", help="summary table and plots of the runs in a run store")
    report.add_argument("--runs", default="runs", help="the run store folder (default: runs)")
    report.add_argument("--out", help="where to write the report (default: <runs>/report)")
    report.add_argument(
        "--x", help="x axis: a swept parameter (default epsilon) or a metric such as sparsity"
    )
    report.add_argument("--metric", nargs="+", default=["accuracy", "auc"], help="metrics to plot")
    report.add_argument("--group", help="one line per value of this parameter (default criterion)")
    report.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    report.set_defaults(run=_report)


def _class_commands(commands) -> None:
    group = commands.add_parser("class", help="a class lab: baseline, nbgrader course, grades")
    actions = group.add_subparsers(required=True, metavar="ACTION")
    prepare = actions.add_parser("prepare", help="phantom data + notebook 01's baseline in WORKBENCH_DATA")
    prepare.add_argument("--epochs", type=int, default=12, help="as notebook 01's epochs (default 12)")
    prepare.set_defaults(run=_class_prepare)
    generate = actions.add_parser("generate", help="teacher sources -> an nbgrader course, generated")
    _course_arguments(generate)
    generate.add_argument("--lab", nargs="+", help="labs to generate (default: all)")
    generate.add_argument("--exchange", help="nbgrader's exchange folder, for release/fetch/submit/collect")
    generate.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    generate.set_defaults(run=_class_generate)
    grades = actions.add_parser("grades", help="per-cell scores and identical submissions")
    _course_arguments(grades)
    grades.add_argument("--lab", required=True, help="the lab (nbgrader assignment), e.g. pruning_lesson")
    grades.add_argument("--out", help="also write the table as a CSV here")
    grades.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    grades.set_defaults(run=_class_grades)
    serve = actions.add_parser("serve", help="JupyterLab serving a folder (a student's released lab)")
    serve.add_argument("folder", help="the folder to open, e.g. the released pruning_lesson/")
    serve.add_argument("--port", type=int, help="the port (default: JupyterLab's)")
    serve.set_defaults(run=_class_serve)


def _course_arguments(parser) -> None:
    parser.add_argument("--course", required=True, help="the nbgrader course folder (keep it from students)")
    parser.add_argument("--course-id", default="workbench", help="nbgrader's course id (default workbench)")


def _summary(args) -> int:
    from workbench.data.sources import load_dataset

    for spec in args.datasets:
        print(load_dataset(spec).summary())
    return 0


def _download(args) -> int:
    from workbench.core.paths import writable
    from workbench.data.medmnist import download

    # a read-only shared data folder: into the user's folder, where load_dataset also looks
    print(f"saved {download(args.name, writable(f'{args.name}.npz').parent)}")
    return 0


def _prepare(args) -> int:
    from workbench.data.phantom import ensure_phantoms
    from workbench.data.sources import phantom_root

    print(f"phantom volumes ready in {ensure_phantoms(phantom_root())}")
    return 0


def _notebook(args) -> int:
    from workbench.runs.store import run_notebook

    out = run_notebook(
        args.notebook,
        args.out,
        dict(args.param),
        prepare_only=args.prepare_only,
        overwrite=args.overwrite,
        allow="--overwrite",
    )
    print(f"{'prepared' if args.prepare_only else 'executed'} {out}")
    return 0


def _sweep(args) -> int:
    from workbench.runs.store import describe_error, expand_grid, read_grid_file, sweep

    grid, seeds = read_grid_file(args.grid) if args.grid else ({}, None)
    for name, *values in args.param:
        if not values:
            raise WorkbenchError(f"-p {name} needs at least one value")
        grid[name] = values
    runs = expand_grid(args.notebook, grid, args.seeds or seeds)
    print(f"{len(runs)} runs of {args.notebook} into {args.runs}/")
    signal.signal(signal.SIGTERM, _interrupt)  # so a pool's workers are ended too, as on Ctrl-C
    try:
        outcomes = sweep(args.notebook, runs, args.runs, workers=args.workers, dask_address=args.dask)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; the same command resumes the rest", file=sys.stderr)
        return 130
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "busy", "failed")}
    print(
        f"done: {counts['ok']} ran, {counts['skipped']} already complete (skipped), "
        f"{counts['busy']} running in another sweep, {counts['failed']} failed"
    )
    for outcome in outcomes:
        if outcome.status == "failed":
            print(f"  FAILED {outcome.run_id} {outcome.params}: {describe_error(outcome.error)}")
    return 1 if counts["failed"] else 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _report(args) -> int:
    from workbench.runs.report import write_report

    report = write_report(
        args.runs,
        args.out,
        x=args.x,
        metrics=tuple(args.metric),
        group=args.group,
        overwrite=args.overwrite,
        allow="--overwrite",
    )
    for bad in report.skipped:
        print(f"skipped {bad}", file=sys.stderr)
    print(report.table.to_string(index=False))
    print(f"report written to {report.page}")
    return 0


def _class_prepare(args) -> int:
    from workbench.course.classroom import prepare_classroom

    print(f"classroom data ready in {prepare_classroom(epochs=args.epochs)}")
    return 0


def _class_generate(args) -> int:
    from workbench.course import grading

    course = grading.Course(args.course, args.exchange, args.course_id)
    for lab in args.lab or grading.labs():
        grading.start_course(course, lab, overwrite=args.overwrite, allow="--overwrite")
        print(f"released version of {lab}: {grading.generate(course, lab)}")
    return 0


def _class_grades(args) -> int:
    from workbench.core import fs
    from workbench.course import grading

    table = grading.grades(grading.Course(args.course, course_id=args.course_id), args.lab)
    print(table.to_string(index=False))
    if args.out:
        out = Path(args.out)
        with fs.claim(out.parent, [out.name], args.overwrite, allow="--overwrite"):
            fs.write_atomically(out, table.to_csv(index=False))
        print(f"written to {out}")
    return 0


def _class_serve(args) -> int:
    import os

    from workbench.course.grading import serve_command

    command = serve_command(args.folder, args.port)
    os.execv(command[0], command)  # JupyterLab takes over this process, as `jupyter lab` would
    return 0


if __name__ == "__main__":
    sys.exit(main())
