"""int8 that tells the truth: the int8 model measured against the float model, and selective quantization.

Full-integer quantization quietly destroys some models: one activation tensor holding a channel
a thousand times larger than another (a per-tensor int8 scale then rounds the small one to zero),
or MobileNetV3's hard-swish. ``compare_quantized`` measures what it cost (same decisions, AUC) and
warns, naming the drop, when the AUC falls by more than ``INT8_AUC_MARGIN``.

``quantization_errors`` asks LiteRT's quantization debugger (``tf.lite.experimental.QuantizationDebugger``)
how much of each tensor's signal int8 loses; ``to_int8_selective`` keeps the worst tensors in
float: their producing op and the ops that read them run in float (``denylisted_nodes``), so the
tensor itself is never rounded to int8 (keeping only the producer in float re-quantizes its output
for the next op, and nothing is won).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from ai_edge_litert.interpreter import Interpreter
from sklearn.metrics import roc_auc_score

from workbench.core.errors import WorkbenchError
from workbench.core.metrics import auc
from workbench.model.compat import keras, tf
from workbench.model.heads import Head
from workbench.prune.litert import (
    check_calibration,
    convert,
    make_converter,
    quietly,
    representative,
    to_tflite,
)

INT8_AUC_MARGIN = 0.01  # AUC the int8 model may lose against the float model before export_all warns


class Int8Warning(UserWarning):
    """The int8 model ranks the images measurably worse than the float model (AUC drop over the margin)."""


def compare_quantized(
    float_probs: np.ndarray,
    quant_probs: np.ndarray,
    labels: np.ndarray | None = None,
    margin: float = INT8_AUC_MARGIN,
    name: str = "int8",
) -> dict:
    """Agreement and AUC of a quantized model's probabilities against the float model's; warn on a drop.

    Args:
        labels: the images' true labels; None measures the AUC against the float model's own
            decisions (the float model then scores 1.0: the drop is how much int8 reorders them).
        margin: the AUC drop above which an ``Int8Warning`` names the drop.

    Returns:
        {format, images, labels, agreement (share of images with the same decision), float_auc,
        auc, auc_drop, warning (the warning's text, "" when none)}.
    """
    if not 0 <= margin < 1:
        raise WorkbenchError(f"margin must be an AUC drop in [0, 1), got {margin!r}")
    float_probs, quant_probs = np.asarray(float_probs), np.asarray(quant_probs)
    multilabel = labels is not None and np.ndim(labels) == 2
    agreement = float(np.mean(_decisions(float_probs, multilabel) == _decisions(quant_probs, multilabel)))
    truth = _decisions(float_probs, multilabel) if labels is None else np.asarray(labels)
    float_auc, quant_auc = _auc(float_probs, truth), _auc(quant_probs, truth)
    drop = None if float_auc is None or quant_auc is None else float_auc - quant_auc
    warning = ""
    if drop is not None and drop > margin:
        warning = (
            f"{name} loses {drop:.3f} AUC against the float model ({float_auc:.3f} -> {quant_auc:.3f} on "
            f"{len(float_probs)} images; {agreement:.0%} same decisions), more than the margin {margin:g}: "
            "keep the float .tflite, or keep its worst layers in float (export_all(..., keep_float=k))"
        )
        warnings.warn(warning, Int8Warning, stacklevel=2)
    labelled = "float decisions" if labels is None else "true labels"
    return dict(format=name, images=len(float_probs), labels=labelled, agreement=agreement) | dict(
        float_auc=float_auc, auc=quant_auc, auc_drop=drop, warning=warning
    )


def _decisions(probs: np.ndarray, multilabel: bool) -> np.ndarray:
    return probs >= 0.5 if multilabel else probs.argmax(axis=1)


def _auc(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """The workbench's AUC; multi-label (one column per label) as scikit-learn's macro average."""
    if np.ndim(labels) == 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an undefined AUC (one class only) is None, said in the table
            return auc(probs, labels)
    try:
        return float(roc_auc_score(labels, probs, average="macro"))
    except ValueError:  # a label column with one value only
        return None


# --- selective quantization -------------------------------------------------------------------


def quantization_errors(
    model: keras.Model, calibration: np.ndarray, head: Head | str | None = None
) -> pd.DataFrame:
    """How much of each tensor's signal full-integer quantization loses, worst first (LiteRT's debugger).

    LiteRT's ``QuantizationDebugger`` builds a debug model in which every quantized op is followed by
    a NumericVerify op holding its int8 output beside the float output the op computes from the same
    (dequantized) input; this runs that model on the calibration images and compares the two.

    Columns: ``op``, ``tensor`` (the name ``to_int8_selective`` denylists), ``lost`` (per channel,
    rms(float - int8) / the channel's standard deviation over images and positions, capped at 1;
    the worst channel: 1 means int8 kept nothing of some channel), ``rmse_per_step`` (rms error in
    quantization steps, LiteRT's own yardstick; ~0.3 is plain rounding). Ties keep the graph's
    order: the earliest of equally damaged tensors first, as later ones may only inherit its damage.
    """
    converter = make_converter(model, calibration, head)
    debugger = quietly(
        lambda: tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=converter.representative_dataset
        )
    )
    # The debugger's own interpreter reuses tensor buffers (TF 2.21 keeps them only on its other
    # path), so float tensors read after a run were overwritten (1e28, NaN on MobileNetV3Small).
    interpreter = quietly(
        lambda: tf.lite.Interpreter(
            model_content=debugger.quant_model, experimental_preserve_all_tensors=True
        )
    )
    images = check_calibration(model, calibration)
    table = pd.DataFrame(_verified(interpreter, lambda: representative(images)))
    return table.sort_values("lost", ascending=False, kind="stable").reset_index(drop=True)


def _verified(interpreter, dataset) -> list[dict]:
    """One row per NumericVerify op of a debug model: its tensor's lost share and error in steps."""
    ops = interpreter._get_ops_details()  # noqa: SLF001 - LiteRT has no public graph reader
    producer = {tensor: op["op_name"] for op in ops for tensor in op["outputs"]}
    verify = [op for op in ops if op["op_name"] == "NumericVerify"]
    details = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    sums = {op["index"]: [0, 0.0, 0.0, 0.0] for op in verify}  # count, sum f, sum f^2, sum error^2
    interpreter.allocate_tensors()
    for inputs in dataset():
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], inputs[0])
        interpreter.invoke()
        for op in verify:
            rounded, exact = op["inputs"]
            scale, zero = details[rounded]["quantization"]
            values = interpreter.get_tensor(exact).astype(np.float64)
            values = values.reshape(-1, values.shape[-1])
            error = (
                interpreter.get_tensor(rounded).reshape(values.shape).astype(np.float64) - zero
            ) * scale - values
            total = sums[op["index"]]
            total[:] = [total[0] + len(values), total[1] + values.sum(0), total[2] + (values**2).sum(0)] + [
                total[3] + (error**2).sum(0)
            ]
    return [_row(op, sums[op["index"]], producer, details) for op in verify]


def _row(op: dict, sums: list, producer: dict, details: dict) -> dict:
    count, total, squares, errors = sums
    spread = np.sqrt(np.maximum(squares / count - (total / count) ** 2, 0.0))
    error = np.sqrt(errors / count)
    lost = np.where(spread > 0, np.minimum(error / np.maximum(spread, 1e-30), 1.0), (error > 0) * 1.0)
    rounded = op["inputs"][0]
    return dict(
        op=producer.get(rounded, "?"),
        tensor=_debugger_name(details[op["outputs"][0]]["name"]),
        lost=float(lost.max()),
        rmse_per_step=float(np.sqrt(errors.mean() / count) / details[rounded]["quantization"][0]),
    )


def _debugger_name(verify_output: str) -> str:
    """The quantized tensor's name as LiteRT's debugger gives it (and takes it in ``denylisted_nodes``)."""
    name = verify_output.rsplit(":", 1)[0][len("NumericVerify/") :]
    return name[:-1] if name[-1:].isdigit() else name


def to_int8_selective(
    model: keras.Model,
    calibration: np.ndarray,
    keep_float: int,
    head: Head | str | None = None,
    errors: pd.DataFrame | None = None,
) -> bytes:
    """Full-integer int8 as ``to_tflite``, but the ``keep_float`` tensors that lose most stay float.

    Args:
        keep_float: how many tensors of ``quantization_errors`` (worst first) to keep in float.
        errors: ``quantization_errors(model, calibration, head)``, when already computed.

    Raises:
        ValueError: ``keep_float`` not a whole number >= 1, or a conversion LiteRT refuses.
    """
    if isinstance(keep_float, bool) or not isinstance(keep_float, int | np.integer) or keep_float < 1:
        raise WorkbenchError(f"keep_float must be a whole number of tensors >= 1, got {keep_float!r}")
    if errors is None:
        errors = quantization_errors(model, calibration, head)
    worst = list(errors["tensor"][:keep_float])
    nodes = worst + _readers(to_tflite(model, "int8", calibration, head), worst, list(errors["tensor"]))
    converter = make_converter(model, calibration, head)
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=sorted(set(nodes)))
    debugger = quietly(
        lambda: tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=converter.representative_dataset, debug_options=options
        )
    )
    return convert(debugger.get_nondebug_quantized_model, model, "int8 (selective)")


def _readers(int8: bytes, tensors: list[str], known: list[str]) -> list[str]:
    """The debugger's names of the outputs of the ops that read ``tensors`` in the int8 model."""
    interpreter = Interpreter(model_content=int8)
    names = {detail["index"]: detail["name"] for detail in interpreter.get_tensor_details()}

    def debugger_name(name: str) -> str | None:  # the debugger drops one trailing digit of some names
        return name if name in known else name[:-1] if name[:-1] in known else None

    wanted, found = set(tensors), []
    for op in interpreter._get_ops_details():  # noqa: SLF001 - LiteRT has no public graph reader
        if wanted & {debugger_name(names.get(i, "")) for i in op["inputs"]}:
            found += [n for n in (debugger_name(names.get(i, "")) for i in op["outputs"]) if n]
    return found
