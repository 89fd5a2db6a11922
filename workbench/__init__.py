"""Interactive workbench for gradient-based pruning of medical image classifiers.

``import workbench as wb`` gives every name a user calls::

    data = wb.load_dataset("phantom")
    model, _ = wb.baseline(data, "seed_cnn")
    result = wb.make_masks(wb.Scorer(model, data.val), wb.PruneSpec(sparsity=0.5))
    pruned = wb.apply_masks(model, result.keep)
    wb.evaluate_model(pruned, data, dense=model)

The package is built in layers, one folder each, and a folder imports only the folders above it
in this list (tests/test_layers.py checks it)::

    core      masks, stats, metrics, fs, paths, cache, progress, errors   (pure NumPy, no TensorFlow)
    data      the Dataset contract, NIfTI, the phantom, MedMNIST, sources
    model     compat (the one TensorFlow import), registry, graph, heads, builders, train, cost
    prune     scores, the spec and masks onto a model, fine-tuning, slimming, export, layer tables
    analysis  the evaluator and curves, sensitivity, budgets, saliency
    explore   the widget-free session and the answer scheduler
    view      plots (they take ``ax``), the figure, the dashboard
    runs      the run store, notebook sweeps and the report      course   exercises and the classroom

Importing the package does not import TensorFlow: each name below is imported on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    # core
    "WorkbenchError": "core.errors",
    "DataMismatch": "core.errors",
    "UnreachableGoal": "core.errors",
    "Cancelled": "core.errors",
    "MaskResult": "core.masks",
    "overall_sparsity": "core.masks",
    "epsilon_for_sparsity": "core.masks",
    "sparsity_at_epsilon": "core.masks",
    "epsilon_range": "core.masks",
    "select": "core.masks",
    "auc_ci": "core.stats",
    "compare_auc": "core.stats",
    "wilson_ci": "core.stats",
    "mcnemar_p": "core.stats",
    "noninferiority": "core.stats",
    "OperatingPoint": "core.metrics",
    "Predictions": "core.metrics",
    "clinical_metrics": "core.metrics",
    "compare_to_dense": "core.metrics",
    "ChanceReferenceWarning": "core.metrics",
    "EVIDENCE_KEYS": "core.metrics",
    "cache_dir": "core.paths",
    # data
    "Dataset": "data.dataset",
    "Split": "data.dataset",
    "load_npz": "data.dataset",
    "stratified_sample": "data.dataset",
    "load_nifti_folder": "data.nifti",
    "PhantomConfig": "data.phantom",
    "load_dataset": "data.sources",
    # model
    "import_tensorflow_quietly": "model.compat",
    "get_kernels": "model.registry",
    "Head": "model.heads",
    "as_head": "model.heads",
    "detect_head": "model.heads",
    "predict_probabilities": "model.heads",
    "seed_cnn": "model.builders",
    "seed_cnn3d": "model.builders",
    "small_resnet": "model.builders",
    "build_model": "model.builders",
    "load_user_model": "model.builders",
    "import_user_modules": "model.builders",
    "Recipe": "model.train",
    "Distillation": "model.distill",
    "baseline": "model.train",
    "fit": "model.train",
    "compile_model": "model.train",
    "recalibrate_batchnorm": "model.train",
    "flops": "model.cost",
    "parameter_counts": "model.cost",
    "gzip_bytes": "model.cost",
    # prune
    "Scorer": "prune.scores",
    "CRITERIA": "prune.scores",
    "PruneSpec": "prune.pruning",
    "FINE_TUNE_RECIPE": "prune.pruning",
    "make_masks": "prune.pruning",
    "apply_masks": "prune.pruning",
    "masks_from_weights": "prune.pruning",
    "fine_tune": "prune.pruning",
    "OneShot": "prune.pruning",
    "Gradual": "prune.pruning",
    "Iterative": "prune.recovery",
    "RECOVERIES": "prune.recovery",
    "recover": "prune.recovery",
    "prune_gradually": "prune.pruning",
    "polynomial_sparsity": "prune.pruning",
    "slim_model": "prune.slim",
    "slim_report": "prune.slim",
    "couple_masks": "prune.slim",
    "export_all": "prune.export",
    "Exported": "prune.export",
    "file_metrics": "prune.export",
    "to_tflite": "prune.litert",
    "TFLiteModel": "prune.litert",
    "to_onnx": "prune.onnx_export",
    "OnnxModel": "prune.onnx_export",
    "compare_quantized": "prune.quantize",
    "quantization_errors": "prune.quantize",
    "to_int8_selective": "prune.quantize",
    "Int8Warning": "prune.quantize",
    "INT8_AUC_MARGIN": "prune.quantize",
    "layer_table": "prune.layer_table",
    # analysis
    "Evaluator": "analysis.curves",
    "evaluate_model": "analysis.curves",
    "predictions": "analysis.curves",
    "curve": "analysis.curves",
    "log_grid": "analysis.curves",
    "Subject": "analysis.sensitivity",
    "sensitivity": "analysis.sensitivity",
    "allocate": "analysis.budget",
    "fine_tune_allocation": "analysis.budget",
    "grad_cam": "analysis.saliency",
    "input_gradients": "analysis.saliency",
    # explore, view
    "Explorer": "explore.session",
    "Dashboard": "view.dashboard",
    "plots": "view.plots",
    # runs, course
    "write_results": "runs.store",
    "sweep": "runs.store",
    "run_notebook": "runs.store",
    "load_runs": "runs.store",
    "write_report": "runs.report",
    "exercises": "course.exercises",
}
_RENAMED = {"load_runs": "load"}  # public name -> its name in the module
_MODULES = {"plots", "exercises"}  # public names that are modules

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    module = importlib.import_module(f"workbench.{_PUBLIC[name]}")
    value = module if name in _MODULES else getattr(module, _RENAMED.get(name, name))
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
