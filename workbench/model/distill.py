"""Knowledge distillation from a teacher (the dense model) while a student trains: Keras's Distiller.

``Distillation`` is the recipe's choice (temperature, weight, feature layers); ``distiller`` wraps
a student and its teacher in ``keras.distillation.Distiller`` with the student's own loss for
the labels, ``LogitsDistillation`` on the outputs and ``FeatureDistillation`` (mean squared error)
on each named layer. The loss is ``(1 - alpha) * label loss + alpha * (T² KL(teacher_T, student_T)
+ Σ feature MSE)``, Hinton et al. (2015).

Keras's ``LogitsDistillation`` softens logits with a softmax; a workbench model may end in a
softmax, a sigmoid or linear units (``model.heads``), so ``HeadDistillation`` first turns each
head's outputs into logits of the distribution the head means (a sigmoid unit z becomes the
two-class logits (0, z)), the same distribution ``Head.probabilities`` gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workbench.core.errors import WorkbenchError
from workbench.model.compat import keras, tf
from workbench.model.heads import Head

TINY = 1e-7  # probabilities are clipped here before their log: a softmax output of exactly 0


@dataclass(frozen=True)
class Distillation:
    """Recover by learning from the dense model too: its softened outputs, and optionally its features.

    Args:
        temperature: T > 0 that softens both models' outputs (higher: more weight on the
            teacher's small probabilities); the KL term is scaled by T², as in Hinton et al.
        alpha: the distillation term's weight in (0, 1]; the labels' loss gets ``1 - alpha``.
        features: names of layers (top-level, present in both models, same output shapes, as in
            a masked copy) whose outputs the student matches by mean squared error.

    Raises:
        WorkbenchError: on construction, for any field out of range, naming it and its value.
    """

    temperature: float = 4.0
    alpha: float = 0.5
    features: tuple[str, ...] = ()

    def __post_init__(self):
        temperature, alpha = self.temperature, self.alpha
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise WorkbenchError(f"temperature must be a finite number > 0, got {temperature!r}")
        if not 0 < temperature < math.inf:
            raise WorkbenchError(f"temperature must be a finite number > 0, got {temperature!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha <= 1:
            raise WorkbenchError(f"alpha must be a number in (0, 1] (the distillation weight), got {alpha!r}")
        features = self.features
        if not isinstance(features, tuple) or not all(isinstance(f, str) and f for f in features):
            raise WorkbenchError(
                f"features must be a tuple of layer names, e.g. ('conv2d_1',), got {features!r}"
            )


def head_logits(head: Head, outputs):
    """Logits of the distribution ``head`` means: a softmax over the last axis of the result gives
    ``head.probabilities`` (per label, over a trailing axis of two, for a multi-label head)."""
    outputs = tf.convert_to_tensor(outputs)
    if head.kind == "logits":
        return outputs
    if head.kind == "softmax":
        return tf.math.log(tf.clip_by_value(outputs, TINY, 1.0))
    if not head.from_logits:  # sigmoid probabilities -> their logit
        p = tf.clip_by_value(outputs, TINY, 1.0 - TINY)
        outputs = tf.math.log(p) - tf.math.log1p(-p)
    return tf.stack([tf.zeros_like(outputs), outputs], axis=-1)  # σ(z) = softmax((0, z))[1]


class HeadDistillation(keras.distillation.LogitsDistillation):
    """Keras's ``LogitsDistillation`` (KL at a temperature, times T²) on any head's outputs."""

    def __init__(self, head: Head, temperature: float):
        # an instance, not "kl_divergence": Keras resolves that string to the bare function, which
        # its isinstance check misses, and then takes a KL of logits clipped to [1e-7, 1] (zero here)
        super().__init__(temperature=temperature, loss=keras.losses.KLDivergence())
        self.head = head

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return super().compute_loss(
            head_logits(self.head, teacher_outputs), head_logits(self.head, student_outputs)
        )


def check_teacher(teacher, student: keras.Model, distillation: Distillation) -> None:
    """Refuse a missing teacher, the student itself, other output shapes, or absent feature layers."""
    if teacher is None:
        raise WorkbenchError(
            "the recipe distils (recipe.distillation is set) but no teacher= was given: pass the "
            "dense model the student was pruned from, e.g. fine_tune(..., teacher=dense_model)"
        )
    if not isinstance(teacher, keras.Model):
        raise WorkbenchError(f"teacher must be a Keras model, got {type(teacher).__name__}")
    if teacher is student:
        raise WorkbenchError("teacher must be another model than the one trained (pass the dense model)")
    shapes = [[tuple(t.shape) for t in model.outputs] for model in (teacher, student)]
    if shapes[0] != shapes[1]:
        raise WorkbenchError(
            f"teacher's output shape {shapes[0]} differs from the student's {shapes[1]}: "
            "distil from the model the student was pruned from"
        )
    for name in distillation.features:
        for role, model in (("teacher", teacher), ("student", student)):
            if name not in {layer.name for layer in model.layers}:
                raise WorkbenchError(
                    f"Distillation feature {name!r} is not a top-level layer of the {role} {model.name!r}"
                )


def distiller(student: keras.Model, teacher: keras.Model, distillation: Distillation, head: Head):
    """Return a ``keras.distillation.Distiller`` training ``student`` from ``teacher`` (frozen by it:
    the caller restores ``teacher.trainable``)."""
    check_teacher(teacher, student, distillation)
    losses = [HeadDistillation(head, distillation.temperature)] + [
        keras.distillation.FeatureDistillation("mse", name, name) for name in distillation.features
    ]
    return keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=losses,
        distillation_loss_weights=[1.0] * len(losses),
        student_loss_weight=1.0 - float(distillation.alpha),
    )


def student_of(model: keras.Model) -> keras.Model:
    """The model being trained: a Distiller's student (what a callback's ``self.model`` means)."""
    return model.student if isinstance(model, keras.distillation.Distiller) else model
