"""The dashboard's controls: the widgets, their ranges and labels, and copying values into them
without their callbacks firing. Widget constants live here, never in the engine."""

from __future__ import annotations

import contextlib

import ipywidgets as w

from workbench.analysis.budget import picks_after_fine_tuning
from workbench.explore.points import Setting
from workbench.prune.pruning import PruneSpec
from workbench.prune.recovery import RECOVERIES
from workbench.prune.scores import CRITERIA, GRANULARITIES
from workbench.view.epsilon_control import epsilon_box, epsilon_slider, place

# The goal knob per goal: (min, max, step, default, label), copied into its slider.
GOAL_KNOBS = {
    "tolerance": (0.0, 0.2, 0.005, 0.01, "AUC drop ≤"),
    "flops": (0.02, 1.0, 0.01, 0.5, "FLOPs ≤"),
    "params": (0.01, 1.0, 0.01, 0.2, "params ≤"),
}
FINE_TUNE = "fine-tune this mask"  # the button's label; while one runs it reads "cancel fine-tune"
KNOBS = {  # the knobs each mode shows
    "epsilon": ("epsilon", "epsilon_text"),
    "sparsity": ("sparsity",),
    "goal": ("goal", "goal_value", "goal_tune"),
}


def make_controls(spec: PruneSpec, layers: list[str]) -> dict[str, w.Widget]:
    """Every control, showing ``spec`` and the first of ``layers``."""
    low, high, step, default, label = GOAL_KNOBS["flops"]
    return {
        "mode": w.ToggleButtons(
            options=[("ε threshold", "epsilon"), ("target sparsity", "sparsity"), ("goal", "goal")],
            value="epsilon" if spec.sparsity is None else "sparsity",
            description="select by",
        ),
        "criterion": w.Dropdown(options=list(CRITERIA), value=spec.criterion, description="criterion"),
        "scope": w.ToggleButtons(options=["global", "layerwise"], value=spec.scope, description="scope"),
        "granularity": w.ToggleButtons(
            options=GRANULARITIES, value=spec.granularity, description="granularity"
        ),
        "epsilon": epsilon_slider(),
        "epsilon_text": epsilon_box(),
        "sparsity": w.FloatSlider(
            value=0.5 if spec.sparsity is None else spec.sparsity,
            min=0.0,
            max=0.99,
            step=0.01,
            description="sparsity",
            continuous_update=True,
        ),
        "goal": w.ToggleButtons(
            options=[("AUC tolerance", "tolerance"), ("FLOPs budget", "flops"), ("params budget", "params")],
            value="flops",
            description="goal",
        ),
        "goal_value": w.FloatSlider(
            value=default,
            min=low,
            max=high,
            step=step,
            description=label,
            readout_format=".3f",
            continuous_update=False,
        ),
        "goal_tune": w.Checkbox(
            value=False,
            description="pick after fine-tuning (slower)",
            tooltip="fine-tune every candidate allocation (epochs below); keep the best on validation",
            indent=False,
        ),
        "layer": w.Combobox(options=layers, value=layers[0], description="layer", ensure_option=False),
        "epochs": w.IntSlider(value=2, min=1, max=10, description="epochs"),
        "recovery": w.Dropdown(
            options=list(RECOVERIES),
            value="one-shot",
            description="recovery",
            tooltip="distill: also learn from the dense model; iterative: prune in rounds, re-scoring",
        ),
        "finetune": w.Button(description=FINE_TUNE, icon="play"),
    }


def progress_bar() -> w.IntProgress:
    """A hidden progress bar (shown while work it counts runs)."""
    return w.IntProgress(
        value=0, min=0, max=1, layout=w.Layout(display="none"), style={"description_width": "initial"}
    )


class Wiring:
    """The controls' callbacks, and copying values into the controls without firing them."""

    def __init__(self, controls: dict[str, w.Widget]):
        self.controls = controls
        self._handlers: list[tuple[w.Widget, object]] = []

    def observe(self, name: str, handler) -> None:
        control = self.controls[name]
        control.observe(handler, names="value")
        self._handlers.append((control, handler))

    @contextlib.contextmanager
    def quiet(self):
        """Copy values into the controls without their callbacks firing."""
        for control, handler in self._handlers:
            control.unobserve(handler, names="value")
        try:
            yield
        finally:
            for control, handler in self._handlers:
                control.observe(handler, names="value")

    def set(self, **values) -> None:
        with self.quiet():
            for name, value in values.items():
                self.controls[name].value = value

    def show_setting(self, setting: Setting) -> None:
        """Copy a setting's ε range, threshold name and ε into the slider and the text box."""
        spec, slider = setting.spec, self.controls["epsilon"]
        with self.quiet():
            place(slider, spec.epsilon if spec.epsilon is not None else slider.value, setting.decades)
            slider.description = f"ε on {setting.threshold_name}"
            if spec.epsilon is not None:
                self.controls["epsilon_text"].value = f"{spec.epsilon:.3g}"

    def set_goal_knob(self, goal: str, value: float | None = None) -> None:
        """Copy ``goal``'s knob range (``GOAL_KNOBS``) and ``value`` (default: its own) into the controls."""
        low, high, step, default, label = GOAL_KNOBS[goal]
        slider = self.controls["goal_value"]
        self.controls["goal_tune"].disabled = not picks_after_fine_tuning(goal)
        with self.quiet():
            self.controls["goal"].value = goal
            slider.max = max(high, slider.max)  # widen first: ipywidgets refuses min > max
            slider.min, slider.max, slider.step = low, high, step
            slider.value, slider.description = default if value is None else value, label

    def show_knobs(self, mode: str) -> None:
        """Show the knobs of ``mode`` ("epsilon", "sparsity" or "goal") and hide the others."""
        for owner, names in KNOBS.items():
            for name in names:
                self.controls[name].layout.display = None if owner == mode else "none"
        self.controls["scope"].layout.display = "none" if mode == "goal" else None  # allocations are per row
