"""Compare the runs of a sweep: a summary table per group of runs (over seeds) and metric plots.

python -m workbench report --runs runs --out runs/report

Numbers are summarised as mean ± std over the runs of a group. A metric ``x`` that comes with
``x_low`` and ``x_high`` (a confidence interval, e.g. ``auc``, ``sensitivity``) is shown as
``x [low, high]``, with the interval bounds averaged over the group's runs, and ``x_p`` (e.g.
``auc_difference_p``) is added as its p-value. Text metrics (e.g. the ``noninferiority`` verdict)
are counted per group: "non-inferior 2/3, inconclusive 1/3".
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.core import fs
from workbench.core.errors import WorkbenchError
from workbench.core.stats import METRIC_CHANGES
from workbench.runs.store import BadRun, scan
from workbench.view import plots

log = logging.getLogger(__name__)

RUN_COLUMNS = {"run_id", "status", "seconds", "error", "seed", "results_dir", "metrics_version"}
MANIFEST = ".workbench-report.json"  # read only: where reports before fs.claim listed the files they wrote
TALLY = " tally"  # summary column suffix for counted text metrics
_PAGE_HEAD = "<html><head><meta charset='utf-8'><title>Sweep report</title></head><body>"


def parameter_columns(frame: pd.DataFrame) -> list[str]:
    """The swept parameters other than the seed: the columns runs are grouped by."""
    return [c for c in frame.columns if c not in RUN_COLUMNS and not c.startswith("metrics.")]


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Metric columns holding a number in at least one run (text in other runs counts as missing),
    or nothing at all (an undefined metric, written as null, is shown as undefined)."""
    return [
        c
        for c in frame.columns
        if c.startswith("metrics.") and (frame[c].map(_is_number).any() or frame[c].isna().all())
    ]


def text_columns(frame: pd.DataFrame) -> list[str]:
    """Metric columns that hold only text or booleans (such as a verdict), to be counted, not averaged."""
    return [
        c
        for c in frame.columns
        if c.startswith("metrics.") and _every_value(frame[c], lambda v: isinstance(v, str | bool))
    ]


def _every_value(values: pd.Series, test) -> bool:
    """Whether ``values`` hold something and every value present passes ``test``."""
    present = values.dropna()
    return len(present) > 0 and bool(present.map(test).all())


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and _is_number(value)


def summarize(frame: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Per combination of the other parameters: mean, std and count of each numeric metric, a tally
    of each text metric, and the number of runs.

    A metric that repeats a swept parameter unchanged (notebooks often echo ε) is left out; one that
    differs from it is kept as ``<name> (result)``.
    """
    done = frame[frame["status"] == "ok"]
    if done.empty:
        raise WorkbenchError("no successful runs to summarize")
    keys = parameter_columns(done)
    done = _with_defaults_named(done, keys)
    numeric = _without_echoes(done, metrics or metric_columns(done), keys)
    text = _without_echoes(done, text_columns(done), keys)
    values = done.assign(**{c: done[c].map(lambda v: v if _is_number(v) else np.nan) for c in numeric})
    values = values.assign(**{k: values[k].map(_hashable) for k in keys})  # list parameters group too
    _warn_about_non_numbers(done, numeric)
    grouped = values.groupby(keys, dropna=False) if keys else values.assign(_all=0).groupby("_all")
    table = grouped[numeric].agg(["mean", "std", "count"])
    table.columns = [f"{_label(metric, keys)} {stat}" for metric, stat in table.columns]
    for column in text:
        table[f"{_label(column, keys)}{TALLY}"] = grouped[column].agg(_tally)
    table["runs"] = grouped.size()
    table = table.reset_index().drop(columns="_all", errors="ignore")
    # counts (images, changed decisions) are read as counts: "12", not "12.000"
    table.attrs["counts"] = [_label(c, keys) for c in numeric if _every_value(done[c], _is_integer)]
    return table


NOTEBOOK_DEFAULT = "(notebook default)"


def _with_defaults_named(done: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Runs of a sweep that did not set a text parameter (say criterion) ran with the notebook's
    default: name it, so they form a group of their own in the table and the plots (NaN fell
    out of the plots). A missing number stays missing: it cannot be placed on an axis."""
    text = [k for k in keys if done[k].isna().any() and _every_value(done[k], lambda v: isinstance(v, str))]
    return done.assign(**{k: done[k].fillna(NOTEBOOK_DEFAULT) for k in text})


def _hashable(value):
    return json.dumps(value) if isinstance(value, list | dict) else value


def _without_echoes(done: pd.DataFrame, columns: list[str], keys: list[str]) -> list[str]:
    def echoes(column: str) -> bool:
        name = column.removeprefix("metrics.")
        return name in keys and (done[column].astype(str) == done[name].astype(str)).all()

    return [c for c in columns if not echoes(c)]


def _label(column: str, keys: list[str]) -> str:
    name = column.removeprefix("metrics.")
    return f"{name} (result)" if name in keys else name


def _warn_about_non_numbers(done: pd.DataFrame, numeric: list[str]) -> None:
    for column in numeric:
        odd = done[done[column].notna() & ~done[column].map(_is_number)]
        for run, value in zip(odd["run_id"], odd[column], strict=True):
            log.warning("run %s: %s = %r is not a number; left out of its mean", run, column, value)


def _tally(values: pd.Series) -> str:
    """'non-inferior 2/3, inconclusive 1/3': each value's share of the group's runs, most first."""
    counts = values.fillna("missing").astype(str).value_counts()
    return ", ".join(f"{value} {count}/{len(values)}" for value, count in counts.items())


def with_plus_minus(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The summary for reading: 'mean ± std', 'x [low, high]' (with 'p=' if there is ``x_p``), tallies."""
    means = [c.removesuffix(" mean") for c in summary.columns if c.endswith(" mean")]
    parts = {f"{m}_low" for m in means if {f"{m}_low", f"{m}_high"} <= set(means)}
    parts |= {f"{m}_high" for m in means if f"{m}_low" in parts}
    parts |= {f"{m}_p" for m in means if f"{m}_low" in parts and f"{m}_p" in means}
    out = summary[[c for c in summary.columns if not _is_statistic(c)]].copy()
    for name in means:
        if name in parts:
            continue
        text = _mean_text(summary, name, digits)
        if f"{name}_low" in parts:
            text = text + " " + _interval_text(summary, name, digits)
            label = f"{name} [CI]"
            if f"{name}_p" in parts:
                text = text + " p=" + summary[f"{name}_p mean"].map(_p_text)
                label = f"{name} [CI] p"
        else:
            label = name
        out[label] = text
    for column in summary.columns:
        if column.endswith(TALLY):
            out[column.removesuffix(TALLY)] = summary[column]
    return out[[c for c in out.columns if c != "runs"] + ["runs"]]


def _is_statistic(column: str) -> bool:
    return column.endswith((" mean", " std", " count", TALLY))


def _mean_text(summary: pd.DataFrame, name: str, digits: int) -> pd.Series:
    """'0.941' for one run, '0.941 ± 0.012' for several, 'undefined' where no run had a number;
    a count is '12' for one run, '12.5 ± 0.7' for several."""

    is_count = name in summary.attrs.get("counts", ())

    def text(mean, std, count) -> str:
        if not np.isfinite(mean):
            return "undefined"
        if name.endswith("_p"):  # a p-value: its size matters, not 3 decimals ("0.000 ± 0.000")
            return f"mean {_p_text(mean)}" if count > 1 else _p_text(mean)
        if is_count:  # a mean count may be 12.5
            return f"{mean:.1f} ± {std:.1f}" if count > 1 else f"{mean:.0f}"
        return f"{mean:.{digits}f} ± {std:.{digits}f}" if count > 1 else f"{mean:.{digits}f}"

    columns = (summary[f"{name} mean"], summary[f"{name} std"], summary[f"{name} count"])
    return pd.Series([text(*row) for row in zip(*columns, strict=True)], index=summary.index)


def _interval_text(summary: pd.DataFrame, name: str, digits: int) -> pd.Series:
    low, high = summary[f"{name}_low mean"], summary[f"{name}_high mean"]
    return pd.Series(
        [
            f"[{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(lo) and np.isfinite(hi) else "[undefined]"
            for lo, hi in zip(low, high, strict=True)
        ],
        index=summary.index,
    )


def _p_text(p: float) -> str:
    return f"{p:.2g}" if np.isfinite(p) else "undefined"


@dataclass
class Report:
    """What ``write_report`` made: the page, the readable summary table and the runs it skipped."""

    page: Path
    table: pd.DataFrame
    skipped: list[BadRun] = field(default_factory=list)


def write_report(
    runs_dir: str | Path = "runs",
    out_dir: str | Path | None = None,
    *,
    x: str | None = None,
    metrics: tuple[str, ...] = ("accuracy", "auc"),
    group: str | None = None,
    overwrite: bool = False,
    allow: str = "overwrite=True",
) -> Report:
    """Write summary.csv, summary.html, one PNG per metric and report.html into ``out_dir``.

    Runs that can't be read are skipped and listed (``Report.skipped``, and in the page).

    Args:
        x: the x axis: a swept parameter (default: ``epsilon`` if swept) or a metric like ``sparsity``.
        group: one line per value of this parameter (default: ``criterion`` if swept).
        overwrite: replace files of those names that the workbench did not write (see ``fs.claim``).
        allow: how the caller says ``overwrite``, for the refusal's message (the CLI: ``--overwrite``).

    Raises:
        FileNotFoundError: if ``runs_dir`` is not a folder.
        FileExistsError: if ``out_dir`` holds a file of the same name that the workbench did not
            write, and not ``overwrite`` (nothing is written).
        ValueError: if there is no successful run to summarise, or ``group`` is not a swept parameter.
    """
    frame, skipped = scan(runs_dir)
    if frame.empty or not (frame["status"] == "ok").any():
        raise WorkbenchError(f"no successful runs in {runs_dir}{_why_none(frame, skipped)}")
    notes = _mixed_versions(frame[frame["status"] == "ok"])
    summary = summarize(frame)
    keys = parameter_columns(frame[frame["status"] == "ok"])
    x = x or ("epsilon" if "epsilon" in keys else keys[0] if keys else None)
    if group is None and "criterion" in keys and x != "criterion":
        group = "criterion"
    if group is not None and group not in keys:
        raise WorkbenchError(
            f"group must be one of the swept parameters {keys} (seeds are averaged over), got {group!r}"
        )
    plotted = [m for m in metrics if _plottable(summary, m, x)]
    out = Path(out_dir or Path(runs_dir) / "report")
    names = ["summary.csv", "summary.html", "report.html", *(f"{m}.png" for m in plotted)]
    readable = with_plus_minus(summary)
    with fs.claim(out, names, overwrite, allow=allow, ours=_earlier_report(out, names)):
        fs.write_atomically(out / "summary.csv", summary.to_csv(index=False))
        fs.write_atomically(out / "summary.html", readable.to_html(index=False))
        images = {f"{m}.png": _plot(summary, x, m, group) for m in plotted}
        for name, png in images.items():
            fs.write_atomically(out / name, png)
        failed = frame[frame["status"] == "failed"]
        fs.write_atomically(out / "report.html", _html(readable, images, failed, skipped, notes))
    return Report(out / "report.html", readable, skipped)


def _why_none(frame: pd.DataFrame, skipped: list[BadRun]) -> str:
    """What the runs folder holds instead of successful runs: failed and unreadable runs, first of each."""
    why = ""
    if not frame.empty:
        first = frame.iloc[0]
        error = first.get("error")
        error = error if isinstance(error, str) else "no error recorded"
        why += f"; {len(frame)} failed, first {first['run_id']}: {error}"
    if skipped:
        why += f"; skipped {len(skipped)} unreadable, first {skipped[0]}"
    return why


def _plottable(summary: pd.DataFrame, metric: str, x: str | None) -> bool:
    if f"{metric} mean" in summary and x is not None:
        return True
    log.warning("no metric %r or x axis in these runs; skipping its plot", metric)
    return False


def _earlier_report(out: Path, names: list[str]) -> set[str]:
    """The files of a report written before ``fs.claim``: listed in its own manifest, or, before
    reports kept one, recognised by its page (neither counts once ``fs.claim`` keeps the record)."""
    if (out / fs.MANIFEST).exists():
        return set()
    try:
        return set(json.loads((out / MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        page = (out / "report.html").read_text()
    except (OSError, UnicodeDecodeError):
        return set()
    return set(names) if page.startswith(_PAGE_HEAD) and page.rstrip().endswith("</html>") else set()


def _plot(summary: pd.DataFrame, x: str, metric: str, group: str | None) -> bytes:
    from matplotlib.figure import Figure  # a figure of its own: no pyplot state, no backend switch

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    plots.metric_errorbars(_x_column(summary, x), x, metric, group, ax=ax)
    ax.set_title(f"{metric}: mean ± std over seeds")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _x_column(summary: pd.DataFrame, x: str) -> pd.DataFrame:
    """Allow a metric as x axis: use its mean (e.g. sparsity mean)."""
    if x in summary:
        return summary
    if f"{x} mean" in summary:
        return summary.assign(**{x: summary[f"{x} mean"]})
    raise WorkbenchError(
        f"x must be a swept parameter or a metric of these runs, got {x!r}; columns: {list(summary.columns)}"
    )


def _mixed_versions(done: pd.DataFrame) -> list[str]:
    """A warning when runs were written by versions whose metrics mean different things."""
    versions = sorted(set(done.get("metrics_version", pd.Series(dtype=int))))
    if len(versions) < 2:
        return []
    between = [v for v in METRIC_CHANGES if versions[0] < v <= versions[-1]]
    changes = [f"from version {v}, {METRIC_CHANGES[v]}" for v in between]
    note = (
        f"these runs mix metric versions {versions}: {'; '.join(changes)}; sweep again into a new runs "
        "folder to compare them"
    )
    log.warning(note)
    return [note]


def _html(readable: pd.DataFrame, images: dict[str, bytes], failed: pd.DataFrame, skipped, notes=()) -> str:
    parts = [
        _PAGE_HEAD,
        "<h1>Sweep report</h1>",
        *(f"<p style='color:darkorange'>{html.escape(note)}</p>" for note in notes),
        readable.to_html(index=False),
    ]
    for name, png in images.items():
        encoded = base64.b64encode(png).decode()
        parts.append(f"<h2>{html.escape(Path(name).stem)}</h2><img src='data:image/png;base64,{encoded}'>")
    if not failed.empty:
        table = failed.reindex(columns=["run_id", "error"]).to_html(index=False)
        parts.append(f"<h2>Failed runs</h2>{table}")
    if skipped:
        items = "".join(f"<li>{html.escape(str(bad))}</li>" for bad in skipped)
        parts.append(f"<h2>Unreadable runs (skipped)</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
