"""The ε control: a log slider that moves one decade a step, and a box to type any ε in between.

A class used to drag a 124-px slider over 11 decades, where a 25-px drag jumped from 1e-4 to
1.7e-2. The slider now steps a whole decade (arrow keys, or a drag that snaps), on a track wide
enough to aim at one; any value between two decades is typed. The two are bound both ways by the
dashboard: a slider move writes the box, a typed value goes to the engine as typed and moves the
slider (clamped to its range).
"""

from __future__ import annotations

import math

import ipywidgets as w

from workbench.core.errors import WorkbenchError

DECADE = 1.0  # the slider's step, in powers of ten
TRACK = "480px"  # 8-11 decades: 40-60 px a decade


def epsilon_slider(value: float = 1e-4) -> w.FloatLogSlider:
    """The ε slider: log scale, one decade a step (its range is set per criterion by the dashboard)."""
    return w.FloatLogSlider(
        value=value,
        min=-8,
        max=0,
        step=DECADE,
        description="ε",
        readout_format=".2e",
        continuous_update=True,  # throttled: the worker skips overtaken values
        tooltip="ε: weights scoring below it are pruned. Arrow keys: one decade; type any ε in the box",
        layout=w.Layout(width=TRACK),
        style={"description_width": "initial"},
    )


def epsilon_box() -> w.Text:
    """The box to type ε in (any value, such as 3e-4; Enter sends it)."""
    return w.Text(
        description="type ε",
        placeholder="e.g. 3e-4, Enter",
        continuous_update=False,
        tooltip="any ε ≥ 0, such as 3e-4 or 0.002; Enter sends it",
        layout=w.Layout(width="200px"),
    )


def parse_epsilon(text: str) -> float | None:
    """The ε a user typed, or None for an empty box.

    Raises:
        WorkbenchError: ``text`` is not a finite number (a negative one is the engine's to refuse,
            with its own message).
    """
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise WorkbenchError(f"ε must be a number such as 3e-4, got {text!r}") from None
    if math.isinf(value):
        raise WorkbenchError(f"ε must be a finite number such as 3e-4, got {text!r}")
    return value
