"""Interactive workbench for gradient-based pruning of medical image classifiers.

The pipeline, one module per step::

    data / phantom / medmnist -> models / train -> scores -> masks -> prune -> evaluate
        -> curves / explorer -> plots / explorer_figure -> widgets -> notebooks   (runs beside)

Import the step you need, e.g. ``from workbench import data``; importing the package itself
does not import TensorFlow.
"""

__version__ = "0.1.0"
