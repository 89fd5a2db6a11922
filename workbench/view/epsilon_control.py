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
# The track grows with the range, 32 px a decade: room to aim at one, while a 20-px drag still
# moves a step. The label and the readout beside it take ~160 px.
PX_PER_DECADE, LABEL_AND_READOUT_PX = 32, 160


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
        layout=w.Layout(width=_width((-8, 0))),
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


def place(slider: w.FloatLogSlider, epsilon: float, decades: tuple[float, float]) -> None:
    """Show ``epsilon`` on ``slider`` over ``decades`` (exponents), its steps laid through ``epsilon``.

    The browser snaps a slider's handle and readout to ``min + k * step``: a typed 3e-4 read
    "1.00e-4". With the grid through the value (3e-8, 3e-7, ...) the readout shows it and an arrow
    key moves it to 3e-3. A value outside the range, or 0, keeps whole decades (it is clamped).
    Call it with the slider's callbacks quiet: it is a copy of the engine's value.
    """
    low, high = decades
    offset = 0.0
    if 10**low <= epsilon <= 10**high:
        offset = (math.log10(epsilon) - low) % DECADE
    slider.max = max(high, slider.max)  # widen first: ipywidgets refuses min > max
    slider.min, slider.max = low + offset, high
    slider.value = epsilon
    slider.layout.width = _width(decades)


def _width(decades: tuple[float, float]) -> str:
    return f"{LABEL_AND_READOUT_PX + PX_PER_DECADE * round(decades[1] - decades[0])}px"


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
