"""Compare the runs of a sweep: a summary table (mean ± std over seeds) and metric plots.

python -m workbench report --runs runs --out runs/report
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path

import pandas as pd

from workbench import plots
from workbench.runs import load

log = logging.getLogger(__name__)

RUN_COLUMNS = {"run_id", "status", "seconds", "error", "seed", "results_dir"}


def parameter_columns(frame: pd.DataFrame) -> list[str]:
    """The swept parameters other than the seed: the columns runs are grouped by."""
    return [c for c in frame.columns if c not in RUN_COLUMNS and not c.startswith("metrics.")]


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric metric columns."""
    return [c for c in frame.columns if c.startswith("metrics.") and pd.api.types.is_numeric_dtype(frame[c])]


def summarize(frame: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Mean, std and count over seeds of each metric, per combination of the other parameters."""
    done = frame[frame["status"] == "ok"]
    if done.empty:
        raise ValueError("no successful runs to summarize")
    metrics = metrics or metric_columns(done)
    keys = parameter_columns(done)
    grouped = done.groupby(keys, dropna=False) if keys else done.assign(_all=0).groupby("_all")
    table = grouped[metrics].agg(["mean", "std", "count"])
    table.columns = [f"{metric.removeprefix('metrics.')} {stat}" for metric, stat in table.columns]
    return table.reset_index().drop(columns="_all", errors="ignore")


def with_plus_minus(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Replace each 'mean'/'std' pair by one 'mean ± std' text column, for reading."""
    out = summary[[c for c in summary.columns if not c.endswith((" mean", " std", " count"))]].copy()
    for column in summary.columns:
        if column.endswith(" mean"):
            name = column.removesuffix(" mean")
            std = summary[f"{name} std"].fillna(0.0)
            out[name] = [
                f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(summary[column], std, strict=True)
            ]
    runs = [c for c in summary.columns if c.endswith(" count")]
    if runs:
        out["seeds"] = summary[runs[0]]
    return out


def write_report(
    runs_dir: str | Path = "runs",
    out_dir: str | Path | None = None,
    *,
    x: str | None = None,
    metrics: tuple[str, ...] = ("accuracy", "auc"),
    group: str | None = None,
) -> Path:
    """Write summary.csv, summary.html, one PNG per metric and report.html; returns report.html.

    Args:
        x: the x axis: a swept parameter (default: ``epsilon`` if swept) or a metric like ``sparsity``.
        group: one line per value of this parameter (default: ``criterion`` if swept).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = load(runs_dir)
    if frame.empty:
        raise ValueError(f"no runs found in {runs_dir}")
    out = Path(out_dir or Path(runs_dir) / "report")
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(frame)
    keys = parameter_columns(frame[frame["status"] == "ok"])
    x = x or ("epsilon" if "epsilon" in keys else keys[0] if keys else None)
    group = (
        group if group is not None else ("criterion" if "criterion" in keys and x != "criterion" else None)
    )
    summary.to_csv(out / "summary.csv", index=False)
    readable = with_plus_minus(summary)
    (out / "summary.html").write_text(readable.to_html(index=False))
    images = []
    for metric in metrics:
        if f"{metric} mean" not in summary or x is None:
            log.warning("no metric %r or x axis in these runs; skipping its plot", metric)
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        plots.metric_errorbars(_x_column(summary, x), x, metric, group, ax=ax)
        ax.set_title(f"{metric}: mean ± std over seeds")
        fig.savefig(out / f"{metric}.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        images.append(out / f"{metric}.png")
    failed = frame[frame["status"] == "failed"]
    page = out / "report.html"
    page.write_text(_html(readable, images, failed))
    return page


def _x_column(summary: pd.DataFrame, x: str) -> pd.DataFrame:
    """Allow a metric as x axis: use its mean (e.g. sparsity mean)."""
    if x in summary:
        return summary
    if f"{x} mean" in summary:
        return summary.assign(**{x: summary[f"{x} mean"]})
    raise ValueError(
        f"x must be a swept parameter or a metric of these runs, got {x!r}; columns: {list(summary.columns)}"
    )


def _html(readable: pd.DataFrame, images: list[Path], failed: pd.DataFrame) -> str:
    parts = [
        "<html><head><meta charset='utf-8'><title>Sweep report</title></head><body>",
        "<h1>Sweep report</h1>",
    ]
    parts.append(readable.to_html(index=False))
    for image in images:
        encoded = base64.b64encode(image.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(image.stem)}</h2><img src='data:image/png;base64,{encoded}'>")
    if not failed.empty:
        parts.append("<h2>Failed runs</h2>" + failed[["run_id", "error"]].to_html(index=False))
    parts.append("</body></html>")
    return "\n".join(parts)
