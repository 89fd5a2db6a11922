"""The workbench's exceptions: what a caller may need to tell apart.

Every refusal of the workbench is a ``WorkbenchError``, a ``ValueError`` (so ``except ValueError``
keeps working), with a message that names the argument, the value and what was expected. A caller
that must act differently catches a subclass: the dashboard shows an ``UnreachableGoal`` as a
message, and an error that is not a ``WorkbenchError`` is a bug, shown with its traceback.

``Cancelled`` is not a ``ValueError`` on purpose: a handler for bad input must never swallow the
cancellation of a job.
"""


class WorkbenchError(ValueError):
    """Input the workbench refuses: a bad argument, a file that is not what it should be."""


class DataMismatch(WorkbenchError):
    """Data that does not fit the model, or two results that are not of the same images."""


class UnreachableGoal(WorkbenchError):
    """A budget or goal that no setting on the grid, or no pruning, can reach."""


class Cancelled(Exception):
    """Raised inside work whose request was overtaken by a newer one, or stopped by the user."""


def check_choice(value, name: str, choices: tuple):
    """Return ``value`` if it is one of ``choices``, else raise WorkbenchError naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        raise WorkbenchError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value
