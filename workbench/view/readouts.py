"""What the dashboard shows as text: the readout above the figure, the evidence line, the per-layer
table and refusals, as HTML built from an explorer's answers (no widgets: testable as strings)."""

from __future__ import annotations

import html

import pandas as pd

from workbench.core.errors import UnreachableGoal, WorkbenchError
from workbench.explore.points import GoalPoint, Point

# Shown only once the page has lost its kernel (it crashed or was shut down): ipywidgets then marks
# every view "jupyter-widgets-disconnected". Plain CSS, because a dead kernel cannot send a message.
KERNEL_LOST = (
    "<style>.wb-kernel-lost{display:none;color:#b00020;font-weight:bold}"
    ".jupyter-widgets-disconnected .wb-kernel-lost{display:inline}</style>"
    "<span class='wb-kernel-lost'>The kernel has stopped (it crashed or was shut down), so the dashboard "
    "no longer updates. Reload the page (Voilà) or restart the kernel and run all cells (JupyterLab).</span>"
)
SIDE_BY_SIDE = ("accuracy", "auc", "sensitivity", "specificity")
# Every term the readout uses, defined where it first appears: as a tooltip on the term, and in the
# glossary line under the readout (a tooltip does not show on a projector or a touch screen).
GLOSSARY = {
    "sparsity": "the fraction of weights pruned (set to zero)",
    "ε": "the threshold: a weight whose score is below ε is pruned",
    "estimate": "estimate (n=64, ±0.13): metrics from n test images first, ± the half-width of the AUC's "
    "95% interval; the exact answer on every test image follows",
    "sensitivity": "the fraction of positive (diseased) test images called positive",
    "specificity": "the fraction of negative (healthy) test images called negative",
    "AUC": "area under the ROC curve: the chance that a random positive image scores above a random "
    "negative one (1 perfect, 0.5 guessing); [low, high] is its 95% interval",
    "ΔAUC": "pruned AUC minus dense AUC on the same test images, with its 95% interval",
    "p": "the chance of a difference at least this large if pruning changed nothing",
    "δ": "the margin: the largest AUC loss accepted as 'non-inferior' to the dense model",
    "McNemar p": "the chance of this many changed yes/no decisions if pruning changed nothing",
    "youden": "the decision threshold chosen on validation images to maximise sensitivity + specificity − 1",
}


def term(name: str, shown: str | None = None) -> str:
    """``shown`` (default ``name``) with its glossary definition as a tooltip."""
    return f"<abbr title='{html.escape(GLOSSARY[name], quote=True)}'>{html.escape(shown or name)}</abbr>"


def glossary_html() -> str:
    """A line naming the readout's terms that opens to define every one."""
    entries = "".join(
        f"<li><b>{html.escape(name)}</b>: {html.escape(text)}</li>" for name, text in GLOSSARY.items()
    )
    names = ", ".join(GLOSSARY)
    return (
        f"<details class='wb-glossary'><summary>what the terms mean ({html.escape(names)})</summary>"
        f"<ul style='margin:0'>{entries}</ul></details>"
    )


def refusal(err: WorkbenchError) -> str:
    """A refusal as the dashboard shows it: a goal out of reach says so; other refusals name their kind."""
    return f"out of reach: {err}" if isinstance(err, UnreachableGoal) else f"{type(err).__name__}: {err}"


def status(point: Point) -> str:
    """'exact', 'estimate (n=96, ±0.04)' with the AUC's interval half-width, the curve point shown,
    or that the metrics of a point shown masks first are coming."""
    if point.exact:
        return "exact"
    if point.nearest is not None:
        return f"metrics of the curve's nearest point ({point.nearest:.3g}), exact answer coming"
    if point.pending:
        return "the new setting's masks; its metrics are coming"
    return f"estimate (n={point.n}, ±{point.interval:.2f})"


def readout_html(point: Point, dense: dict) -> str:
    """Sparsity, ε and status, then dense and pruned metrics side by side."""
    m, result, spec = point.metrics, point.result, point.spec
    if isinstance(point, GoalPoint):
        setting = goal_text(point)
    elif spec.epsilon is not None:
        setting = f"ε = {spec.epsilon:.3g}"
    else:
        setting = f"target {spec.sparsity:.0%}"
    guard = f" · guard kept a weight in: {_first_few(result.guarded)}" if result.guarded else ""
    changed = "…" if point.pending else point.row()["changed"]
    of = f" of {point.n}" if point.n else ""  # an estimate's count is of its subset
    head = (
        f"<b>sparsity {result.sparsity:.1%}</b> at {setting} · {_status_html(point)} · "
        f"{changed}{of} test predictions changed{html.escape(guard)}"
    )
    cells = "".join(f"<th style='padding:0 8px'>{_named(name)}</th>" for name in SIDE_BY_SIDE)
    pruned = (lambda _: "…") if point.pending else number
    rows = "".join(
        f"<tr><td>{label}</td>"
        + "".join(f"<td style='padding:0 8px'>{show(values.get(name))}</td>" for name in SIDE_BY_SIDE)
        + "</tr>"
        for label, values, show in (("dense", dense, number), ("pruned", m, pruned))
    )
    return f"{head}<table><tr><th></th>{cells}</tr>{rows}</table>{evidence_html(m)}{glossary_html()}"


def _named(metric: str) -> str:
    """A metric's column name, with its definition as a tooltip where the glossary has one."""
    name = metric.upper() if metric == "auc" else metric
    return term(name) if name in GLOSSARY else html.escape(metric)


def _status_html(point: Point) -> str:
    text = status(point)
    return term("estimate", text) if text.startswith("estimate") else html.escape(text)


def _first_few(names, shown: int = 3) -> str:
    """'a, b, c and 14 more': a backbone's guarded layers ran to four lines and moved the table."""
    names = list(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def goal_text(point: GoalPoint) -> str:
    """The goal and what the allocation achieved: FLOPs and parameter fractions, validation AUC drop."""
    a = point.allocation
    goal = f"AUC drop ≤ {a.value:g}" if a.goal == "tolerance" else f"{a.goal} ≤ {a.value:.0%} of dense"
    text = (
        f"goal {goal} ({a.granularity}, {point.spec.criterion}): achieved FLOPs {a.flops:.1%} and "
        f"params {a.params:.1%} of dense, validation AUC drop {a.val_drop:+.3f}; answer: {a.candidate}"
    )
    if point.sensitivity is not None and point.sensitivity.left_out:
        text += (
            f" (the validation AUC leaves out labels {list(point.sensitivity.left_out)}, which hold one"
            " class in validation)"
        )
    if a.tuned_val_auc is not None:
        others = ", ".join(f"{c.candidate} {c.tuned_val_auc:.3f}" for c in a.measured)
        text += (
            f", the best validation AUC after fine-tuning ({others}); the metrics below are the pruned"
            " model's before fine-tuning"
        )
    return text


def evidence_html(m: dict) -> str:
    """The clinical evidence line: pruned AUC with its interval, the paired difference, the verdict."""
    if "noninferiority" not in m:  # a curve point: no intervals
        return ""
    if m["auc_difference"] is None:
        return "<div>AUC difference from dense: undefined (a class is missing from the test images)</div>"
    verdict = m["noninferiority"]
    colour = {"non-inferior": "green", "inferior": "crimson"}.get(verdict, "darkorange")
    decisions = (  # multi-label: a threshold per label, in the per-label table
        f" · threshold {_rule(m['rule'])} · {term('McNemar p')} = {number(m['mcnemar_p'])}"
        if "rule" in m
        else ""
    )
    mean = "mean over labels: " if "rule" not in m else ""
    return (
        f"<div>{mean}{term('AUC')} {number(m['auc'])} [{number(m['auc_low'])}, {number(m['auc_high'])}] · "
        f"{term('ΔAUC')} vs dense {m['auc_difference']:+.3f} [{m['auc_difference_low']:+.3f}, "
        f"{m['auc_difference_high']:+.3f}], {term('p')} = {number(m['auc_difference_p'])} · "
        f"<b style='color:{colour}'>{verdict}</b> at {term('δ')} = {m['margin']:g}{decisions}</div>"
    )


def _rule(rule) -> str:
    """A threshold rule's name, with its definition as a tooltip where the glossary has one."""
    text = str(rule)
    return term("youden", text) if text.startswith("youden") else html.escape(text)


def table_html(table: pd.DataFrame) -> str:
    """``table`` as HTML, floats to 3 significant digits, a missing value (a bias's threshold: no
    criterion prunes it) as "—". pandas' ``to_html`` took 0.17 s for DenseNet121's ~370 rows
    (kernels, biases, BN) on every answer; this takes a few ms."""

    def cell(value) -> str:
        if isinstance(value, float):
            value = "—" if value != value else f"{value:.3g}"
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in table.columns)
    body = "".join(f"<tr>{''.join(map(cell, row))}</tr>" for row in table.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def number(value) -> str:
    return "undefined" if value is None else f"{value:.3g}" if abs(value) < 1e-3 and value else f"{value:.3f}"
